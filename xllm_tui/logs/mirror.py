"""A local copy of the part of a log on another machine that a viewer is looking at, kept current from
`log_read` replies (docs/protocol.md): the TUI's log view then reads a local file as for any rank. Only the
rank on screen is copied (its current log, or the earlier generation shown), from its last lines on; nothing
else of another machine is ever mirrored."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading

TAIL_LINES = 2000  # a new copy starts from the remote log's last lines
CATCH_UP_BYTES = 4 * 1024 * 1024  # a pull's size while the copy is behind (log_read's largest reply)
# Behind the remote file by more than this, the copy skips to its last lines and says so in a line of its own: a
# rank flooding its log (25 MB/s) outruns any copy through two supervisors and ssh (8 MB/s at best here), and
# following it byte by byte left the view minutes behind while it looked live.
SKIP_AFTER_BYTES = 8 * 1024 * 1024

# One lock per copy's path: a viewer going back and forth between generations makes a new mirror of a path
# whose previous mirror may still be writing a reply (in a thread).
_path_locks: dict[str, threading.Lock] = {}


def mirror_path(run_dir: str, rank: int, generation: int = 0) -> str:
    """generation 0: the current log; N: the log N launches back (node_3.log.N there)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:12]
    name = f"node_{rank}.log" + (f".{generation}" if generation else "")
    return os.path.join(base, "xllm-tui", "remote-logs", key, name)


class LogMirror:
    """next: the remote offset to read from, None before the first reply (then ask for the last lines).
    generations: how many earlier generations the rank has there (from the last reply; None before one)."""

    def __init__(self, path: str, rank: int = 0, generation: int = 0):
        self.path = path
        self.rank = rank
        self.generation = generation
        self.next: int | None = None
        self.inode: int | None = None
        self.generations: int | None = None
        self.behind = 0  # bytes of the remote file not copied yet, as of the last reply
        self.skipped = 0  # bytes skipped over so far (each gap is marked in the copy)
        self._ends_line = True  # the copy is empty or ends with a newline
        self.retired = False
        self._lock = _path_locks.setdefault(path, threading.Lock())
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with self._lock:
            self._restart()  # a fresh copy: the remote offsets of an old one are unknown

    def retire(self) -> None:
        """The viewer moved on: a reply still on its way is dropped, not written into a newer copy of the path."""
        self.retired = True

    def request(self) -> dict:
        """The log_read arguments for the next pull."""
        if self.next is None or self.behind > SKIP_AFTER_BYTES:
            how: dict = {"lines": TAIL_LINES}
        else:
            how = {"offset": self.next}
            if self.behind > 0:
                how["max_bytes"] = CATCH_UP_BYTES
        return {"rank": self.rank, "generation": self.generation, **how}

    def _restart(self) -> None:
        """An empty copy, read again from the remote file's last lines."""
        with open(self.path, "wb"):
            pass
        self.next = None
        self.inode = None
        self.behind = 0
        self._ends_line = True

    def _append(self, data: bytes) -> None:
        """All or nothing: a write that fails (a full disk) leaves the copy as it was, and raises; the reply's
        bytes are asked for again at the next pull."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def apply(self, part: dict) -> bool:
        """Write one log_read reply; True when the copy changed. A remote file that shrank (truncated) or is
        another file now (rotated by a relaunch) restarts the copy from its last lines."""
        with self._lock:
            if self.retired:
                return False
            return self._apply(part)

    def _apply(self, part: dict) -> bool:
        if isinstance(part.get("generations"), int):
            self.generations = part["generations"]
        if part.get("missing"):
            return False
        size = part.get("size") or 0
        inode = part.get("inode")
        if self.next is not None and (size < self.next or (inode is not None and self.inode is not None
                                                             and inode != self.inode)):
            self._restart()
            return True
        data = part.get("data") or ""
        offset = part.get("offset")
        if self.next is None or offset == self.next:
            text = data
        elif self.behind > SKIP_AFTER_BYTES and isinstance(offset, int) and offset > self.next:
            gap = offset - self.next  # the reply is the file's last lines, far ahead of the copy
            self.skipped += gap
            where = part.get("path") or "the rank's log"
            text = ("" if self._ends_line else "\n") + (
                f"[xllm-tui: {gap / 2**20:.1f} MiB of this log skipped here: it grows faster than this copy can "
                f"follow it from its machine ({where} there has every line; "
                f"`xllm-tui logs --rank {self.rank}` prints them)]\n") + data
        else:
            return False
        if text:
            self._append(text.encode())
            self._ends_line = text.endswith("\n")
        self.next = part.get("next", self.next)
        if inode is not None:
            self.inode = inode
        if isinstance(self.next, int):
            self.behind = max(0, size - self.next)
        return bool(text)
