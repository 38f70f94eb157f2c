"""A rank as the supervisor holds it: a slot (its plan, counters and state, for the supervisor's whole life) and one
`Launch` per process (the process, its log reader and milestones, health, stats), made at spawn or adoption and
replaced by the next launch, so nothing of a previous process has to be reset by hand."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from xllm_tui.logs.intake import LogIntake
from xllm_tui.protocol import RankState
from xllm_tui.spec import RankLaunch
from xllm_tui.supervisor.policy import RestartTracker
from xllm_tui.supervisor.probes import Milestones
from xllm_tui.supervisor.process import RankProcess, argv_hash, env_hash


def flag_value(argv: tuple[str, ...] | list[str], name: str) -> str | None:
    """The value of --name=V or --name V in argv."""
    prefix = f"--{name}="
    for i, arg in enumerate(argv):
        if arg.startswith(prefix):
            return arg[len(prefix):]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


@dataclass
class Launch:
    """One process of a rank, from spawn (or adoption) to its exit; the evidence gathered about it."""

    plan: RankLaunch  # what this process was launched with
    proc: RankProcess
    milestones: Milestones
    reader: LogIntake | None
    env_hash: str | None
    argv_hash: str | None
    started_at: float
    ready_at: float | None = None
    last_growth: float | None = None
    cpu_pct: float | None = None
    rss_bytes: int | None = None
    threads: int | None = None
    health: dict | None = None  # rank 0: {"ok", "detail", "at"}
    health_seen_ok: bool = False
    next_probe: float = 0.0
    stop_requested: bool = False
    stop_reason: str = ""
    collateral: bool = False
    # The log thread and the exit handler both read this launch's log; one at a time, so no byte is fed twice.
    read_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    more_pending: bool = False  # the last read stopped at its byte limit: read again without waiting
    last_read_bytes: int = 0  # what the last read took in (a flood: the log loop waits longer between rounds)

    @property
    def log_unwatched(self) -> bool:
        """Its log is read through the rank's stdout (the name gone: logs/ cleared, perhaps made again): its
        writes wake no watch, so it is read at every round."""
        return self.reader is not None and self.reader.orphaned

    @classmethod
    def spawned(cls, plan: RankLaunch, proc: RankProcess, milestones: Milestones,
                reader: LogIntake | None) -> Launch:
        now = time.time()
        return cls(plan, proc, milestones, reader, env_hash(plan.env), argv_hash(plan.argv), now, last_growth=now)

    @property
    def alive(self) -> bool:
        return self.proc.alive

    def read_log(self, blocking: bool = True, max_bytes: int | None = None) -> bool:
        """Feed the log's interesting new lines (a bounded read, logs/intake.py) to the milestones; whether it
        grew. Safe from any thread; blocking=False (the event loop) skips the read while the log thread is
        reading: it feeds the rest."""
        if self.reader is None or not self.read_lock.acquire(blocking=blocking):
            return False
        try:
            result = self.reader.feed(self.milestones) if max_bytes is None else \
                self.reader.feed(self.milestones, max_bytes)
        finally:
            self.read_lock.release()
        self.more_pending = result.more
        self.last_read_bytes = result.bytes
        return result.grew


@dataclass
class RankSlot:
    """One rank of the plan for the supervisor's whole life."""

    rank: int
    plan: RankLaunch  # what the next launch would run
    state: str = RankState.STOPPED.value
    reason: str = "not started"
    since: float = field(default_factory=time.time)
    generation: int = 0
    restarts: int = 0
    last_exit: dict | None = None
    current: Launch | None = None  # the live process, or the last one until the next launch
    want_running: bool = False
    tracker: RestartTracker | None = None  # scope rank
    restart_handle: asyncio.TimerHandle | None = None
    next_restart_at: float | None = None
    waiting: dict | None = None  # {"device", "holders", "since"} while its NPU is held by another process
    exited_at: float | None = None  # when its last process exited (for HBM left behind)
    hbm_left_polls: int = 0
    hbm_left_reported: bool = False
    _plan_hashes: tuple[RankLaunch, str, str] | None = field(default=None, repr=False)  # plan_hashes()'s memo

    @property
    def alive(self) -> bool:
        return self.current is not None and self.current.alive

    @property
    def proc(self) -> RankProcess | None:
        return self.current.proc if self.current is not None else None

    @property
    def live(self) -> Launch | None:
        """The current launch while its process lives."""
        return self.current if self.alive else None

    @property
    def milestones(self) -> Milestones | None:
        return self.current.milestones if self.current is not None else None

    @property
    def role(self) -> str:
        return self.plan.role

    @property
    def port(self) -> int:
        value = flag_value(self.plan.argv, "port")
        return int(value) if value and value.isdigit() else self.plan.spec.port

    def relaunch_pending(self) -> bool:
        """The running process was launched with another environment or argv than the next launch would use."""
        live = self.live
        if live is None or live.env_hash is None:
            return False
        return self.plan_hashes() != (live.env_hash, live.argv_hash)

    def plan_hashes(self) -> tuple[str, str]:
        """(env hash, argv hash) of the next launch: once per plan, not at every snapshot (the env is large)."""
        memo = self._plan_hashes
        if memo is None or memo[0] is not self.plan:
            memo = self._plan_hashes = (self.plan, env_hash(self.plan.env), argv_hash(self.plan.argv))
        return memo[1], memo[2]

    def cancel_restart(self) -> None:
        if self.restart_handle is not None:
            self.restart_handle.cancel()
        self.restart_handle = None
        self.next_restart_at = None
