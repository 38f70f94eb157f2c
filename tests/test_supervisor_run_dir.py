"""The run directory removed under a running supervisor (an operator's `rm -rf` of the state directory): the
supervisor makes it again, or leaves the ranks to a supervisor that got there first. Before, `status` said no
supervisor ran and a second `up` adopted the same ranks: two supervisors, each ready to restart them."""

from __future__ import annotations

import json
import os
import shutil
import signal

from supervisor_helpers import process_alive, sim_deployment  # noqa: F401

from conftest import wait_until
from xllm_tui.supervisor.state import EventJournal, RunDirLock


def test_a_removed_run_dir_is_made_again_and_a_second_up_still_refused(sim_deployment):
    dep = sim_deployment(ranks=2, toggles={"determinism": {"enabled": False, "env": {"LCCL_DETERMINISTIC": 1}}})
    dep.cli("up", dep.profile_path, "--simulate", check=True)  # detached: its output goes to supervisor.log
    snap = dep.wait_group("ready", timeout=90)
    pid, pids = snap["supervisor"]["pid"], dep.rank_pids(snap)
    dep.request("toggle", group="determinism", on=True)
    shutil.rmtree(dep.run_dir)

    hello = wait_until(dep.answers, 20, what="the socket made again")
    assert hello["pid"] == pid
    restored = dep.wait_event(lambda e: e.get("run_dir_restored"), what="the event in a new journal")
    assert "made again" in restored["reason"]
    kinds = [e["reason"] for e in dep.events_file() if e["kind"] == "supervisor"]
    assert any(r.startswith(f"supervisor started (pid {pid})") for r in kinds)  # the kept events came along
    assert dep.rank_pids() == pids  # the ranks ran on, untouched
    wait_until(lambda: os.path.exists(os.path.join(dep.run_dir, "state.json")), 10, what="state.json")
    with open(os.path.join(dep.run_dir, "toggles.json")) as f:
        assert json.load(f) == {"determinism": True}
    wait_until(lambda: "made again" in open(os.path.join(dep.run_dir, "supervisor.log")).read(), 10,
               what="the supervisor's own log going on in a new file")
    with open(os.path.join(dep.run_dir, "supervisor.lock")) as f:
        assert f.read().strip() == str(pid)

    again = dep.cli("up", dep.profile_path, "--simulate")
    assert again.returncode != 0 and "already running" in again.stderr

    # And the world still restarts and serves.
    dep.cli("restart", dep.profile_path, "--simulate", "--all", "-y", "--wait", timeout=120, check=True)
    snap = dep.wait_group("ready", timeout=90)
    assert set(dep.rank_pids(snap).values()).isdisjoint(pids.values())
    dep.cli("down", dep.profile_path, "--simulate", check=True)
    wait_until(lambda: not process_alive(pid), 30, what="the supervisor's exit")
    assert dep.leftovers() == []


def test_a_supervisor_frozen_while_another_took_the_run_dir_leaves_the_ranks_to_it(sim_deployment):
    """Frozen (SIGSTOP) while its run directory was removed and a second `up` started a supervisor that adopted
    the ranks: thawed, the first sees the run directory held and exits, leaving the ranks and the new
    supervisor's socket and state alone."""
    dep = sim_deployment(ranks=2)
    dep.cli("up", dep.profile_path, "--simulate", check=True)
    snap = dep.wait_group("ready", timeout=90)
    first, pids = snap["supervisor"]["pid"], dep.rank_pids(snap)
    os.kill(first, signal.SIGSTOP)
    try:
        shutil.rmtree(dep.run_dir)
        dep.cli("up", dep.profile_path, "--simulate", check=True)
        second = wait_until(lambda: (dep.answers() or {}).get("pid"), 20, what="the second supervisor")
        assert second != first
        dep.wait_snapshot(lambda s: dep.rank_pids(s) == pids, 30, "the ranks adopted by the second")
    finally:
        os.kill(first, signal.SIGCONT)
    wait_until(lambda: not process_alive(first), 20, what="the first supervisor's exit")
    assert dep.answers()["pid"] == second  # its socket was not removed
    assert dep.rank_pids() == pids and all(process_alive(p) for p in pids.values())
    with open(os.path.join(dep.run_dir, "state.json")) as f:
        assert json.load(f)["supervisor"]["pid"] == second
    dep.cli("down", dep.profile_path, "--simulate", check=True)
    wait_until(lambda: not process_alive(second), 30, what="the second supervisor's exit")
    assert dep.leftovers() == []


def test_the_lock_says_when_its_file_is_gone_or_moved(tmp_path):
    run_dir = str(tmp_path / "run")
    lock = RunDirLock(run_dir)
    lock.acquire()
    try:
        assert not lock.lost()
        os.rename(run_dir, str(tmp_path / "moved"))
        assert lock.lost()
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "supervisor.lock"), "w") as f:
            f.write("1\n")  # another file at the path
        assert lock.lost()
    finally:
        lock.release()


def test_a_journal_reopened_starts_with_the_events_it_kept(tmp_path):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    journal = EventJournal(run_dir, keep_in_memory=3)
    for i in range(5):
        journal.append("state", i, to="ready")
    shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    assert journal.reopen() == 3
    journal.append("supervisor", reason="after")
    with open(os.path.join(run_dir, "events.jsonl")) as f:
        seqs = [json.loads(line)["seq"] for line in f]
    assert seqs == [3, 4, 5, 6]
