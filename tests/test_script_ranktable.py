"""`xllm-tui script` and `xllm-tui ranktable`: the bash fallback and the HCCL rank table."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import subprocess
from dataclasses import replace

import pytest

from conftest import REPO
from test_launch import (
    GUIDE_BINARY,
    GUIDE_ENV,
    guide_profile,
    two_node_profile,
)
from xllm_tui.cli import main
from xllm_tui.envcapture import capture_sourced_env
from xllm_tui.launch import (
    LaunchError,
    build_simulate_mapping,
    plan_launches,
    render_ranktable,
    render_script,
    ranktable_json,
)
from xllm_tui.spec import Machine, PreLaunchStep

# Replaces nohup inside the script under test: writes its argv, a separator and its environment to the
# rank's log file (the script's own redirection), so the test sees exactly what bash would have run.
# Builtins only: an external `env` would itself trip over a missing LD_PRELOAD library.
FAKE_NOHUP = r"""nohup() {
  printf '%s\0' "$@"; printf '\0'
  local name; for name in $(compgen -e); do printf '%s=%s\0' "$name" "${!name}"; done
  printf '\0END'
}
export -f nohup
cd "$(dirname "$0")"
source "$0" "$@"
status=$?
wait
exit $status
"""
SHELL_NOISE = {"_", "SHLVL", "PWD", "OLDPWD"}


def bash_syntax_ok(text: str, tmp_path) -> None:
    path = tmp_path / "check.sh"
    path.write_text(text)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def run_script(script_text: str, tmp_path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "launch.sh"
    script.write_text(script_text)
    return subprocess.run(
        ["bash", "-c", FAKE_NOHUP, str(script), *args], env=env, capture_output=True, text=True, timeout=60
    )


def read_fake_launch(log_path: str) -> tuple[list[str], dict[str, str]]:
    data = open(log_path, encoding="utf-8").read()
    assert data.endswith("\0END"), f"{log_path} is incomplete"
    argv_part, _, env_part = data[: -len("\0END")].partition("\0\0")
    env = {}
    for item in env_part.split("\0"):
        if item:
            name, _, value = item.partition("=")
            env[name] = value
    return argv_part.split("\0"), {k: v for k, v in env.items() if k not in SHELL_NOISE and not k.startswith("BASH_FUNC_")}


def runnable_profile(tmp_path, profile=None):
    """A profile whose files all live under tmp_path, so its script can really run here."""
    profile = profile or guide_profile()
    (tmp_path / "atb-log").mkdir()
    (tmp_path / "core.1234").write_text("core")
    (tmp_path / "set env.sh").write_text("export ASCEND_HOME=/usr/local/Ascend\nexport LD_LIBRARY_PATH=/ascend/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\n")
    return replace(
        profile,
        source_path=str(tmp_path / "profile.yaml"),
        source_scripts=(str(tmp_path / "set env.sh"),),
        pre_launch=(
            PreLaunchStep(name="clear logs", remove=(str(tmp_path / "atb-log") + "/", "core.*")),
            PreLaunchStep(name="init devices", run=("touch", str(tmp_path / "reboot-ran")), when="after_reboot"),
        ),
    )


# ---------------------------------------------------------------------------------------------- script


def test_script_is_valid_bash_with_one_line_per_rank(tmp_path):
    profile = guide_profile()
    text = render_script(profile)
    bash_syntax_ok(text, tmp_path)
    assert text.startswith("#!/usr/bin/env bash\n")
    for i in range(8):
        assert f"nohup numactl -C {i * 12}-{i * 12 + 11} {GUIDE_BINARY} \\\n" in text
        assert f"  --node_rank={i} \\\n" in text
        assert f"  --devices=npu:{i} \\\n" in text
        assert f"  > logs/node_{i}.log 2>&1 &\n" in text
    for name, value in GUIDE_ENV.items():
        assert f"export {name}={shlex.quote(value)}\n" in text
    assert "source /usr/local/Ascend/ascend-toolkit/set_env.sh\n" in text
    assert "source /usr/local/Ascend/nnal/atb/set_env.sh\n" in text
    assert "rm -rf /root/atb/log/\n" in text and "rm -rf core.*\n" in text
    assert 'export LD_PRELOAD=/usr/lib64/libjemalloc.so.2"${LD_PRELOAD:+:$LD_PRELOAD}"\n' in text
    assert "# export LCCL_DETERMINISTIC=1\n" in text  # toggle off: shown, not active
    assert "# rm -rf ~/dynamic_profiling_socket_*\n" in text
    assert "\n# python -c 'import torch_npu;" in text  # after-reboot step: a comment


def test_script_shows_enabled_toggles_as_active_lines(tmp_path):
    text = render_script(guide_profile(), toggles={"determinism": True, "profiling": True})
    bash_syntax_ok(text, tmp_path)
    assert "\nexport LCCL_DETERMINISTIC=1\n" in text and "\nexport HCCL_DETERMINISTIC=true\n" in text
    assert "\nrm -rf ~/dynamic_profiling_socket_*\n" in text and "\nexport PROFILING_MODE=dynamic\n" in text


def test_script_runs_exactly_what_the_plan_runs(tmp_path):
    profile = runnable_profile(tmp_path)
    base_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LD_LIBRARY_PATH": "/old/lib"}
    result = run_script(render_script(profile, toggles={"determinism": True}), tmp_path, base_env)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "atb-log").exists() and not (tmp_path / "core.1234").exists()
    assert not (tmp_path / "reboot-ran").exists()  # after-reboot steps are not run by the script
    captured, warnings = capture_sourced_env(profile.source_scripts, base_env)
    assert warnings == []
    plans = plan_launches(profile, base_env=base_env, captured_env=captured, toggles={"determinism": True})
    assert len(plans) == 8
    for plan in plans:
        argv, env = read_fake_launch(plan.log_path)
        assert argv == list(plan.argv)
        expected_env = {k: v for k, v in plan.env if k not in SHELL_NOISE}
        assert env == expected_env
        # The guide exports its paths, then sources set_env.sh: the script's entries come first.
        assert env["LD_LIBRARY_PATH"].endswith(
            ":/usr/local/libtorch_npu/lib:/usr/local/Ascend/ascend-toolkit/latest/opp/vendors/xllm/op_api/lib/:/old/lib")
        assert env["LCCL_DETERMINISTIC"] == "1"


def test_two_machine_script_dispatches_by_machine(tmp_path):
    profile = runnable_profile(tmp_path, two_node_profile())
    text = render_script(profile)
    bash_syntax_ok(text, tmp_path)
    for rank in range(16):
        assert f"  --node_rank={rank} \\\n" in text
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    usage = run_script(text, tmp_path, env)
    assert usage.returncode == 2 and "usage:" in usage.stderr and "11.87.49.111" in usage.stderr
    assert not (tmp_path / "logs").exists()
    result = run_script(text, tmp_path, env, "11.87.49.111")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "logs")) == sorted(f"node_{r}.log" for r in range(8, 16))
    argv, _ = read_fake_launch(str(tmp_path / "logs" / "node_9.log"))
    assert "--host=11.87.49.111" in argv and "--node_rank=9" in argv and "--rank_tablefile=hccl_8+8.json" in argv


def test_script_for_one_machine_has_only_its_ranks(tmp_path):
    text = render_script(two_node_profile(), "11.87.49.111")
    bash_syntax_ok(text, tmp_path)
    assert "--node_rank=8 \\" in text and "--node_rank=15 \\" in text
    assert "--node_rank=7 \\" not in text and "case " not in text


def test_simulated_script_touches_only_loopback(tmp_path):
    profile = runnable_profile(tmp_path, two_node_profile())
    mapping = build_simulate_mapping(profile)
    text = render_script(profile, simulate=mapping)
    assert "# --simulate" in text and "#   11.87.49.111 -> 127.0.0.2" in text
    result = run_script(text, tmp_path, {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}, "all")
    assert result.returncode == 0, result.stderr
    for rank in range(16):
        argv, env = read_fake_launch(str(tmp_path / "logs" / f"node_{rank}.log"))
        assert "xllm_tui.sim.xllm" in argv
        for text_value in argv + list(env.values()):
            for address in re.findall(r"\d+\.\d+\.\d+\.\d+", text_value):
                assert ipaddress.ip_address(address).is_loopback, (rank, text_value)


# ------------------------------------------------------------------------------------------- ranktable

DOCUMENTED_TABLE = {
    "version": "1.0",
    "server_count": "2",
    "server_list": [
        {
            "server_id": "11.87.49.110",
            "device": [{"device_id": str(d), "device_ip": f"11.86.23.{210 + d}", "rank_id": str(d)} for d in range(8)],
            "host_nic_ip": "reserve",
        },
        {
            "server_id": "11.87.49.111",
            "device": [{"device_id": str(d), "device_ip": f"11.87.63.{202 + d}", "rank_id": str(d + 8)} for d in range(8)],
            "host_nic_ip": "reserve",
        },
    ],
    "status": "completed",
}


def test_ranktable_matches_the_documented_layout():
    table = render_ranktable(two_node_profile())
    assert table == DOCUMENTED_TABLE
    assert sum(len(s["device"]) for s in table["server_list"]) == 16
    assert json.loads(ranktable_json(two_node_profile())) == DOCUMENTED_TABLE


def test_ranktable_needs_device_ips():
    with pytest.raises(LaunchError, match=r"machine\(s\) 11.87.49.110 have no device_ips.*hccn_tool"):
        render_ranktable(guide_profile())
    short = replace(two_node_profile(), machines=(
        Machine(host="11.87.49.110", devices=tuple(range(8)), device_ips=("11.86.23.210",)),))
    with pytest.raises(LaunchError, match="8 devices but 1 device_ips"):
        render_ranktable(short)


def test_one_machine_ranktable_is_allowed_with_device_ips():
    profile = replace(guide_profile(), machines=(
        Machine(host="11.87.49.110", devices=(0, 1), device_ips=("11.86.23.210", "11.86.23.211")),))
    table = render_ranktable(profile)
    assert table["server_count"] == "1" and [d["rank_id"] for d in table["server_list"][0]["device"]] == ["0", "1"]


# ------------------------------------------------------------------------------------------- commands


def write_yaml_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmachines: [\n")
    return bad


@pytest.mark.parametrize("command", ["script", "ranktable"])
def test_bad_profile_prints_diagnostics_and_exits_2(command, tmp_path, capsys):
    bad = write_yaml_error(tmp_path)
    assert main([command, str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{bad}:" in err and "error" in err and "Traceback" not in err
    missing = tmp_path / "nope.yaml"
    assert main([command, str(missing)]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_script_command_on_the_shipped_profiles(tmp_path, capsys):
    assert main(["script", os.path.join(REPO, "profiles", "a3-8card.yaml")]) == 0
    text = capsys.readouterr().out
    bash_syntax_ok(text, tmp_path)
    assert text.count("\nnohup numactl -C ") == 8 and "--num_speculative_tokens=1" in text
    two_node = os.path.join(REPO, "profiles", "a3-16card-2node.yaml")
    assert main(["script", two_node, "--machine", "11.87.49.111", "--simulate"]) == 0
    text = capsys.readouterr().out
    bash_syntax_ok(text, tmp_path)
    assert text.count("\nnohup ") == 8 and "--host=127.0.0.2" in text and "xllm_tui.sim.xllm" in text
    assert main(["script", two_node, "--machine", "10.9.9.9"]) == 2
    assert "no machine '10.9.9.9'" in capsys.readouterr().err


def test_ranktable_command_writes_the_shipped_table(tmp_path, capsys):
    target = tmp_path / "hccl_8+8.json"
    assert main(["ranktable", os.path.join(REPO, "profiles", "a3-16card-2node.yaml"), "-o", str(target)]) == 0
    assert json.loads(target.read_text()) == DOCUMENTED_TABLE
    assert "2 server(s), 16 devices" in capsys.readouterr().err
    assert main(["ranktable", os.path.join(REPO, "profiles", "a3-8card.yaml")]) == 2
    assert "no device_ips" in capsys.readouterr().err
