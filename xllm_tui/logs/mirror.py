"""A local copy of the part of a log on another machine that a viewer is looking at, kept current from
`log_read` replies (docs/protocol.md): the TUI's log view then reads a local file as for any rank. Only the
rank on screen is copied (its current log, or the earlier generation shown), from its last lines on; nothing
else of another machine is ever mirrored."""

from __future__ import annotations

import hashlib
import os
import threading

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
        how: dict = {"lines": 2000} if self.next is None else {"offset": self.next}
        return {"rank": self.rank, "generation": self.generation, **how}

    def _restart(self) -> None:
        """An empty copy, read again from the remote file's last lines."""
        with open(self.path, "wb"):
            pass
        self.next = None
        self.inode = None

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
        if self.next is None or part.get("offset") == self.next:
            if data:
                with open(self.path, "ab") as f:
                    f.write(data.encode())
            self.next = part.get("next", self.next)
            if inode is not None:
                self.inode = inode
            return bool(data)
        return False
