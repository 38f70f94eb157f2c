"""CPU, memory and threads of the live ranks, sampled with psutil in a worker thread every ~2 s while someone
looks (a client's snapshot request, or the metrics exporter), never on the event loop. A mixin of Supervisor."""

from __future__ import annotations

import asyncio
import time

import psutil

STATS_LINGER_S = 10.0  # after a client's last snapshot request, keep sampling psutil figures this long


class StatsSampling:
    def watched(self) -> None:
        """A client asked for the snapshot: keep the per-rank CPU/memory figures fresh for a while."""
        stale = time.monotonic() >= self.stats_wanted_until
        self.stats_wanted_until = time.monotonic() + STATS_LINGER_S
        if stale:
            self.stats_due.set()

    async def stats_loop(self) -> None:
        """psutil figures of every rank every 2 s, while someone looks (a client, or the metrics exporter)."""
        while True:
            if self.metrics is None and time.monotonic() >= self.stats_wanted_until:
                self.stats_due.clear()
                await self.stats_due.wait()
            launches = {r.live.proc.pid: r.live for r in self.ranks.values() if r.live is not None}
            samples = await asyncio.to_thread(self._sample, list(launches))
            for pid, (cpu, rss, threads) in samples.items():
                launch = launches[pid]
                if launch.alive:
                    launch.cpu_pct, launch.rss_bytes, launch.threads = cpu, rss, threads
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
