"""The supervisor's rules without processes: the rank state machine, first failure, restart and crash-loop
decisions on a fake clock, the group's state, a rank's state from its evidence, what a restart really restarts,
and the typed protocol's round trip."""

from __future__ import annotations

import pytest

from xllm_tui.protocol import (
    FAILED_STATES,
    RANK_TRANSITIONS,
    RankState,
    Snapshot,
    is_failed,
    plan_restart,
    transition_allowed,
)
from xllm_tui.spec import Readiness, RestartPolicy
from xllm_tui.supervisor.group import Evidence, Failure, GroupController, RankView, assess_rank, derive_group, \
    pick_first_failure


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


POLICY = RestartPolicy(mode="on-failure", scope="group", backoff_initial_s=2.0, backoff_max_s=10.0,
                       backoff_factor=2.0, max_restarts=3, window_s=60.0)


# ------------------------------------------------------------------------------------------ state machine

def test_every_state_has_transitions_and_a_process_ends_only_through_allowed_states():
    assert set(RANK_TRANSITIONS) == set(RankState)
    assert transition_allowed("ready", "stopping") and transition_allowed("stopping", "stopped")
    assert transition_allowed("failed", "starting") and transition_allowed("failed", "crash-looping")
    assert not transition_allowed("stopped", "stopping")  # nothing to stop
    assert not transition_allowed("stopping", "ready")  # a stopping process never comes back
    assert not transition_allowed("crash-looping", "ready")  # only an operator's start leaves it
    assert not transition_allowed("ready", "nonsense")
    assert transition_allowed("loading", "loading")


def test_failed_means_one_set_everywhere():
    assert {s.value for s in FAILED_STATES} == {"failed", "exited", "crash-looping"}
    assert is_failed("exited") and not is_failed("degraded") and not is_failed(None)


# ------------------------------------------------------------------------------------------ first failure

def test_first_failure_prefers_evidence_then_rank0_then_notice_order():
    plain = Failure(0, "exit_code", "exited with code 1", 5.0)
    killed = Failure(3, "killed", "killed by SIGKILL", 5.1)
    hccl = Failure(2, "hccl_error", "HCCL get root info failed.", 5.2)
    assert pick_first_failure([plain, killed, hccl]) is killed  # rank 0's plain exit followed rank 3's death
    assert pick_first_failure([Failure(2, "exit_code", "", 1), Failure(0, "exit_code", "", 2)]).rank == 0
    assert pick_first_failure([Failure(5, "exit_code", "", 1), Failure(4, "exit_code", "", 2)]).rank == 5


def test_only_the_first_failure_of_a_world_is_recorded():
    group = GroupController(POLICY, Clock())
    assert group.fail(Failure(3, "killed", "killed by SIGKILL", 1000.0, generation=2))
    assert not group.fail(Failure(0, "exit_code", "exited with code 1", 1000.1))
    assert group.first_failure == {"rank": 3, "cause": "killed", "message": "killed by SIGKILL", "at": 1000.0,
                                   "generation": 2}


# ------------------------------------------------------------------------------------------ restarts

def test_backoff_grows_then_the_world_is_crash_looping_and_recovers_after_the_window():
    clock = Clock()
    group = GroupController(POLICY, clock)
    delays = []
    for _ in range(3):
        group.fail(Failure(1, "killed", "", clock.now))
        decision = group.decide()
        assert decision.restart and group.restart_scheduled
        assert group.next_restart_at == clock.now + decision.delay
        delays.append(decision.delay)
        clock.now += decision.delay
        group.restart_now()
        group.launched()
        clock.now += 1
    assert delays == [2.0, 4.0, 8.0] and group.restarts == 3
    group.fail(Failure(1, "killed", "", clock.now))
    decision = group.decide()
    assert decision.crash_looping and not decision.restart and group.crash_looping
    assert "restarted 3 times within 60s" in group.crash_reason
    # An operator's start gives the world its budget back.
    group.operator_started()
    assert not group.crash_looping and not group.failing and group.tracker.restarts_at == []
    # Restarts older than the window no longer count.
    clock.now += 61
    group.fail(Failure(1, "killed", "", clock.now))
    assert group.decide().delay == 2.0


def test_manual_policy_never_schedules():
    group = GroupController(RestartPolicy(mode="manual"), Clock())
    group.fail(Failure(0, "killed", "", 1.0))
    decision = group.decide()
    assert not decision.restart and not group.restart_scheduled and "manual" in decision.reason


# ------------------------------------------------------------------------------------------ group state

def views(*states: str, alive: bool | None = None, unwanted: tuple[int, ...] = ()) -> list[RankView]:
    running = ("starting", "loading", "ready", "degraded", "stopping")
    return [RankView(i, s, f"r{i}", s in running if alive is None else alive, operator_stopped=i in unwanted)
            for i, s in enumerate(states)]


def test_group_state_from_the_ranks():
    clock = Clock()
    group = GroupController(POLICY, clock)
    assert derive_group(views("ready", "ready"), group, now=clock.now, scope="group",
                        rank0_health={"ok": True, "detail": "/health OK"}, rank0_port=8010) == \
        ("ready", "rank 0 serving on port 8010 (/health OK)")
    assert derive_group(views("ready", "loading"), group, now=clock.now, scope="group") == ("loading", "1/2 ranks ready")
    assert derive_group(views("stopped", "stopped"), group, now=clock.now, scope="group")[0] == "stopped"
    assert derive_group(views("ready", "exited"), group, now=clock.now, scope="group") == \
        ("failed", "rank(s) 1 not running")
    # A rank an operator stopped alone leaves a world that cannot serve: said plainly.
    state, reason = derive_group(views("ready", "stopped", "ready", unwanted=(1,)), group, now=clock.now, scope="group")
    assert state == "degraded" and "cannot rejoin" in reason and "restart the group" in reason
    # A rank about to be launched (wanted running) is not "missing".
    assert derive_group(views("starting", "stopped"), group, now=clock.now, scope="group")[0] == "starting"
    group.fail(Failure(1, "killed", "", clock.now))
    group.decide()
    clock.now += 0.5
    assert derive_group(views("stopped", "failed"), group, now=clock.now, scope="group") == \
        ("failed", "rank 1 failed first (killed); group restart in 1.5s")


# ------------------------------------------------------------------------------------------ rank state

def evidence(**changes) -> Evidence:
    base = dict(role="master", pid=42, port=8010, phase="serving", ready_by_log=True, ready_detail="",
                describe="serving", state="loading", adopted=False, health=None, health_seen_ok=False,
                started_at=100.0, last_growth=100.0, rank0_gone=False)
    base.update(changes)
    return Evidence(**base)


def test_rank_state_from_evidence():
    readiness = Readiness(http_probe=True, silence_warning_s=30.0, start_timeout_s=600.0)
    assert assess_rank(evidence(phase="starting"), readiness, 101.0)[0] == "starting"
    assert assess_rank(evidence(), readiness, 101.0) == ("loading", "Brpc server started; waiting for /health on port 8010")
    ok = {"ok": True, "detail": "/health OK"}
    assert assess_rank(evidence(health=ok), readiness, 101.0) == ("ready", "serving on port 8010 (/health OK)")
    bad = {"ok": False, "detail": "/health 503"}
    assert assess_rank(evidence(health=bad, health_seen_ok=True), readiness, 101.0)[0] == "degraded"
    assert assess_rank(evidence(health=ok), readiness, 131.0) == ("degraded", "log silent for 31s")
    worker = evidence(role="worker", phase="kv_cache", ready_by_log=False, describe="allocating kv cache")
    assert assess_rank(worker, readiness, 101.0) == ("loading", "allocating kv cache")
    assert assess_rank(worker, readiness, 701.0)[0] == "degraded"
    state, reason = assess_rank(evidence(role="worker", rank0_gone=True), readiness, 101.0)
    assert state == "degraded" and "rank 0 is gone" in reason


# ------------------------------------------------------------------------------------------ restart plan

EIGHT = {n: "stopped" for n in range(8)}


def test_restarting_a_failed_rank_of_a_world_restarts_all_of_it():
    states = {**EIGHT, 3: "failed"}
    plan = plan_restart(states, [3], scope="group", restart_scheduled=True)
    assert plan.world and plan.ranks == tuple(range(8))
    assert plan.explanation == "rank 3 failed; xllm ranks cannot rejoin a running world: restarting all 8 ranks"


def test_restarting_a_healthy_rank_restarts_the_world_unless_only():
    states = {n: "ready" for n in range(4)}
    plan = plan_restart(states, [2], scope="group")
    assert plan.world and plan.ranks == (0, 1, 2, 3) and "cannot rejoin the running world" in plan.explanation
    narrow = plan_restart(states, [2], scope="group", only=True)
    assert narrow == (narrow.__class__((2,), False, ""))


@pytest.mark.parametrize("scope, ranks", [("rank", (2,)), ("group", (2,))])
def test_narrow_cases(scope, ranks):
    states = {0: "ready", 1: "ready", 2: "starting", 3: "ready"}
    # scope rank: independent ranks; scope group: a rank waiting for its NPU never joined the world.
    plan = plan_restart(states, [2], scope=scope, op="start", waiting={2})
    assert plan.ranks == ranks and not plan.world


def test_starting_part_of_a_stopped_world_starts_all_of_it():
    plan = plan_restart({0: "stopped", 1: "stopped"}, [1], scope="group", op="start")
    assert plan.world and plan.ranks == (0, 1) and plan.explanation == "xllm ranks form one world: starting all 2 ranks"


# ------------------------------------------------------------------------------------------ protocol

def test_snapshot_round_trip_keeps_unknown_fields():
    raw = {"protocol": 1, "time": 5.0, "group": {"state": "failed", "policy": {"scope": "group"}, "future": 1},
           "ranks": [{"rank": 0, "state": "exited", "pid": None, "new_field": "x"}],
           "events": [{"seq": 1, "ts": 1.0, "kind": "state", "rank": 0, "reason": "r", "to": "exited"}],
           "brand_new": True}
    snap = Snapshot.from_dict(raw)
    assert snap.failed_ranks == [0] and snap.group.scope == "group" and snap.events[0].get("to") == "exited"
    again = snap.to_dict()
    assert again["brand_new"] is True and again["ranks"][0]["new_field"] == "x" and again["group"]["future"] == 1
    assert Snapshot.from_dict(again).to_dict() == again
