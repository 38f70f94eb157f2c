"""The run directory: lock, atomic state file, event journal, persisted toggles.

Layout of <run_dir>:
  supervisor.lock   flock held by the live supervisor for its whole life; holds its pid
  supervisor.sock   the unix socket (mode 0600)
  state.json        last written snapshot plus the identity of every rank (for re-adoption)
  events.jsonl      one JSON event per line, with seq and ts; appended, never rewritten
  toggles.json      toggle group -> on/off, so a supervisor restart keeps the operator's choice
  supervisor.log    the supervisor's own log (stdout/stderr of a detached supervisor)
Every descriptor opened here is close-on-exec (Python's default; O_CLOEXEC where os.open is used).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

LOCK_NAME = "supervisor.lock"
SOCKET_NAME = "supervisor.sock"
STATE_NAME = "state.json"
EVENTS_NAME = "events.jsonl"
TOGGLES_NAME = "toggles.json"
LOG_NAME = "supervisor.log"


class RunDirLocked(Exception):
    """Another supervisor holds the run directory's lock."""

    def __init__(self, run_dir: str, pid: int | None):
        self.run_dir = run_dir
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"a supervisor is already running for {run_dir} ({who}); "
            "use `xllm-tui status` to see it or `xllm-tui down` to stop it"
        )


def ensure_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def read_lock_pid(run_dir: str) -> int | None:
    try:
        with open(os.path.join(run_dir, LOCK_NAME)) as f:
            text = f.read().strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class RunDirLock:
    """fcntl.flock on supervisor.lock, held while the supervisor lives (released by the kernel on death)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.fd: int | None = None

    def acquire(self) -> None:
        ensure_dir(self.run_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirLocked(self.run_dir, read_lock_pid(self.run_dir)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def lost(self) -> bool:
        """The held lock file is no longer at its path: removed (with the run directory or alone) or moved away.
        An open file's inode is not reused, so another file made at the path is never taken for it."""
        if self.fd is None:
            return False
        try:
            here = os.stat(self.path)
        except OSError:
            return True
        held = os.fstat(self.fd)
        return (here.st_dev, here.st_ino) != (held.st_dev, held.st_ino)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def is_locked(run_dir: str) -> bool:
    """True while some supervisor holds the run dir's lock."""
    path = os.path.join(run_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def atomic_write_json(path: str, data: Any) -> None:
    """Write tmp + fsync + rename: a reader sees the old or the new file, never half of one."""
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"  # a write in a worker and one on the loop at once
    payload = memoryview(json.dumps(data, indent=1, sort_keys=False).encode())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        try:
            while payload:
                payload = payload[os.write(fd, payload):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a disk full: the half-written copy would only take more of it
        raise


UNWRITTEN_LIMIT = 4 << 20  # bytes of events waiting for a failing journal file (about 20,000 events)


def read_json(path: str) -> Any | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class EventJournal:
    """events.jsonl: append-only, one event per line, seq increasing across supervisor restarts.

    The last `keep_in_memory` events are kept as their JSON lines, not as dicts: a dict of an event takes about
    900 bytes, its line about 200, and a long night fills the window (2000 events, 1.7 MiB as dicts). Readers
    ask for a few at a time (a snapshot's last events, a client's backlog), which are decoded then."""

    def __init__(self, run_dir: str, keep_in_memory: int = 2000):
        self.path = os.path.join(run_dir, EVENTS_NAME)
        self.recent: collections.deque[tuple[int, str]] = collections.deque(maxlen=keep_in_memory)
        self.seq = 0
        # A disk full (or any failing write) never takes an event, nor the caller's work, down with it: the lines
        # not written wait here, oldest first, and go to the file with the next write that succeeds.
        self.unwritten = bytearray()
        self.write_error: str | None = None  # why the file is behind, while it is
        self.dropped = 0  # events the backlog had to drop (over UNWRITTEN_LIMIT): never in the file
        self._reported_error: str | None = None
        ends_with_newline = True
        for event, line in _iter_event_lines(self.path):
            seq = event["seq"]
            self.recent.append((seq, line))
            self.seq = max(self.seq, seq)
        try:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                ends_with_newline = f.read(1) == b"\n"
        except OSError:  # no journal yet, or an empty one
            pass
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if not ends_with_newline:  # a line torn by a crash: end it, or the next event would be glued to it
            self.unwritten += b"\n"

    def reopen(self) -> int:
        """The journal file was removed (its run directory with it): go on in a new one, which starts with the
        events kept in memory. Returns how many."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.close(self._fd)
        self._fd = fd
        # Events waiting for the old file and older than those kept in memory are not in the new one: say so.
        self.dropped += max(0, self.unwritten.count(b"\n") - len(self.recent))
        self.unwritten = bytearray("".join(line + "\n" for _, line in self.recent).encode())
        self._flush()
        return len(self.recent)

    def append(self, kind: str, rank: int | None = None, **fields: Any) -> dict:
        self.seq += 1
        event = {"seq": self.seq, "ts": round(time.time(), 3), "kind": kind, "rank": rank}
        event.update(fields)
        line = json.dumps(event, default=str)
        self.recent.append((self.seq, line))
        self.unwritten += (line + "\n").encode()
        self._flush()
        return event

    def _flush(self) -> None:
        try:
            while self.unwritten:
                del self.unwritten[:os.write(self._fd, self.unwritten)]
        except OSError as e:
            self.write_error = f"{EVENTS_NAME}: {e.strerror or e}"
            if len(self.unwritten) > UNWRITTEN_LIMIT:
                # Whole lines from the front; a line the file holds the start of is ended by the next.
                cut = self.unwritten.find(b"\n", len(self.unwritten) - UNWRITTEN_LIMIT) + 1
                self.dropped += self.unwritten.count(b"\n", 0, cut)
                del self.unwritten[:cut]
        else:
            self.write_error = None

    def news(self) -> str | None:
        """Once per change: the file stopped being written (why), or it is written again. None otherwise."""
        if self.write_error == self._reported_error:
            return None
        before, self._reported_error = self._reported_error, self.write_error
        if self.write_error is not None:
            return f"cannot write the event journal ({self.write_error}); its events are kept in memory and " \
                   "written when it can be written again"
        lost = f"; {self.dropped} events could not be kept for it" if self.dropped else ""
        return f"the event journal is written again (it failed with: {before}){lost}"

    def since(self, seq: int | None) -> list[dict]:
        """Events with seq > `seq` (all when None), from memory or, when older, from the file."""
        after = -1 if seq is None else seq
        if self.recent and self.recent[0][0] <= after + 1:
            return [json.loads(line) for event_seq, line in self.recent if event_seq > after]
        return [e for e in iter_events(self.path) if e.get("seq", 0) > after]

    def last(self, n: int) -> list[dict]:
        # From the end: a snapshot asks for a few of up to keep_in_memory events at every poll.
        if n <= 0:
            return []
        return [json.loads(line) for _, line in itertools.islice(reversed(self.recent), n)][::-1]

    def close(self) -> None:
        os.close(self._fd)


def iter_events(path: str) -> Iterator[dict]:
    """Every well-formed event of an events.jsonl (a torn last line after a crash is skipped)."""
    return (event for event, _ in _iter_event_lines(path))


def _iter_event_lines(path: str) -> Iterator[tuple[dict, str]]:
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return
    with f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and isinstance(event.get("seq"), int):
                yield event, line.rstrip("\n")


def load_toggles(run_dir: str) -> dict[str, bool]:
    data = read_json(os.path.join(run_dir, TOGGLES_NAME))
    if not isinstance(data, dict):
        return {}
    return {str(k): bool(v) for k, v in data.items()}


def save_toggles(run_dir: str, toggles: dict[str, bool]) -> None:
    atomic_write_json(os.path.join(run_dir, TOGGLES_NAME), toggles)


class ShortSocketPath:
    """A usable AF_UNIX address for `path` even when it exceeds the kernel's 108-byte limit.

    Long run-directory paths are reached through /proc/self/fd/<dirfd>/<name> while the context is open
    (binding and connecting both resolve it), so any run dir works.
        with ShortSocketPath(path) as address: sock.connect(address)
    """

    LIMIT = 100

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> str:
        if len(os.fsencode(self.path)) < self.LIMIT:
            return self.path
        self.fd = os.open(os.path.dirname(self.path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self.fd}/{os.path.basename(self.path)}"

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
