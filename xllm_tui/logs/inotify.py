"""Linux inotify through ctypes, for waking on file changes without polling. No Textual, no asyncio here: the
supervisor's log loop (supervisor/logwake.py) and the TUI's log view put the descriptor on their event loop
(`add_reader`), which costs nothing while nothing changes.

Why not watchfiles: its Rust watcher wakes every `step` milliseconds to check its stop event and returns to
Python through a thread at each timeout, which was most of an idle process's CPU.

Callers must be ready for `OSError` (not Linux, out of watches or instances, a directory that does not exist)
and `AttributeError` (a libc without inotify): then they poll.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Callable
from typing import NamedTuple

from xllm_tui.libc import libc as c_library

# <sys/inotify.h>
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000

# A directory whose files are written, created or moved in (the supervisor reads every log by offset).
DIR_WRITE_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
# A directory's entries appearing, disappearing or renamed (not its files' writes: a log view following one
# rank is not woken by the other ranks' logs in the same directory).
DIR_ENTRY_MASK = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE
# One file's content: appended, truncated (IN_MODIFY too), or the inode going away.
FILE_CONTENT_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF

_EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)
_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        libc = c_library()
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc_handle = libc
    return _libc_handle


class InotifyEvent(NamedTuple):
    wd: int
    mask: int
    name: str  # the entry's name for a directory watch, "" for the watched file itself


class Inotify:
    """One non-blocking inotify descriptor (`fd`). `Inotify(dirs)` watches those directories with
    DIR_WRITE_MASK (not recursive); `add_watch` adds any path with any mask."""

    def __init__(self, dirs: frozenset[str] | set[str] | tuple[str, ...] = (), mask: int = DIR_WRITE_MASK) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)  # IN_NONBLOCK, IN_CLOEXEC have these values
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")
        self.fd = fd
        try:
            for d in sorted(dirs):
                self.add_watch(d, mask)
        except BaseException:
            os.close(fd)
            raise

    def add_watch(self, path: str, mask: int) -> int:
        """Watch `path` (its inode now: a file replaced later needs a new watch); returns the watch id."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_add_watch {path}: {os.strerror(errno)}", path)
        return wd

    def remove_watch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # fails only for a watch already gone: nothing to do

    def drain(self) -> None:
        """Discard the queued events (when only "something changed" matters)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self.fd, 65536):
                pass

    def read_events(self) -> list[InotifyEvent]:
        """Every queued event (none: an empty list, never blocks)."""
        events: list[InotifyEvent] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                return events
            if not data:
                return events
            pos, size = 0, _EVENT_HEADER.size
            while pos + size <= len(data):
                wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, pos)
                raw = data[pos + size:pos + size + length].split(b"\0", 1)[0]
                events.append(InotifyEvent(wd, mask, os.fsdecode(raw)))
                pos += size + length

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class FileWatch:
    """Says when one file may have changed: appended, truncated, replaced by another file of that name (a
    rotation), created or deleted. Watches the file's directory for entries of that name (not its other
    files' writes) and the file itself for writes; a file replaced is watched again. Raises OSError (or
    AttributeError) when inotify cannot be had, or the directory does not exist: then the caller polls.

    Use: put `fd` on an event loop; when readable, `changed()` reads the events and says whether they
    concern the file."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._name = os.path.basename(self.path)
        self._inotify = Inotify()
        self._dir_wd: int | None = None
        self._file_wd: int | None = None
        self._name_gone = False  # the name was deleted or renamed away since it was last seen
        self._loop = None  # the event loop the descriptor is on (listen)
        try:
            self.rewatch()
        except BaseException:
            self._inotify.close()
            raise

    @property
    def lost(self) -> bool:
        """The file's name is gone (deleted, renamed away) or its directory is: a file of the name may come back
        in a new directory of that name (logs/ cleared before a restart), which this watch would not see. The
        caller polls until the file is back, then calls `rewatch()`. (A directory holding a deleted file still
        open somewhere says nothing when it is removed, so the name's going is what counts.)"""
        return self._dir_wd is None or self._name_gone

    def rewatch(self) -> None:
        """Watch the directory (and the file) by name again; OSError while the directory does not exist."""
        if self._dir_wd is not None:
            self._inotify.remove_watch(self._dir_wd)
            self._dir_wd = None
        self._dir_wd = self._inotify.add_watch(os.path.dirname(self.path), DIR_ENTRY_MASK | IN_MOVE_SELF)
        self._name_gone = False
        self._watch_file()

    @property
    def fd(self) -> int:
        return self._inotify.fd

    def watch(self, path: str) -> None:
        """Watch another file instead, on the same descriptor. Closing an inotify descriptor waits for the
        kernel's grace period (a millisecond or more, longer on a loaded machine): a view switching files
        moves its watch rather than making a new one. Raises OSError if the new directory cannot be watched
        (the old watches are gone then: close and poll)."""
        path = os.path.abspath(path)
        self._inotify.drain()  # what was queued concerned the previous file
        moved = os.path.dirname(path) != os.path.dirname(self.path)
        self.path, self._name = path, os.path.basename(path)
        self._name_gone = False
        if moved or self._dir_wd is None:
            self.rewatch()
        else:
            self._watch_file()

    def _watch_file(self) -> None:
        if self._file_wd is not None:
            self._inotify.remove_watch(self._file_wd)
            self._file_wd = None
        with contextlib.suppress(OSError):  # not there yet: its creation in the directory is watched
            self._file_wd = self._inotify.add_watch(self.path, FILE_CONTENT_MASK)

    def changed(self) -> bool:
        """Read the queued events: True if any concerns the file (its content, or its name in the directory)."""
        relevant = False
        for event in self._inotify.read_events():
            if event.mask & IN_Q_OVERFLOW:
                relevant = True  # events were lost: assume the worst
                self._watch_file()  # a lost IN_CREATE would leave a replaced file's writes unwatched
            elif event.wd == self._dir_wd and event.mask & (IN_IGNORED | IN_MOVE_SELF):
                relevant = True  # the directory is gone or elsewhere: its name may come back as a new one
                if not event.mask & IN_IGNORED:
                    self._inotify.remove_watch(self._dir_wd)
                self._dir_wd = None
            elif event.wd == self._dir_wd and event.name == self._name:
                relevant = True
                if event.mask & (IN_CREATE | IN_MOVED_TO):
                    self._name_gone = False
                    self._watch_file()  # a new inode under the name: watch its writes
                elif event.mask & (IN_DELETE | IN_MOVED_FROM):
                    self._name_gone = True
            elif event.wd == self._file_wd:
                relevant = True
                if event.mask & IN_IGNORED:
                    self._file_wd = None  # the inode is gone; a new file of the name comes through the directory
        return relevant

    @property
    def listening(self) -> bool:
        return self._loop is not None

    def listen(self, on_change: Callable[[], None]) -> None:
        """Call on_change() from the running event loop whenever the file may have changed (until unlisten)."""
        if self._loop is None:
            import asyncio  # here: not every user of this module runs an event loop

            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self.fd, lambda: self.changed() and on_change())

    def unlisten(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None

    def close(self) -> None:
        self.unlisten()
        self._inotify.close()
