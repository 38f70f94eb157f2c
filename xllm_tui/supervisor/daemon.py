"""The supervisor: one asyncio process per run directory that owns a deployment's ranks.

Where each rule lives (docs/supervisor.md, "Inside the supervisor"):
  protocol.py (package top)  states, allowed transitions, the typed snapshot, what a restart really restarts
  group.py        first failure, restart/crash-loop decisions, the group's state, a rank's state from evidence
  slot.py         a rank's slot for the supervisor's life, one Launch per process
  planner.py      profile -> launch plans (machine, captured env, cores: topology, --simulate mapping)
  reconcile.py    the first act: adopt recorded or marked ranks, report what is missing, never launch over them
  launcher.py     pre-launch steps, device checks, spawning
  failures.py     exits, the settle window, stopping a failed world, scheduled restarts
  device_watch.py npu-smi polls, health, HBM left behind, binding, ranks waiting for an NPU
  evidence.py     log intake and /health probes: gathered off the loop, judged on it (stats.py: psutil)
  snapshot.py     the typed snapshot and state.json
  stats.py        CPU, memory and threads of the live ranks (psutil, in a worker thread)
  machines.py     machine 0 of a world over ssh: the other machines' ranks, failures and actions (remote.py)
  world_launch.py machine 0 launching a world across machines: all or nothing, held while a machine is lost
  server.py       the socket, depending only on the Operations interface
This module wires them together, runs the event loop and performs the operators' actions. Evidence (log lines,
/health, stats, devices) is gathered off the loop; only the loop changes states. Nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import psutil

from xllm_tui.protocol import RequestError, RestartPlan, plan_restart, select_ranks, transition_allowed
from xllm_tui.supervisor.device_watch import DeviceWatch
from xllm_tui.supervisor.disk_watch import DiskWatching
from xllm_tui.supervisor.evidence import EvidenceGathering
from xllm_tui.supervisor.failures import FailureHandling
from xllm_tui.supervisor.group import GroupController, RankView, derive_group
from xllm_tui.supervisor.launcher import Launcher
from xllm_tui.supervisor.log_access import LogAccess
from xllm_tui.supervisor.machines import RemoteMachines
from xllm_tui.supervisor.world_launch import WorldLaunch
from xllm_tui.supervisor.ranktable import RankTables
from xllm_tui.supervisor.outlets import Outlets
from xllm_tui.supervisor.planner import Planner, ProfileInvalid, choose_machine, load_profile_checked
from xllm_tui.supervisor.policy import RestartTracker
from xllm_tui.supervisor.reconcile import Reconciler
from xllm_tui.supervisor.run_dir_keeper import RunDirKeeping
from xllm_tui.supervisor.slot import RankSlot
from xllm_tui.supervisor.snapshot import Snapshots
from xllm_tui.supervisor.stats import StatsSampling
from xllm_tui.supervisor.state import SOCKET_NAME, STATE_NAME, EventJournal, RunDirLock, atomic_write_json, \
    load_toggles, save_toggles

log = logging.getLogger("xllm_tui.supervisor")

__all__ = ["ProfileInvalid", "RequestError", "Supervisor"]


class Supervisor(RemoteMachines, WorldLaunch, Reconciler, Launcher, FailureHandling, EvidenceGathering, DeviceWatch,
                 Snapshots, Outlets, StatsSampling, LogAccess, RankTables, RunDirKeeping, DiskWatching):
    def __init__(self, profile_path: str, *, simulate: bool, run_dir: str, port_offset: int = 0,
                 machine: str | None = None, launch: bool = True, base_env: dict[str, str] | None = None,
                 over_ssh: bool = False, member: bool = False):
        """over_ssh: --simulate as a real machine 0 (the others over ssh); member: see machines.py."""
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
        self.member = member
        if over_ssh and simulate and machine is None:
            machine = self.profile.machines[0].host
            self.machine_arg = machine  # a reload chooses the same machine
        self.machine = choose_machine(self.profile, simulate, machine)
        coordinate = (not member and len(self.profile.machines) > 1 and self.machine == self.profile.machines[0].host
                      and (over_ssh or (not simulate and machine is None)))
        self.planner = Planner(self.profile, simulate=simulate, machine=self.machine, port_offset=port_offset,
                               base_env=self.base_env, run_dir=self.run_dir,
                               on_warning=lambda text: self.event("supervisor", reason=text))
        self.toggles: dict[str, bool] = {t.name: t.enabled for t in self.profile.toggles}
        self.ranks: dict[int, RankSlot] = {}
        self.group = GroupController(self.restart_policy(self.profile), time.time)
        self.group_state = "stopped"
        self.group_reason = "not started"
        self.group_since = time.time()
        self.last_launch_at: float | None = None
        self.journal: EventJournal | None = None
        self.lock = RunDirLock(self.run_dir)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.action_lock = asyncio.Lock()
        self.shutdown_event = asyncio.Event()
        self.stop_ranks_on_shutdown = True
        self.subscribers: set[Any] = set()  # server.Subscriber
        self.tasks: set[asyncio.Task] = set()
        self.state_changed = asyncio.Event()
        self._procs_for_stats: dict[int, psutil.Process] = {}
        self.stats_wanted_until = 0.0  # monotonic; stats are sampled only while clients look
        self.stats_due = asyncio.Event()
        self.server = None
        self.init_device_watch()
        self.init_failure_handling()
        self.init_outlets()
        self.init_remotes(coordinate)
        self.init_run_dir_keeping()
        self.init_disk_watch()

    @property
    def scope(self) -> str:
        return "rank" if self.world_size() <= 1 else self.profile.restart.scope

    # ------------------------------------------------------------------------------------- events

    def event(self, kind: str, rank: int | None = None, **fields: Any) -> dict:
        assert self.journal is not None
        ev = self.journal.append(kind, rank, **fields)
        log.info("event %s", ev)
        if self.hooks is not None:
            self.hooks.on_event(ev)
        for subscriber in list(self.subscribers):
            subscriber.push(ev)
        self.state_changed.set()
        news = self.journal.news()  # after this event went out: subscribers drop what comes out of seq order
        if news is not None:
            (log.error if self.journal.write_error else log.warning)("%s", news)
            self.event("supervisor", reason=news, journal_error=self.journal.write_error)
        return ev

    def set_state(self, r: RankSlot, state: str, reason: str, cause: str | None = None, journal: bool = False) -> None:
        """journal: an event even if the state word stays (a waiting rank that is now spawned)."""
        old = r.state
        if state == old and reason == r.reason and not journal:
            return
        if not transition_allowed(old, state):
            log.error("rank %s: transition %s -> %s is not in the state machine (%s)", r.rank, old, state, reason)
        r.reason = reason
        if state != old or journal:
            r.state = state
            r.since = time.time()
            fields: dict[str, Any] = {"from": old, "to": state, "reason": reason}
            if cause:
                fields["cause"] = cause
            self.event("state", r.rank, **fields)
            self.wake_log_loop()  # other ranks' evidence may depend on it (a worker whose rank 0 is gone)
        self.state_changed.set()
        self.update_group()

    def update_group(self) -> None:
        r0 = self.ranks.get(0)
        views = [RankView(r.rank, r.state, r.reason, r.alive, bool(r.waiting), not r.want_running)
                 for r in self.ranks.values()] + self.remote_views()
        state, reason = derive_group(views, self.group, now=time.time(), scope=self.scope,
                                     rank0_health=r0.live.health if r0 is not None and r0.live else None,
                                     rank0_port=r0.port if r0 is not None else None,
                                     topology_problem=self.planner.topology_problem)
        state, reason = self.remote_group_override(state, reason)
        if state != self.group_state or reason != self.group_reason:
            old = self.group_state
            self.group_reason = reason
            if state != old:
                self.group_state = state
                self.group_since = time.time()
                self.event("group", None, **{"from": old, "to": state, "reason": reason})
            self.state_changed.set()

    def write_state(self) -> None:
        if not self.run_dir_ours():
            return
        try:
            atomic_write_json(os.path.join(self.run_dir, STATE_NAME), self.state_data())
        except OSError as e:  # a disk full: the snapshot over the socket is live, the file is written later
            log.error("cannot write %s: %s", STATE_NAME, e)
        self.state_changed.clear()

    # --------------------------------------------------------------------------------------- start

    async def run(self) -> int:
        """Acquire the run dir, reconcile (adopt or launch), serve until shutdown. Raises RunDirLocked."""
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
            self.start_outlets()
            self.event("supervisor", reason=f"supervisor started (pid {self.pid}) for profile "
                       f"{self.profile.name}" + (" (simulated)" if self.simulate else ""),
                       pid=self.pid, simulate=self.simulate)
            for w in self.profile_warnings:
                self.event("supervisor", reason=f"profile warning: {w}")
            self.planner.captured_env = await asyncio.to_thread(self.planner.capture_env)
            await self.planner.read_topology()
            if self.simulate:
                self._mapping_lines = self.planner.simulate_mapping_lines()
                self.event("supervisor", reason="--simulate maps the profile onto this machine: "
                           + "; ".join(self._mapping_lines))
            for plan in self.planner.plan_or_placeholder(self.toggles):
                self.ranks[plan.rank] = RankSlot(plan.rank, plan)
            if self.scope == "rank":
                for r in self.ranks.values():
                    r.tracker = RestartTracker(self.profile.restart)
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self.request_shutdown, True, f"signal {signal.Signals(sig).name}")
            self.server = SocketServer(self)
            await self.server.start(os.path.join(self.run_dir, SOCKET_NAME))
            self.watch_run_dir()
            self.start_remotes()
            await self.reconcile()
            self.update_group()
            self.write_state()
            for coro in (self.log_loop(), self.stats_loop(), self.state_loop(), self.device_loop(), self.disk_loop()):
                self.spawn_task(coro)
            await self.shutdown_event.wait()
            await self.shutdown()
            return 0
        finally:
            if self.server:
                try:
                    await self.server.close()
                except Exception:  # noqa: BLE001 - the lock is released whatever happens
                    log.exception("closing the socket failed")
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

    # --------------------------------------------------------------------------------- operator ops

    def select(self, spec: Any) -> list[RankSlot]:
        numbers = select_ranks(spec, {r.rank: r.state for r in self.ranks.values()},
                               f"here; this supervisor runs ranks {', '.join(map(str, sorted(self.ranks)))}")
        return [self.ranks[n] for n in numbers]

    def restart_plan(self, op: str, ranks: list[RankSlot], only: bool = False) -> RestartPlan:
        """What a start/restart of `ranks` really touches (protocol.plan_restart, which clients apply too)."""
        return plan_restart({r.rank: r.state for r in self.ranks.values()}, [r.rank for r in ranks],
                            scope=self.scope, only=only, op=op,
                            waiting={r.rank for r in self.ranks.values() if r.waiting},
                            restart_scheduled=self.group.restart_scheduled)

    async def op_start(self, ranks: list[RankSlot], who: str, forced: set[int] | None = None) -> None:
        # Starting a rank that waits for its NPU is the operator's choice to launch it anyway.
        forced = set(forced or ()) | {r.rank for r in ranks if r.waiting}
        async with self.action_lock:
            everyone = len(ranks) == len(self.ranks)
            if self.group.restart_scheduled and everyone:
                self.perform_scheduled_restart(who)
                await self.restart_failed_world(f"started by {who}")
                self.update_group()
                return
            for r in ranks:
                r.cancel_restart()
                if r.tracker:
                    r.tracker.reset()
                r.want_running = True
            if everyone and not any(r.alive for r in self.ranks.values()):
                self.cancel_settle()
                self.group.operator_started()
                await self.launch_group(f"start requested by {who}", forced)
            else:
                if self.group.restart_scheduled:
                    self.event("group", None, reason=f"the scheduled group restart stays scheduled ({who} started "
                               f"rank(s) {', '.join(str(r.rank) for r in ranks)} only)")
                elif not self.pending_failures:
                    self.group.launched()
                await self.launch_ranks([r for r in ranks if not r.alive], forced)
            self.update_group()

    def perform_scheduled_restart(self, who: str) -> None:
        wait = max(0.0, (self.group.next_restart_at or 0) - time.time())
        self.cancel_group_restart()
        self.cancel_settle()
        self.event("group", None, reason=f"the group restart scheduled in {wait:.1f}s is performed now by {who}")

    async def op_stop(self, ranks: list[RankSlot], who: str) -> None:
        async with self.action_lock:
            everyone = len(ranks) == len(self.ranks)
            if self.group.restart_scheduled:
                if everyone:
                    self.cancel_group_restart()
                    self.event("group", None, reason=f"the scheduled group restart is cancelled: {who} stopped "
                               "every rank")
                else:
                    self.event("group", None, reason=f"the scheduled group restart stays scheduled ({who} stopped "
                               f"rank(s) {', '.join(str(r.rank) for r in ranks)} only)")
            if everyone:
                self.cancel_settle()
                self.group.stopped_by_operator()
            for r in ranks:
                r.cancel_restart()
                r.want_running = False
                r.waiting = None
            await self.stop_ranks([r for r in ranks if r.alive], f"stopped by {who}")
            for r in ranks:
                if not r.alive and r.state != "stopped":
                    self.set_state(r, "stopped", f"stopped by {who}")
            if everyone and self.links:
                await self.stop_elsewhere(f"stopped by {who}", running_only=False)
            self.update_group()

    async def op_restart(self, ranks: list[RankSlot], who: str) -> None:
        forced = {r.rank for r in ranks if r.waiting}
        async with self.action_lock:
            if self.group.restart_scheduled and len(ranks) == len(self.ranks):
                self.perform_scheduled_restart(who)
                await self.restart_failed_world(f"restarted by {who}")
                self.update_group()
                return
        await self.op_stop(ranks, who)
        await self.op_start(ranks, who, forced)

    def perform(self, op: str, spec: Any, who: str, only: bool = False) -> dict:
        """A start/stop/restart request: widened to the whole world where xllm needs it, journaled, run in a task."""
        if self.links:
            return self.perform_across_machines(op, spec, who, only)
        ranks = self.select(spec)
        plan = None
        if op in ("start", "restart") and ranks:
            plan = self.restart_plan(op, ranks, only)
            ranks = [self.ranks[n] for n in plan.ranks]
        numbers = [r.rank for r in ranks]
        explanation = plan.explanation if plan else ""
        self.event("action", None, reason=f"{op} ranks {numbers or 'none'} requested by {who}"
                   + (f" ({explanation})" if explanation else "") + (" (--only)" if only else ""),
                   op=op, ranks=numbers, world=bool(plan and plan.world))
        if ranks:
            action = {"start": self.op_start, "stop": self.op_stop, "restart": self.op_restart}[op]
            self.spawn_task(action(ranks, who))
        return {"accepted": numbers, "world": bool(plan and plan.world), "explanation": explanation}

    def toggle_group(self, name: str, on: bool, who: str) -> dict:
        if self.profile.toggle(name) is None:
            known = ", ".join(t.name for t in self.profile.toggles) or "none"
            raise RequestError("unknown_toggle", f"no toggle group {name!r} in profile {self.profile.name}; "
                               f"known: {known}")
        pending = self.apply_toggle(name, on)
        self.event("toggle", None, group=name, enabled=on,
                   reason=f"{name} {'on' if on else 'off'} (by {who}); takes effect at the next launch"
                   + (f"; relaunch pending for rank(s) {', '.join(map(str, pending))}" if pending else ""),
                   relaunch_pending=pending)
        return {"group": name, "enabled": on, "relaunch_pending": pending}

    def apply_toggle(self, name: str, on: bool) -> list[int]:
        self.toggles[name] = on
        try:
            save_toggles(self.run_dir, self.toggles)
        except OSError as e:  # applies all the same; only a later supervisor would not know it
            self.event("supervisor", reason=f"toggle {name} {'on' if on else 'off'} not saved for the next "
                       f"supervisor: {e.strerror or e}")
        for plan in self.planner.plan_or_placeholder(self.toggles):
            if plan.rank in self.ranks:
                self.ranks[plan.rank].plan = plan
        self.state_changed.set()
        return [r.rank for r in self.ranks.values() if r.relaunch_pending()]

    async def reload(self) -> dict:
        planner = self.planner
        try:
            profile, warnings = await asyncio.to_thread(load_profile_checked, self.profile_path, self.simulate)
            machine = choose_machine(profile, self.simulate, self.machine_arg)
        except ProfileInvalid as e:
            raise RequestError("profile_invalid", "\n".join(e.diagnostics)) from None
        except Exception as e:  # noqa: BLE001 - a reload must never take the supervisor down
            raise RequestError("profile_invalid", f"{self.profile_path}: {e}") from None
        old = (planner.profile, planner.machine, planner.captured_env)
        try:
            planner.machine = machine
            planner.captured_env = await asyncio.to_thread(planner.capture_env, profile)
            if planner.topology_report is None or not planner.topology_report.topology.cpu_affinity:
                await planner.read_topology(profile)
            toggles = {t.name: self.toggles.get(t.name, t.enabled) for t in profile.toggles}
            launches = planner.plan(profile, toggles)
        except Exception as e:  # noqa: BLE001
            planner.profile, planner.machine, planner.captured_env = old
            raise RequestError("profile_invalid", f"{self.profile_path}: cannot plan launches: {e}") from None
        if sorted(x.rank for x in launches) != sorted(self.ranks):
            planner.profile, planner.machine, planner.captured_env = old
            raise RequestError("bad_request", "the edited profile changes the set of ranks; run `xllm-tui down` "
                               "and `xllm-tui up` to apply it")
        self.profile = planner.profile = profile
        self.machine = machine
        self.toggles = toggles
        planner.topology_problem = None  # the plan above computed any topology cores
        self.group.policy = self.restart_policy(profile)
        for r in self.ranks.values():
            if r.tracker:
                r.tracker.policy = profile.restart
        for launch in launches:
            self.ranks[launch.rank].plan = launch
        await self.reload_outlets(profile)
        pending = [r.rank for r in self.ranks.values() if r.relaunch_pending()]
        self.event("supervisor", reason=f"profile reloaded from {self.profile_path}; takes effect at the next launch",
                   relaunch_pending=pending, warnings=warnings)
        result = {"reloaded": True, "warnings": warnings, "relaunch_pending": pending}
        return await self.reload_elsewhere(result) if self.links else result

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
        await self.close_remotes(self.stop_ranks_on_shutdown)
        for task in list(self.tasks):
            task.cancel()
        self.event("supervisor", reason=f"supervisor {self.pid} exiting")
        await self.close_outlets()
        self.write_state()
        for subscriber in list(self.subscribers):
            subscriber.close()

    async def state_loop(self) -> None:
        """state.json after changes, at most twice a second (tmp + fsync + rename); asleep while nothing changes."""
        while True:
            await self.state_changed.wait()
            self.state_changed.clear()
            if not self.run_dir_ours():
                if self.run_dir_taken:
                    return
                await asyncio.sleep(0.5)
                continue  # written once the run directory is made again
            data = self.state_data()
            try:
                await asyncio.to_thread(atomic_write_json, os.path.join(self.run_dir, STATE_NAME), data)
            except OSError as e:
                log.error("cannot write state.json: %s", e)
            await asyncio.sleep(0.5)
