"""One world, one restart, end to end with real simulated ranks: every restart path ends in a world that serves
again (or says why not), and a successor supervisor reconciles with what really runs."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from conftest import wait_until
from supervisor_helpers import process_alive, sim_deployment  # noqa: F401

SLOW_RESTART = {"mode": "on-failure", "scope": "group", "backoff": {"initial": "60s", "max": "60s", "factor": 2},
                "max_restarts": 3, "window": "10m"}


def serving(snap: dict, n: int) -> bool:
    return snap["group"]["state"] == "ready" and len([r for r in snap["ranks"] if r["pid"]]) == n


def test_restart_failed_relaunches_the_whole_world_of_eight_and_it_serves_again(sim_deployment):
    # The policy's restart is a minute away: only the operator's `restart --failed` can bring the world back.
    dep = sim_deployment(ranks=8, restart=SLOW_RESTART)
    dep.start()
    first = dep.rank_pids(dep.wait_group("ready", 90))
    os.kill(first[3], signal.SIGKILL)
    dep.wait_snapshot(lambda s: s["group"]["state"] == "failed" and s["group"]["next_restart_at"], 30,
                      "group failed with a scheduled restart")

    done = dep.cli("restart", dep.profile_path, "--simulate", "--failed", "--wait", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rank 3 failed; xllm ranks cannot rejoin a running world: restarting all 8 ranks" in done.stdout
    snap = dep.wait_snapshot(lambda s: serving(s, 8), 90, "all eight ranks serving again")
    second = dep.rank_pids(snap)
    assert not set(second.values()) & set(first.values())
    assert "serving on port" in snap["group"]["reason"]  # rank 0 answers /health
    assert snap["group"]["restarts"] == 1 and snap["group"]["next_restart_at"] is None
    reasons = [e["reason"] for e in dep.events_file() if e["kind"] == "group"]
    assert any("scheduled in" in r and "is performed now by `xllm-tui restart`" in r for r in reasons), reasons
    assert not any("cancelled" in r for r in reasons)
    assert all(not process_alive(pid) for pid in first.values())


@pytest.mark.parametrize("followed", [False, True], ids=["nobody-reading", "a-tui-following-a-log"])
def test_a_world_restarted_after_its_logs_directory_was_cleared_serves_again(sim_deployment, followed):
    """The operator clears logs/ and restarts: the launch makes the directory again, and the supervisor must
    read the new logs. Its inotify watch was gone with the old directory (or, with a TUI holding a deleted log
    open, stayed on it), so the new ranks' milestones went unread: `restart --wait` waited forever."""
    import contextlib
    import shutil

    dep = sim_deployment(ranks=2)
    dep.start()
    first = dep.rank_pids(dep.wait_group("ready"))
    logs = os.path.dirname(dep.log_path(0))
    with open(dep.log_path(0)) if followed else contextlib.nullcontext() as follower:
        shutil.rmtree(logs)
        done = dep.cli("restart", dep.profile_path, "--simulate", "--all", "--yes", "--wait", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        snap = dep.wait_snapshot(lambda s: serving(s, 2), 60, "the world serving again")
        assert not set(dep.rank_pids(snap).values()) & set(first.values())
        if follower:
            assert follower.read()  # the old log, still readable where the TUI had it open
    assert os.path.getsize(dep.log_path(0)) > 0


def test_a_world_whose_logs_directory_is_cleared_while_it_loads_still_gets_ready(sim_deployment):
    """logs/ cleared while the ranks load: they go on writing their (deleted) logs, and the supervisor reads them
    through each rank's stdout. It read nothing more before: the world stayed `loading` with no limit."""
    import shutil

    dep = sim_deployment(ranks=2, time_scale=0.2)
    dep.start()
    snap = dep.wait_snapshot(lambda s: any(r["state"] == "loading" for r in s["ranks"]), 60, "a rank loading")
    pids = dep.rank_pids(snap)
    shutil.rmtree(os.path.dirname(dep.log_path(0)))
    snap = dep.wait_snapshot(lambda s: serving(s, 2), 90, "the world serving")
    assert dep.rank_pids(snap) == pids  # no relaunch was needed
    assert not os.path.exists(dep.log_path(0))
    # What the ranks still write is read the same way by `logs` and by log_read (machine 0's, for a remote rank).
    shown = dep.cli("logs", dep.profile_path, "--simulate", "--rank", "1", "-n", "5", check=True)
    assert len(shown.stdout.splitlines()) == 5 and f"/proc/{pids[1]}/fd/1" in shown.stderr
    part = dep.request("log_read", rank=1, lines=5)
    assert not part.get("missing") and part["data"].count("\n") == 5


def test_ranks_writing_deleted_logs_are_read_after_logs_is_made_again(sim_deployment):
    """logs/ cleared while the ranks load, then made again (as a rank's relaunch does): the new directory's watch
    said nothing was missing, the ranks' writes into their deleted logs woke nothing, and they stayed loading."""
    import shutil

    dep = sim_deployment(ranks=2, time_scale=0.2)
    dep.start()
    snap = dep.wait_snapshot(lambda s: any(r["state"] == "loading" for r in s["ranks"]), 60, "a rank loading")
    pids = dep.rank_pids(snap)
    logs = os.path.dirname(dep.log_path(0))
    shutil.rmtree(logs)
    os.mkdir(logs)
    snap = dep.wait_snapshot(lambda s: serving(s, 2), 90, "the world serving")
    assert dep.rank_pids(snap) == pids


def test_restarting_a_healthy_rank_asks_and_then_restarts_the_world(sim_deployment):
    dep = sim_deployment(ranks=4)
    dep.start()
    first = dep.rank_pids(dep.wait_group("ready"))

    refused = dep.cli("restart", dep.profile_path, "--simulate", "--ranks", "2")
    assert refused.returncode == 2
    assert "cannot rejoin the running world" in refused.stderr and "--yes" in refused.stderr
    assert dep.rank_pids() == first  # nothing happened

    done = dep.cli("restart", dep.profile_path, "--simulate", "--ranks", "2", "--yes", "--wait", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restarting all 4 ranks" in done.stdout
    snap = dep.wait_snapshot(lambda s: serving(s, 4), 60, "the world serving again")
    assert not set(dep.rank_pids(snap).values()) & set(first.values())

    # --only keeps the narrow action for those who insist; the group then says plainly that it is broken.
    before = dep.rank_pids(snap)
    narrow = dep.cli("restart", dep.profile_path, "--simulate", "--ranks", "2", "--only")
    assert narrow.returncode in (0, 1), narrow.stderr
    assert "restart: rank(s) 2\n" in narrow.stdout or "restart: rank(s) 2." in narrow.stdout
    after = dep.wait_snapshot(lambda s: s["ranks"][2]["pid"] not in (None, before[2]), 30, "rank 2 relaunched")
    assert {n: p for n, p in dep.rank_pids(after).items() if n != 2} == {n: p for n, p in before.items() if n != 2}


def test_a_successor_without_records_finds_the_ranks_by_marker_and_restarts_a_broken_world(sim_deployment):
    dep = sim_deployment(ranks=4)
    dep.start()
    first = dep.rank_pids(dep.wait_group("ready"))
    dep.kill_supervisor(signal.SIGKILL)
    with open(os.path.join(dep.run_dir, "state.json"), "w") as f:
        f.write('{"adoption": {"0": {"pid": ')  # truncated mid-write

    # All ranks still run: adopted by marker, nothing launched over them.
    seen = dep.events_file()[-1]["seq"]
    dep.start()
    snap = dep.wait_group("ready")
    assert dep.rank_pids(snap) == first
    event = dep.wait_event(lambda e: e.get("reconcile") and e["seq"] > seen, what="reconciliation event")
    assert sorted(event["by_marker"]) == [0, 1, 2, 3] and event["missing"] == []
    assert any("state.json is unreadable" in e["reason"] for e in dep.events_file())

    # Again without records, and rank 3 dies while nobody watches: three ranks are not a world.
    dep.kill_supervisor(signal.SIGKILL)
    os.unlink(os.path.join(dep.run_dir, "state.json"))
    os.killpg(first[3], signal.SIGKILL)
    wait_until(lambda: not process_alive(first[3]), 10, what="rank 3 gone")
    seen = dep.events_file()[-1]["seq"]
    dep.start()
    event = dep.wait_event(lambda e: e.get("reconcile") and e["seq"] > seen, what="reconciliation with a gap")
    assert event["missing"] == [3] and sorted(event["adopted"]) == [0, 1, 2]
    assert "the world cannot serve without them" in event["reason"]
    snap = dep.wait_snapshot(lambda s: serving(s, 4) and s["group"]["restarts"] >= 1, 90, "a whole new world")
    assert not set(dep.rank_pids(snap).values()) & set(first.values())
    assert snap["group"]["first_failure"]["rank"] == 3 and snap["group"]["first_failure"]["cause"] == "missing"


def test_no_world_is_launched_over_a_port_another_process_holds(sim_deployment):
    dep = sim_deployment(ranks=2)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", dep.base_port))
    holder.listen()
    try:
        dep.start()
        snap = dep.wait_snapshot(lambda s: s["group"]["state"] == "failed", 30, "group failed before launch")
        assert f"port {dep.base_port} is held by pid {os.getpid()}" in snap["ranks"][0]["reason"]
        assert all(r["pid"] is None and r["generation"] == 0 for r in snap["ranks"])
        assert any("not launching a world over it" in e["reason"] for e in dep.events_file())
    finally:
        holder.close()


def test_a_frozen_supervisor_is_reported_as_frozen_not_absent(sim_deployment):
    dep = sim_deployment(ranks=2)
    dep.start()
    dep.wait_group("ready")
    pid = dep.supervisor_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        done = dep.cli("status", dep.profile_path, "--simulate", timeout=60)
        assert done.returncode == 5, done.stdout + done.stderr
        assert f"pid {pid}" in done.stderr and "does not answer" in done.stderr and "SIGSTOP" in done.stderr
        assert "no supervisor is running" not in done.stderr
        up = dep.cli("up", dep.profile_path, "--simulate", timeout=60)
        assert up.returncode == 4 and f"pid {pid}" in up.stderr  # never a second supervisor
    finally:
        os.kill(pid, signal.SIGCONT)
    assert dep.cli("status", dep.profile_path, "--simulate").returncode == 0
