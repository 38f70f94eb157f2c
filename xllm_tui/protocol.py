"""What the supervisor and its clients (CLI, TUI, tests) agree on: states, the typed snapshot, and the rules a
client must apply exactly as the supervisor does (which ranks count as failed, what a restart really restarts).

Pure and light: no asyncio, no psutil, no Textual, so every client can import it. docs/protocol.md describes
the wire format; fields are only ever added.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

PROTOCOL = 1


class RankState(str, Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"
    CRASH_LOOPING = "crash-looping"

    def __str__(self) -> str:
        return self.value


class GroupState(str, Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    FAILED = "failed"
    CRASH_LOOPING = "crash-looping"

    def __str__(self) -> str:
        return self.value


S = RankState
# Not a state of the rank machine: how machine 0 shows a rank on another machine it cannot reach now (its last
# known state is in the rank's `last_known_state`). A supervisor never puts its own ranks in it.
UNKNOWN_STATE = "unknown"
# A process of this rank exists (or is being spawned / waits for its NPU).
RUNNING_STATES = frozenset({S.STARTING, S.LOADING, S.READY, S.DEGRADED, S.STOPPING})
# What "the failed ranks" means everywhere: the daemon's selection, `restart --failed`, the TUI's F.
FAILED_STATES = frozenset({S.FAILED, S.EXITED, S.CRASH_LOOPING})

# Allowed rank transitions. A rank's process lives from starting to stopping; it ends in stopped (asked to),
# exited (code 0, unasked) or failed; crash-looping is failed with the restart limit reached.
_LIVE = {S.STARTING, S.LOADING, S.READY, S.DEGRADED}
RANK_TRANSITIONS: dict[RankState, frozenset[RankState]] = {
    S.STOPPED: frozenset({S.STARTING, S.FAILED, S.LOADING, S.READY}),  # loading/ready: adopted by a successor
    S.STARTING: frozenset(_LIVE | {S.STOPPING, S.STOPPED, S.EXITED, S.FAILED}),
    S.LOADING: frozenset(_LIVE | {S.STOPPING, S.STOPPED, S.EXITED, S.FAILED}),
    S.READY: frozenset(_LIVE | {S.STOPPING, S.STOPPED, S.EXITED, S.FAILED}),
    S.DEGRADED: frozenset(_LIVE | {S.STOPPING, S.STOPPED, S.EXITED, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.EXITED: frozenset({S.STARTING, S.STOPPED, S.FAILED, S.CRASH_LOOPING}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED, S.CRASH_LOOPING}),
    S.CRASH_LOOPING: frozenset({S.STARTING, S.STOPPED}),
}


def transition_allowed(old: str, new: str) -> bool:
    """Whether a rank may go from `old` to `new` (staying in a state with a new reason is always allowed)."""
    if old == new:
        return True
    try:
        return RankState(new) in RANK_TRANSITIONS[RankState(old)]
    except ValueError:
        return False


_FAILED_VALUES = frozenset(s.value for s in FAILED_STATES)
_RUNNING_VALUES = frozenset(s.value for s in RUNNING_STATES)


def is_failed(state: str | None) -> bool:
    return state in _FAILED_VALUES


def is_running(state: str | None) -> bool:
    return state in _RUNNING_VALUES


class RequestError(Exception):
    """An error reply: code + message (docs/protocol.md)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------------------------------ typed snapshot


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    """The fields `cls` declares; once per class (every snapshot converts each rank and event both ways)."""
    return frozenset(f.name for f in dataclasses.fields(cls))


@functools.cache
def _wire_order(cls: type) -> tuple[str, ...]:
    """The fields to_dict writes, in their declared order."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of `data` that `cls` declares (a newer supervisor may send more)."""
    names = _field_names(cls)
    return {k: v for k, v in data.items() if k in names}


class _Wire:
    """to_dict/from_dict for the protocol's dataclasses; unknown fields survive a round trip in `extra`."""

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _wire_order(type(self))}
        return {**getattr(self, "extra", {}), **out}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None):
        data = data or {}
        obj = cls(**_known(cls, data))
        names = _field_names(cls)
        obj.extra = {k: v for k, v in data.items() if k not in names}
        return obj


@dataclass
class RankStatus(_Wire):
    rank: int
    role: str = "worker"
    machine: str = ""
    host: str = ""
    device: int | None = None
    cores: str | None = None
    port: int | None = None
    pid: int | None = None
    pgid: int | None = None
    adopted: bool = False
    state: str = S.STOPPED.value
    reason: str = ""
    since: float = 0.0
    phase: str | None = None
    progress: list[int] | None = None
    started_at: float | None = None
    uptime_s: float | None = None
    restarts: int = 0
    generation: int = 0
    last_exit: dict | None = None
    cpu_pct: float | None = None
    rss_bytes: int | None = None
    threads: int | None = None
    last_line: str | None = None
    log_path: str = ""
    health: dict | None = None
    relaunch_pending: bool = False
    next_restart_at: float | None = None
    argv: list[str] = field(default_factory=list)
    binding: dict | None = None
    waiting: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def failed(self) -> bool:
        return is_failed(self.state)


@dataclass
class GroupStatus(_Wire):
    state: str = GroupState.STOPPED.value
    reason: str = ""
    since: float = 0.0
    restarts: int = 0
    next_restart_at: float | None = None
    first_failure: dict | None = None
    policy: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def scope(self) -> str:
        return str(self.policy.get("scope") or "group")


@dataclass
class Event(_Wire):
    seq: int = 0
    ts: float = 0.0
    kind: str = ""
    rank: int | None = None
    reason: str = ""
    extra: dict = field(default_factory=dict, repr=False)

    def get(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


@dataclass
class Snapshot(_Wire):
    protocol: int = PROTOCOL
    time: float = 0.0
    profile: dict = field(default_factory=dict)
    supervisor: dict = field(default_factory=dict)
    group: GroupStatus = field(default_factory=GroupStatus)
    ranks: list[RankStatus] = field(default_factory=list)
    toggles: list[dict] = field(default_factory=list)
    devices: dict | None = None
    events: list[Event] = field(default_factory=list)
    # Multi-machine worlds only (machine 0's supervisor): each machine, how it is reached and whether it is now.
    machines: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["group"] = self.group.to_dict()
        out["ranks"] = [r.to_dict() for r in self.ranks]
        out["events"] = [e.to_dict() for e in self.events]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Snapshot:
        data = dict(data or {})
        group = GroupStatus.from_dict(data.pop("group", None))
        ranks = [RankStatus.from_dict(r) for r in data.pop("ranks", None) or []]
        events = [Event.from_dict(e) for e in data.pop("events", None) or []]
        snap = super().from_dict(data)
        snap.group, snap.ranks, snap.events = group, ranks, events
        return snap

    def rank(self, number: int) -> RankStatus | None:
        return next((r for r in self.ranks if r.rank == number), None)

    @property
    def failed_ranks(self) -> list[int]:
        return [r.rank for r in self.ranks if r.failed]


# ------------------------------------------------------------------------------------------ restart rules


@dataclass(frozen=True)
class RestartPlan:
    """What an operator's start/restart of some ranks really does."""

    ranks: tuple[int, ...]  # the ranks the supervisor stops (if running) and launches
    world: bool  # the whole world is relaunched because its ranks cannot rejoin it
    explanation: str  # one sentence for confirmations and command output ("" when nothing is widened)


def select_ranks(spec: Any, states: dict[int, str | None], unknown_where: str) -> list[int]:
    """The rank numbers a request's `ranks` names: "all" (or nothing), "failed", a number or a list of numbers;
    RequestError for anything else or a rank not in `states` ("no rank 9 {unknown_where}")."""
    if spec is None or spec == "all":
        return sorted(states)
    if spec == "failed":
        return sorted(n for n, state in states.items() if is_failed(state))
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    if not isinstance(spec, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in spec):
        raise RequestError("bad_request", '`ranks` must be a list of rank numbers, "failed" or "all"')
    unknown = [x for x in spec if x not in states]
    if unknown:
        raise RequestError("unknown_rank", f"no rank {', '.join(map(str, unknown))} {unknown_where}")
    return sorted(set(spec))


def plan_restart(states: dict[int, str], selected: list[int], *, scope: str, only: bool = False,
                 op: str = "restart", waiting: frozenset[int] | set[int] = frozenset(),
                 restart_scheduled: bool = False) -> RestartPlan:
    """The ranks a start/restart of `selected` touches. In scope `group` (a multi-rank xllm world) no rank can
    rejoin a world whose other ranks run or ran: starting or restarting part of it relaunches the whole world,
    unless `only` (the operator insists on the narrow action). Starting a rank that waits for its NPU stays
    narrow: it never joined this world, which is still waiting for it."""
    everyone = tuple(sorted(states))
    chosen = tuple(sorted(set(selected)))
    if scope != "group" or only or len(everyone) <= 1 or not chosen or chosen == everyone:
        return RestartPlan(chosen, chosen == everyone and len(everyone) > 1, "")
    if op == "start" and set(chosen) <= set(waiting) and not restart_scheduled:
        return RestartPlan(chosen, False, "")
    others_active = [n for n in everyone if n not in chosen and is_running(states[n])]
    if op == "start" and not others_active and not restart_scheduled and \
            all(states[n] == S.STOPPED.value for n in everyone if n not in chosen):
        why = "xllm ranks form one world"
    else:
        failed = [n for n in chosen if is_failed(states.get(n))]
        if failed:
            why = f"rank{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))} failed; " \
                  "xllm ranks cannot rejoin a running world"
        else:
            names = ", ".join(map(str, chosen))
            why = f"rank{'s' if len(chosen) > 1 else ''} {names} cannot rejoin the running world of the others " \
                  "(xllm has no fault tolerance)"
    return RestartPlan(everyone, True, f"{why}: {'starting' if op == 'start' else 'restarting'} "
                                       f"all {len(everyone)} ranks")
