"""`xllm-tui systemd PROFILE`: the unit's text, and the foreground supervisor it runs, for real: ranks come up
(after_reboot steps run when the machine booted since the last launch), SIGTERM stops everything."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

import psutil

from conftest import wait_until
from supervisor_helpers import sim_deployment  # noqa: F401


def _unit(dep, *extra: str) -> tuple[str, subprocess.CompletedProcess]:
    done = dep.cli("systemd", dep.profile_path, "--simulate", *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout, done


def _directive(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


REBOOT_STEP = {"name": "after-reboot-marker", "when": "after_reboot", "remove": ["stale-after-reboot.txt"]}


def test_unit_text(sim_deployment, tmp_path):  # noqa: F811
    dep = sim_deployment(ranks=2, pre_launch=[REBOOT_STEP, {"name": "tidy", "remove": ["core.*"]}])
    text, _ = _unit(dep)
    (exec_start,) = _directive(text, "ExecStart")
    argv = shlex.split(exec_start)
    assert argv[:3] == [sys.executable, "-m", "xllm_tui"]
    assert argv[3:] == ["up", dep.profile_path, "--foreground", "--run-dir", dep.run_dir, "--simulate"]
    assert "#   after-reboot-marker (after_reboot): remove stale-after-reboot.txt" in text
    assert "#   tidy (every launch): remove core.*" in text
    assert _directive(text, "KillMode") == ["mixed"]  # SIGTERM to the supervisor only: it stops the ranks
    assert _directive(text, "Restart") == ["on-failure"]
    assert _directive(text, "RestartPreventExitStatus") == ["2 4"]
    assert _directive(text, "TimeoutStopSec") == ["32"]  # the profile's 2 s grace + 30
    assert _directive(text, "WantedBy") == ["multi-user.target"]
    assert any(v.startswith('"PATH=') for v in _directive(text, "Environment"))
    machine_text, _ = _unit(dep, "--machine", "127.0.0.1")
    machine_argv = shlex.split(_directive(machine_text, "ExecStart")[0])
    assert machine_argv[machine_argv.index("--machine") + 1] == "127.0.0.1"
    user_text, _ = _unit(dep, "--user")
    assert _directive(user_text, "WantedBy") == ["default.target"]
    if shutil.which("systemd-analyze"):
        path = tmp_path / "xllm-tui-check.service"
        path.write_text(text)
        verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr


def test_install_writes_the_unit_file(sim_deployment, tmp_path):  # noqa: F811
    dep = sim_deployment(ranks=2)
    done = dep.cli("systemd", dep.profile_path, "--simulate", "--install", "--unit-dir", str(tmp_path / "units"))
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "units" / f"xllm-tui-{dep.name}-sim.service"
    assert unit.read_text() == _unit(dep)[0]
    assert f"systemctl enable xllm-tui-{dep.name}-sim.service" in done.stdout


def test_foreground_supervisor_from_the_unit(sim_deployment):  # noqa: F811
    dep = sim_deployment(ranks=2, pre_launch=[REBOOT_STEP])
    marker = dep.workdir / "stale-after-reboot.txt"
    marker.write_text("left from before the reboot")
    # The last launch happened before this boot: the machine has rebooted since.
    os.makedirs(dep.run_dir, exist_ok=True)
    with open(os.path.join(dep.run_dir, "state.json"), "w") as f:
        json.dump({"last_launch_at": psutil.boot_time() - 60}, f)
    text, _ = _unit(dep)
    argv = shlex.split(_directive(text, "ExecStart")[0])
    service = subprocess.Popen(argv, env=dep.env(), cwd=_directive(text, "WorkingDirectory")[0],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    dep.supervisors.append(service)  # teardown kills it if the test fails half-way
    try:
        snap = dep.wait_snapshot(lambda s: s["supervisor"]["pid"] == service.pid
                                 and all(r["state"] == "ready" for r in s["ranks"]), 120, "ranks ready")
        rank_pids = [r["pid"] for r in snap["ranks"]]
        assert not marker.exists()
        assert any(e["kind"] == "prelaunch" and e.get("step") == "after-reboot-marker" and str(marker) in e["removed"]
                   for e in dep.events_file())
        # A second one (systemd restarting, or `up` by hand) is refused with the status systemd will not retry.
        second = subprocess.run(argv, env=dep.env(), capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert second.returncode == 4, second.stdout + second.stderr
        os.kill(service.pid, signal.SIGTERM)  # what `systemctl stop` sends (KillMode=mixed: the main process)
        assert service.wait(60) == 0, service.stdout.read().decode(errors="replace")[-3000:]
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait(10)
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in rank_pids), 30, what="ranks gone")
    assert not dep.leftovers()


def test_unit_refuses_a_broken_profile(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text("name: bad\nbinary: [1]\n")
    done = subprocess.run([sys.executable, "-m", "xllm_tui", "systemd", str(profile)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    assert done.returncode == 2 and "binary" in done.stderr
