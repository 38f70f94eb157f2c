"""Wake the log loop when a rank's log grows, so an idle deployment costs nearly nothing: without growth the loop
only ticks for its timers (probes, silence, start timeouts). Where inotify cannot be had (not Linux, no watches
left, an exotic file system) it falls back to polling.

Why inotify directly (logs/inotify.py) and not watchfiles: watchfiles' Rust watcher wakes every `step` milliseconds
to check its stop event, and returns to Python through a worker thread at each timeout, which was most of an idle
supervisor's CPU; and a change is seen only after up to two steps. An inotify descriptor on the event loop
(`add_reader`) costs nothing while nothing is written and wakes the loop at the first write. Under a flood the
reader is removed after the first event of a round and added back when the round is over, so a burst of writes
costs one wake-up per round, not one per write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging

from xllm_tui.logs.inotify import DIR_WRITE_MASK, Inotify

log = logging.getLogger("xllm_tui.supervisor")

IDLE_TICK_S = 1.0  # evaluation timers without any log growth, while some rank's state can change with time
STEADY_TICK_S = 30.0  # nothing can change with time: a safety net only (growth, exits, state changes wake it)
POLL_S = 0.2  # without inotify
COALESCE_S = 0.1  # at most this often while logs grow: one read round takes in everything written meanwhile
FLOOD_COALESCE_S = 0.5  # at most this often under a flood (a round read FLOOD_ROUND_BYTES or more)
FLOOD_ROUND_BYTES = 256 * 1024  # ~2,000 glog lines in a tenth of a second: a rank logging hard


def round_gap(read_bytes: int) -> float:
    """The least time between two read rounds after one that took in read_bytes (all ranks together)."""
    return FLOOD_COALESCE_S if read_bytes >= FLOOD_ROUND_BYTES else COALESCE_S


class LogWake:
    def __init__(self) -> None:
        self.grown = asyncio.Event()
        self.dirs: frozenset[str] = frozenset()
        self._wds: dict[str, int | None] = {}  # each directory's watch (None: not there yet)
        self.inotify: Inotify | None = None
        self.failed = False
        self._listening = False

    @property
    def watching(self) -> bool:
        return self.inotify is not None

    def watch(self, dirs: set[str]) -> None:
        """Watch these directories (the live ranks' log directories); a change of the set restarts the watch, and
        a directory made anew under the same name is watched again (logs/ cleared before a restart: a watch stays
        on the old inode, or is gone with it, and the new ranks' writes would wake nothing, leaving their states
        unread). The watch is live when this returns: a write from here on wakes the loop."""
        wanted = frozenset(dirs)
        if wanted != self.dirs or not (self.watching or self.failed or not wanted):
            self.close()
            self.dirs, self._wds = wanted, {}
            if not wanted or self.failed:
                return
            try:
                self.inotify = Inotify(())  # no directory yet: _watch_dirs adds them
            except (OSError, AttributeError) as e:  # e.g. out of inotify instances, no libc inotify: poll instead
                self._fail(e)
                return
            self.grown.set()  # a new set: read this round
        if self.inotify is not None:
            try:
                made = self._watch_dirs()  # one inotify_add_watch per directory and round
            except OSError as e:  # e.g. out of inotify watches
                self._fail(e)
                return
            if made:
                self.grown.set()  # what was written before the watch began is read this round
        self.listen()

    def _watch_dirs(self) -> bool:
        """Ask the kernel to watch each directory by name: a watch still live is the same watch (the same id),
        a directory made anew gets a new one, even under the inode number of the old (ext4 hands it out again
        at once, so a stat could not tell). A directory not there yet is watched once it is. True if a watch
        was made."""
        assert self.inotify is not None
        made = False
        for d in sorted(self.dirs):
            try:
                wd: int | None = self.inotify.add_watch(d, DIR_WRITE_MASK)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                    raise
                wd = None
            old = self._wds.get(d)
            if wd != old:
                if old is not None:
                    self.inotify.remove_watch(old)  # the old directory, if a reader keeps it: not ours any more
                made = made or wd is not None
                self._wds[d] = wd
        return made

    def _fail(self, e: BaseException) -> None:
        log.warning("cannot watch the log directories (%s); polling them every %.1fs", e, POLL_S)
        self.close()
        self.failed = True

    def listen(self) -> None:
        """(Re)arm the wake-up after a round: the next write wakes the loop."""
        if self.inotify is not None and not self._listening:
            asyncio.get_running_loop().add_reader(self.inotify.fd, self._on_event)
            self._listening = True

    def _on_event(self) -> None:
        if self.inotify is None:
            return
        self.inotify.drain()
        asyncio.get_running_loop().remove_reader(self.inotify.fd)  # one wake-up per round, whatever the writes
        self._listening = False
        self.grown.set()

    def poke(self) -> None:
        """Wake the loop now (a launch, an exit, a state change): it reads and evaluates at once."""
        self.grown.set()

    @property
    def blind(self) -> bool:
        """Some log directory is not there (logs/ cleared while its ranks run): their writes, into the deleted
        logs, wake nothing, so the loop reads at every tick of at most IDLE_TICK_S."""
        return any(wd is None for wd in self._wds.values())

    def take_growth(self) -> bool:
        """Whether the logs must be read this round: they grew (or a poke) since the last call, or there is no
        watch to say so. Clears the flag: what grows from here on is read next round."""
        grown = self.grown.is_set()
        self.grown.clear()
        return grown or not self.watching or self.blind

    async def wait(self, tick: float = IDLE_TICK_S, gap: float = COALESCE_S) -> None:
        """Until a log grew or a poke (at most `gap` after the last round), or `tick` seconds. A round's cost is
        mostly fixed (a thread hop, evaluating every rank): under a sustained flood the longer FLOOD_COALESCE_S
        gap takes in five times as many lines per round, well within the second a state may lag."""
        await asyncio.sleep(gap)
        if not self.watching:
            await asyncio.sleep(max(0.0, POLL_S - gap))
            return
        self.listen()
        if self.grown.is_set():
            return
        if self.blind:
            tick = min(tick, IDLE_TICK_S)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.grown.wait(), max(0.0, tick - gap))

    def close(self) -> None:
        if self.inotify is not None:
            if self._listening:
                with contextlib.suppress(RuntimeError, ValueError):
                    asyncio.get_running_loop().remove_reader(self.inotify.fd)
            self._listening = False
            self.inotify.close()
            self.inotify = None
