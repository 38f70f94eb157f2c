"""Launching: the pre-launch steps, the device checks before a launch (`cores: topology`, an NPU held by another
process and devices.on_busy), and the spawn of each rank with a fresh Launch. A mixin of Supervisor; callers
hold its action_lock."""

from __future__ import annotations

import asyncio
import os
import time

import psutil

from xllm_tui.devices.model import DeviceProcess
from xllm_tui.logs.intake import LogIntake
from xllm_tui.logs.tail import rotate_log
from xllm_tui.supervisor import devices as devwatch
from xllm_tui.supervisor import prelaunch
from xllm_tui.supervisor.group import Failure
from xllm_tui.supervisor.probes import Milestones, count_weight_files
from xllm_tui.supervisor.process import RankProcess, rank_marker
from xllm_tui.supervisor.slot import Launch, RankSlot, flag_value
from xllm_tui.supervisor.state import LOG_NAME


class Launcher:
    async def launch_group(self, why: str, forced: set[int] | frozenset[int] = frozenset()) -> None:
        """Pre-launch work, then every rank that is not running."""
        self.cancel_group_restart()
        self.group.launched()
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
                        env = dict(self.planner.plan(toggles=self.toggles)[0].env) if self.ranks else dict(self.base_env)
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

    def new_milestones(self, r: RankSlot) -> Milestones:
        """A fresh tracker for r's launch, told its --model / --draft_model; the number of weight files in them
        is counted in a thread (a model directory may sit on a slow network mount)."""
        argv, cwd = r.plan.argv, r.plan.cwd
        model, draft = flag_value(argv, "model"), flag_value(argv, "draft_model")
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

    def launch_rank(self, r: RankSlot) -> None:
        plan = r.plan
        rotated = None
        try:
            rotated = rotate_log(plan.log_path)
        except OSError as e:
            self.event("supervisor", r.rank, reason=f"cannot rotate {plan.log_path}: {e}")
        r.want_running = True
        r.cancel_restart()
        r.waiting = None
        r.exited_at = None
        r.hbm_left_polls = 0
        r.hbm_left_reported = False
        # Made before the spawn, at the log's end: the rank's first line cannot be missed, and a log that could
        # not be rotated is not read again from its start (its milestones are the previous process's).
        reader = LogIntake(plan.log_path, from_end=True, count_lines=False)
        try:
            proc = RankProcess.spawn(plan, marker=rank_marker(self.run_dir, r.rank))
        except OSError as e:
            r.current = None
            r.last_exit = {"code": None, "signal": None, "at": time.time(), "cause": "spawn_failed",
                           "collateral": False, "message": str(e)}
            self.set_state(r, "failed", f"cannot start {plan.argv[0]}: {e.strerror or e}", cause="spawn_failed")
            self.handle_failure(r, Failure(r.rank, "spawn_failed", str(e), time.time(), r.generation))
            return
        reader.writer_pid = proc.pid
        r.generation += 1
        r.current = Launch.spawned(plan, proc, self.new_milestones(r), reader)
        proc.watch(self.loop, self.on_exit)
        self.write_sim_procs()
        self.set_state(r, "starting", f"spawned pid {proc.pid} (generation {r.generation})"
                       + (f"; previous log kept as {os.path.basename(rotated)}" if rotated else ""), journal=True)

    async def launch_ranks(self, ranks: list[RankSlot], forced: set[int] | frozenset[int] = frozenset()) -> None:
        """Launch these ranks after the device checks: `cores: topology` must be computable, and a rank whose NPU
        another process holds follows devices.on_busy (ranks in `forced` launch anyway: the operator chose)."""
        ranks = sorted((r for r in ranks if not r.alive), key=lambda r: r.rank)
        if not ranks or not await self.ensure_topology(ranks):
            return
        for r in ranks:
            r.waiting = None
        report = await self.poll_devices()
        busy: dict[int, list[DeviceProcess]] = {}
        if report.available:
            for r in ranks:
                device = r.plan.spec.device
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
                device = r.plan.spec.device
                text = devwatch.describe_holders(device, busy[r.rank])
                then = {"wait": f"rank {r.rank} waits until it is gone or the operator starts it again",
                        "fail": f"rank {r.rank} fails", "ignore": f"launching rank {r.rank} anyway"}[policy]
                self.event("device", r.rank, device=device, holders=devwatch.holders_json(busy[r.rank]),
                           on_busy=policy, reason=f"{text} before launching rank {r.rank}; {then} (devices.on_busy: {policy})")
        if policy == "fail" and busy:
            now = time.time()
            failing = [r for r in ranks if r.rank in busy]
            for r in failing:
                text = devwatch.describe_holders(r.plan.spec.device, busy[r.rank])
                r.last_exit = {"code": None, "signal": None, "at": round(now, 3), "cause": "npu_busy",
                               "collateral": False, "status_known": True, "generation": r.generation, "message": text}
                self.set_state(r, "failed", f"{text} (devices.on_busy: fail)", cause="npu_busy")
            if self.scope == "group":
                # The world cannot form without that rank: launch nobody, the group policy decides.
                first = failing[0]
                for r in ranks:
                    if r.rank not in busy:
                        self.set_state(r, "stopped", f"not launched: {first.reason}")
                self.handle_failure(first, Failure(first.rank, "npu_busy", first.last_exit["message"], now,
                                                   first.generation))
                return
            for r in failing:
                self.handle_failure(r, Failure(r.rank, "npu_busy", r.last_exit["message"], now, r.generation))
        for r in ranks:
            if r.rank in busy and policy == "wait":
                device = r.plan.spec.device
                r.waiting = {"device": device, "holders": devwatch.holders_json(busy[r.rank]), "since": round(time.time(), 3)}
                r.want_running = True
                self.set_state(r, "starting", f"waiting: {devwatch.describe_holders(device, busy[r.rank])}")
            elif r.rank not in busy or policy == "ignore":
                self.launch_rank(r)

    async def ensure_topology(self, ranks: list[RankSlot]) -> bool:
        """For `cores: topology`: the cores are known (reading the devices again if they were not). Otherwise
        the ranks fail with the reason and nothing is launched."""
        if self.planner.topology_problem is None:
            return True
        await self.planner.read_topology()
        launches = self.planner.plan_or_placeholder(self.toggles)
        if self.planner.topology_problem is None:
            for launch in launches:
                if launch.rank in self.ranks:
                    self.ranks[launch.rank].plan = launch
            return True
        self.event("device", None, reason=f"cannot launch: {self.planner.topology_problem}")
        for r in ranks:
            self.set_state(r, "failed", f"cannot launch: {self.planner.topology_problem}", cause="topology_unavailable")
        return False
