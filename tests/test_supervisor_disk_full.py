"""A full disk under the run directory (the logs fill it: the most common way a night goes wrong). The journal's
failing write raised out of the group restart, which stopped the ranks and never relaunched them, and out of
`down`, which could then stop nothing. Events are now kept in memory and written when the disk has room again;
ranks relaunched onto the full disk, which cannot log their start-up, say so instead of `no milestone yet`."""

from __future__ import annotations

import errno
import os
import urllib.request

import pytest
from supervisor_helpers import process_alive, sim_deployment  # noqa: F401

from conftest import fill, wait_until
from xllm_tui.supervisor import state as state_module
from xllm_tui.supervisor.state import EventJournal, atomic_write_json, iter_events


def test_a_journal_that_cannot_write_keeps_its_events_and_writes_them_when_it_can(tmp_path):
    journal = EventJournal(str(tmp_path))
    journal.append("state", 0, to="ready")
    real = os.dup(journal._fd)
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC, as on a full disk
    try:
        os.dup2(full, journal._fd)
        for rank in (1, 2, 3):
            journal.append("state", rank, to="failed")  # never raises
        assert journal.write_error == "events.jsonl: No space left on device"
        assert "cannot write the event journal" in journal.news() and journal.news() is None  # said once
        assert [e["rank"] for e in journal.last(3)] == [1, 2, 3]  # clients still get them
        os.dup2(real, journal._fd)  # room again
        journal.append("state", 4, to="ready")
        assert journal.write_error is None and "written again" in journal.news()
    finally:
        os.close(full)
        os.close(real)
    assert [e["seq"] for e in iter_events(journal.path)] == [1, 2, 3, 4, 5]  # nothing lost, in order


def test_a_journal_backlog_is_bounded_by_whole_events(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "UNWRITTEN_LIMIT", 1000)
    journal = EventJournal(str(tmp_path))
    full = os.open("/dev/full", os.O_WRONLY)
    saved = os.dup(journal._fd)
    try:
        os.dup2(full, journal._fd)
        for i in range(40):
            journal.append("state", i, to="ready", reason="x" * 50)
        assert len(journal.unwritten) <= 1000 and journal.dropped > 0
        assert "cannot write" in journal.news()
        os.dup2(saved, journal._fd)
        journal.append("state", 99, to="ready")
    finally:
        os.close(full)
        os.close(saved)
    seqs = [e["seq"] for e in iter_events(journal.path)]
    assert seqs == list(range(41 - len(seqs) + 1, 42)) and journal.dropped == 41 - len(seqs)
    assert "events could not be kept" in journal.news()


def test_a_state_file_that_cannot_be_written_leaves_no_half_copy(tmp_path, monkeypatch):
    def no_room(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "run").mkdir()
    monkeypatch.setattr(state_module.os, "fsync", no_room)
    with pytest.raises(OSError):
        atomic_write_json(str(tmp_path / "run" / "state.json"), {"ranks": []})
    assert os.listdir(tmp_path / "run") == []


def test_a_rank_killed_on_a_full_disk_restarts_the_world_and_down_still_stops_it(small_disk, sim_deployment,
                                                                                  monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(small_disk))  # the run directory, and the simulated logs in it
    dep = sim_deployment(ranks=2)
    dep.start()
    first = dep.rank_pids(dep.wait_group("ready", 90))
    filler = fill(small_disk)
    os.kill(first[1], 9)
    snap = dep.wait_snapshot(lambda s: all(r["pid"] and r["pid"] not in first.values() for r in s["ranks"]), 60,
                             "the world relaunched")
    reasons = [e["reason"] for e in snap["events"] if e["kind"] == "supervisor"]
    assert any("cannot write the event journal (events.jsonl: No space left on device)" in r for r in reasons)
    wait_until(lambda: _health(dep.base_port), 60, what="rank 0 serving again")
    # Its ranks cannot log their start-up, so none is seen to get ready: the supervisor says why.
    snap = dep.wait_snapshot(lambda s: all("no room left on its log's filesystem" in r["reason"]
                                           for r in s["ranks"]), 60, "the ranks' reason")
    assert all(r["state"] in ("starting", "loading") for r in snap["ranks"])
    snap = dep.wait_snapshot(lambda s: any((e.get("disk") or {}).get("level") == "full" for e in s["events"]), 30,
                             "the disk said to be full")
    full = next(e for e in snap["events"] if (e.get("disk") or {}).get("level") == "full")
    assert os.path.dirname(dep.log_path(0)) in full["disk"]["paths"] and "no room left for the ranks' logs" in \
        full["reason"]
    assert [d["level"] for d in snap["supervisor"]["disks"]] == ["full"]
    status = dep.cli("status", dep.profile_path, "--simulate", check=True).stdout
    assert "disk full: " in status

    os.unlink(filler)
    dep.wait_snapshot(lambda s: any("room again for the ranks' logs" in e["reason"] for e in s["events"]) and
                      not any("no room" in r["reason"] for r in s["ranks"]), 60, "room again")
    dep.cli("restart", dep.profile_path, "--simulate", "--all", "-y", "--wait", timeout=120, check=True)
    seqs = [e["seq"] for e in iter_events(os.path.join(dep.run_dir, "events.jsonl"))]
    assert seqs == list(range(1, len(seqs) + 1))  # every event of the night, in order
    with open(os.path.join(dep.run_dir, "events.jsonl")) as f:
        assert "the event journal is written again" in f.read()
    pid = dep.supervisor_pid()
    dep.cli("down", dep.profile_path, "--simulate", check=True)
    wait_until(lambda: not process_alive(pid), 30, what="the supervisor's exit")
    assert dep.leftovers() == []


def test_down_on_a_full_disk_stops_everything(small_disk, sim_deployment, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(small_disk))
    dep = sim_deployment(ranks=2)
    dep.start()
    dep.wait_group("ready", 90)
    pid = dep.supervisor_pid()
    fill(small_disk)
    dep.request("restart", ranks="all")  # events enough to fill the journal file's last page too
    dep.wait_snapshot(lambda s: any("cannot write the event journal" in e["reason"] for e in s["events"]), 60,
                      "the journal failing")
    done = dep.cli("down", dep.profile_path, "--simulate")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: not process_alive(pid), 30, what="the supervisor's exit")
    assert dep.leftovers() == []


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False



def test_up_on_a_full_disk_says_why_the_supervisor_could_not_start(small_disk, sim_deployment, monkeypatch):
    """It died before it could log anything (its log is on the same disk): `up` said only that its log was empty."""
    monkeypatch.setenv("XDG_STATE_HOME", str(small_disk))
    dep = sim_deployment(ranks=2)
    filler = fill(small_disk)
    done = dep.cli("up", dep.profile_path, "--simulate")
    assert done.returncode != 0
    assert "no room left on the run directory's filesystem" in done.stderr and dep.run_dir in done.stderr
    assert dep.leftovers() == []
    os.unlink(filler)
    dep.cli("up", dep.profile_path, "--simulate", check=True)
    dep.wait_group("ready", 90)
    dep.cli("down", dep.profile_path, "--simulate", check=True)
    wait_until(lambda: dep.leftovers() == [], 30, what="everything stopped")


def test_a_full_disk_says_how_much_deleted_logs_still_hold_and_which_ranks(small_disk, sim_deployment, monkeypatch):
    """The operator clears logs/ to make room: nothing comes back while the ranks write on into the deleted
    files. The disk's event and status say so, with the ranks."""
    import shutil

    monkeypatch.setenv("XDG_STATE_HOME", str(small_disk))
    dep = sim_deployment(ranks=2)
    dep.start()
    dep.wait_group("ready", 90)
    shutil.rmtree(os.path.dirname(dep.log_path(0)))
    fill(small_disk)
    snap = dep.wait_snapshot(lambda s: any((e.get("disk") or {}).get("held_by") == [0, 1] for e in s["events"]),
                             60, "the deleted logs said")
    event = next(e for e in snap["events"] if (e.get("disk") or {}).get("held_by") == [0, 1])
    assert "in deleted logs that rank(s) 0, 1 still write" in event["reason"] and event["disk"]["held_bytes"] > 0
    status = dep.cli("status", dep.profile_path, "--simulate", check=True).stdout
    assert "in deleted logs that rank(s) 0, 1 still write" in status
