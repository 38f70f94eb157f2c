"""Wake the log loop when a rank's log grows (inotify through watchfiles), so an idle deployment costs nearly
nothing: without growth the loop only ticks for its timers (probes, silence, start timeouts). Where inotify
cannot be had (no watches left, an exotic file system) it falls back to polling, as before."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("xllm_tui.supervisor")

IDLE_TICK_S = 1.0  # evaluation timers without any log growth
POLL_S = 0.2  # without inotify
COALESCE_S = 0.1  # at most this often under a flood: one read round takes in everything written meanwhile


class LogWake:
    def __init__(self) -> None:
        self.grown = asyncio.Event()
        self.dirs: frozenset[str] = frozenset()
        self.task: asyncio.Task | None = None
        self.stop = asyncio.Event()
        self.failed = False

    @property
    def watching(self) -> bool:
        return self.task is not None and not self.task.done() and not self.failed

    def watch(self, dirs: set[str]) -> None:
        """Watch these directories (the live ranks' log directories); a change of the set restarts the watch."""
        wanted = frozenset(dirs)
        if wanted == self.dirs and (self.watching or self.failed):
            return
        self.close()
        self.dirs = wanted
        if wanted and not self.failed:
            self.stop = asyncio.Event()
            self.task = asyncio.ensure_future(self._run(wanted, self.stop))

    async def _run(self, dirs: frozenset[str], stop: asyncio.Event) -> None:
        from watchfiles import awatch

        try:
            async for _changes in awatch(*sorted(dirs), watch_filter=None, debounce=100, step=250, recursive=False,
                                         stop_event=stop, rust_timeout=500, ignore_permission_denied=True):
                self.grown.set()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. out of inotify watches: poll instead
            log.warning("cannot watch the log directories (%s); polling them every %.1fs", e, POLL_S)
            self.failed = True

    async def wait(self) -> None:
        """Until a log grew (at most COALESCE_S after the last round), or the idle tick."""
        await asyncio.sleep(COALESCE_S)
        if not self.watching:
            await asyncio.sleep(max(0.0, POLL_S - COALESCE_S))
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.grown.wait(), IDLE_TICK_S)
        self.grown.clear()

    def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            self.task.cancel()
            self.task = None
