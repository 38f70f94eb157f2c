"""The supervisor's device watch (docs/supervisor.md, "Devices"): npu-smi read in a worker thread every poll
interval and before launches, health changes, HBM left behind by an exited rank, binding against the NPU's CPU
affinity, and ranks waiting for an NPU another process holds. A mixin of Supervisor: it reads and journals,
launching is the launcher's."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

import psutil

from xllm_tui.devices.affinity import BindingIssue, check_binding
from xllm_tui.devices.model import DeviceReport, health_changes
from xllm_tui.launch import LaunchError
from xllm_tui.spec import Profile
from xllm_tui.supervisor import devices as devwatch
from xllm_tui.supervisor.slot import RankSlot

log = logging.getLogger("xllm_tui.supervisor")

UNREADABLE_POLL_S = 60.0  # devices that could not be read are looked at again this often


class DeviceWatch:
    """Device state of one supervisor; expects the Supervisor's planner, ranks, event() and set_state()."""

    def init_device_watch(self) -> None:
        self.devices_report: DeviceReport | None = None  # the last reading
        self.devices_polled_at: float | None = None
        self.devices_baseline: DeviceReport | None = None  # the last readable one, for health changes
        self.devices_readable: bool | None = None
        self.own_pids: set[int] = set()  # this deployment's ranks and their children at the last reading
        self.former_pids: collections.deque[int] = collections.deque(maxlen=1024)  # exited rank processes
        self.binding: dict[int, BindingIssue] = {}
        self.binding_reported: set[str] = set()

    def write_sim_procs(self) -> None:
        """Under --simulate: each live rank on its NPU, for the simulated npu-smi (the TUI's too)."""
        if not self.simulate:
            return
        entries = [{"pid": r.proc.pid, "logic_id": r.plan.spec.device, "name": devwatch.SIM_PROC_NAME}
                   for r in sorted(self.ranks.values(), key=lambda r: r.rank) if r.alive]
        try:
            devwatch.write_sim_procs(self.planner.sim_procs_path, entries)
        except OSError as e:
            log.error("cannot write %s: %s", self.planner.sim_procs_path, e)

    def _read_devices_blocking(self, profile: Profile, env: dict | None, rank_pids: list[int]) -> tuple[DeviceReport, set[int]]:
        from xllm_tui.launch import read_profile_devices

        report = read_profile_devices(profile, simulate=self.simulate, env=env)
        devwatch.fill_process_names(report)
        # Which NPU processes are ours only matters when the NPUs could be read; the walk over every process
        # was most of an idle supervisor's CPU on a machine without npu-smi.
        return report, devwatch.process_family(rank_pids) if report.available else set()

    async def poll_devices(self) -> DeviceReport:
        """Read the devices in a worker thread (never on the loop) and take in what changed."""
        self.write_sim_procs()
        started = time.time()
        rank_pids = [r.proc.pid for r in self.ranks.values() if r.alive]
        report, own = await asyncio.to_thread(self._read_devices_blocking, self.profile, self.planner.device_env(),
                                              rank_pids)
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
        by_device: dict[int, RankSlot] = {}
        for r in sorted(self.ranks.values(), key=lambda r: r.rank):
            by_device.setdefault(r.plan.spec.device, r)
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

    def check_hbm_left(self, r: RankSlot, report: DeviceReport, polled_at: float) -> None:
        """HBM that stays in use on a rank's NPU, with no process on it, for two polls after the rank exited."""
        if r.alive or r.exited_at is None or r.hbm_left_reported or polled_at <= r.exited_at:
            return
        device = report.device(r.plan.spec.device)
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
            specs = ranks_of(self.profile, self.machine, self.planner.topology_cores())
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

    def devices_json(self) -> dict | None:
        """The last device reading for the snapshot (docs/protocol.md, "devices"); None before the first."""
        report = self.devices_report
        if report is None:
            return None
        topology = None
        if self.planner.topology_problem is None:
            with contextlib.suppress(LaunchError):
                cores = self.planner.topology_cores()
                ours = {r.plan.spec.device for r in self.ranks.values()}
                topology = {str(d): c for d, c in sorted(cores.items()) if d in ours} if cores is not None else None
        return {
            **report.to_dict(),
            "polled_at": round(self.devices_polled_at, 3) if self.devices_polled_at else None,
            "poll_interval_s": self.profile.devices.poll_interval_s,
            "on_busy": self.profile.devices.on_busy,
            "summary": devwatch.summarize(report),
            "binding": [self.binding[rank].to_dict() for rank in sorted(self.binding)],
            "topology_cores": topology,
            "topology_problem": self.planner.topology_problem,
        }

    async def device_loop(self) -> None:
        while True:
            interval = self.profile.devices.poll_interval_s
            if self.devices_readable is False:  # no npu-smi here, or it keeps failing: rarely worth a look
                interval = max(interval, min(6 * interval, UNREADABLE_POLL_S))
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
                device = r.plan.spec.device
                holders = report.holders(device, self.rank_pids())
                if holders:
                    r.waiting["holders"] = devwatch.holders_json(holders)
                    self.set_state(r, "starting", f"waiting: {devwatch.describe_holders(device, holders)}")
                    continue
                self.event("device", r.rank, device=device, reason=f"NPU {device} is free now; launching rank {r.rank}")
                self.launch_rank(r)
