"""Room left where the ranks' logs and the run directory are. A rank logging hard (verbose logging switched on to
chase a bug: 25 MB/s) fills a disk within the night, and a full disk silences the logs, then the journal. Every
DISK_POLL_S while ranks run, one statvfs per filesystem (in a thread: it may be a network mount); a filesystem
running low, or filling fast enough to be full within FULL_SOON_S, is said once in an event, shown by `status`
and the TUI, and said again when it has room. DiskGauge is the pure part; DiskWatching is a mixin of Supervisor.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from dataclasses import dataclass, field

from xllm_tui.logs.tail import stdout_file
from xllm_tui.units import size

log = logging.getLogger("xllm_tui.supervisor")

DISK_POLL_S = 10.0  # the run directory's disk always, the logs' while ranks run
RATE_WINDOW_S = 120.0  # the filling rate is taken over this much of the recent past
FULL_BYTES = 1 << 20  # less free than this: full (a log line needs a block)
LOW_FRACTION = 0.05  # less free than this share of the filesystem: low
FULL_SOON_S = 1800.0  # full within this at the recent rate: low
CLEAR_FRACTION = 0.07  # back to ok only above this share ...
CLEAR_SOON_S = 3600.0  # ... and not full within this (no event back and forth at the edge)


@dataclass
class DiskGauge:
    """One filesystem: its free space over time, its level (ok, low, full) and when it would be full."""

    paths: list[str]  # the watched directories on it (log directories, the run directory)
    free: int = 0
    total: int = 0
    level: str = "ok"
    samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    # Logs deleted while their ranks still write them (logs/ cleared to make room): their space comes back only
    # when those ranks exit, or when the file is truncated through /proc/PID/fd/1.
    held_bytes: int = 0
    held_by: list[int] = field(default_factory=list)  # the ranks holding them

    def add(self, free: int, total: int, now: float) -> bool:
        """A new reading; True when the level changed."""
        self.free, self.total = free, total
        self.samples.append((now, free))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        level = self._level()
        changed = level != self.level
        self.level = level
        return changed

    def _level(self) -> str:
        if self.free < FULL_BYTES:
            return "full"
        share = self.free / self.total if self.total else 1.0
        soon = self.full_in_s
        if share < LOW_FRACTION or (soon is not None and soon < FULL_SOON_S):
            return "low"
        if self.level != "ok" and (share < CLEAR_FRACTION or (soon is not None and soon < CLEAR_SOON_S)):
            return "low"
        return "ok"

    @property
    def rate(self) -> float | None:
        """Bytes per second the free space shrinks at over the window (None: too few readings, or not shrinking
        since the last one: a one-off copy is not a rate)."""
        if len(self.samples) < 2 or self.samples[-1][1] >= self.samples[-2][1]:
            return None
        (t0, f0), (t1, f1) = self.samples[0], self.samples[-1]
        if t1 - t0 <= 0 or f1 >= f0:
            return None
        return (f0 - f1) / (t1 - t0)

    @property
    def full_in_s(self) -> float | None:
        rate = self.rate
        return self.free / rate if rate else None

    def describe(self) -> str:
        share = f" ({100 * self.free / self.total:.1f}% free)" if self.total else ""
        text = f"{size(self.free)} of {size(self.total)} left{share}"
        soon = self.full_in_s
        if soon is not None and self.level != "full":
            text += f", full in about {human_duration(soon)} at {size(self.rate or 0)}/s"
        if self.held_bytes:
            ranks = ", ".join(map(str, self.held_by))
            text += (f"; {size(self.held_bytes)} of it in deleted logs that rank(s) {ranks} still write: "
                     "deleting a log a rank writes frees nothing until it exits (truncate it: `: > /proc/PID/fd/1`)")
        return text

    def to_dict(self) -> dict:
        soon = self.full_in_s
        return {"paths": list(self.paths), "level": self.level, "free": self.free, "total": self.total,
                "rate": round(self.rate, 1) if self.rate else None, "full_in_s": round(soon) if soon else None,
                "held_bytes": self.held_bytes, "held_by": list(self.held_by)}


def human_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def deleted_logs_held(writers: dict[int, int]) -> dict[int, tuple[int, list[int]]]:
    """{st_dev: (bytes, ranks)} of the ranks' stdout files that are deleted (no name left): {rank: pid} in."""
    out: dict[int, tuple[int, list[int]]] = {}
    for rank, pid in sorted(writers.items()):
        found = stdout_file(pid)
        if found is not None and found[1].st_nlink == 0:
            st = found[1]
            held, ranks = out.get(st.st_dev, (0, []))
            out[st.st_dev] = (held + st.st_blocks * 512, ranks + [rank])
    return out


def free_bytes(directory: str) -> int | None:
    """Bytes an unprivileged writer may still use under `directory` (None: it cannot be looked at)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def read_room(directories: set[str]) -> dict[int, tuple[list[str], int, int]]:
    """Each directory that exists, grouped by its filesystem (st_dev; f_fsid is 0 on FUSE and some network
    filesystems): {st_dev: (dirs, free bytes, total bytes)}, one statvfs per filesystem."""
    out: dict[int, tuple[list[str], int, int]] = {}
    for d in sorted(directories):
        try:
            dev = os.stat(d).st_dev
            if dev in out:
                out[dev][0].append(d)
                continue
            st = os.statvfs(d)
        except OSError:
            continue
        out[dev] = ([d], st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
    return out


class DiskWatching:
    def init_disk_watch(self) -> None:
        self.disks: dict[int, DiskGauge] = {}

    def disk_status(self) -> list[dict]:
        return [g.to_dict() for g in self.disks.values()]

    def disk_level(self, directory: str) -> str:
        """ok, low or full, as of the last look at the disk holding `directory` (ok if not looked at)."""
        return next((g.level for g in self.disks.values() if directory in g.paths), "ok")

    async def disk_loop(self) -> None:
        while True:
            await asyncio.sleep(DISK_POLL_S)
            try:
                await self.check_disks()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a failing look at the disks must never stop the supervisor
                log.exception("disk check failed")

    async def check_disks(self) -> None:
        live = [r for r in self.ranks.values() if r.alive]
        # The run directory always; the logs while ranks write them (a stopped world's gauges do not go stale).
        dirs = {self.run_dir} | {os.path.dirname(r.plan.log_path) for r in live}
        writers = {r.rank: r.proc.pid for r in live}
        room, held = await asyncio.to_thread(lambda: (read_room(dirs), deleted_logs_held(writers)))
        now = time.monotonic()
        changed = False
        for dev, (paths, free, total) in room.items():
            gauge = self.disks.get(dev)
            if gauge is None:
                gauge = self.disks[dev] = DiskGauge(paths)
            gauge.paths = paths
            gauge.held_bytes, gauge.held_by = held.get(dev, (0, []))
            before = gauge.level
            if gauge.add(free, total, now):
                changed = True
                self._say_disk(gauge, before)
        for dev in set(self.disks) - set(room):
            del self.disks[dev]
        if changed:
            self.wake_log_loop()  # ranks silent on a disk that filled say so (evidence.py)

    def _say_disk(self, gauge: DiskGauge, before: str) -> None:
        logs = [p for p in gauge.paths if p != self.run_dir]
        what = " and ".join(
            ([f"the ranks' logs in {', '.join(logs)}"] if logs else [])
            + ([f"the run directory {self.run_dir}"] if self.run_dir in gauge.paths else []))
        if gauge.level == "full":
            reason = f"no room left for {what}: {gauge.describe()}"
        elif gauge.level == "low":
            reason = f"disk space running low for {what}: {gauge.describe()}"
        else:
            reason = f"room again for {what}: {gauge.describe()} (it was {before})"
        self.event("supervisor", reason=reason, disk=gauge.to_dict())
