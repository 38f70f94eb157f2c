"""Exits and what follows them: the exit's cause from the log, the settle window in which the first failure of a
world is chosen, stopping the rest of a failed world, and the restart the policy schedules. A mixin of
Supervisor; the decisions themselves are group.py's."""

from __future__ import annotations

import asyncio
import time

from xllm_tui.logs.tail import tail_lines
from xllm_tui.supervisor.group import FAILURE_SETTLE_S, Failure, pick_first_failure
from xllm_tui.supervisor.policy import RestartTracker
from xllm_tui.supervisor.probes import classify_lines
from xllm_tui.supervisor.process import RankProcess
from xllm_tui.supervisor.slot import RankSlot

EXIT_READ_BYTES = 1 << 20  # read on the event loop when a rank exits; the rest goes to drain_log's thread
DRAIN_ROUNDS_MAX = 256  # x 16 MiB: a dead rank's backlog is read up to 4 GiB


class FailureHandling:
    def init_failure_handling(self) -> None:
        self.group_restart_handle: asyncio.TimerHandle | None = None
        self.settle_handle: asyncio.TimerHandle | None = None
        self.pending_failures: list[Failure] = []

    def on_exit(self, proc: RankProcess) -> None:
        r = next((x for x in self.ranks.values() if x.proc is proc), None)
        if r is None or r.current is None:
            return
        launch = r.current
        status = proc.exit
        assert status is not None
        r.exited_at = status.at
        self.former_pids.append(proc.pid)
        r.hbm_left_polls = 0
        r.hbm_left_reported = False
        self.write_sim_procs()
        # The last lines before death: a small bounded read here (the socket waits meanwhile); a backlog left by a
        # rank that logged hard is read to its end in the log thread, so its last lines are never lost.
        launch.read_log(blocking=False, max_bytes=EXIT_READ_BYTES)
        if launch.more_pending:
            self.spawn_task(self.drain_log(launch))
        last = {"code": status.code, "signal": status.signal, "at": round(status.at, 3), "status_known": status.known,
                "collateral": False, "generation": r.generation}
        if launch.stop_requested:
            last["cause"] = "collateral" if launch.collateral else "stopped"
            last["collateral"] = launch.collateral
            r.last_exit = last
            self.set_state(r, "stopped", f"{launch.stop_reason or 'stopped'}; {status.describe()}")
            self.after_exit(r)
            return
        if status.known and status.signal is None and status.code == 0:
            cause, message = "exit_code", "exited with code 0 although nobody asked it to stop"
        else:
            found = classify_lines(tail_lines(launch.plan.log_path, 60)) or launch.milestones.failure
            if found:
                cause, message = found
            elif not status.known:
                cause, message = "unknown", status.describe()
            elif status.signal is not None:
                cause, message = "killed", status.describe()
            else:
                cause, message = "exit_code", status.describe()
        if self.group.failing and self.scope == "group":
            ff = self.group.first_failure or {}
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
        failure = Failure(r.rank, cause, message, status.at, r.generation, status.describe())
        if self.scope == "group":
            # Ranks of one world often die within milliseconds of each other (a worker noticing rank 0's
            # death); gather the exits of a short window, then decide which one was first.
            self.pending_failures.append(failure)
            if self.settle_handle is None:
                self.settle_handle = self.loop.call_later(FAILURE_SETTLE_S, self.settle_failures)
            return
        self.handle_failure(r, failure)

    async def drain_log(self, launch) -> None:
        for _ in range(DRAIN_ROUNDS_MAX):
            await asyncio.to_thread(launch.read_log)
            if not launch.more_pending:
                break
        self.state_changed.set()

    def settle_failures(self) -> None:
        self.settle_handle = None
        pending, self.pending_failures = self.pending_failures, []
        if not pending:
            return
        primary = None
        if not self.group.failing:
            primary = pick_first_failure(pending)
            self.group.fail(primary)
        ff = self.group.first_failure or {}
        for failure in pending:
            if failure is primary:
                continue
            r = self.ranks[failure.rank]
            if r.last_exit is not None:
                r.last_exit.update(cause="collateral", collateral=True, message=failure.message)
            self.set_state(r, r.state, f"{failure.status_text or failure.message} after rank {ff.get('rank')} failed first")
        if primary is not None:
            self.handle_failure(self.ranks[primary.rank], primary)

    def cancel_settle(self) -> None:
        if self.settle_handle is not None:
            self.settle_handle.cancel()
        self.settle_handle = None
        self.pending_failures = []

    def after_exit(self, r: RankSlot) -> None:
        if r.rank == 0:
            for w in self.ranks.values():
                if w.rank != 0 and w.alive and not w.current.stop_requested:
                    self.evaluate(w)

    def handle_failure(self, r: RankSlot, failure: Failure) -> None:
        """First failure wins: record it now (synchronously, so a rank dying a moment later is collateral),
        then stop the rest of the world and apply the policy in a task."""
        if self.scope != "group":
            if not self.restart_rank_at_once(r):
                self.spawn_task(self.rank_failure(r, failure.cause))
            return
        ff = self.group.first_failure
        if self.group.failing and ff and ff.get("rank") != r.rank:
            return
        self.group.fail(failure)
        self.event("group", None, reason=f"rank {r.rank} failed first: {failure.cause}: {failure.message}",
                   first_failure=self.group.first_failure)
        self.spawn_task(self.group_failure(r, failure.cause))

    async def group_failure(self, r: RankSlot | None, cause: str, rank: int | None = None) -> None:
        """r: the local rank that failed first; None with `rank` when it ran on another machine (machines.py)."""
        first = r.rank if r is not None else rank
        async with self.action_lock:
            if not self.group.failing:
                return  # an operator acted meanwhile
            others = [x for x in self.ranks.values() if x.alive]
            stopping = [self.stop_ranks(others, f"stopped: rank {first} failed first ({cause})", collateral=True)]
            stopping.append(self.stop_elsewhere(f"rank {first} failed first ({cause})"))
            await asyncio.gather(*stopping)
            for x in self.ranks.values():
                if x.waiting:
                    x.waiting = None
                    self.set_state(x, "stopped", f"not launched: rank {first} failed first ({cause})")
            if not self.group.failing:
                return
            decision = self.group.decide()
            if decision.crash_looping:
                if r is not None:
                    self.set_state(r, "crash-looping", decision.reason, cause=cause)
                self.event("group", None, reason=decision.reason, crash_looping=True)
            elif not decision.restart:
                self.event("group", None, reason=decision.reason)
            else:
                self.event("group", None, reason=f"group {decision.reason}", restart_in_s=decision.delay,
                           restart_at=round(self.group.next_restart_at, 3))
                self.group_restart_handle = self.loop.call_later(
                    decision.delay, lambda: self.spawn_task(self.auto_restart_group()))
            self.update_group()

    def restart_rank_at_once(self, r: RankSlot) -> bool:
        """Scope rank with no backoff due: relaunch in this event-loop turn, from the exit itself, when nothing needs
        waiting for (no operator action under way, the cores known, its NPU free by the last reading)."""
        if self.action_lock.locked() or not r.want_running or self.planner.topology_problem is not None:
            return False
        tracker = r.tracker or RestartTracker(self.profile.restart)
        decision = tracker.decide(time.time(), f"rank {r.rank}")
        report = self.devices_report
        if not decision.restart or decision.delay > 0 or \
                (report is not None and report.available and report.holders(r.plan.spec.device, self.rank_pids())):
            return False
        r.tracker = tracker
        tracker.record_restart(time.time())
        r.restarts += 1
        self.event("state", r.rank, reason=f"rank {r.rank} {decision.reason}", restart_in_s=0.0)
        self.launch_rank(r)
        return True

    async def rank_failure(self, r: RankSlot, cause: str) -> None:
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
            self.state_changed.set()

    async def auto_restart_group(self) -> None:
        async with self.action_lock:
            if not self.group.restart_scheduled:
                return  # performed or cancelled meanwhile
            await self.restart_failed_world("automatic restart")

    async def restart_failed_world(self, who: str) -> None:
        """The scheduled restart of a failed world, now (by its timer or by an operator). Caller holds the lock."""
        self.group_restart_handle = None
        self.group.restart_now()
        for r in self.ranks.values():
            r.restarts += 1
        ff = self.group.first_failure or {}
        await self.launch_group(f"{who}: restart {self.group.restarts} after rank {ff.get('rank')} "
                                f"failed ({ff.get('cause')})")

    async def auto_restart_rank(self, r: RankSlot) -> None:
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
        self.group.next_restart_at = None

    async def stop_ranks(self, ranks: list[RankSlot], reason: str, collateral: bool = False) -> None:
        grace = self.profile.stop_grace_s

        async def stop_one(r: RankSlot) -> None:
            launch = r.live
            if launch is None:
                return
            launch.stop_requested = True
            launch.collateral = collateral
            launch.stop_reason = reason
            self.set_state(r, "stopping", f"{reason} (SIGTERM to process group {launch.proc.pgid}, {grace:g}s grace)")
            how = await launch.proc.stop(grace)
            if "SIGKILL" in how:
                self.event("action", r.rank, reason=f"rank {r.rank} ignored SIGTERM for {grace:g}s: {how}")

        await asyncio.gather(*(stop_one(r) for r in ranks))
