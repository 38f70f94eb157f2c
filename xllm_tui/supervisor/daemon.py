"""The supervisor: one asyncio process per run directory that owns a deployment's ranks.

It launches every rank from its launch plan, notices exits at once (pidfd), derives each rank's state from
evidence (process, log milestones, rank 0's /health), applies the restart policy, journals every change,
writes state.json atomically, re-adopts ranks after its own death, and serves the socket protocol
(docs/protocol.md). Nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from xllm_tui.spec import Profile, RankLaunch
from xllm_tui.supervisor import prelaunch
from xllm_tui.supervisor.policy import RestartTracker
from xllm_tui.supervisor.probes import LogReader, Milestones, classify_lines, http_health, tail_lines
from xllm_tui.supervisor.process import ExitStatus, RankProcess, argv_hash, env_hash
from xllm_tui.supervisor.state import (
    LOG_NAME,
    SOCKET_NAME,
    STATE_NAME,
    EventJournal,
    RunDirLock,
    atomic_write_json,
    load_toggles,
    read_json,
    save_toggles,
)

PROTOCOL = 1
log = logging.getLogger("xllm_tui.supervisor")

RUNNING_STATES = ("starting", "loading", "ready", "degraded", "stopping")
FAILURE_SETTLE_S = 0.25  # exits this close together are one failure; the first is chosen by evidence


class RequestError(Exception):
    """An error reply: code + message (docs/protocol.md)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class ProfileInvalid(Exception):
    def __init__(self, path: str, diagnostics: list[str]):
        self.path = path
        self.diagnostics = diagnostics
        super().__init__(f"{path}: profile has errors:\n" + "\n".join(diagnostics))


# ------------------------------------------------------------------------------------ profile & plan


def load_profile_checked(path: str, simulate: bool) -> tuple[Profile, list[str]]:
    """(profile, warnings) or ProfileInvalid with printable diagnostics."""
    from xllm_tui.profile import load_profile

    result = load_profile(path, simulate=simulate)
    if result.errors or result.profile is None:
        diags = [str(d) for d in (result.errors or result.diagnostics)] or [f"{path}: cannot load profile"]
        raise ProfileInvalid(path, diags)
    return result.profile, [str(w) for w in result.warnings]


def local_addresses() -> set[str]:
    found = {"127.0.0.1", "localhost", socket.gethostname()}
    with contextlib.suppress(Exception):
        for addrs in psutil.net_if_addrs().values():
            found.update(a.address for a in addrs)
    return found


def choose_machine(profile: Profile, simulate: bool, machine: str | None) -> str | None:
    """Which machine's ranks this supervisor runs: all under --simulate, else the one that is this host."""
    if machine or simulate:
        return machine
    if len(profile.machines) == 1:
        return None
    mine = local_addresses()
    for m in profile.machines:
        if m.host in mine or (m.name and m.name in mine):
            return m.host
    raise ProfileInvalid(
        profile.source_path,
        [f"{profile.source_path}: none of the profile's machines ({', '.join(m.host for m in profile.machines)}) "
         "is an address of this host; pass --machine HOST to say which one this is"],
    )


def _flag_value(argv: tuple[str, ...], name: str) -> str | None:
    prefix = f"--{name}="
    for i, arg in enumerate(argv):
        if arg.startswith(prefix):
            return arg[len(prefix):]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def rotate_log(path: str, keep: int = 10) -> str | None:
    """node_3.log -> node_3.log.1 (older ones shift up, the oldest beyond `keep` is dropped)."""
    try:
        from xllm_tui.logs.tail import rotate_log as shared_rotate  # type: ignore

        return shared_rotate(path, keep=keep)
    except ImportError:
        pass
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    for i in range(keep - 1, 0, -1):
        older = f"{path}.{i}"
        if os.path.exists(older):
            os.replace(older, f"{path}.{i + 1}")
    os.replace(path, f"{path}.1")
    return f"{path}.1"


# ----------------------------------------------------------------------------------------- rank record


@dataclass
class Rank:
    rank: int
    launch: RankLaunch  # what the next launch would run
    running: RankLaunch | None = None  # what the current process was launched with
    proc: RankProcess | None = None
    state: str = "stopped"
    reason: str = "not started"
    since: float = field(default_factory=time.time)
    generation: int = 0
    restarts: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    last_exit: dict | None = None
    milestones: Milestones | None = None
    reader: LogReader | None = None
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
    want_running: bool = False
    running_env_hash: str | None = None
    running_argv_hash: str | None = None
    tracker: RestartTracker | None = None  # scope rank
    restart_handle: asyncio.TimerHandle | None = None
    next_restart_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive

    @property
    def role(self) -> str:
        return self.launch.role

    @property
    def port(self) -> int:
        value = _flag_value(self.launch.argv, "port")
        return int(value) if value and value.isdigit() else self.launch.spec.port


class Supervisor:
    def __init__(
        self,
        profile_path: str,
        *,
        simulate: bool,
        run_dir: str,
        port_offset: int = 0,
        machine: str | None = None,
        launch: bool = True,
        base_env: dict[str, str] | None = None,
    ):
        self.profile_path = os.path.abspath(profile_path)
        self.simulate = simulate
        self.run_dir = os.path.abspath(run_dir)
        self.port_offset = port_offset
        self.machine_arg = machine
        self.launch_on_start = launch
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.pid = os.getpid()
        self.started_at = time.time()
        self.profile, self.profile_warnings = load_profile_checked(self.profile_path, simulate)
        self.machine = choose_machine(self.profile, simulate, machine)
        self.captured_env: dict[str, str] = {}
        self.toggles: dict[str, bool] = {t.name: t.enabled for t in self.profile.toggles}
        self.ranks: dict[int, Rank] = {}
        self.group_tracker = RestartTracker(self.profile.restart)
        self.group_restarts = 0
        self.group_state = "stopped"
        self.group_reason = "not started"
        self.group_since = time.time()
        self.first_failure: dict | None = None
        self.group_failing = False  # between a first failure and the next group launch
        self.group_crash_looping = False
        self.group_reason_crash = ""
        self.group_restart_handle: asyncio.TimerHandle | None = None
        self.settle_handle: asyncio.TimerHandle | None = None
        self.pending_failures: list[tuple] = []
        self.group_next_restart_at: float | None = None
        self.last_launch_at: float | None = None
        self.journal: EventJournal | None = None
        self.lock = RunDirLock(self.run_dir)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.action_lock = asyncio.Lock()
        self.shutdown_event = asyncio.Event()
        self.stop_ranks_on_shutdown = True
        self.subscribers: set[Any] = set()  # server.Subscriber
        self.tasks: set[asyncio.Task] = set()
        self._state_dirty = True
        self._procs_for_stats: dict[int, psutil.Process] = {}
        self.server = None

    # ------------------------------------------------------------------------------------ planning

    @property
    def scope(self) -> str:
        if len(self.ranks) <= 1:
            return "rank"
        return self.profile.restart.scope

    def plan(self, profile: Profile | None = None, toggles: dict[str, bool] | None = None) -> list[RankLaunch]:
        from xllm_tui.launch import build_simulate_mapping, plan_launches

        profile = profile or self.profile
        mapping = build_simulate_mapping(profile, port_offset=self.port_offset) if self.simulate else None
        return plan_launches(
            profile,
            machine=self.machine,
            simulate=mapping,
            base_env=self.base_env,
            captured_env=self.captured_env,
            toggles=toggles if toggles is not None else self.toggles,
            log_root=self.run_dir if self.simulate else None,
        )

    def capture_env(self, profile: Profile) -> dict[str, str]:
        if not profile.source_scripts:
            return {}
        from xllm_tui.envcapture import capture_sourced_env

        env, warnings = capture_sourced_env(profile.source_scripts, self.base_env)
        for w in warnings:
            self.event("supervisor", reason=f"environment capture: {w}")
        return env

    # ------------------------------------------------------------------------------------- events

    def event(self, kind: str, rank: int | None = None, **fields: Any) -> dict:
        assert self.journal is not None
        ev = self.journal.append(kind, rank, **fields)
        log.info("event %s", ev)
        for subscriber in list(self.subscribers):
            subscriber.push(ev)
        self._state_dirty = True
        return ev

    def set_state(self, r: Rank, state: str, reason: str, cause: str | None = None) -> None:
        old = r.state
        if state == old and reason == r.reason:
            return
        r.reason = reason
        if state != old:
            r.state = state
            r.since = time.time()
            fields: dict[str, Any] = {"from": old, "to": state, "reason": reason}
            if cause:
                fields["cause"] = cause
            self.event("state", r.rank, **fields)
        self._state_dirty = True
        self.update_group()

    def update_group(self) -> None:
        state, reason = self._derive_group()
        if state != self.group_state or reason != self.group_reason:
            old = self.group_state
            self.group_reason = reason
            if state != old:
                self.group_state = state
                self.group_since = time.time()
                self.event("group", None, **{"from": old, "to": state, "reason": reason})
            self._state_dirty = True

    def _derive_group(self) -> tuple[str, str]:
        ranks = list(self.ranks.values())
        n = len(ranks)
        states = [r.state for r in ranks]
        ff = self.first_failure
        ff_text = f"rank {ff['rank']} failed first ({ff['cause']})" if ff else "a rank failed"
        if self.group_crash_looping or "crash-looping" in states:
            looping = [r.rank for r in ranks if r.state == "crash-looping"]
            return "crash-looping", (self.group_reason_crash if self.group_crash_looping else
                                     f"rank(s) {', '.join(map(str, looping))} crash-looping")
        if self.group_next_restart_at is not None:
            wait = max(0.0, self.group_next_restart_at - time.time())
            return "failed", f"{ff_text}; group restart in {wait:.1f}s"
        if self.group_failing:
            return "failed", ff_text
        if n and all(s == "stopped" for s in states):
            return "stopped", "every rank stopped"
        if "stopping" in states:
            return "stopping", f"{states.count('stopping')} rank(s) stopping"
        if n and all(s == "ready" for s in states):
            r0 = self.ranks.get(0)
            if r0 is not None and r0.health and r0.health.get("ok"):
                return "ready", f"rank 0 serving on port {r0.port} ({r0.health['detail']})"
            return "ready", f"all {n} ranks ready"
        if any(s in ("failed", "exited") for s in states):
            bad = [str(r.rank) for r in ranks if r.state in ("failed", "exited")]
            return "failed", f"rank(s) {', '.join(bad)} not running"
        if "degraded" in states:
            bad = [r for r in ranks if r.state == "degraded"]
            return "degraded", f"rank {bad[0].rank}: {bad[0].reason}"
        ready = states.count("ready")
        if "loading" in states or ready:
            return "loading", f"{ready}/{n} ranks ready"
        if "starting" in states:
            return "starting", f"{states.count('starting')} rank(s) starting"
        return "stopped", "not started"

    # ------------------------------------------------------------------------------------ snapshot

    def rank_json(self, r: Rank) -> dict:
        m = r.milestones
        now = time.time()
        return {
            "rank": r.rank,
            "role": r.role,
            "machine": r.launch.spec.machine.name or r.launch.spec.machine.host,
            "host": _flag_value(r.launch.argv, "host") or r.launch.spec.machine.host,
            "device": r.launch.spec.device,
            "cores": r.launch.spec.cores,
            "port": r.port,
            "pid": r.proc.pid if r.alive else None,
            "pgid": r.proc.pgid if r.alive else None,
            "adopted": bool(r.alive and r.proc.adopted),
            "state": r.state,
            "reason": r.reason,
            "since": round(r.since, 3),
            "phase": m.phase if (m and r.alive) else None,
            "progress": m.progress if (m and r.alive) else None,
            "started_at": r.started_at if r.alive else None,
            "uptime_s": round(now - r.started_at, 1) if (r.alive and r.started_at) else None,
            "restarts": r.restarts,
            "generation": r.generation,
            "last_exit": r.last_exit,
            "cpu_pct": r.cpu_pct if r.alive else None,
            "rss_bytes": r.rss_bytes if r.alive else None,
            "threads": r.threads if r.alive else None,
            "last_line": m.last_line if m else None,
            "log_path": r.launch.log_path,
            "health": r.health,
            "relaunch_pending": self.relaunch_pending(r),
            "next_restart_at": r.next_restart_at,
            "argv": list(r.running.argv if (r.alive and r.running) else r.launch.argv),
        }

    def relaunch_pending(self, r: Rank) -> bool:
        if not r.alive or r.running_env_hash is None:
            return False
        return (env_hash(r.launch.env) != r.running_env_hash) or (argv_hash(r.launch.argv) != r.running_argv_hash)

    def snapshot(self, events: int = 50) -> dict:
        toggles = []
        for t in self.profile.toggles:
            toggles.append({
                "name": t.name,
                "enabled": self.toggles.get(t.name, t.enabled),
                "env": dict(t.env),
                "remove": list(t.remove),
                "unset": list(t.unset),
                "description": t.description,
            })
        p = self.profile.restart
        return {
            "protocol": PROTOCOL,
            "time": round(time.time(), 3),
            "profile": {"name": self.profile.name, "path": self.profile_path, "simulate": self.simulate,
                        "machine": self.machine, "port_offset": self.port_offset},
            "supervisor": {"pid": self.pid, "started_at": round(self.started_at, 3), "run_dir": self.run_dir,
                           "log": os.path.join(self.run_dir, LOG_NAME),
                           "socket": os.path.join(self.run_dir, SOCKET_NAME)},
            "group": {
                "state": self.group_state,
                "reason": self.group_reason,
                "since": round(self.group_since, 3),
                "restarts": self.group_restarts,
                "next_restart_at": self.group_next_restart_at,
                "first_failure": self.first_failure,
                "policy": {"mode": p.mode, "scope": self.scope, "max_restarts": p.max_restarts,
                           "window_s": p.window_s, "backoff_initial_s": p.backoff_initial_s,
                           "backoff_max_s": p.backoff_max_s, "backoff_factor": p.backoff_factor},
            },
            "ranks": [self.rank_json(r) for r in sorted(self.ranks.values(), key=lambda r: r.rank)],
            "toggles": toggles,
            "events": self.journal.last(events) if self.journal else [],
        }

    def write_state(self) -> None:
        atomic_write_json(os.path.join(self.run_dir, STATE_NAME), self.state_data())
        self._state_dirty = False

    def state_data(self) -> dict:
        """The snapshot plus what the next supervisor needs to re-adopt the ranks."""
        data = self.snapshot()
        data["adoption"] = {
            str(r.rank): {
                **(r.proc.identity.to_json() if (r.alive and r.proc.identity) else {"pid": None}),
                "pgid": r.proc.pgid if r.alive else None,
                "env_hash": r.running_env_hash,
                "launch_argv_hash": r.running_argv_hash,
                "generation": r.generation,
                "restarts": r.restarts,
                "started_at": r.started_at,
                "state": r.state,
                "reason": r.reason,
                "want_running": r.want_running,
                "last_exit": r.last_exit,
            }
            for r in self.ranks.values()
        }
        data["group_restarts_at"] = self.group_tracker.to_json()
        data["group_restarts"] = self.group_restarts
        data["last_launch_at"] = self.last_launch_at
        return data

    # --------------------------------------------------------------------------------------- start

    async def run(self) -> int:
        """Acquire the run dir, adopt or launch, serve until shutdown. Raises RunDirLocked."""
        from xllm_tui.supervisor.server import SocketServer

        self.loop = asyncio.get_running_loop()
        self.lock.acquire()
        try:
            os.chdir(self.run_dir)  # a daemon holds no arbitrary directory busy; every path here is absolute
            self.journal = EventJournal(self.run_dir)
            persisted = load_toggles(self.run_dir)
            for name in self.toggles:
                if name in persisted:
                    self.toggles[name] = persisted[name]
            self.event("supervisor", reason=f"supervisor started (pid {self.pid}) for profile "
                       f"{self.profile.name}" + (" (simulated)" if self.simulate else ""),
                       pid=self.pid, simulate=self.simulate)
            for w in self.profile_warnings:
                self.event("supervisor", reason=f"profile warning: {w}")
            self.captured_env = await asyncio.to_thread(self.capture_env, self.profile)
            for launch in self.plan():
                self.ranks[launch.rank] = Rank(launch.rank, launch)
            if self.scope == "rank":
                for r in self.ranks.values():
                    r.tracker = RestartTracker(self.profile.restart)
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self.request_shutdown, True, f"signal {signal.Signals(sig).name}")
            self.server = SocketServer(self)
            await self.server.start(os.path.join(self.run_dir, SOCKET_NAME))
            await self.adopt_or_launch()
            self.update_group()
            self.write_state()
            background = [self.log_loop(), self.stats_loop(), self.state_loop()]
            for coro in background:
                self.spawn_task(coro)
            await self.shutdown_event.wait()
            await self.shutdown()
            return 0
        finally:
            with contextlib.suppress(Exception):
                if self.server:
                    await self.server.close()
            self.lock.release()

    def spawn_task(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def adopt_or_launch(self) -> None:
        previous = read_json(os.path.join(self.run_dir, STATE_NAME)) or {}
        self.last_launch_at = previous.get("last_launch_at")
        self.group_tracker.restarts_at = [float(t) for t in previous.get("group_restarts_at") or []]
        self.group_restarts = int(previous.get("group_restarts") or 0)
        self.first_failure = (previous.get("group") or {}).get("first_failure")
        adoption = previous.get("adoption") or {}
        adopted: list[int] = []
        gone: list[tuple[Rank, dict]] = []
        for r in self.ranks.values():
            rec = adoption.get(str(r.rank))
            if not rec:
                continue
            r.generation = int(rec.get("generation") or 0)
            r.restarts = int(rec.get("restarts") or 0)
            r.last_exit = rec.get("last_exit")
            pid = rec.get("pid")
            if pid:
                proc = RankProcess.adopt(int(pid), rec)
                if proc is not None:
                    self.take_over(r, proc, rec)
                    adopted.append(r.rank)
                    continue
                if rec.get("want_running"):
                    gone.append((r, rec))
            if not r.alive:
                r.state = "stopped"
                r.reason = "not running"
        if adopted:
            self.event("supervisor", reason=f"adopted running rank(s) {', '.join(map(str, adopted))} "
                       "(identity: pid, create time, argv)", adopted=adopted)
        for r, rec in gone:
            r.last_exit = {"code": None, "signal": None, "at": time.time(), "cause": "unknown", "collateral": False,
                           "status_known": False}
            self.set_state(r, "failed", f"pid {rec.get('pid')} is gone (exited while no supervisor was watching; "
                                        "status unknown)", cause="unknown")
        if gone and adopted:
            # Same handling as a failure noticed live: in group scope the group is broken (the first gone
            # rank stands for it), in rank scope each gone rank gets its own restart decision.
            for r, _rec in (gone if self.scope == "rank" else gone[:1]):
                self.handle_failure(r, ExitStatus(None, None, known=False, at=time.time()), "unknown", r.reason)
            return
        if not adopted and self.launch_on_start:
            for r in self.ranks.values():
                r.want_running = True
            async with self.action_lock:
                await self.launch_group("supervisor start (`up`)")

    def take_over(self, r: Rank, proc: RankProcess, rec: dict) -> None:
        r.proc = proc
        r.running = r.launch
        r.running_env_hash = rec.get("env_hash")
        r.running_argv_hash = rec.get("launch_argv_hash")
        r.started_at = rec.get("started_at") or (proc.identity.create_time if proc.identity else time.time())
        r.want_running = True
        r.milestones = Milestones(r.role, self.profile.readiness.ready_pattern)
        r.reader = LogReader(r.launch.log_path)
        for line in r.reader.read_new(max_bytes=16 << 20):
            r.milestones.feed(line)
        r.last_growth = time.time()
        proc.watch(self.loop, self.on_exit)
        state = rec.get("state") if rec.get("state") in RUNNING_STATES and rec.get("state") != "stopping" else "loading"
        r.state = state
        r.health_seen_ok = state == "ready"  # a failing probe now means degraded, not "still loading"
        r.reason = f"adopted (pid {proc.pid}); {rec.get('reason') or ''}".rstrip("; ")
        self.event("state", r.rank, **{"from": "unknown", "to": state, "reason": r.reason, "adopted": True,
                                        "pid": proc.pid})
        self.evaluate(r)

    # -------------------------------------------------------------------------------------- launch

    async def launch_group(self, why: str) -> None:
        """Pre-launch work, then every rank. Caller holds action_lock."""
        self.cancel_group_restart()
        self.group_failing = False
        self.group_crash_looping = False
        await self.run_prelaunch()
        self.last_launch_at = time.time()
        self.event("group", None, reason=f"launching {len(self.ranks)} rank(s): {why}")
        for r in sorted(self.ranks.values(), key=lambda r: r.rank):
            if not r.alive:
                self.launch_rank(r)

    async def run_prelaunch(self) -> None:
        from xllm_tui.launch import working_dir_of

        workdir = working_dir_of(self.profile)
        roots = [workdir, self.run_dir]
        booted = psutil.boot_time()
        outcomes: list[prelaunch.Outcome] = []
        for step in self.profile.pre_launch:
            outcome = prelaunch.Outcome(step.name)
            if step.when == "manual":
                outcome.note = "manual step: not run by the supervisor"
            elif step.when == "after_reboot" and self.last_launch_at and booted < self.last_launch_at:
                outcome.note = "after_reboot step: no reboot since the last launch"
            else:
                await asyncio.to_thread(prelaunch.remove_globs, outcome, step.remove, base_dir=workdir,
                                        simulate=self.simulate, allowed_roots=roots)
                if step.run:
                    if self.simulate:
                        outcome.note = f"run step skipped under --simulate: {' '.join(step.run)}"
                    else:
                        env = dict(self.plan()[0].env) if self.ranks else dict(self.base_env)
                        with open(os.path.join(self.run_dir, LOG_NAME), "ab") as logf:
                            await asyncio.to_thread(prelaunch.run_step, outcome, step.run, cwd=workdir, env=env,
                                                    timeout=step.timeout_s, log=logf)
            outcomes.append(outcome)
        for t in self.profile.toggles:
            if self.toggles.get(t.name) and t.remove:
                outcome = prelaunch.Outcome(f"toggle {t.name}")
                await asyncio.to_thread(prelaunch.remove_globs, outcome, t.remove, base_dir=workdir,
                                        simulate=self.simulate, allowed_roots=roots)
                outcomes.append(outcome)
        for outcome in outcomes:
            self.event("prelaunch", None, **outcome.to_event())

    def launch_rank(self, r: Rank) -> None:
        launch = r.launch
        rotated = None
        try:
            rotated = rotate_log(launch.log_path)
        except OSError as e:
            self.event("supervisor", r.rank, reason=f"cannot rotate {launch.log_path}: {e}")
        r.stop_requested = False
        r.collateral = False
        r.stop_reason = ""
        r.health = None
        r.health_seen_ok = False
        r.next_probe = 0.0
        r.ready_at = None
        r.want_running = True
        r.next_restart_at = None
        try:
            proc = RankProcess.spawn(launch)
        except OSError as e:
            r.proc = None
            r.last_exit = {"code": None, "signal": None, "at": time.time(), "cause": "spawn_failed",
                           "collateral": False, "message": str(e)}
            self.set_state(r, "failed", f"cannot start {launch.argv[0]}: {e.strerror or e}", cause="spawn_failed")
            self.handle_failure(r, ExitStatus(None, None, known=False, at=time.time()), "spawn_failed", str(e))
            return
        r.proc = proc
        r.running = launch
        r.running_env_hash = env_hash(launch.env)
        r.running_argv_hash = argv_hash(launch.argv)
        r.generation += 1
        r.started_at = time.time()
        r.milestones = Milestones(r.role, self.profile.readiness.ready_pattern)
        r.reader = LogReader(launch.log_path, start_at_end=False)
        r.last_growth = time.time()
        proc.watch(self.loop, self.on_exit)
        self.set_state(r, "starting", f"spawned pid {proc.pid} (generation {r.generation})"
                       + (f"; previous log kept as {os.path.basename(rotated)}" if rotated else ""))

    # ---------------------------------------------------------------------------------------- exit

    def on_exit(self, proc: RankProcess) -> None:
        r = next((x for x in self.ranks.values() if x.proc is proc), None)
        if r is None:
            return
        status = proc.exit
        assert status is not None
        self._procs_for_stats.pop(proc.pid, None)
        # Read what the log still holds (the last lines before death).
        if r.reader and r.milestones:
            for line in r.reader.read_new():
                r.milestones.feed(line)
        last = {"code": status.code, "signal": status.signal, "at": round(status.at, 3), "status_known": status.known,
                "collateral": False, "generation": r.generation}
        if r.stop_requested:
            last["cause"] = "collateral" if r.collateral else "stopped"
            last["collateral"] = r.collateral
            r.last_exit = last
            self.set_state(r, "stopped", f"{r.stop_reason or 'stopped'}; {status.describe()}")
            self.after_exit(r)
            return
        if status.known and status.signal is None and status.code == 0:
            cause, message = "exit_code", "exited with code 0 although nobody asked it to stop"
        else:
            found = classify_lines(tail_lines(r.launch.log_path, 60))
            if found is None and r.milestones and r.milestones.failure:
                found = r.milestones.failure
            if found:
                cause, message = found
            elif not status.known:
                cause, message = "unknown", status.describe()
            elif status.signal is not None:
                cause, message = "killed", status.describe()
            else:
                cause, message = "exit_code", status.describe()
        if self.group_failing and self.scope == "group":
            ff = self.first_failure or {}
            last.update(cause="collateral", collateral=True, message=message)
            r.last_exit = last
            self.set_state(r, "failed", f"{status.describe()} after rank {ff.get('rank')} failed first", cause="collateral")
            self.after_exit(r)
            return
        last.update(cause=cause, message=message)
        r.last_exit = last
        new_state = "exited" if status.clean else "failed"
        self.set_state(r, new_state, f"{status.describe()}: {message}" if message != status.describe()
                       else status.describe(), cause=cause)
        self.after_exit(r)
        if self.scope == "group":
            # Ranks of one world often die within milliseconds of each other (a worker noticing rank 0's
            # death); gather the exits of a short window, then decide which one was first.
            self.pending_failures.append((r, status, cause, message))
            if self.settle_handle is None:
                self.settle_handle = self.loop.call_later(FAILURE_SETTLE_S, self.settle_failures)
            return
        self.handle_failure(r, status, cause, message)

    def settle_failures(self) -> None:
        self.settle_handle = None
        pending, self.pending_failures = self.pending_failures, []
        if not pending:
            return
        if not self.group_failing:
            # Evidence first: a signal or a classified log message beats a plain exit code (such a rank
            # most likely exited because another died); then rank 0 (workers follow it); then notice order.
            order = {id(p): i for i, p in enumerate(pending)}
            primary = min(pending, key=lambda p: (p[2] == "exit_code", p[0].rank != 0, order[id(p)]))
            self.record_first_failure(primary[0], primary[1], primary[2], primary[3])
        else:
            primary = None
        ff = self.first_failure or {}
        for item in pending:
            if item is primary:
                continue
            r, status, _cause, message = item
            if r.last_exit is not None:
                r.last_exit.update(cause="collateral", collateral=True, message=message)
            self.set_state(r, r.state, f"{status.describe()} after rank {ff.get('rank')} failed first")
        if primary is not None:
            self.handle_failure(*primary)

    def cancel_settle(self) -> None:
        if self.settle_handle is not None:
            self.settle_handle.cancel()
        self.settle_handle = None
        self.pending_failures = []

    def after_exit(self, r: Rank) -> None:
        if r.rank == 0:
            for w in self.ranks.values():
                if w.rank != 0 and w.alive and not w.stop_requested:
                    self.evaluate(w)

    def handle_failure(self, r: Rank, status: ExitStatus, cause: str, message: str) -> None:
        """First failure wins: record it now (synchronously, so a rank dying a moment later is collateral),
        then stop the rest of the group and apply the policy in a task."""
        if self.scope == "group":
            if self.group_failing and self.first_failure and self.first_failure.get("rank") != r.rank:
                return
            if not self.group_failing:
                self.record_first_failure(r, status, cause, message)
            self.event("group", None, reason=f"rank {r.rank} failed first: {cause}: {message}",
                       first_failure=self.first_failure)
            self.spawn_task(self.group_failure(r, cause))
        else:
            self.spawn_task(self.rank_failure(r, cause))

    def record_first_failure(self, r: Rank, status: ExitStatus, cause: str, message: str) -> None:
        self.group_failing = True
        self.first_failure = {"rank": r.rank, "cause": cause, "message": message, "at": round(status.at, 3),
                              "generation": r.generation}

    async def group_failure(self, r: Rank, cause: str) -> None:
        async with self.action_lock:
            if not self.group_failing:
                return  # an operator acted meanwhile
            others = [x for x in self.ranks.values() if x.alive]
            if others:
                await self.stop_ranks(others, f"stopped: rank {r.rank} failed first ({cause})", collateral=True)
            if not self.group_failing:
                return
            decision = self.group_tracker.decide(time.time(), "the group")
            if decision.crash_looping:
                self.group_crash_looping = True
                self.group_reason_crash = decision.reason
                self.set_state(r, "crash-looping", decision.reason, cause=cause)
                self.event("group", None, reason=decision.reason, crash_looping=True)
                self.update_group()
                return
            if not decision.restart:
                self.event("group", None, reason=decision.reason)
                self.update_group()
                return
            self.group_next_restart_at = time.time() + decision.delay
            self.event("group", None, reason=f"group {decision.reason}", restart_in_s=decision.delay,
                       restart_at=round(self.group_next_restart_at, 3))
            self.group_restart_handle = self.loop.call_later(
                decision.delay, lambda: self.spawn_task(self.auto_restart_group()))
            self.update_group()

    async def rank_failure(self, r: Rank, cause: str) -> None:
        async with self.action_lock:
            if r.alive or not r.want_running:
                return
            tracker = r.tracker or RestartTracker(self.profile.restart)
            r.tracker = tracker
            decision = tracker.decide(time.time(), f"rank {r.rank}")
            if decision.crash_looping:
                self.set_state(r, "crash-looping", decision.reason, cause=cause)
                return
            if not decision.restart:
                self.event("state", r.rank, reason=decision.reason)
                return
            r.next_restart_at = time.time() + decision.delay
            self.event("state", r.rank, reason=f"rank {r.rank} {decision.reason}", restart_in_s=decision.delay)
            r.restart_handle = self.loop.call_later(decision.delay, lambda: self.spawn_task(self.auto_restart_rank(r)))
            self._state_dirty = True

    async def auto_restart_group(self) -> None:
        async with self.action_lock:
            if self.group_next_restart_at is None:
                return  # cancelled
            self.group_next_restart_at = None
            self.group_restart_handle = None
            now = time.time()
            self.group_tracker.record_restart(now)
            self.group_restarts += 1
            for r in self.ranks.values():
                r.restarts += 1
            ff = self.first_failure or {}
            await self.launch_group(f"automatic restart {self.group_restarts} after rank {ff.get('rank')} "
                                    f"failed ({ff.get('cause')})")

    async def auto_restart_rank(self, r: Rank) -> None:
        async with self.action_lock:
            if r.next_restart_at is None or r.alive:
                return
            r.next_restart_at = None
            r.restart_handle = None
            if r.tracker:
                r.tracker.record_restart(time.time())
            r.restarts += 1
            self.launch_rank(r)

    def cancel_group_restart(self) -> None:
        if self.group_restart_handle is not None:
            self.group_restart_handle.cancel()
        self.group_restart_handle = None
        self.group_next_restart_at = None

    def cancel_rank_restart(self, r: Rank) -> None:
        if r.restart_handle is not None:
            r.restart_handle.cancel()
        r.restart_handle = None
        r.next_restart_at = None

    # ---------------------------------------------------------------------------------------- stop

    async def stop_ranks(self, ranks: list[Rank], reason: str, collateral: bool = False) -> None:
        grace = self.profile.stop_grace_s

        async def stop_one(r: Rank) -> None:
            if not r.alive:
                return
            r.stop_requested = True
            r.collateral = collateral
            r.stop_reason = reason
            self.set_state(r, "stopping", f"{reason} (SIGTERM to process group {r.proc.pgid}, {grace:g}s grace)")
            how = await r.proc.stop(grace)
            if "SIGKILL" in how:
                self.event("action", r.rank, reason=f"rank {r.rank} ignored SIGTERM for {grace:g}s: {how}")

        await asyncio.gather(*(stop_one(r) for r in ranks))

    # --------------------------------------------------------------------------------- operator ops

    def select(self, spec: Any) -> list[Rank]:
        if spec is None or spec == "all":
            return sorted(self.ranks.values(), key=lambda r: r.rank)
        if spec == "failed":
            return [r for r in sorted(self.ranks.values(), key=lambda r: r.rank)
                    if r.state in ("failed", "exited", "crash-looping")]
        if isinstance(spec, int) and not isinstance(spec, bool):
            spec = [spec]
        if not isinstance(spec, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in spec):
            raise RequestError("bad_request", '`ranks` must be a list of rank numbers, "failed" or "all"')
        unknown = [x for x in spec if x not in self.ranks]
        if unknown:
            raise RequestError("unknown_rank", f"no rank {', '.join(map(str, unknown))} here; this supervisor runs "
                               f"ranks {', '.join(map(str, sorted(self.ranks)))}")
        return [self.ranks[x] for x in sorted(set(spec))]

    async def op_start(self, ranks: list[Rank], who: str) -> None:
        async with self.action_lock:
            self.cancel_group_restart()
            self.cancel_settle()
            self.group_crash_looping = False
            for r in ranks:
                self.cancel_rank_restart(r)
                if r.tracker:
                    r.tracker.reset()
                r.want_running = True
            if len(ranks) == len(self.ranks) and not any(r.alive for r in self.ranks.values()):
                self.group_tracker.reset()
                await self.launch_group(f"start requested by {who}")
            else:
                self.group_failing = False
                for r in ranks:
                    if not r.alive:
                        self.launch_rank(r)
            self.update_group()

    async def op_stop(self, ranks: list[Rank], who: str) -> None:
        async with self.action_lock:
            self.cancel_group_restart()
            self.cancel_settle()
            self.group_failing = False
            self.group_crash_looping = False
            for r in ranks:
                self.cancel_rank_restart(r)
                r.want_running = False
            await self.stop_ranks([r for r in ranks if r.alive], f"stopped by {who}")
            for r in ranks:
                if not r.alive and r.state != "stopped":
                    self.set_state(r, "stopped", f"stopped by {who}")
            self.update_group()

    async def op_restart(self, ranks: list[Rank], who: str) -> None:
        await self.op_stop(ranks, who)
        await self.op_start(ranks, who)

    def apply_toggle(self, name: str, on: bool) -> list[int]:
        self.toggles[name] = on
        save_toggles(self.run_dir, self.toggles)
        self.replan()
        pending = [r.rank for r in self.ranks.values() if self.relaunch_pending(r)]
        return pending

    def replan(self, profile: Profile | None = None) -> None:
        for launch in self.plan(profile):
            if launch.rank in self.ranks:
                self.ranks[launch.rank].launch = launch
        self._state_dirty = True

    async def reload(self) -> dict:
        try:
            profile, warnings = await asyncio.to_thread(load_profile_checked, self.profile_path, self.simulate)
        except ProfileInvalid as e:
            raise RequestError("profile_invalid", "\n".join(e.diagnostics)) from None
        except Exception as e:  # noqa: BLE001 - a reload must never take the supervisor down
            raise RequestError("profile_invalid", f"{self.profile_path}: {e}") from None
        try:
            machine = choose_machine(profile, self.simulate, self.machine_arg)
            captured = await asyncio.to_thread(self.capture_env, profile)
            old_machine, old_captured = self.machine, self.captured_env
            self.machine, self.captured_env = machine, captured
            toggles = {t.name: self.toggles.get(t.name, t.enabled) for t in profile.toggles}
            try:
                launches = self.plan(profile, toggles)
            except Exception:
                self.machine, self.captured_env = old_machine, old_captured
                raise
        except ProfileInvalid as e:
            raise RequestError("profile_invalid", "\n".join(e.diagnostics)) from None
        except Exception as e:  # noqa: BLE001
            raise RequestError("profile_invalid", f"{self.profile_path}: cannot plan launches: {e}") from None
        if sorted(x.rank for x in launches) != sorted(self.ranks):
            self.machine, self.captured_env = old_machine, old_captured
            raise RequestError("bad_request", "the edited profile changes the set of ranks; run `xllm-tui down` "
                               "and `xllm-tui up` to apply it")
        self.profile = profile
        self.toggles = toggles
        self.group_tracker.policy = profile.restart
        for r in self.ranks.values():
            if r.tracker:
                r.tracker.policy = profile.restart
        for launch in launches:
            self.ranks[launch.rank].launch = launch
        pending = [r.rank for r in self.ranks.values() if self.relaunch_pending(r)]
        self.event("supervisor", reason=f"profile reloaded from {self.profile_path}; takes effect at the next launch",
                   relaunch_pending=pending, warnings=warnings)
        return {"reloaded": True, "warnings": warnings, "relaunch_pending": pending}

    def request_shutdown(self, stop_ranks: bool, who: str) -> None:
        if self.shutdown_event.is_set():
            return
        self.stop_ranks_on_shutdown = stop_ranks
        self.event("supervisor", reason=f"shutdown requested by {who}" + ("" if stop_ranks else "; ranks left running"))
        self.shutdown_event.set()

    async def shutdown(self) -> None:
        if self.stop_ranks_on_shutdown:
            await self.op_stop(list(self.ranks.values()), "shutdown")
        else:
            for r in self.ranks.values():
                if r.alive:
                    r.proc.unwatch(self.loop)
        for task in list(self.tasks):
            task.cancel()
        self.event("supervisor", reason=f"supervisor {self.pid} exiting")
        self.write_state()
        for subscriber in list(self.subscribers):
            subscriber.close()

    # ------------------------------------------------------------------------------ evidence loops

    def evaluate(self, r: Rank) -> None:
        """Derive a live rank's state from its milestones, health and silence."""
        if not r.alive or r.stop_requested or r.state in ("stopping", "crash-looping"):
            return
        m = r.milestones
        now = time.time()
        readiness = self.profile.readiness
        if m is None or m.phase == "starting":
            state, reason = "starting", f"pid {r.proc.pid}: started, no milestone yet"
        elif r.role == "master" and m.ready:
            if readiness.http_probe:
                if r.health and r.health["ok"]:
                    state, reason = "ready", f"serving on port {r.port} ({r.health['detail']})"
                elif r.health_seen_ok and r.health:
                    state, reason = "degraded", f"health probe failing: {r.health['detail']}"
                elif r.health is None and r.state == "ready" and r.proc.adopted:
                    state, reason = "ready", f"adopted (pid {r.proc.pid}); checking /health on port {r.port}"
                else:
                    state, reason = "loading", f"Brpc server started; waiting for /health on port {r.port}"
            else:
                state, reason = "ready", f"serving on port {r.port}"
        elif m.ready:
            state, reason = "ready", "connected to rank 0, model initialised"
        else:
            state, reason = "loading", m.describe()
        if state == "ready" and r.ready_at is None:
            r.ready_at = now
        r0 = self.ranks.get(0)
        if r.rank != 0 and r0 is not None and r0.proc is not None and not r0.alive and r.generation > 0:
            state, reason = "degraded", "rank 0 is gone; this worker waits for it forever (xllm has no failover)"
        elif state == "ready" and readiness.silence_warning_s > 0 and r.last_growth and \
                now - r.last_growth > readiness.silence_warning_s:
            state, reason = "degraded", f"log silent for {now - r.last_growth:.0f}s"
        elif state != "ready" and readiness.start_timeout_s > 0 and r.started_at and \
                now - r.started_at > readiness.start_timeout_s:
            state, reason = "degraded", f"not ready {readiness.start_timeout_s:g}s after start ({reason})"
        self.set_state(r, state, reason)

    async def log_loop(self) -> None:
        while True:
            now = time.time()
            for r in list(self.ranks.values()):
                if not r.alive or r.reader is None or r.milestones is None:
                    continue
                lines = r.reader.read_new()
                if lines:
                    r.last_growth = now
                    for line in lines:
                        r.milestones.feed(line)
                if r.role == "master" and r.milestones.ready and self.profile.readiness.http_probe and \
                        now >= r.next_probe:
                    r.next_probe = now + (self.profile.readiness.probe_interval_s if r.health_seen_ok else 0.5)
                    self.spawn_task(self.probe(r))
                self.evaluate(r)
            self.update_group()
            await asyncio.sleep(0.2)

    async def probe(self, r: Rank) -> None:
        proc = r.proc
        ok, detail = await http_health("127.0.0.1", r.port)
        if r.proc is not proc or not r.alive:
            return
        r.health = {"ok": ok, "detail": detail, "at": round(time.time(), 3)}
        r.health_seen_ok = r.health_seen_ok or ok
        self.evaluate(r)

    async def stats_loop(self) -> None:
        while True:
            pids = {r.proc.pid: r for r in self.ranks.values() if r.alive}
            samples = await asyncio.to_thread(self._sample, list(pids))
            for pid, sample in samples.items():
                r = pids.get(pid)
                if r is not None and r.alive and r.proc.pid == pid:
                    r.cpu_pct, r.rss_bytes, r.threads = sample
            # Not worth a state.json rewrite (fsync) on its own: the snapshot over the socket is live.
            await asyncio.sleep(2.0)

    def _sample(self, pids: list[int]) -> dict[int, tuple[float, int, int]]:
        out = {}
        for pid in pids:
            proc = self._procs_for_stats.get(pid)
            try:
                if proc is None:
                    proc = self._procs_for_stats[pid] = psutil.Process(pid)
                with proc.oneshot():
                    out[pid] = (round(proc.cpu_percent(None), 1), proc.memory_info().rss, proc.num_threads())
            except psutil.Error:
                self._procs_for_stats.pop(pid, None)
        for pid in list(self._procs_for_stats):
            if pid not in pids:
                self._procs_for_stats.pop(pid, None)
        return out

    async def state_loop(self) -> None:
        while True:
            if self._state_dirty:
                self._state_dirty = False
                data = self.state_data()
                try:
                    await asyncio.to_thread(atomic_write_json, os.path.join(self.run_dir, STATE_NAME), data)
                except OSError as e:
                    log.error("cannot write state.json: %s", e)
            await asyncio.sleep(0.5)
