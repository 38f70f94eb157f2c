"""The supervisor: one asyncio process per run directory that owns a deployment's ranks.

It launches every rank from its launch plan, notices exits at once (pidfd), derives each rank's state from
evidence (process, log milestones, rank 0's /health), applies the restart policy, journals every change,
writes state.json atomically, re-adopts ranks after its own death, and serves the socket protocol
(docs/protocol.md). Nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

import psutil

from xllm_tui.devices.affinity import BindingIssue, check_binding
from xllm_tui.devices.model import DeviceProcess, DeviceReport, health_changes
from xllm_tui.launch import LaunchError
from xllm_tui.spec import CoreRule, Profile, RankLaunch
from xllm_tui.supervisor import devices as devwatch
from xllm_tui.supervisor import prelaunch
from xllm_tui.supervisor.policy import RestartTracker
from xllm_tui.logs.tail import IncrementalReader, tail_lines
from xllm_tui.supervisor.probes import (
    Milestones,
    adopted_log_reader,
    classify_lines,
    count_weight_files,
    http_health,
    worker_ready,
)
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
    reader: IncrementalReader | None = None
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
    waiting: dict | None = None  # {"device", "holders", "since"} while its NPU is held by another process
    exited_at: float | None = None  # when its last process exited (for HBM left behind)
    hbm_left_polls: int = 0
    hbm_left_reported: bool = False

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
        self._mapping_lines: list[str] | None = None  # --simulate: what was mapped, shown to people
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
        # Devices (docs/supervisor.md, "Devices")
        self.devices_report: DeviceReport | None = None  # the last reading
        self.devices_polled_at: float | None = None
        self.devices_baseline: DeviceReport | None = None  # the last readable one, for health changes
        self.devices_readable: bool | None = None
        self.own_pids: set[int] = set()  # this deployment's ranks and their children at the last reading
        self.former_pids: collections.deque[int] = collections.deque(maxlen=1024)  # exited rank processes
        self.binding: dict[int, BindingIssue] = {}
        self.binding_reported: set[str] = set()
        self.topology_report: DeviceReport | None = None  # for cores: topology (affinity does not change)
        self.topology_problem: str | None = None  # why cores: topology could not be computed
        self.sim_procs_path = os.path.join(self.run_dir, devwatch.SIM_PROCS_NAME)

    # ------------------------------------------------------------------------------------ planning

    @property
    def scope(self) -> str:
        if len(self.ranks) <= 1:
            return "rank"
        return self.profile.restart.scope

    def topology_cores(self, profile: Profile) -> dict[int, str] | None:
        """device -> cores for `cores: topology` from the topology read before; raises LaunchError."""
        from xllm_tui.launch import needs_topology, topology_cores_from_devices

        if not needs_topology(profile, self.machine):
            return None
        return topology_cores_from_devices(profile, self.topology_report, self.machine)

    def plan(self, profile: Profile | None = None, toggles: dict[str, bool] | None = None) -> list[RankLaunch]:
        from xllm_tui.launch import build_simulate_mapping, plan_launches

        profile = profile or self.profile
        topology = self.topology_cores(profile)
        mapping = build_simulate_mapping(profile, port_offset=self.port_offset, topology_cores=topology) \
            if self.simulate else None
        return plan_launches(
            profile,
            machine=self.machine,
            simulate=mapping,
            base_env=self.base_env,
            captured_env=self.captured_env,
            toggles=toggles if toggles is not None else self.toggles,
            topology_cores=topology,
            log_root=self.run_dir if self.simulate else None,
        )

    def simulate_mapping_lines(self) -> list[str]:
        """What --simulate changes (binary, addresses to loopback, cores onto this machine), for people."""
        from xllm_tui.launch import build_simulate_mapping

        try:
            topology = self.topology_cores(self.profile)
        except LaunchError:
            topology = None
        return build_simulate_mapping(self.profile, port_offset=self.port_offset, topology_cores=topology).describe()

    def plan_or_placeholder(self) -> list[RankLaunch]:
        """plan(); when `cores: topology` cannot be computed, the same ranks without numactl (so they exist in
        the snapshot) and self.topology_problem says why: launch_ranks refuses to launch them."""
        try:
            launches = self.plan()
        except LaunchError as e:
            self.topology_problem = str(e)
            return self.plan(replace(self.profile, core_rule=CoreRule(kind="none")))
        self.topology_problem = None
        return launches

    async def read_topology(self, profile: Profile) -> None:
        from xllm_tui.launch import needs_topology, read_profile_devices

        if needs_topology(profile, self.machine):
            self.topology_report = await asyncio.to_thread(
                read_profile_devices, profile, simulate=self.simulate, env=self.device_env(profile))

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

    def set_state(self, r: Rank, state: str, reason: str, cause: str | None = None, journal: bool = False) -> None:
        """journal: an event even if the state word stays (a waiting rank that is now spawned)."""
        old = r.state
        if state == old and reason == r.reason:
            return
        r.reason = reason
        if state != old or journal:
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
        if self.topology_problem and "failed" in states and not any(r.alive for r in ranks):
            return "failed", f"cannot launch: {self.topology_problem}"
        if any(s in ("failed", "exited") for s in states):
            bad = [str(r.rank) for r in ranks if r.state in ("failed", "exited")]
            return "failed", f"rank(s) {', '.join(bad)} not running"
        if "degraded" in states:
            bad = [r for r in ranks if r.state == "degraded"]
            return "degraded", f"rank {bad[0].rank}: {bad[0].reason}"
        ready = states.count("ready")
        waiting = [r for r in ranks if r.waiting]
        if waiting:
            return ("loading" if "loading" in states or ready else "starting"), f"rank {waiting[0].rank} {waiting[0].reason}"
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
            "binding": self.binding[r.rank].to_dict() if r.rank in self.binding else None,
            "waiting": r.waiting,
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
                        "machine": self.machine, "port_offset": self.port_offset,
                        "simulate_mapping": self._mapping_lines},
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
            "devices": self.devices_json(),
            "events": self.journal.last(events) if self.journal else [],
        }

    def devices_json(self) -> dict | None:
        """The last device reading for the snapshot (docs/protocol.md, "devices"); None before the first."""
        report = self.devices_report
        if report is None:
            return None
        topology = None
        if self.topology_problem is None:
            with contextlib.suppress(LaunchError):
                cores = self.topology_cores(self.profile)
                ours = {r.launch.spec.device for r in self.ranks.values()}
                topology = {str(d): c for d, c in sorted(cores.items()) if d in ours} if cores is not None else None
        return {
            **report.to_dict(),
            "polled_at": round(self.devices_polled_at, 3) if self.devices_polled_at else None,
            "poll_interval_s": self.profile.devices.poll_interval_s,
            "on_busy": self.profile.devices.on_busy,
            "summary": devwatch.summarize(report),
            "binding": [self.binding[rank].to_dict() for rank in sorted(self.binding)],
            "topology_cores": topology,
            "topology_problem": self.topology_problem,
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
            await self.read_topology(self.profile)
            if self.simulate:
                self._mapping_lines = self.simulate_mapping_lines()
                self.event("supervisor", reason="--simulate maps the profile onto this machine: "
                           + "; ".join(self._mapping_lines))
            for launch in self.plan_or_placeholder():
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
            background = [self.log_loop(), self.stats_loop(), self.state_loop(), self.device_loop()]
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
            # A fresh launch is a new run: the restart budget and first failure of the last one no longer
            # apply (they stay in events.jsonl). Generations keep counting so rotated logs never collide.
            if self.group_restarts or self.first_failure:
                ff = self.first_failure or {}
                self.event("supervisor", reason=f"new run: restart count reset (the previous run had "
                           f"{self.group_restarts} restart(s), first failure: "
                           f"{'rank ' + str(ff.get('rank')) + ' ' + str(ff.get('cause')) if ff else 'none'})")
            self.group_restarts = 0
            self.group_tracker.restarts_at = []
            self.first_failure = None
            for r in self.ranks.values():
                r.restarts = 0
                r.want_running = True
            async with self.action_lock:
                await self.launch_group("supervisor start (`up`)")

    def new_milestones(self, r: Rank) -> Milestones:
        """A fresh tracker for r's current launch, told its --model / --draft_model; the number of weight
        files in them is counted in a thread (a model directory may sit on a slow network mount)."""
        argv, cwd = r.launch.argv, r.launch.cwd
        model, draft = _flag_value(argv, "model"), _flag_value(argv, "draft_model")
        milestones = Milestones(r.role, self.profile.readiness.ready_pattern, model_path=model,
                                draft_model_path=draft)
        if model or draft:
            self.spawn_task(self.count_weights(milestones, model, draft, cwd))
        return milestones

    @staticmethod
    async def count_weights(milestones: Milestones, model: str | None, draft: str | None, cwd: str) -> None:
        main, extra = await asyncio.to_thread(
            lambda: (count_weight_files(model, cwd), count_weight_files(draft, cwd)))
        milestones.set_expected_weights(main, extra)

    def rank0_milestones(self) -> Milestones | None:
        """Rank 0's tracker while its process lives (a v0.7.x worker's readiness is read from it)."""
        r0 = self.ranks.get(0)
        return r0.milestones if r0 is not None and r0.alive else None

    def take_over(self, r: Rank, proc: RankProcess, rec: dict) -> None:
        r.proc = proc
        r.running = r.launch
        r.running_env_hash = rec.get("env_hash")
        r.running_argv_hash = rec.get("launch_argv_hash")
        r.started_at = rec.get("started_at") or (proc.identity.create_time if proc.identity else time.time())
        r.want_running = True
        r.milestones = self.new_milestones(r)
        r.reader, lines = adopted_log_reader(r.launch.log_path)
        for line in lines:
            r.milestones.feed(line)
        r.last_growth = time.time()
        proc.watch(self.loop, self.on_exit)
        self.write_sim_procs()
        state = rec.get("state") if rec.get("state") in RUNNING_STATES and rec.get("state") != "stopping" else "loading"
        r.state = state
        r.health_seen_ok = state == "ready"  # a failing probe now means degraded, not "still loading"
        r.reason = f"adopted (pid {proc.pid}); {rec.get('reason') or ''}".rstrip("; ")
        self.event("state", r.rank, **{"from": "unknown", "to": state, "reason": r.reason, "adopted": True,
                                        "pid": proc.pid})
        self.evaluate(r)

    # -------------------------------------------------------------------------------------- launch

    async def launch_group(self, why: str, forced: set[int] | frozenset[int] = frozenset()) -> None:
        """Pre-launch work, then every rank. Caller holds action_lock."""
        self.cancel_group_restart()
        self.group_failing = False
        self.group_crash_looping = False
        if not await self.ensure_topology([r for r in self.ranks.values() if not r.alive]):
            return
        await self.run_prelaunch()
        self.last_launch_at = time.time()
        self.event("group", None, reason=f"launching {len(self.ranks)} rank(s): {why}")
        await self.launch_ranks([r for r in self.ranks.values() if not r.alive], forced)

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
        r.waiting = None
        r.exited_at = None
        r.hbm_left_polls = 0
        r.hbm_left_reported = False
        # Made before the spawn, at the log's end: the rank's first line cannot be missed, and a log that could
        # not be rotated is not read again from its start (its milestones are the previous process's).
        reader = IncrementalReader(launch.log_path, from_end=True)
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
        r.milestones = self.new_milestones(r)
        r.reader = reader
        r.last_growth = time.time()
        proc.watch(self.loop, self.on_exit)
        self.write_sim_procs()
        self.set_state(r, "starting", f"spawned pid {proc.pid} (generation {r.generation})"
                       + (f"; previous log kept as {os.path.basename(rotated)}" if rotated else ""), journal=True)

    async def launch_ranks(self, ranks: list[Rank], forced: set[int] | frozenset[int] = frozenset()) -> None:
        """Launch these ranks after the device checks: `cores: topology` must be computable, and a rank whose NPU
        another process holds follows devices.on_busy (ranks in `forced` launch anyway: the operator chose).
        Caller holds action_lock."""
        ranks = sorted((r for r in ranks if not r.alive), key=lambda r: r.rank)
        if not ranks or not await self.ensure_topology(ranks):
            return
        for r in ranks:
            r.waiting = None
        report = await self.poll_devices()
        busy: dict[int, list[DeviceProcess]] = {}
        if report.available:
            for r in ranks:
                device = r.launch.spec.device
                holders = report.holders(device, self.rank_pids())
                if holders and r.rank not in forced:
                    busy[r.rank] = holders
                elif holders:
                    self.event("device", r.rank, device=device, holders=devwatch.holders_json(holders),
                               reason=f"{devwatch.describe_holders(device, holders)}; launching rank {r.rank} "
                                      "anyway: the operator started it")
        policy = self.profile.devices.on_busy
        for r in ranks:
            if r.rank in busy:
                device = r.launch.spec.device
                text = devwatch.describe_holders(device, busy[r.rank])
                then = {"wait": f"rank {r.rank} waits until it is gone or the operator starts it again",
                        "fail": f"rank {r.rank} fails", "ignore": f"launching rank {r.rank} anyway"}[policy]
                self.event("device", r.rank, device=device, holders=devwatch.holders_json(busy[r.rank]),
                           on_busy=policy, reason=f"{text} before launching rank {r.rank}; {then} (devices.on_busy: {policy})")
        if policy == "fail" and busy:
            now = time.time()
            failing = [r for r in ranks if r.rank in busy]
            for r in failing:
                text = devwatch.describe_holders(r.launch.spec.device, busy[r.rank])
                r.last_exit = {"code": None, "signal": None, "at": round(now, 3), "cause": "npu_busy",
                               "collateral": False, "status_known": True, "generation": r.generation, "message": text}
                self.set_state(r, "failed", f"{text} (devices.on_busy: fail)", cause="npu_busy")
            if self.scope == "group":
                # The world cannot form without that rank: launch nobody, the group policy decides.
                first = failing[0]
                for r in ranks:
                    if r.rank not in busy:
                        self.set_state(r, "stopped", f"not launched: {first.reason}")
                self.handle_failure(first, ExitStatus(None, None, known=True, at=now), "npu_busy", first.last_exit["message"])
                return
            for r in failing:
                self.handle_failure(r, ExitStatus(None, None, known=True, at=now), "npu_busy", r.last_exit["message"])
        for r in ranks:
            if r.rank in busy and policy == "wait":
                device = r.launch.spec.device
                r.waiting = {"device": device, "holders": devwatch.holders_json(busy[r.rank]), "since": round(time.time(), 3)}
                r.want_running = True
                self.set_state(r, "starting", f"waiting: {devwatch.describe_holders(device, busy[r.rank])}")
            elif r.rank not in busy or policy == "ignore":
                self.launch_rank(r)

    async def ensure_topology(self, ranks: list[Rank]) -> bool:
        """For `cores: topology`: the cores are known (reading the devices again if they were not). Otherwise
        the ranks fail with the reason and nothing is launched."""
        if self.topology_problem is None:
            return True
        await self.read_topology(self.profile)
        launches = self.plan_or_placeholder()
        if self.topology_problem is None:
            for launch in launches:
                if launch.rank in self.ranks:
                    self.ranks[launch.rank].launch = launch
            return True
        self.event("device", None, reason=f"cannot launch: {self.topology_problem}")
        for r in ranks:
            self.set_state(r, "failed", f"cannot launch: {self.topology_problem}", cause="topology_unavailable")
        return False

    # ------------------------------------------------------------------------------------- devices

    def device_env(self, profile: Profile | None = None) -> dict[str, str] | None:
        """Extra environment for the device tool: under --simulate the ranks' process file, and the profile's
        XLLM_SIM_NPU_* variables (the simulated npu-smi runs in the supervisor's environment, not the ranks')."""
        if not self.simulate:
            return None
        profile = profile or self.profile
        env = {name: value for name, value in profile.env if name.startswith(devwatch.SIM_ENV_PREFIX)}
        env["XLLM_SIM_NPU_PROCS"] = self.sim_procs_path
        return env

    def write_sim_procs(self) -> None:
        """Under --simulate: each live rank on its NPU, for the simulated npu-smi (the TUI's too)."""
        if not self.simulate:
            return
        entries = [{"pid": r.proc.pid, "logic_id": r.launch.spec.device, "name": devwatch.SIM_PROC_NAME}
                   for r in sorted(self.ranks.values(), key=lambda r: r.rank) if r.alive]
        try:
            devwatch.write_sim_procs(self.sim_procs_path, entries)
        except OSError as e:
            log.error("cannot write %s: %s", self.sim_procs_path, e)

    def _read_devices_blocking(self, profile: Profile, env: dict | None, rank_pids: list[int]) -> tuple[DeviceReport, set[int]]:
        from xllm_tui.launch import read_profile_devices

        report = read_profile_devices(profile, simulate=self.simulate, env=env)
        devwatch.fill_process_names(report)
        return report, devwatch.process_family(rank_pids)

    async def poll_devices(self) -> DeviceReport:
        """Read the devices in a worker thread (never on the loop) and take in what changed."""
        self.write_sim_procs()
        started = time.time()
        rank_pids = [r.proc.pid for r in self.ranks.values() if r.alive]
        report, own = await asyncio.to_thread(self._read_devices_blocking, self.profile, self.device_env(), rank_pids)
        if self.devices_polled_at is None or started >= self.devices_polled_at:
            self.own_pids = own
            self.accept_devices(report, started)
        # else a reading that started later finished first (a launch and the poll loop overlapped): keep it
        return report

    def rank_pids(self) -> set[int]:
        """Pids that are this deployment's: its live ranks (and their children at the last reading), and its
        exited ranks' pids that are gone (npu-smi may list a process a moment after its death)."""
        return self.own_pids | {r.proc.pid for r in self.ranks.values() if r.alive} | self.gone_rank_pids()

    def gone_rank_pids(self) -> set[int]:
        return {pid for pid in self.former_pids if not psutil.pid_exists(pid)}

    def accept_devices(self, report: DeviceReport, polled_at: float) -> None:
        self.devices_report = report
        self.devices_polled_at = polled_at
        if not report.available:
            if self.devices_readable is not False:
                why = "; ".join(report.errors) or "no devices listed"
                self.event("device", None, reason=f"devices cannot be read: {why}", errors=list(report.errors))
            self.devices_readable = False
            return
        if self.devices_readable is False:
            self.event("device", None, reason=f"devices readable again ({len(report.devices)} listed)")
        self.devices_readable = True
        by_device: dict[int, Rank] = {}
        for r in sorted(self.ranks.values(), key=lambda r: r.rank):
            by_device.setdefault(r.launch.spec.device, r)
        for device, old, new in health_changes(self.devices_baseline, report):
            if old is None or new is None:
                continue  # a device appearing or vanishing is not a health change
            r = by_device.get(device)
            self.event("device", r.rank if r else None, device=device, **{"from": old, "to": new},
                       reason=f"NPU {device} health {old} -> {new}" + (f" (rank {r.rank})" if r else ""))
        self.devices_baseline = report
        for r in self.ranks.values():
            self.check_hbm_left(r, report, polled_at)
        self.check_binding(report)

    def check_hbm_left(self, r: Rank, report: DeviceReport, polled_at: float) -> None:
        """HBM that stays in use on a rank's NPU, with no process on it, for two polls after the rank exited."""
        if r.alive or r.exited_at is None or r.hbm_left_reported or polled_at <= r.exited_at:
            return
        device = report.device(r.launch.spec.device)
        if device is None:
            return
        pct = device.hbm_pct
        gone = self.gone_rank_pids()
        if [p for p in device.processes if p.pid not in gone] or pct is None or pct <= devwatch.HBM_LEFT_PCT:
            r.hbm_left_polls = 0
            return
        r.hbm_left_polls += 1
        if r.hbm_left_polls >= devwatch.HBM_LEFT_POLLS:
            r.hbm_left_reported = True
            self.event("device", r.rank, device=device.logic_id, hbm_used_mb=device.hbm_used_mb,
                       hbm_total_mb=device.hbm_total_mb,
                       reason=f"HBM still in use on NPU {device.logic_id} after rank {r.rank} exited "
                              f"({device.hbm_used_mb}/{device.hbm_total_mb} MB, {pct:.0f}%, no process holds it)")

    def check_binding(self, report: DeviceReport) -> None:
        """Each rank's cores (as the profile gives them: under --simulate the simulated NPUs keep the real
        layout's affinity) against its NPU's CPU affinity; a new warning is an event once."""
        from xllm_tui.launch import ranks_of

        topology = report.topology
        if not topology.cpu_affinity:
            return
        try:
            specs = ranks_of(self.profile, self.machine, self.topology_cores(self.profile))
        except LaunchError:
            return
        specs = [s for s in specs if s.rank in self.ranks]
        issues = check_binding({s.rank: s.cores for s in specs}, {s.rank: s.device for s in specs}, topology)
        self.binding = {issue.rank: issue for issue in issues}
        for issue in issues:
            if issue.message not in self.binding_reported:
                self.binding_reported.add(issue.message)
                self.event("device", issue.rank, device=issue.device, binding=issue.to_dict(),
                           reason=f"binding: {issue.message}")

    async def device_loop(self) -> None:
        while True:
            interval = self.profile.devices.poll_interval_s
            # A launch reads the devices too; the next poll counts from the latest reading.
            due = (self.devices_polled_at or 0.0) + interval
            if time.time() < due:
                await asyncio.sleep(due - time.time())
                continue
            try:
                await self.poll_devices()
                await self.recheck_waiting()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a device problem must never stop the supervisor
                log.exception("device poll failed")
                await asyncio.sleep(interval)

    async def recheck_waiting(self) -> None:
        """Ranks waiting for their NPU: launch each once nothing else holds it."""
        report = self.devices_report
        if report is None or not report.available or not any(r.waiting for r in self.ranks.values()):
            return
        async with self.action_lock:
            for r in sorted(self.ranks.values(), key=lambda r: r.rank):
                if not r.waiting or r.alive:
                    continue
                device = r.launch.spec.device
                holders = report.holders(device, self.rank_pids())
                if holders:
                    r.waiting["holders"] = devwatch.holders_json(holders)
                    self.set_state(r, "starting", f"waiting: {devwatch.describe_holders(device, holders)}")
                    continue
                self.event("device", r.rank, device=device, reason=f"NPU {device} is free now; launching rank {r.rank}")
                self.launch_rank(r)

    # ---------------------------------------------------------------------------------------- exit

    def on_exit(self, proc: RankProcess) -> None:
        r = next((x for x in self.ranks.values() if x.proc is proc), None)
        if r is None:
            return
        status = proc.exit
        assert status is not None
        self._procs_for_stats.pop(proc.pid, None)
        r.exited_at = status.at
        self.former_pids.append(proc.pid)
        r.hbm_left_polls = 0
        r.hbm_left_reported = False
        self.write_sim_procs()
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
            for x in self.ranks.values():
                if x.waiting:
                    x.waiting = None
                    self.set_state(x, "stopped", f"not launched: rank {r.rank} failed first ({cause})")
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
            await self.launch_ranks([r])

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

    async def op_start(self, ranks: list[Rank], who: str, forced: set[int] | None = None) -> None:
        # Starting a rank that waits for its NPU is the operator's choice to launch it anyway.
        forced = set(forced or ()) | {r.rank for r in ranks if r.waiting}
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
                await self.launch_group(f"start requested by {who}", forced)
            else:
                self.group_failing = False
                await self.launch_ranks([r for r in ranks if not r.alive], forced)
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
                r.waiting = None
            await self.stop_ranks([r for r in ranks if r.alive], f"stopped by {who}")
            for r in ranks:
                if not r.alive and r.state != "stopped":
                    self.set_state(r, "stopped", f"stopped by {who}")
            self.update_group()

    async def op_restart(self, ranks: list[Rank], who: str) -> None:
        forced = {r.rank for r in ranks if r.waiting}
        await self.op_stop(ranks, who)
        await self.op_start(ranks, who, forced)

    def apply_toggle(self, name: str, on: bool) -> list[int]:
        self.toggles[name] = on
        save_toggles(self.run_dir, self.toggles)
        self.replan()
        pending = [r.rank for r in self.ranks.values() if self.relaunch_pending(r)]
        return pending

    def replan(self, profile: Profile | None = None) -> None:
        for launch in (self.plan(profile) if profile is not None else self.plan_or_placeholder()):
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
            if self.topology_report is None or not self.topology_report.topology.cpu_affinity:
                await self.read_topology(profile)
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
        self.topology_problem = None  # the plan above computed any topology cores
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
        elif r.role != "master" and (ready := worker_ready(m, self.rank0_milestones()))[0]:
            state, reason = "ready", ready[1]
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

    @staticmethod
    def _read_logs(readers: list[tuple[Rank, IncrementalReader, Milestones]]) -> list[Rank]:
        """In a worker thread: feed each rank's new log lines to its milestones; the ranks whose log grew.
        A rank writing a burst of output costs this thread, never the event loop that answers clients."""
        grew = []
        for r, reader, milestones in readers:
            lines = reader.read_new()
            if lines:
                for line in lines:
                    milestones.feed(line)
                grew.append(r)
        return grew

    async def log_loop(self) -> None:
        while True:
            # Reader and milestones are taken together here: a relaunch during the read replaces both.
            readers = [(r, r.reader, r.milestones) for r in self.ranks.values()
                       if r.alive and r.reader is not None and r.milestones is not None]
            grew = {id(r) for r in await asyncio.to_thread(self._read_logs, readers)}
            now = time.time()
            for r, reader, _milestones in readers:
                if r.reader is not reader or not r.alive:
                    continue  # relaunched or gone meanwhile: the next round reads the new log
                if id(r) in grew:
                    r.last_growth = now
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
