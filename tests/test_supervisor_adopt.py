"""The supervisor dies (SIGKILL): ranks keep running, the next supervisor re-adopts them by identity and
still notices an adopted rank's exit at once."""

from __future__ import annotations

import json
import os
import signal

from supervisor_helpers import process_alive, sim_deployment  # noqa: F401

from conftest import wait_until


def test_sigkill_of_the_supervisor_then_adoption_then_a_later_kill(sim_deployment):
    dep = sim_deployment(ranks=3)
    dep.start()
    before = dep.rank_pids(dep.wait_group("ready"))
    old_supervisor = dep.supervisor_pid()
    dep.kill_supervisor(signal.SIGKILL)

    # Ranks live in their own sessions: the supervisor's death does not touch them.
    assert all(process_alive(pid) for pid in before.values())
    assert not os.path.exists(os.path.join(dep.run_dir, "supervisor.sock")) or dep.answers() is None

    dep.start()
    snap = dep.wait_group("ready")
    assert dep.supervisor_pid() != old_supervisor
    assert dep.rank_pids(snap) == before  # the same processes, not relaunched
    assert all(r["adopted"] for r in snap["ranks"])
    adopted = [e for e in dep.events_file() if e["kind"] == "supervisor" and e.get("adopted")]
    assert adopted and sorted(adopted[-1]["adopted"]) == [0, 1, 2]
    assert all(r["generation"] == 1 for r in snap["ranks"])  # history carried over from state.json

    # An adopted rank is not our child, yet its death is noticed at once (pidfd), status unknown.
    os.kill(before[1], signal.SIGKILL)
    ev = dep.wait_event(lambda e: e["kind"] == "group" and e.get("first_failure"), 10, "first failure")
    assert ev["first_failure"]["rank"] == 1 and ev["first_failure"]["cause"] == "unknown"
    failed = dep.wait_event(lambda e: e["kind"] == "state" and e["rank"] == 1 and e.get("to") == "failed")
    assert "status unknown" in failed["reason"]
    snap = dep.wait_snapshot(lambda s: s["group"]["state"] == "ready" and s["group"]["restarts"] == 1, 60,
                             "group restarted")
    assert not set(dep.rank_pids(snap).values()) & set(before.values())
    rank1 = next(r for r in snap["ranks"] if r["rank"] == 1)
    assert rank1["last_exit"]["status_known"] is False and rank1["last_exit"]["code"] is None


def test_a_recycled_pid_is_never_adopted(sim_deployment):
    """state.json names a pid that is alive but is not the rank (other create time / argv): not adopted."""
    dep = sim_deployment(ranks=2)
    dep.start()
    dep.wait_group("ready")
    dep.shutdown()
    state_path = os.path.join(dep.run_dir, "state.json")
    state = json.load(open(state_path))
    # Point rank 0's record at a live process that is not a rank: this test process.
    state["adoption"]["0"].update(pid=os.getpid(), create_time=1.0, argv_hash="0" * 16, want_running=True)
    with open(state_path, "w") as f:
        json.dump(state, f)
    dep.start()
    snap = dep.wait_group("ready")
    pids = dep.rank_pids(snap)
    assert os.getpid() not in pids.values()
    assert not any(r["adopted"] for r in snap["ranks"])
    assert not [e for e in dep.events_file() if e.get("adopted")]
    wait_until(lambda: process_alive(os.getpid()), 1)


def test_down_keep_ranks_then_up_adopts_and_events_json(sim_deployment):
    dep = sim_deployment(ranks=2)
    dep.cli("up", dep.profile_path, "--simulate", check=True)
    before = dep.rank_pids(dep.wait_group("ready"))
    out = dep.cli("down", dep.profile_path, "--simulate", "--keep-ranks", check=True).stdout
    assert "stopping the supervisor" in out
    assert dep.answers() is None and all(process_alive(pid) for pid in before.values())
    dep.cli("up", dep.profile_path, "--simulate", check=True)
    snap = dep.wait_group("ready")
    assert dep.rank_pids(snap) == before
    lines = dep.cli("events", dep.profile_path, "--simulate", "--json", "-n", "0", check=True).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert any("ranks left running" in e.get("reason", "") for e in events)
    assert any(e.get("adopted") == [0, 1] for e in events)


def test_a_successor_started_without_the_port_offset_keeps_the_runs_ports(sim_deployment, monkeypatch):
    from conftest import _port_is_free, free_port_block
    from supervisor_helpers import TAG_VAR
    from xllm_tui.client import SupervisorClient, SupervisorUnavailable, ensure_supervisor

    dep = sim_deployment(ranks=2)
    # An offset under which every shifted port (the ranks' and the master's) is free.
    while True:
        offset = free_port_block(2) - dep.base_port
        master = dep.master_port + offset  # the master port sits apart from the block: it may shift out of range
        if 1024 <= master <= 65535 and _port_is_free("127.0.0.1", master):
            break
    dep.start("--port-offset", str(offset))
    before = dep.rank_pids(dep.wait_group("ready"))
    assert dep.snapshot()["profile"]["port_offset"] == offset
    dep.kill_supervisor(signal.SIGKILL)
    wait_until(lambda: dep.answers() is None, 10, what="supervisor gone")

    # Whoever asks next is told which profile to start, from the run dir's record.
    try:
        SupervisorClient(dep.socket).snapshot()
        raise AssertionError("a dead supervisor answered")
    except SupervisorUnavailable as e:
        assert f"xllm-tui up {dep.profile_path} --simulate" in str(e)

    # The TUI's "start a new supervisor" passes no offset: the successor must still find the ranks.
    for name, value in dep.env().items():
        if name in (TAG_VAR, "PYTHONPATH"):
            monkeypatch.setenv(name, value)
    ensure_supervisor(dep.profile_path, simulate=True, run_dir=dep.run_dir)
    snap = dep.wait_group("ready")
    assert snap["profile"]["port_offset"] == offset
    assert dep.rank_pids(snap) == before and all(r["adopted"] for r in snap["ranks"])


def test_adopted_ranks_log_tails_are_read_off_the_event_loop(tmp_path, monkeypatch):
    """Up to 16 MiB of each adopted rank's log is read for its milestones: in a worker thread, so a cold disk
    never holds up the socket's clients; each rank is then taken over with its own fed tracker."""
    import asyncio
    import threading
    from types import SimpleNamespace

    from xllm_tui.logs import intake
    from xllm_tui.supervisor.probes import Milestones
    from xllm_tui.supervisor.reconcile import Reconciler

    fed_in: list[str] = []
    real_feed = intake.LogIntake.feed
    monkeypatch.setattr(intake.LogIntake, "feed",
                        lambda self, sink, *a: fed_in.append(threading.current_thread().name) or real_feed(self, sink, *a))
    slots = []
    for n in range(2):
        log = tmp_path / f"node_{n}.log"
        log.write_text(f"I1130 10:00:00.000000 1 x.cpp:1] Worker#{n} connect to 127.0.0.1:1 success\n")
        slots.append(SimpleNamespace(rank=n, plan=SimpleNamespace(log_path=str(log))))
    taken = []
    stub = SimpleNamespace(new_milestones=lambda r: Milestones("worker", None),
                           take_over=lambda r, proc, rec, sink, reader: taken.append((r.rank, sink, reader)))

    async def adopt() -> str:
        await Reconciler.take_over_all(stub, [(slot, SimpleNamespace(pid=None), {}) for slot in slots])
        return threading.current_thread().name

    loop_thread = asyncio.run(adopt())
    assert len(fed_in) == 2 and loop_thread not in fed_in
    assert [rank for rank, _, _ in taken] == [0, 1]
    assert all(sink.tracker.connected and reader.offset > 0 for _, sink, reader in taken)
