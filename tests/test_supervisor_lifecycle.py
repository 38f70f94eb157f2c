"""The headless lifecycle as a user runs it: up, status (text and --json), a second up, down."""

from __future__ import annotations

import json
import os
import stat
import urllib.request

import psutil
from supervisor_helpers import process_alive, sim_deployment  # noqa: F401

from conftest import wait_until

RANK_KEYS = {
    "rank", "role", "machine", "host", "device", "cores", "port", "pid", "state", "reason", "since", "phase",
    "progress", "started_at", "uptime_s", "restarts", "generation", "last_exit", "cpu_pct", "rss_bytes", "threads",
    "last_line", "log_path", "relaunch_pending",
}


def fd_target(pid: int, fd: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:  # closed meanwhile
        return ""


def test_eight_ranks_ready_then_status_second_up_and_down(sim_deployment):
    dep = sim_deployment(ranks=8)
    up = dep.cli("up", dep.profile_path, "--simulate", check=True)
    assert "run dir " + dep.run_dir in up.stdout
    # --simulate says what it changed: the binary, and the profile's cores folded onto this machine's.
    assert "--simulate maps the profile onto this machine:" in up.stdout
    assert "binary -> " in up.stdout and "-m xllm_tui.sim.xllm" in up.stdout
    assert "cores 7 -> " in up.stdout  # rank 7 asks for core 7 (one core per device)
    snap = dep.wait_group("ready", timeout=90)
    assert any(line.startswith("binary -> ") for line in snap["profile"]["simulate_mapping"])

    # Every rank ready by its role's evidence; the group by rank 0's /health.
    assert [r["state"] for r in snap["ranks"]] == ["ready"] * 8
    assert snap["group"]["reason"].startswith(f"rank 0 serving on port {dep.base_port}")
    with urllib.request.urlopen(f"http://127.0.0.1:{dep.base_port}/health", timeout=5) as response:
        assert response.status == 200
    pids = dep.rank_pids(snap)
    assert len(set(pids.values())) == 8
    for rank, pid in pids.items():
        proc = psutil.Process(pid)
        # Own session and process group: the rank outlives the supervisor and its terminal.
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid
        assert f"--node_rank={rank}" in proc.cmdline()
        # stdout/stderr straight into the rank's log file, never a pipe.
        assert os.readlink(f"/proc/{pid}/fd/1") == dep.log_path(rank)
        assert os.readlink(f"/proc/{pid}/fd/2") == dep.log_path(rank)
        # Nothing of the supervisor's leaks into a rank (every descriptor it opens is close-on-exec).
        targets = {fd_target(pid, fd) for fd in os.listdir(f"/proc/{pid}/fd")}
        leaked = {t for t in targets if t.startswith(dep.run_dir) and t != dep.log_path(rank)}
        assert not leaked, leaked
    assert stat.S_IMODE(os.stat(dep.socket).st_mode) == 0o600
    # The supervisor speaks no TLS and hashes with CPython's own sha256: OpenSSL (3 MiB resident) is not loaded.
    with open(f"/proc/{dep.supervisor_pid()}/maps") as f:
        maps = f.read()
    assert "libcrypto" not in maps and "libssl" not in maps

    # status: the table a human reads
    text = dep.cli("status", dep.profile_path, "--simulate", check=True).stdout
    assert "group: ready" in text
    for rank, pid in pids.items():
        assert any(line.split()[:1] == [str(rank)] and str(pid) in line and " ready " in line
                   for line in text.splitlines()), text
    assert "toggles:" not in text or "determinism" not in text  # this profile has no toggles

    # status --json: the documented, stable layout
    doc = json.loads(dep.cli("status", dep.profile_path, "--simulate", "--json", check=True).stdout)
    assert doc["protocol"] == 1
    assert {"protocol", "time", "profile", "supervisor", "group", "ranks", "toggles", "events"} <= set(doc)
    assert doc["profile"]["name"] == dep.name and doc["profile"]["simulate"] is True
    assert doc["supervisor"]["run_dir"] == dep.run_dir
    assert {"state", "reason", "restarts", "next_restart_at", "first_failure"} <= set(doc["group"])
    for r in doc["ranks"]:
        assert RANK_KEYS <= set(r), RANK_KEYS - set(r)
    assert doc["ranks"][3]["device"] == 3 and doc["ranks"][3]["role"] == "worker"
    assert doc["ranks"][0]["port"] == dep.base_port and doc["ranks"][0]["role"] == "master"
    assert all(e["seq"] and e["ts"] and e["kind"] for e in doc["events"])

    # A second `up` (and a second supervisor) on the same run dir refuses and names the running one.
    sup_pid = dep.supervisor_pid()
    again = dep.cli("up", dep.profile_path, "--simulate")
    assert again.returncode == 4
    assert f"pid {sup_pid}" in again.stderr and "already running" in again.stderr
    proc = dep.start(wait=False)
    assert proc.wait(30) == 4
    assert f"pid {sup_pid}" in dep.supervisor_output()
    assert dep.rank_pids() == pids  # nothing disturbed

    down = dep.cli("down", dep.profile_path, "--simulate", check=True)
    assert "done" in down.stdout
    assert not process_alive(sup_pid)
    assert dep.leftovers() == []
    assert all(not process_alive(pid) for pid in pids.values())
    assert not os.path.exists(dep.socket)

    # Post-mortem: logs and events are files; reading them needs no supervisor.
    tail = dep.cli("logs", dep.profile_path, "--simulate", "--rank", "7", "-n", "2", check=True).stdout
    assert len(tail.splitlines()) == 2 and f" {pids[7]} " in tail
    events = dep.cli("events", dep.profile_path, "--simulate", check=True).stdout
    assert "shutdown requested by `xllm-tui down`" in events


def test_commands_without_a_supervisor_say_so(sim_deployment):
    dep = sim_deployment(ranks=2)
    for args in (["status"], ["status", "--json"], ["stop", "--all"], ["restart", "--failed"],
                 ["toggle", "x", "on"], ["down"], ["events", "-f"]):
        done = dep.cli(args[0], dep.profile_path, "--simulate", *args[1:])
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert f"no supervisor is running for profile {dep.name}" in done.stderr
        assert dep.run_dir in done.stderr and f"xllm-tui up {dep.profile_path} --simulate" in done.stderr
    assert dep.leftovers() == []


def test_bad_profile_gives_diagnostics_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbinary: /b\nmodel: /m\nmachines: []\nbogus_key: 1\n")
    from supervisor_helpers import SimDeployment

    dep = SimDeployment(tmp_path, 1)
    run_dir = tmp_path / "run"
    for args in (["up", str(bad), "--simulate"], ["status", str(bad)],
                 ["supervise", str(bad), "--simulate", "--run-dir", str(run_dir)]):  # as `up` starts it
        done = dep.cli(*args)
        assert done.returncode == 2, done
        assert "bad.yaml:" in done.stderr and "Traceback" not in done.stderr
    wait_until(lambda: dep.leftovers() == [], 5, what="no process")
