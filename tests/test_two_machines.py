"""Two machines, one world, for real: machine 0's supervisor reaches machine 1 through a real OpenSSH server on
loopback (tests/sshd_harness.py); machine 1 is 127.0.0.2 with its own state directory and run directory, running
this checkout's `python -m xllm_tui remote-attach`. Every process carries the deployment's tag (the ssh client
config passes it on), so the fixture's teardown fails the test if anything is left on either machine."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from conftest import wait_until
from sshd_harness import ssh_machines  # noqa: F401
from supervisor_helpers import process_alive, read_environ, sim_deployment  # noqa: F401
from test_tui_live import make_app, until
from xllm_tui.client import SupervisorClient, socket_path

MACHINE1 = "127.0.0.2"


class TwoMachines:
    def __init__(self, sim_deployment, ssh_machines, tmp_path, monkeypatch, per_machine: int = 2,
                 rank_table: bool = False):
        self.dep = sim_deployment(ranks=2 * per_machine, name="twomachines")
        self.m1_state = tmp_path / "machine1-state"
        self.sshd = ssh_machines([MACHINE1], env_for={MACHINE1: {"XDG_STATE_HOME": str(self.m1_state),
                                                                   "XLLM_TUI_TEST_TAG": self.dep.tag}})
        last = per_machine - 1
        devices = f"0-{last}" if per_machine > 1 else [0]
        self.dep.profile_data["machines"] = [
            {"host": "127.0.0.1", "devices": devices},
            {"host": MACHINE1, "devices": devices,
             "ssh": {"host": MACHINE1, "user": "root", "port": self.sshd.port, "identity": self.sshd.user_key,
                     "command": [sys.executable, "-m", "xllm_tui"]}},
        ]
        if rank_table:
            self.dep.profile_data["rank_tablefile"] = "hccl_2nodes.json"
            for index, machine in enumerate(self.dep.profile_data["machines"]):
                machine["device_ips"] = [f"10.{index}.0.{d}" for d in range(per_machine)]
        self.dep.write_profile()
        monkeypatch.setenv("XLLM_TUI_SSH_CONFIG", self.sshd.client_config)
        self.cache = tmp_path / "cache"
        monkeypatch.setenv("XDG_CACHE_HOME", str(self.cache))  # the TUI's copies of remote logs
        self.m1_run_dir = os.path.join(self.m1_state, "xllm-tui", f"twomachines-sim@{MACHINE1}")
        self.per_machine = per_machine

    def start(self) -> None:
        self.dep.start("--over-ssh")

    def world_serving(self, snap: dict) -> bool:
        return (snap["group"]["state"] == "ready" and len(snap["ranks"]) == 2 * self.per_machine
                and all(r["pid"] and r["state"] == "ready" for r in snap["ranks"]))

    def start_serving(self) -> dict[int, int]:
        """Start machine 0's supervisor, wait until the whole world serves, and return its ranks' pids."""
        self.start()
        return self.dep.rank_pids(self.dep.wait_snapshot(self.world_serving, 120, "world serving"))

    def kill_and_relaunch(self, first: dict[int, int], rank: int, what: str) -> dict:
        """SIGKILL `rank` (pids `first`) and wait until the whole world serves again with new pids: that snapshot."""
        os.kill(first[rank], signal.SIGKILL)
        return self.dep.wait_snapshot(self.world_relaunched(first), 120, what)

    def world_relaunched(self, before: dict[int, int]):
        """A snapshot condition: the world serves again, none of its ranks with a pid of `before`."""
        gone = set(before.values())
        return lambda snap: self.world_serving(snap) and not set(self.dep.rank_pids(snap).values()) & gone

    def machine(self, snap: dict, name: str = MACHINE1) -> dict:
        return next(m for m in snap["machines"] if m["name"] == name)

    def member_snapshot(self) -> dict:
        with SupervisorClient(socket_path(self.m1_run_dir)) as client:
            return client.snapshot()


@pytest.fixture
def two_machines(sim_deployment, ssh_machines, tmp_path, monkeypatch):  # noqa: F811
    tm = TwoMachines(sim_deployment, ssh_machines, tmp_path, monkeypatch)
    yield tm
    # Shut down while machine 1's sshd still runs (the sshd fixture ends before the deployment's teardown, which
    # then fails the test if anything was left on either machine).
    try:
        tm.dep.shutdown(timeout=120)
    except AssertionError:
        pass


def test_two_machines_come_up_as_one_world_and_a_rank_killed_on_machine_1_restarts_both(two_machines):
    tm, dep = two_machines, two_machines.dep
    tm.start()
    snap = dep.wait_snapshot(tm.world_serving, 120, "both machines' ranks serving as one world")
    assert [r["machine"] for r in snap["ranks"]] == ["127.0.0.1", "127.0.0.1", MACHINE1, MACHINE1]
    assert tm.machine(snap)["state"] == "connected"
    first = dep.rank_pids(snap)
    # Machine 1's ranks really belong to machine 1's own supervisor (its own run dir), not machine 0's.
    assert read_environ(first[2])["XLLM_TUI_RUN_DIR"] == tm.m1_run_dir
    assert read_environ(first[0])["XLLM_TUI_RUN_DIR"] == dep.run_dir
    assert "127.0.0.2" in " ".join(snap["ranks"][2]["argv"])  # --host of machine 1, master on machine 0
    assert f"127.0.0.1:{dep.master_port}" in " ".join(snap["ranks"][3]["argv"])

    os.kill(first[3], signal.SIGKILL)
    failed = dep.wait_snapshot(lambda s: (s["group"].get("first_failure") or {}).get("rank") == 3, 60,
                               "machine 0 names rank 3 on machine 1 as the first failure")
    ff = failed["group"]["first_failure"]
    assert ff["machine"] == MACHINE1 and ff["cause"] == "killed", ff
    again = dep.wait_snapshot(tm.world_relaunched(first), 120, "the whole world (both machines) relaunched and serving")
    assert again["group"]["restarts"] >= 1
    assert all(r["restarts"] == again["group"]["restarts"] for r in again["ranks"])  # machine 1's ranks counted too
    assert all(not process_alive(pid) for pid in first.values())
    reasons = [e.get("reason", "") for e in dep.events_file()]
    assert any(f"rank 3 on machine {MACHINE1} failed first: killed" in r for r in reasons), reasons
    # machine 1's own events arrive in machine 0's journal, with machine 1's seq and clock
    remote = [e for e in dep.events_file() if e.get("machine") == MACHINE1 and e.get("remote_seq")]
    assert any(e["kind"] == "state" and e["rank"] == 3 and e.get("to") == "failed" for e in remote)

    # Rank 3's log lives on machine 1: read through machine 0's supervisor (log_read over the link).
    killed_log = os.path.join(tm.m1_run_dir, "logs", "node_3.log.1")
    shown = dep.cli("logs", dep.profile_path, "--simulate", "--rank", "3", "--generation", "1", "-n", "3", check=True)
    with open(killed_log) as f:
        assert shown.stdout.splitlines() == f.read().splitlines()[-3:]
    part = dep.request("log_read", rank=3, generation=1, offset=0, max_bytes=100)
    assert part["path"] == killed_log and len(part["data"].encode()) <= 100 and part["next"] <= 100

    status = dep.cli("status", dep.profile_path, "--simulate", check=True).stdout
    assert f"first failure: rank 3 on machine {MACHINE1} killed" in status, status
    assert f"machine {MACHINE1}: connected over ssh" in status and "ranks 2-3" in status, status

    # A profile change reaches machine 1 too: reload here, relaunch, and machine 1's ranks run with it.
    dep.profile_data["env"]["XLLM_TUI_TEST_EDIT"] = "seen-on-machine-1"
    dep.write_profile()
    reloaded = dep.request("reload")
    assert reloaded["machines"][MACHINE1]["reloaded"] is True, reloaded
    before = dep.rank_pids()
    dep.request("restart", ranks="all")
    edited = dep.wait_snapshot(tm.world_relaunched(before), 120, "relaunched with the edited profile")
    assert read_environ(dep.rank_pids(edited)[3]).get("XLLM_TUI_TEST_EDIT") == "seen-on-machine-1"

    done = dep.cli("down", dep.profile_path, "--simulate", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: not dep.leftovers(), 30, what="no process of the deployment left on either machine")
    assert not os.path.exists(socket_path(tm.m1_run_dir))  # machine 1's supervisor is gone too


def test_a_lost_machine_is_unknown_not_failed_and_comes_back_without_restarting_anything(two_machines):
    tm, dep = two_machines, two_machines.dep
    tm.start()
    snap = dep.wait_snapshot(tm.world_serving, 120, "world serving")
    pids = dep.rank_pids(snap)
    connects = tm.machine(snap)["connects"]

    # The connection is cut (its ssh client killed): machine 0 notices, says so, and simply connects again.
    seen = dep.events_file()[-1]["seq"]
    os.kill(tm.machine(snap)["ssh_pid"], signal.SIGKILL)
    dep.wait_event(lambda e: e["seq"] > seen and e["kind"] == "machine" and e.get("reachable") is False, 60,
                   "machine 1 journaled as unreachable")
    again = dep.wait_snapshot(lambda s: tm.machine(s)["connects"] > connects and tm.world_serving(s), 90,
                              "reconnected")
    assert dep.rank_pids(again) == pids
    connects = tm.machine(again)["connects"]

    # Machine 1's sshd goes away, and its sessions with it: no connection is possible until it is back.
    tm.sshd.stop()
    lost = dep.wait_snapshot(lambda s: tm.machine(s)["state"] == "unreachable", 60, "machine 1 unreachable")
    assert lost["group"]["state"] == "degraded" and "unreachable since" in lost["group"]["reason"]
    assert [r["state"] for r in lost["ranks"][2:]] == ["unknown", "unknown"]
    assert "machine unreachable since" in lost["ranks"][2]["reason"]
    assert lost["ranks"][2]["pid"] == pids[2]  # last known

    # Meanwhile machine 1 keeps its ranks, and something happens there that machine 0 must not miss.
    with SupervisorClient(socket_path(tm.m1_run_dir)) as client:
        client.request("reload", who="an operator on machine 1")
    assert {r["rank"]: r["pid"] for r in tm.member_snapshot()["ranks"]} == {2: pids[2], 3: pids[3]}  # still running

    tm.sshd.start()
    back = dep.wait_snapshot(lambda s: tm.machine(s)["state"] == "connected" and tm.machine(s)["connects"] > connects
                             and tm.world_serving(s), 90, "machine 1 reached again, world serving")
    assert dep.rank_pids(back) == pids  # nothing restarted on either machine
    assert back["group"]["restarts"] == 0
    events = dep.events_file()
    assert any(e.get("machine") == MACHINE1 and "profile reloaded" in e.get("reason", "") for e in events), \
        "the event machine 1 journaled while cut off was re-read after reconnecting"
    assert any(e["kind"] == "machine" and e.get("reachable") is False for e in events)
    from xllm_tui.alerts import alert_kinds
    assert any("machine_unreachable" in alert_kinds(e) for e in events)  # hooks on machine_unreachable fire


def test_two_machines_of_eight_ranks_come_up_as_one_world_of_sixteen_and_down_ends_everything(
        sim_deployment, ssh_machines, tmp_path, monkeypatch):  # noqa: F811
    tm = TwoMachines(sim_deployment, ssh_machines, tmp_path, monkeypatch, per_machine=8, rank_table=True)
    dep = tm.dep
    tm.start()
    snap = dep.wait_snapshot(tm.world_serving, 180, "sixteen ranks on two machines serving as one world")
    # The rank table was built from each machine's own hccn_tool reading and written on both machines.
    tables = []
    for run_dir in (dep.run_dir, tm.m1_run_dir):
        with open(os.path.join(run_dir, "hccl_2nodes.json")) as f:
            tables.append(json.load(f))
    assert tables[0] == tables[1]
    servers = tables[0]["server_list"]
    assert [s["server_id"] for s in servers] == ["127.0.0.1", MACHINE1]
    assert servers[1]["device"][7] == {"device_id": "7", "device_ip": "10.1.0.7", "rank_id": "15"}
    assert any("rank table written on 2 machine(s)" in e.get("reason", "") for e in dep.events_file())
    assert [r["rank"] for r in snap["ranks"]] == list(range(16))
    assert {r["machine"] for r in snap["ranks"][8:]} == {MACHINE1}
    assert all(f"--nnodes=16" in r["argv"] for r in snap["ranks"])
    assert tm.member_snapshot()["profile"]["machine"] == MACHINE1
    assert len(tm.member_snapshot()["ranks"]) == 8  # machine 1's supervisor runs its eight and no more

    done = dep.cli("down", dep.profile_path, "--simulate", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_until(lambda: not dep.leftovers(), 60, what="no process of the deployment left on either machine")


def test_a_rank_failing_on_machine_0_restarts_machine_1s_ranks_too(two_machines):
    tm = two_machines
    first = tm.start_serving()
    again = tm.kill_and_relaunch(first, 1, "both machines relaunched after rank 1 on machine 0 failed")
    ff = again["group"]["first_failure"]
    assert ff["rank"] == 1 and "machine" not in ff
    assert all(not process_alive(first[n]) for n in (2, 3))  # machine 1's old ranks were stopped, not left
    member = tm.member_snapshot()
    assert [r["generation"] for r in member["ranks"]] == [2, 2]


def test_a_new_machine_0_supervisor_finds_both_machines_ranks_running_and_restarts_nothing(two_machines):
    tm, dep = two_machines, two_machines.dep
    first = tm.start_serving()
    member_pid = tm.member_snapshot()["supervisor"]["pid"]
    dep.kill_supervisor(signal.SIGKILL)  # machine 0's supervisor dies; every rank, and machine 1's supervisor, live

    dep.start("--over-ssh")
    snap = dep.wait_snapshot(lambda s: tm.world_serving(s) and tm.machine(s)["state"] == "connected", 120,
                             "the successor sees the whole world serving")
    assert dep.rank_pids(snap) == first
    assert tm.machine(snap)["supervisor_pid"] == member_pid  # found, not started again
    assert snap["group"]["restarts"] == 0


def test_validate_remote_checks_machine_1_over_ssh_and_names_it(two_machines):
    tm, dep = two_machines, two_machines.dep
    done = dep.cli("validate", dep.profile_path, "--simulate", "--remote", timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr  # warnings only (no xllm binary: fine under --simulate)
    from xllm_tui import __version__
    assert f"info: machine {MACHINE1}: reachable over ssh, xllm-tui {__version__} there" in done.stdout, done.stdout
    assert f"machine {MACHINE1}: twomachines.yaml:" in done.stdout  # the profile as machine 1 loads it
    assert "warning: binary: xllm binary /opt/xllm/bin/xllm not found" in done.stdout
    assert not os.path.exists(tm.m1_run_dir)  # a check starts nothing there

    tm.sshd.stop()
    lost = dep.cli("validate", dep.profile_path, "--simulate", "--remote", timeout=120)
    assert lost.returncode == 2
    assert f"error: machine {MACHINE1}: cannot be reached over ssh: ssh exited with status 255" in lost.stdout, lost.stdout


def test_a_world_is_not_launched_around_an_unreachable_machine_and_launches_when_it_is_reached(two_machines):
    tm, dep = two_machines, two_machines.dep
    tm.sshd.stop()  # machine 1 cannot be reached when machine 0 starts
    tm.start()
    dep.wait_event(lambda e: e["kind"] == "group" and "launch waits: machine 127.0.0.2 cannot be reached"
                   in e.get("reason", ""), 60, "the launch waits for machine 1")
    snap = dep.snapshot()
    assert not any(r["pid"] for r in snap["ranks"])  # nothing launched, not even machine 0's half
    assert tm.machine(snap)["state"] == "unreachable"

    tm.sshd.start()
    dep.wait_snapshot(tm.world_serving, 120, "the world launched once machine 1 was reached")


async def test_the_tui_shows_both_machines_ranks_and_a_lost_machines_ranks_as_unknown(two_machines):
    from textual.widgets import DataTable

    from xllm_tui.ui.widgets.rank_table import RankTable

    tm, dep = two_machines, two_machines.dep
    tm.start_serving()
    app = make_app(dep)

    def cells(table: DataTable) -> list[str]:
        return [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]

    async with app.run_test(size=(200, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 4, 60, "four rows")
        await until(pilot, lambda: sum(MACHINE1 in row for row in cells(table)) == 2, 60, "machine 1's two rows")
        # Rank 2's log is on machine 1: the log view shows a local copy fetched through machine 0 (log_read).
        from xllm_tui.ui.widgets.log_view import LogView
        from xllm_tui.ui.widgets.rank_log import RankLog
        table.select_rank(2)
        rank_log = app.main_screen.query_one(RankLog)
        await until(pilot, lambda: rank_log.rank == 2 and rank_log.log_widget.line_count > 5, 60, "rank 2's log lines")
        assert rank_log.path.startswith(str(tm.cache)) and rank_log.path.endswith("node_2.log")
        with open(os.path.join(tm.m1_run_dir, "logs", "node_2.log")) as f:
            remote_text = f.read()
        with open(rank_log.path) as f:
            assert f.read() in remote_text
        tm.sshd.stop()  # sessions too: machine 1 is cut off
        await until(pilot, lambda: sum("unknown" in row for row in cells(table)) == 2, 60, "machine 1's ranks unknown")
        assert (app.snapshot or {})["group"]["state"] == "degraded"
        tm.sshd.start()
        await until(pilot, lambda: not any("unknown" in row for row in cells(table)), 60, "machine 1 back")


def test_restarting_a_rank_of_machine_1_from_the_cli_relaunches_the_world(two_machines):
    tm, dep = two_machines, two_machines.dep
    first = tm.start_serving()
    refused = dep.cli("restart", dep.profile_path, "--simulate", "--ranks", "3")
    assert refused.returncode == 2 and "--yes" in refused.stderr  # a healthy rank: asks first, as on one machine
    done = dep.cli("restart", dep.profile_path, "--simulate", "--ranks", "3", "--yes", "--wait", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restarting all 4 ranks" in done.stdout, done.stdout
    snap = dep.wait_snapshot(tm.world_relaunched(first), 120, "the world relaunched on both machines")
    assert tm.machine(snap)["state"] == "connected"


def test_a_restart_due_while_machine_1_is_out_of_reach_waits_says_why_and_happens_when_it_is_back(two_machines):
    tm, dep = two_machines, two_machines.dep
    first = tm.start_serving()
    tm.sshd.stop()
    dep.wait_snapshot(lambda s: tm.machine(s)["state"] == "unreachable", 60, "machine 1 unreachable")

    os.kill(first[1], signal.SIGKILL)  # the world fails while machine 1 cannot be reached
    held = dep.wait_snapshot(lambda s: s["group"].get("waiting_for") == [MACHINE1], 60,
                             "the automatic restart held until machine 1 is back")
    group = held["group"]
    assert group["state"] == "failed" and group["restarts"] == 1, group
    assert group["reason"].startswith(f"rank 1 failed first (killed); machine {MACHINE1} unreachable since "), group
    assert group["reason"].endswith("the world cannot be restarted until it is back; it is restarted as soon as "
                                    "every machine is reached (or stop it)"), group
    assert not any(r["pid"] for r in held["ranks"][:2])  # machine 0's half is not left waiting for the other
    status = dep.cli("status", dep.profile_path, "--simulate", check=True).stdout
    assert f"group: failed - rank 1 failed first (killed); machine {MACHINE1} unreachable since" in status, status
    # An operator's restart meanwhile is refused at once, and says what will happen.
    refused = dep.cli("restart", dep.profile_path, "--simulate", "--yes", timeout=30)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"machine {MACHINE1} cannot be reached" in refused.stderr
    assert "it is restarted as soon as every machine is reached" in refused.stderr, refused.stderr

    tm.sshd.start()
    again = dep.wait_snapshot(tm.world_relaunched(first),
                              120, "the world restarted on both machines once machine 1 was reached")
    assert "waiting_for" not in again["group"] and again["group"]["restarts"] == 1
    assert [r["restarts"] for r in again["ranks"]] == [1, 1, 1, 1]
    assert all(not process_alive(pid) for pid in first.values())  # machine 1's old ranks were stopped first
    reasons = [e.get("reason", "") for e in dep.events_file() if e["kind"] == "group"]
    assert any(r.startswith(f"launch waits: machine {MACHINE1} cannot be reached") for r in reasons), reasons
    assert any("every machine reached again" in r and r.startswith("launching 2 rank(s)") for r in reasons), reasons


def test_a_machine_that_stops_answering_during_a_restart_is_dropped_after_the_timeout_and_the_world_restarts_later(
        two_machines, monkeypatch):
    tm, dep = two_machines, two_machines.dep
    monkeypatch.setenv("XLLM_TUI_REMOTE_TIMEOUT", "3")  # machine 0 waits 3 s for any answer from machine 1
    first = tm.start_serving()
    member = tm.member_snapshot()["supervisor"]["pid"]
    os.kill(member, signal.SIGSTOP)  # machine 1's supervisor hangs; ssh and its sshd still answer keep-alives
    try:
        os.kill(first[0], signal.SIGKILL)
        held = dep.wait_snapshot(lambda s: s["group"].get("waiting_for") == [MACHINE1], 60,
                                 "the restart held: machine 1 does not answer")
        assert tm.machine(held)["state"] == "unreachable"
        assert "no reply to" in tm.machine(held)["reason"] and "within 3s" in tm.machine(held)["reason"]
        assert not any(r["pid"] for r in held["ranks"][:2])
    finally:
        os.kill(member, signal.SIGCONT)
    again = dep.wait_snapshot(tm.world_relaunched(first), 120, "the world restarted once machine 1 answered again")
    assert tm.machine(again)["supervisor_pid"] == member


def test_restart_counts_of_machine_1s_ranks_survive_a_new_machine_0_supervisor(two_machines):
    tm, dep = two_machines, two_machines.dep
    first = tm.start_serving()
    restarted = tm.kill_and_relaunch(first, 2, "the world restarted after rank 2 on machine 1 failed")
    assert [r["restarts"] for r in restarted["ranks"]] == [1, 1, 1, 1]
    dep.kill_supervisor(signal.SIGKILL)

    dep.start("--over-ssh")
    snap = dep.wait_snapshot(lambda s: tm.world_serving(s) and tm.machine(s)["state"] == "connected", 120,
                             "the successor adopted the whole world")
    assert dep.rank_pids(snap) == dep.rank_pids(restarted)  # adopted, nothing restarted
    assert [r["restarts"] for r in snap["ranks"]] == [1, 1, 1, 1] and snap["group"]["restarts"] == 1
    status = dep.cli("status", dep.profile_path, "--simulate", "--events", "0", check=True).stdout
    header = next(line for line in status.splitlines() if line.startswith("RANK"))
    column = header.index("RESTARTS")
    rows = [line for line in status.splitlines() if line.split() and line.split()[0] in "0123"]
    assert [(row.split()[0], row.split()[1], row[column:].split()[0]) for row in rows] == [
        ("0", "127.0.0.1", "1"), ("1", "127.0.0.1", "1"), ("2", MACHINE1, "1"), ("3", MACHINE1, "1")], status


async def test_the_tui_shows_an_earlier_log_generation_of_a_rank_on_machine_1(two_machines):
    from xllm_tui.ui.widgets.rank_log import RankLog
    from xllm_tui.ui.widgets.rank_table import RankTable

    tm, dep = two_machines, two_machines.dep
    first = tm.start_serving()
    # rank 3's first log on machine 1 becomes node_3.log.1 at the relaunch
    tm.kill_and_relaunch(first, 3, "the world relaunched")
    earlier_there = os.path.join(tm.m1_run_dir, "logs", "node_3.log.1")
    with open(earlier_there) as f:
        earlier_text = f.read()
    app = make_app(dep)

    def title() -> str:
        return str(rank_log.query_one(".rank-log-title").render())

    def copy() -> str:
        with open(rank_log.path) as f:
            return f.read()

    async with app.run_test(size=(200, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 4, 60, "four rows")
        table.select_rank(3)
        rank_log = app.main_screen.query_one(RankLog)
        await until(pilot, lambda: rank_log.rank == 3 and "[ earlier logs" in title(),
                    60, "the hint for rank 3's earlier log")
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: rank_log.back == 1 and rank_log.log_widget.line_count > 5,
                    60, "the earlier log shown")
        assert rank_log.path.startswith(str(tm.cache)) and rank_log.path.endswith("node_3.log.1")
        assert "earlier log, 1 launch(es) back" in title() and f"{MACHINE1}:" in title() and "node_3.log.1" in title()
        await until(pilot, lambda: copy() and earlier_text.endswith(copy()), 60, "the copy is machine 1's node_3.log.1")
        await pilot.press("left_square_bracket")  # there is no generation before it
        assert rank_log.back == 1
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: rank_log.back == 0 and rank_log.path.endswith("node_3.log"),
                    60, "back to the current log")
        with open(os.path.join(tm.m1_run_dir, "logs", "node_3.log")) as f:
            current_text = f.read()
        await until(pilot, lambda: copy() and copy() in current_text, 60, "the current log's copy")
        assert copy() not in earlier_text


def test_a_machine_lost_while_the_world_is_being_launched_leaves_no_half_world_and_the_launch_is_retried(
        two_machines, monkeypatch):
    tm, dep = two_machines, two_machines.dep
    monkeypatch.setenv("XLLM_TUI_REMOTE_TIMEOUT", "8")
    dep.profile_data["restart"]["backoff"] = {"initial": "2s", "max": "2s", "factor": 1}
    dep.write_profile()
    first = tm.start_serving()
    member = tm.member_snapshot()["supervisor"]["pid"]
    seen = dep.events_file()[-1]["seq"]
    os.kill(first[1], signal.SIGKILL)
    dep.wait_event(lambda e: e["seq"] > seen and e["kind"] == "group" and "group restarting in 2s" in e["reason"],
                   60, "the world stopped on both machines, its restart due in 2 s")
    # Machine 1 stops answering now: still connected when the restart begins (its answers may take 8 s), so
    # machine 0 launches its own ranks, then machine 1 does not start its ranks.
    os.kill(member, signal.SIGSTOP)
    try:
        held = dep.wait_event(lambda e: e["seq"] > seen and e["kind"] == "group" and e["reason"].startswith(
            f"launch waits: machine {MACHINE1} was lost during the launch"), 60, "the launch given up, held")
        launched = [e for e in dep.events_file() if seen < e["seq"] < held["seq"] and e["kind"] == "state"
                    and e.get("to") == "starting" and e["rank"] in (0, 1) and "machine" not in e]
        assert len(launched) == 2, "machine 0's ranks were launched before machine 1 was found lost"
        snap = dep.wait_snapshot(lambda s: not any(r["pid"] for r in s["ranks"][:2]), 60,
                                 "machine 0's half stopped again")
        assert snap["group"]["state"] == "failed" and snap["group"]["waiting_for"] == [MACHINE1], snap["group"]
        assert "the world cannot be restarted until it is back" in snap["group"]["reason"]
    finally:
        os.kill(member, signal.SIGCONT)
    again = dep.wait_snapshot(tm.world_relaunched(first), 120, "the world launched once machine 1 answered again")
    assert again["group"]["restarts"] == 1


async def test_the_tui_says_why_a_world_restart_waits_for_machine_1_and_refuses_r_meanwhile(two_machines):
    from xllm_tui.ui.screens.confirm import ConfirmScreen
    from xllm_tui.ui.widgets.status_bar import StatusBar

    tm, dep = two_machines, two_machines.dep
    first = tm.start_serving()
    tm.sshd.stop()
    dep.wait_snapshot(lambda s: tm.machine(s)["state"] == "unreachable", 60, "machine 1 unreachable")
    os.kill(first[0], signal.SIGKILL)
    dep.wait_snapshot(lambda s: s["group"].get("waiting_for") == [MACHINE1], 60, "the restart held")
    app = make_app(dep)

    def notes() -> str:
        return "\n".join(str(n.message) for n in app._notifications)

    async with app.run_test(size=(200, 40)) as pilot:
        bar = app.main_screen.query_one(StatusBar)
        await until(pilot, lambda: bar._shown is not None and "unreachable since" in str(bar._shown),
                    60, "the status line")
        line = str(bar._shown)
        assert "group failed" in line and "first failure: rank 0 killed" in line, line
        assert f"machine {MACHINE1} unreachable since" in line and "cannot be restarted until it is back" in line, line
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 60, "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: "refused" in notes(), 60, "the answer to R")
        assert f"refused: machine {MACHINE1} cannot be reached" in notes(), notes()
        assert "it is restarted as soon as every machine is reached" in notes(), notes()
    tm.sshd.start()
    dep.wait_snapshot(tm.world_serving, 120, "the world restarted once machine 1 was reached")
