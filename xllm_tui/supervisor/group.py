"""The group's rules as pure code on an injected clock: which failure was first, whether and when the world
restarts, when it is crash-looping, the group's state, and a live rank's state from its evidence. The daemon
owns timers and processes; everything it decides about them is decided here (tests: tests/test_group_rules.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xllm_tui.protocol import GroupState, RankState
from xllm_tui.spec import Readiness, RestartPolicy
from xllm_tui.supervisor.policy import Decision, RestartTracker

FAILURE_SETTLE_S = 0.25  # exits this close together are one failure; the first is chosen by evidence


@dataclass(frozen=True)
class Failure:
    """A rank's exit that nobody asked for, as noticed."""

    rank: int
    cause: str  # exit_code, killed, hccl_error, ... (a classified log line beats a plain exit code)
    message: str
    at: float
    generation: int = 0
    status_text: str = ""  # how the process ended ("killed by SIGKILL"), for collateral reasons


def pick_first_failure(failures: list[Failure]) -> Failure:
    """Among exits noticed within the settle window, the one that broke the world: evidence first (a signal or a
    classified log line beats a plain exit code, which most likely followed another rank's death), then rank 0
    (workers follow it), then the order they were noticed in."""
    order = {id(f): i for i, f in enumerate(failures)}
    return min(failures, key=lambda f: (f.cause == "exit_code", f.rank != 0, order[id(f)]))


class GroupController:
    """First failure, scheduled restart and crash loop of one world (scope group)."""

    def __init__(self, policy: RestartPolicy, clock: Callable[[], float]):
        self.tracker = RestartTracker(policy)
        self.clock = clock
        self.failing = False  # between a first failure and the next launch of the world
        self.first_failure: dict | None = None
        self.crash_looping = False
        self.crash_reason = ""
        self.next_restart_at: float | None = None
        self.restarts = 0

    @property
    def policy(self) -> RestartPolicy:
        return self.tracker.policy

    @policy.setter
    def policy(self, policy: RestartPolicy) -> None:
        self.tracker.policy = policy

    def fail(self, failure: Failure) -> bool:
        """Record the world's first failure; False if one is recorded already (this one is collateral)."""
        if self.failing:
            return False
        self.failing = True
        self.first_failure = {"rank": failure.rank, "cause": failure.cause, "message": failure.message,
                              "at": round(failure.at, 3), "generation": failure.generation}
        return True

    def decide(self) -> Decision:
        """After the failed world has been stopped: restart it after a backoff, or give up (crash-looping)."""
        decision = self.tracker.decide(self.clock(), "the group")
        if decision.crash_looping:
            self.crash_looping = True
            self.crash_reason = decision.reason
        elif decision.restart:
            self.next_restart_at = self.clock() + decision.delay
        return decision

    @property
    def restart_scheduled(self) -> bool:
        return self.next_restart_at is not None

    def restart_now(self) -> None:
        """A scheduled (or the operator's) restart of a failed world happens: it counts against the limit."""
        self.next_restart_at = None
        self.tracker.record_restart(self.clock())
        self.restarts += 1

    def launched(self) -> None:
        """The world is launched again: no failure, nothing scheduled."""
        self.failing = False
        self.crash_looping = False
        self.next_restart_at = None

    def operator_started(self) -> None:
        """The operator starts the world: a crash-looping world gets its full restart budget back."""
        self.tracker.reset()
        self.launched()

    def stopped_by_operator(self) -> None:
        self.failing = False
        self.crash_looping = False
        self.next_restart_at = None

    def new_run(self) -> None:
        self.tracker.reset()
        self.restarts = 0
        self.first_failure = None
        self.launched()


@dataclass(frozen=True)
class RankView:
    """What the group's state is derived from, per rank."""

    rank: int
    state: str
    reason: str
    alive: bool
    waiting: bool = False
    operator_stopped: bool = False  # stopped and not wanted running (an operator stopped it)


def derive_group(ranks: list[RankView], group: GroupController, *, now: float, scope: str,
                 rank0_health: dict | None = None, rank0_port: int | None = None,
                 topology_problem: str | None = None) -> tuple[str, str]:
    """(group state, reason) from the ranks and the controller."""
    n = len(ranks)
    states = [r.state for r in ranks]
    ff = group.first_failure
    ff_text = f"rank {ff['rank']} failed first ({ff['cause']})" if ff else "a rank failed"
    if group.crash_looping or RankState.CRASH_LOOPING in states:
        looping = [r.rank for r in ranks if r.state == RankState.CRASH_LOOPING]
        return GroupState.CRASH_LOOPING.value, (group.crash_reason if group.crash_looping else
                                                f"rank(s) {', '.join(map(str, looping))} crash-looping")
    if group.next_restart_at is not None:
        wait = max(0.0, group.next_restart_at - now)
        return GroupState.FAILED.value, f"{ff_text}; group restart in {wait:.1f}s"
    if group.failing:
        return GroupState.FAILED.value, ff_text
    if n and all(s == RankState.STOPPED for s in states):
        return GroupState.STOPPED.value, "every rank stopped"
    if RankState.STOPPING in states:
        return GroupState.STOPPING.value, f"{states.count(RankState.STOPPING)} rank(s) stopping"
    if n and all(s == RankState.READY for s in states):
        if rank0_health and rank0_health.get("ok"):
            return GroupState.READY.value, f"rank 0 serving on port {rank0_port} ({rank0_health['detail']})"
        return GroupState.READY.value, f"all {n} ranks ready"
    if topology_problem and RankState.FAILED in states and not any(r.alive for r in ranks):
        return GroupState.FAILED.value, f"cannot launch: {topology_problem}"
    if any(s in (RankState.FAILED, RankState.EXITED) for s in states):
        bad = [str(r.rank) for r in ranks if r.state in (RankState.FAILED, RankState.EXITED)]
        return GroupState.FAILED.value, f"rank(s) {', '.join(bad)} not running"
    missing = [r for r in ranks if r.state == RankState.STOPPED and r.operator_stopped]
    if scope == "group" and missing and any(r.alive for r in ranks):
        names = ", ".join(str(r.rank) for r in missing)
        return GroupState.DEGRADED.value, (f"rank(s) {names} stopped: the world cannot serve without them and they "
                                           "cannot rejoin it; restart the group (R) or stop every rank")
    if RankState.DEGRADED in states:
        bad = [r for r in ranks if r.state == RankState.DEGRADED]
        return GroupState.DEGRADED.value, f"rank {bad[0].rank}: {bad[0].reason}"
    ready = states.count(RankState.READY)
    waiting = [r for r in ranks if r.waiting]
    if waiting:
        state = GroupState.LOADING if RankState.LOADING in states or ready else GroupState.STARTING
        return state.value, f"rank {waiting[0].rank} {waiting[0].reason}"
    if RankState.LOADING in states or ready:
        return GroupState.LOADING.value, f"{ready}/{n} ranks ready"
    if RankState.STARTING in states:
        return GroupState.STARTING.value, f"{states.count(RankState.STARTING)} rank(s) starting"
    return GroupState.STOPPED.value, "not started"


@dataclass(frozen=True)
class Evidence:
    """What is known about one live rank when its state is assessed."""

    role: str
    pid: int
    port: int
    phase: str | None  # None: no milestones yet
    ready_by_log: bool  # master: the Brpc line; worker: worker_ready()
    ready_detail: str
    describe: str  # the milestones' progress text
    state: str  # its state now
    adopted: bool
    health: dict | None
    health_seen_ok: bool
    started_at: float | None
    last_growth: float | None
    rank0_gone: bool  # a worker whose rank 0 process of this world has exited
    log_full: str | None = None  # its log is silent and its filesystem has no room: why no progress shows


def assess_rank(ev: Evidence, readiness: Readiness, now: float) -> tuple[str, str]:
    """(state, reason) of a live rank from its evidence: milestones, rank 0's /health, log silence, timeouts."""
    if ev.phase is None or ev.phase == "starting":
        state, reason = RankState.STARTING, f"pid {ev.pid}: started, no milestone yet"
    elif ev.role == "master" and ev.ready_by_log:
        if readiness.http_probe:
            if ev.health and ev.health["ok"]:
                state, reason = RankState.READY, f"serving on port {ev.port} ({ev.health['detail']})"
            elif ev.health_seen_ok and ev.health:
                state, reason = RankState.DEGRADED, f"health probe failing: {ev.health['detail']}"
            elif ev.health is None and ev.state == RankState.READY and ev.adopted:
                state, reason = RankState.READY, f"adopted (pid {ev.pid}); checking /health on port {ev.port}"
            else:
                state, reason = RankState.LOADING, f"Brpc server started; waiting for /health on port {ev.port}"
        else:
            state, reason = RankState.READY, f"serving on port {ev.port}"
    elif ev.role != "master" and ev.ready_by_log:
        state, reason = RankState.READY, ev.ready_detail
    else:
        state, reason = RankState.LOADING, ev.describe
    if ev.rank0_gone:
        return RankState.DEGRADED.value, "rank 0 is gone; this worker waits for it forever (xllm has no failover)"
    if state == RankState.READY and readiness.silence_warning_s > 0 and ev.last_growth and \
            now - ev.last_growth > readiness.silence_warning_s:
        return RankState.DEGRADED.value, f"log silent for {now - ev.last_growth:.0f}s"
    if state != RankState.READY and ev.log_full:
        reason = f"{reason}; {ev.log_full}: it cannot write its log, so its progress cannot be seen"
    if state != RankState.READY and readiness.start_timeout_s > 0 and ev.started_at and \
            now - ev.started_at > readiness.start_timeout_s:
        return RankState.DEGRADED.value, f"not ready {readiness.start_timeout_s:g}s after start ({reason})"
    return state.value, reason
