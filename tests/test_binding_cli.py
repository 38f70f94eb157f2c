"""Binding check in `validate`, cores from the topology (`cores: topology`), the profile's `devices:` key, and
what `script --simulate` refuses to touch. Devices come from the simulated npu-smi (A3: NPUs 0-3 near cores
0-47, 4-7 near 48-95, ...)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace

import psutil
import pytest

from conftest import REPO, wait_until
from test_launch import guide_profile
from test_script_ranktable import read_fake_launch, run_script
from model_dirs import make_model_dir
from xllm_tui.cli import main
from xllm_tui.devices.model import Device, DeviceReport, unavailable
from xllm_tui.launch import (
    LaunchError,
    build_simulate_mapping,
    device_tools,
    machines_here,
    needs_topology,
    render_script,
    topology_cores_from_devices,
)
from xllm_tui.spec import CoreRule, DeviceSettings, Machine, PreLaunchStep, Toggle

A3_8 = os.path.join(REPO, "profiles", "a3-8card.yaml")
A3_16 = os.path.join(REPO, "profiles", "a3-16card-2node.yaml")


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """npu-smi runs and scripts started by a test are all gone when it ends."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    wait_until(lambda: not [p for p in psutil.Process().children(recursive=True) if p.pid not in before],
               timeout=10, what="the test's child processes to end")


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def extending(tmp_path, name: str, text: str) -> str:
    """A profile on top of the shipped 8-card one (its path warnings stay: 5 under --simulate)."""
    return write(tmp_path, name, f"extends: {A3_8}\n{text}")


def sim_npu_smi_tool(tmp_path) -> str:
    """The simulated npu-smi as one executable path, for --npu-smi PATH and the profile's devices.npu_smi."""
    path = tmp_path / "sim-npu-smi"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -m xllm_tui.sim.npu_smi "$@"\n')
    path.chmod(0o755)
    return str(path)


def local_profile(tmp_path, extra: str = "", host: str = "127.0.0.1") -> str:
    """A profile that loads without --simulate here (binary and model exist) and runs on this host."""
    model = make_model_dir(tmp_path / "model")
    return write(
        tmp_path, "local.yaml",
        f"binary: /bin/sh\nmodel: {model}\nmaster_node_addr: {host}:9000\nbase_port: 9100\n"
        f"machines: [{{host: {host}, devices: 0-1}}]\n{extra}",
    )


def output_lines(capsys) -> list[str]:
    # The stand-in binary (/bin/sh) prints no --helpxml: validate's note about it is not what these tests read.
    return [line for line in capsys.readouterr().out.splitlines() if "flags not checked against the binary" not in line]


# ---------------------------------------------------------------------------------------- validate


def test_shipped_profile_binds_correctly_under_simulate(capsys):
    assert main(["validate", A3_8, "--simulate"]) == 1  # only the missing binary/model/scripts warnings
    out = output_lines(capsys)
    assert out[-1] == f"{A3_8}: profile 'a3-8card' (8 ranks on 1 machine): 0 errors, 5 warnings"
    assert not [line for line in out if "affinity" in line and "warning" in line]
    assert (f"{A3_8}: info: binding ok on 11.87.49.110: every rank's cores are within its NPU's CPU affinity "
            "(the simulated npu-smi (--simulate))") in out


def test_wrong_cores_are_warnings_at_the_cores_key(tmp_path, capsys):
    wrong = extending(tmp_path, "wrong.yaml", "cores: {rule: per_device, count: 12, first: 100}\n")
    explicit = extending(
        tmp_path, "explicit.yaml", "machines:\n  - host: 11.87.49.110\n    devices: 0-1\n    cores: ['0-11', '40-51']\n"
    )
    assert main(["validate", wrong, explicit, "--simulate"]) == 1  # warnings, no errors
    out = output_lines(capsys)
    assert (f"{wrong}:2:8: warning: cores: rank 0 runs on cores 100-111, all outside NPU 0's CPU affinity 0-47 "
            "(bind it to cores within 0-47); or take them from the topology: cores: topology") in out
    assert sum(line.startswith(f"{wrong}:2:8: warning: cores: rank ") for line in out) == 8
    assert f"{wrong}: profile 'a3-8card' (8 ranks on 1 machine): 0 errors, 13 warnings" in out
    # an explicit list: the warning names that list's item, and the part outside the affinity
    assert (f"{explicit}:5:21: warning: machines[0].cores[1]: rank 1 runs on cores 40-51, 4 of them (48-51) "
            "outside NPU 1's CPU affinity 0-47") in out
    assert f"{explicit}: profile 'a3-8card' (2 ranks on 1 machine): 0 errors, 6 warnings" in out

    assert main(["validate", wrong, "--simulate", "--json"]) == 1
    [entry] = json.loads(capsys.readouterr().out)["results"]
    devices = entry["devices"]
    assert devices["binding_checked"] is True and devices["machines"] == ["11.87.49.110"]
    assert devices["binding"][7] == {
        "rank": 7, "device": 7, "cores": "184-195", "affinity": "48-95", "outside": "184-195",
        "message": "rank 7 runs on cores 184-195, all outside NPU 7's CPU affinity 48-95 (bind it to cores within 48-95)",
    }
    assert entry["warnings"] == 13 and {"cores"} == {d["key"] for d in entry["diagnostics"] if "affinity" in d["message"]}

    # --no-devices: no reading, no binding warnings
    assert main(["validate", wrong, "--simulate", "--no-devices"]) == 1
    assert output_lines(capsys)[-1] == f"{wrong}: profile 'a3-8card' (8 ranks on 1 machine): 0 errors, 5 warnings"


def test_no_affinity_column_is_a_note_and_topology_cores_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XLLM_SIM_NPU_AFFINITY", "0")
    wrong = extending(tmp_path, "wrong.yaml", "cores: {rule: per_device, count: 12, first: 100}\n")
    topo = extending(tmp_path, "topo.yaml", "cores: topology\n")
    assert main(["validate", wrong, topo, "--simulate"]) == 2
    out = output_lines(capsys)
    assert not [line for line in out if "Traceback" in line or (line.startswith(wrong) and "outside" in line)]
    assert (f"{wrong}: note: binding not checked on 11.87.49.110: npu-smi prints no CPU Affinity (npu-smi info "
            "-t topo has no such column on this machine, as on A3 machines with ARM CPUs)") in out
    assert f"{wrong}: profile 'a3-8card' (8 ranks on 1 machine): 0 errors, 5 warnings" in out
    [error] = [line for line in out if line.startswith(f"{topo}:2:8: error: cores: ")]
    assert "prints no CPU Affinity column" in error and "give explicit cores" in error
    # the devices view still places the ranks, and says why their cores are unknown
    assert main(["devices", topo, "--simulate"]) == 0
    text = capsys.readouterr().out
    assert "rank 7: NPU 7, " in text and "note: the core rule `cores: topology` needs each NPU's CPU affinity" in text


def test_devices_unavailable_leaves_validate_working(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XLLM_SIM_NPU_FAIL", "dcmi")
    topo = extending(tmp_path, "topo.yaml", "cores: topology\n")
    assert main(["validate", A3_8, topo, "--simulate"]) == 1
    out = output_lines(capsys)
    assert (f"{A3_8}: note: devices unavailable: npu-smi info exited with code 255: dcmi module initialize failed. "
            "ret is -8005; binding not checked") in out
    assert out[out.index(f"{A3_8}: profile 'a3-8card' (8 ranks on 1 machine): 0 errors, 5 warnings") - 1].startswith(f"{A3_8}: note:")
    assert (f"{topo}:2:8: warning: cores: the cores of 11.87.49.110 (rule topology) cannot be computed here: the "
            "devices were not read; they are computed at launch on the machine (or give explicit cores)") in out


def test_validate_shows_cores_from_topology(tmp_path, capsys):
    topo = extending(tmp_path, "topo.yaml", "cores: {rule: topology, count: 6}\n")
    crowded = extending(tmp_path, "crowded.yaml", "cores: {rule: topology, count: 24}\n")
    assert main(["validate", topo, crowded, "--simulate", "--json"]) == 1
    entry, crowded_entry = json.loads(capsys.readouterr().out)["results"]
    # NPUs 0-3 share 0-47 and 4-7 share 48-95: 6 cores each, in logic-id order
    assert entry["devices"]["topology_cores"] == {str(r): f"{6 * (r % 4) + 48 * (r // 4)}-{6 * (r % 4) + 48 * (r // 4) + 5}" for r in range(8)}
    assert entry["devices"]["binding"] == [] and entry["warnings"] == 5
    # 4 x 24 cores do not fit 48: NPUs 2 and 3 get the whole affinity, and validate says ranks share cores
    assert crowded_entry["devices"]["topology_cores"]["2"] == "0-47"
    shared = [d for d in crowded_entry["diagnostics"] if "shares cores" in d["message"]]
    assert [(d["key"], d["line"], d["severity"]) for d in shared] == [("cores", 2, "warning")] * 4
    assert shared[0]["message"] == ("cores from topology: rank 2 (cores 0-47) shares cores with rank 0: "
                                    "24 cores per NPU do not fit its CPU affinity; lower cores.count")


def test_validate_reads_the_profile_devices_tool_on_this_host(tmp_path, capsys):
    tool = sim_npu_smi_tool(tmp_path)
    profile = local_profile(tmp_path, f"cores: topology\ndevices: {{backend: npu-smi, npu_smi: {tool}, timeout: 20s}}\n")
    assert main(["validate", profile]) == 0
    out = output_lines(capsys)
    assert out == [
        f"{profile}: info: cores from topology (127.0.0.1): rank 0: 0-11, rank 1: 12-23",
        f"{profile}: info: binding ok on 127.0.0.1: every rank's cores are within its NPU's CPU affinity "
        f"({tool} (profile devices:))",
        f"{profile}: profile 'local' (2 ranks on 1 machine): 0 errors, 0 warnings",
    ]
    # the devices command reads the same tool, and places the profile's ranks on their NPUs
    assert main(["devices", profile]) == 0
    text = capsys.readouterr().out
    assert "rank 0: NPU 0, cores 0-11, affinity 0-47" in text and "ok: every bound rank's cores" in text


def test_validate_only_checks_the_machine_that_is_this_host(tmp_path, capsys):
    elsewhere = local_profile(tmp_path, host="10.255.254.253")  # a string compare only: never contacted
    assert main(["validate", elsewhere, "--npu-smi", sim_npu_smi_tool(tmp_path)]) == 0
    assert output_lines(capsys)[0] == (
        f"{elsewhere}: note: binding not checked: this host is none of the profile's machines (10.255.254.253); "
        "run validate on the machine itself, or with --simulate")
    assert main(["validate", A3_16, "--simulate", "--json"]) == 1
    [entry] = json.loads(capsys.readouterr().out)["results"]
    assert entry["devices"]["machines"] == ["11.87.49.110"]  # under --simulate: machine 0 only
    assert any("stands for machine 0 (11.87.49.110)" in note for note in entry["devices"]["notes"])


# ------------------------------------------------------------------------------- cores from topology


def a3_report(affinity: bool = True, devices: int = 8) -> DeviceReport:
    return DeviceReport(
        backend="npu-smi",
        devices=[Device(logic_id=d, card=d // 2, chip=d % 2, cpu_affinity=f"{48 * (d // 4)}-{48 * (d // 4) + 47}" if affinity else None)
                 for d in range(devices)],
    )


def test_topology_cores_from_devices():
    profile = replace(guide_profile(), core_rule=CoreRule(kind="topology", count=12))
    assert needs_topology(profile)
    assert topology_cores_from_devices(profile, a3_report())[7] == "84-95"
    assert topology_cores_from_devices(replace(profile, core_rule=CoreRule(kind="topology", count=24)), a3_report())[1] == "24-47"
    # other rules, or explicit cores on every machine: nothing to compute
    assert topology_cores_from_devices(guide_profile(), None) is None
    explicit = replace(profile, machines=(Machine(host="11.87.49.110", devices=(0, 1), cores=("0-11", "12-23")),))
    assert not needs_topology(explicit) and topology_cores_from_devices(explicit, None) is None
    with pytest.raises(LaunchError, match=r"no devices could be read here \(dcmi module initialize failed.*run this on the machine"):
        topology_cores_from_devices(profile, unavailable("npu-smi", "dcmi module initialize failed. ret is -8005"))
    with pytest.raises(LaunchError, match="the devices were not read.*or give explicit cores"):
        topology_cores_from_devices(profile, None)
    with pytest.raises(LaunchError, match="prints no CPU Affinity column"):
        topology_cores_from_devices(profile, a3_report(affinity=False))
    with pytest.raises(LaunchError, match=r"no CPU affinity for NPU\(s\) 6, 7"):
        topology_cores_from_devices(profile, a3_report(devices=6))


def test_script_takes_cores_from_the_topology(tmp_path, capsys):
    topo = extending(tmp_path, "topo.yaml", "cores: {rule: topology, count: 6}\n")
    assert main(["script", topo, "--npu-smi", sim_npu_smi_tool(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert [f"nohup numactl -C {6 * (d % 4) + 48 * (d // 4)}-{6 * (d % 4) + 48 * (d // 4) + 5} " in text for d in range(8)] == [True] * 8
    assert "# cores: topology: each rank's cores come from the NPU CPU affinity that " in text

    # without topology data: a clear error, nothing rendered
    assert main(["script", topo, "--npu-smi", str(tmp_path / "missing-npu-smi")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert "needs each NPU's CPU affinity" in captured.err and "or give explicit cores" in captured.err


def test_device_tools_precedence(tmp_path):
    tool = sim_npu_smi_tool(tmp_path)
    profile = replace(guide_profile(), devices=DeviceSettings(backend="npu-smi", npu_smi=tool, timeout_s=3))
    assert device_tools(profile).npu_smi == tool and device_tools(profile).timeout_s == 3
    assert device_tools(profile, simulate=True).npu_smi[1:] == ("-m", "xllm_tui.sim.npu_smi")
    assert device_tools(profile, npu_smi="/x/npu-smi").missing == "/x/npu-smi not found or not executable"
    nvidia = replace(profile, devices=DeviceSettings(backend="nvidia-smi", nvidia_smi=tool))
    assert (device_tools(nvidia).npu_smi, device_tools(nvidia).nvidia_smi) == (None, tool)
    assert machines_here(guide_profile(), addresses={"11.87.49.110"}) == [0]
    assert machines_here(guide_profile(), addresses={"10.0.0.1"}) == []


# ---------------------------------------------------------------------------------- script --simulate


def test_simulated_script_never_touches_system_paths(tmp_path):
    deploy, home, system = tmp_path / "deploy", tmp_path / "home", tmp_path / "system"
    for directory in (deploy, home, system / "atb-log"):
        directory.mkdir(parents=True, exist_ok=True)  # conftest may have made home already
    (system / "atb-log" / "x.log").write_text("keep")
    (deploy / "core.1").write_text("core")
    (home / "dynamic_profiling_socket_1").write_text("stale")
    profile = replace(
        guide_profile(str(deploy / "profile.yaml")),
        pre_launch=(PreLaunchStep(name="clear-logs", remove=(f"{system}/atb-log/", "core.*")),
                    PreLaunchStep(name="touch", run=("touch", str(system / "ran")))),
        toggles=(Toggle(name="profiling", enabled=True, env=(("PROFILING_MODE", "dynamic"),),
                        remove=("~/dynamic_profiling_socket_*", f"{system}/sockets")),),
    )
    text = render_script(profile, simulate=build_simulate_mapping(profile))
    lines = text.splitlines()
    note = "  # --simulate: a system path, never touched by a simulated run"
    assert f"# rm -rf {system}/atb-log/{note}" in lines and f"# rm -rf {system}/sockets{note}" in lines
    assert "rm -rf core.*" in lines and "rm -rf ~/dynamic_profiling_socket_*" in lines
    assert f"# touch {system}/ran  # --simulate: run steps are skipped" in lines
    assert ("# source /usr/local/Ascend/ascend-toolkit/set_env.sh  # --simulate: a system script, not sourced by a "
            "simulated run") in lines
    assert not [line for line in lines if line.startswith(("source /usr", f"rm -rf {system}", "touch"))]
    # the real script (without --simulate) keeps them all
    real = render_script(profile).splitlines()
    assert f"rm -rf {system}/atb-log/" in real and "source /usr/local/Ascend/nnal/atb/set_env.sh" in real

    result = run_script(text, tmp_path, {"PATH": os.environ["PATH"], "HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert (system / "atb-log" / "x.log").read_text() == "keep" and not (system / "ran").exists()
    assert not (deploy / "core.1").exists() and not (home / "dynamic_profiling_socket_1").exists()
    argv, env = read_fake_launch(str(deploy / "logs" / "node_0.log"))
    assert "xllm_tui.sim.xllm" in argv and env["PROFILING_MODE"] == "dynamic"


def test_script_command_simulate_comments_the_guides_removals(capsys, tmp_path):
    assert main(["script", A3_8, "--simulate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "# rm -rf /root/atb/log/  # --simulate: a system path, never touched by a simulated run" in lines
    assert "rm -rf /root/atb/log/" not in lines and "rm -rf core.*" in lines
    assert f"source {REPO}/profiles/base/python-paths.sh" in lines  # the profile's own script stays
