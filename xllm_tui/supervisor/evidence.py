"""Evidence about live ranks, gathered off the event loop and judged on it: log growth and milestones (a worker
thread reads through logs/intake.py, woken by logwake.py), rank 0's /health (psutil figures: stats.py).
The state a rank is in follows from it (group.assess_rank). A mixin of Supervisor."""

from __future__ import annotations

import asyncio
import os
import time

from xllm_tui.supervisor.group import Evidence, assess_rank
from xllm_tui.supervisor.logwake import IDLE_TICK_S, STEADY_TICK_S, LogWake, round_gap
from xllm_tui.supervisor.probes import http_health, worker_ready
from xllm_tui.supervisor.slot import RankSlot

LOG_SILENT_ASK_ROOM_S = 5.0  # a rank not ready whose log is silent this long: is its disk full (disk_watch.py)?


class EvidenceGathering:
    def evaluate(self, r: RankSlot) -> None:
        """A live rank's state from its evidence (group.assess_rank decides)."""
        live = r.live
        if live is None or live.stop_requested or r.state in ("stopping", "crash-looping"):
            return
        m = live.milestones
        r0 = self.ranks.get(0)
        r0_live = r0.live if r0 is not None else None
        if r.role == "master":
            ready, detail = m.ready, ""
        else:
            ready, detail = worker_ready(m, r0_live.milestones if r0_live else None)
        evidence = Evidence(
            role=r.role, pid=live.proc.pid, port=r.port, phase=m.phase, ready_by_log=ready, ready_detail=detail,
            describe=m.describe(), state=r.state, adopted=live.proc.adopted, health=live.health,
            health_seen_ok=live.health_seen_ok, started_at=live.started_at, last_growth=live.last_growth,
            rank0_gone=r.rank != 0 and r0 is not None and r0.current is not None and not r0.alive and r.generation > 0,
            log_full="no room left on its log's filesystem" if self._silent_on_full_disk(r) else None,
        )
        now = time.time()
        state, reason = assess_rank(evidence, self.profile.readiness, now)
        if state == "ready" and live.ready_at is None:
            live.ready_at = now
        self.set_state(r, state, reason)

    @staticmethod
    def _read_logs(launches: list) -> list:
        """In a worker thread: each launch's new log lines into its milestones; the launches whose log grew.
        A rank writing a burst of output costs this thread, never the event loop that answers clients."""
        return [launch for launch in launches if launch.read_log()]

    log_wake: LogWake | None = None

    def wake_log_loop(self) -> None:
        """Evaluate the ranks now rather than at the next tick (a launch, an exit, a state change)."""
        if self.log_wake is not None:
            self.log_wake.poke()

    def next_tick(self) -> float:
        """Seconds the log loop may sleep without growth: short while a rank's state can change with time (start
        timeouts, silence warnings, health probes due), long on a steady deployment (wakes cost CPU)."""
        readiness = self.profile.readiness
        if readiness.silence_warning_s > 0:
            return IDLE_TICK_S
        tick = STEADY_TICK_S
        now = time.time()
        for r in self.ranks.values():
            live = r.live
            if live is None:
                continue
            if r.state not in ("ready", "degraded") or live.more_pending or live.log_unwatched:
                return IDLE_TICK_S
            if r.role == "master" and readiness.http_probe:
                tick = min(tick, max(IDLE_TICK_S, live.next_probe - now))
        return tick

    async def log_loop(self) -> None:
        wake = self.log_wake = LogWake()
        try:
            while True:
                launches = {id(r.live): r for r in self.ranks.values() if r.live is not None}
                current = [r.live for r in launches.values()]
                wake.watch({os.path.dirname(x.plan.log_path) for x in current})
                read = wake.take_growth() or any(x.more_pending or x.log_unwatched for x in current)
                grew = {id(x) for x in await asyncio.to_thread(self._read_logs, current)} \
                    if current and read else set()
                now = time.time()
                readiness = self.profile.readiness
                for launch in current:
                    r = launches[id(launch)]
                    if r.current is not launch or not launch.alive:
                        continue  # relaunched or gone meanwhile: the next round reads the new log
                    if id(launch) in grew:
                        launch.last_growth = now
                    if r.role == "master" and launch.milestones.ready and readiness.http_probe and \
                            now >= launch.next_probe:
                        launch.next_probe = now + (readiness.probe_interval_s if launch.health_seen_ok else 0.5)
                        self.spawn_task(self.probe(r))
                    self.evaluate(r)
                self.update_group()
                if any(x.more_pending for x in current):
                    await asyncio.sleep(0)  # a burst is being caught up: the next slice at once, after clients
                else:
                    taken = sum(x.last_read_bytes for x in current) if read else 0
                    await wake.wait(self.next_tick(), round_gap(taken))
        finally:
            wake.close()
            self.log_wake = None

    def _silent_on_full_disk(self, r: RankSlot) -> bool:
        """Not ready, its log silent a while, on a disk the disk watch found full: ranks relaunched onto a disk
        full of logs cannot log their start-up, and stayed `started, no milestone yet` with nothing saying why."""
        live = r.live
        if live is None or r.state not in ("starting", "loading"):
            return False
        now = time.time()
        return now - (live.last_growth or live.started_at or now) >= LOG_SILENT_ASK_ROOM_S and \
            self.disk_level(os.path.dirname(live.plan.log_path)) == "full"

    async def probe(self, r: RankSlot) -> None:
        launch = r.live
        if launch is None:
            return
        ok, detail = await http_health("127.0.0.1", r.port)
        if r.current is not launch or not launch.alive:
            return
        launch.health = {"ok": ok, "detail": detail, "at": round(time.time(), 3)}
        launch.health_seen_ok = launch.health_seen_ok or ok
        self.evaluate(r)
