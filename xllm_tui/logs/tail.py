"""Tail and index big, growing log files without holding their lines (no Textual here).

Index design (why it is sparse and built from the end)
------------------------------------------------------
A rank's log can reach gigabytes. A dense array of line offsets costs 8 bytes per line (~80 MB for
10 M lines) and needs a full scan before the last line has a number. `LogFile` instead splits the file
into fixed blocks (`BLOCK_SIZE`, 64 KiB) and stores only the newline count of each block, plus their
prefix sums: ~12 bytes per 64 KiB, i.e. about 200 KB for a 1 GB file. Line *i* is found by a binary
search over the prefix sums, then by scanning one 64 KiB block (its newline positions are kept in a small
LRU cache), so random access costs one bisect and at most one block read.

The index covers a *region* ``[first_block * BLOCK_SIZE, indexed_end)``. Opening anchors the region at
the end of the file and indexes backwards just far enough for `initial_lines`; the rest of the file is
indexed by further `index_backward()` calls (a UI does that in a thread; `index_all()` does it at once).
So a 1 GB file shows its last screen after reading about a megabyte.

Line numbers count from the start of the region. While the region still grows backwards, every step
*prepends* lines, shifting every number by the lines it added. `prepended_lines` counts those lines since
the file was opened (or reset), and the line accessors take an optional ``base``: the `prepended_lines`
value the caller's numbers refer to. A caller that stores line numbers reads `snapshot()` (line_count and
prepended_lines together) and passes ``base=snapshot.prepended_lines`` to keep its numbers valid, even if
another thread extends the index meanwhile. ``line - prepended_lines`` is stable for the life of a file.
Byte offsets of line starts are stable too; search and filters work with them.

Appended data is picked up by `refresh()`; a last line without a newline is held back until it is
complete. A shrinking file (truncation) or a path that now names another inode (rotation) resets the
index; `poll()` says which happened. A poll told to skip a flood (`skip_over`) resets the index the same way. Lines are decoded as UTF-8 with errors="replace"; a trailing "\\r"
is stripped; a line longer than `max_line_bytes` is cut and marked.

Other helpers: `tail_lines` (last n lines for ``logs -n``), `follow` / `IncrementalReader` (new lines as
they are written, for ``logs -f`` and for the supervisor's milestone tracker), `rotate_log` and
`log_generations` (node_3.log -> node_3.log.1, .2, ...; never truncates).
"""

from __future__ import annotations

import errno
import locale
import os
import re
import stat
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Union

from xllm_tui.logs.intake import find_lines_holding, give_buffer, has_rare_byte, plain_literal, take_buffer

BLOCK_SIZE = 64 * 1024
READ_CHUNK = 1024 * 1024  # bytes read per pread while scanning
MAX_LINE_BYTES = 64 * 1024  # longer lines are cut when read (the index itself is unaffected)
TRUNCATION_MARK = " …[line cut]"
_SPAN_READ_LIMIT = 8 * 1024 * 1024  # one pread for a run of lines up to this size
# One compiled bytes pattern, or several (a line matches if any does).
Patterns = Union[re.Pattern[bytes], Sequence[re.Pattern[bytes]]]


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\r") else text


@dataclass(frozen=True)
class Snapshot:
    """A consistent view of the index: how many lines, and the numbering they refer to."""

    line_count: int
    prepended_lines: int
    generation: int  # bumped when the file is another (rotation/truncation): byte offsets of before mean nothing
    complete: bool  # True once the index reaches the start of the file
    indexed_bytes: int
    file_size: int
    epoch: int = 0  # bumped at every reset, a skipped flood too: line numbers start again (byte offsets hold)


@dataclass(frozen=True)
class RefreshResult:
    """What `LogFile.poll()` found: lines appended, and whether the file was reset."""

    new_lines: int
    reset: str | None = None  # None, "truncated", "rotated" or "skipped" (poll's skip_over)
    more: bool = False  # appended data beyond this call's max_bytes remains: poll again


class _LRU:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()

    def get(self, key):
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


class LogFile:
    """A growing text file addressed by line number, read with os.pread. Thread-safe.

    ``LogFile(path)`` opens the file at its tail: `line_count` covers at least `initial_lines` lines
    (or the whole file if it is shorter). Call `index_backward()` repeatedly or `index_all()` to cover
    the rest, `refresh()`/`poll()` to pick up appended data, and `close()` when done.
    A missing file is treated as empty until it appears.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        initial_lines: int = 1000,
        block_size: int = BLOCK_SIZE,
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.path = os.fspath(path)
        self.block_size = block_size
        self.max_line_bytes = max_line_bytes
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._closed = False
        self.error: str | None = None  # why the file cannot be read, if it cannot
        self._identity: tuple[int, int] | None = None
        self._blocks_cache = _LRU(64)
        self.initial_lines = initial_lines
        self.generation = 0
        self.epoch = 0  # numbering: see Snapshot.epoch
        self.last_reset: str | None = None
        self._open_and_anchor()
        self.poll()
        self._index_initial_lines()

    # ---- state -------------------------------------------------------------------------------
    def _open_and_anchor(self) -> None:
        """(Re)open the path and anchor an empty region at the block holding the end of the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.error = None
        self._identity = None
        size = 0
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "not a regular file")
            self._fd = fd
            self._identity = (st.st_dev, st.st_ino)
            size = st.st_size
        except FileNotFoundError:
            pass  # not written yet: empty until it appears
        except OSError as exc:
            # Unreadable (permissions, a directory): shown as empty with a reason, retried on poll.
            self.error = f"cannot read {self.path}: {exc.strerror or exc}"
        self._anchor(size)

    def _anchor(self, size: int) -> None:
        """An empty region at the block holding byte `size` (the end of the file)."""
        self._first_block = size // self.block_size
        self._end = self._first_block * self.block_size
        self._polled_size = -1  # the file's size at the last poll (-1: poll at once)
        self._counts = array("I")  # newlines per block, blocks first_block.. in order
        self._cum = array("Q", [0])  # prefix sums of _counts
        self.prepended_lines = 0
        self._blocks_cache.clear()

    @property
    def _skip(self) -> int:
        # A region not starting at byte 0 begins inside some line: its first newline ends a fragment.
        return 1 if self._first_block > 0 else 0

    @property
    def line_count(self) -> int:
        """Complete lines in the indexed region (a held partial last line is not counted)."""
        with self._lock:
            return max(0, self._cum[-1] - self._skip)

    @property
    def complete(self) -> bool:
        """True once the index covers the file from its first byte."""
        return self._first_block == 0

    @property
    def indexed_end(self) -> int:
        return self._end

    @property
    def file_size(self) -> int:
        try:
            return os.fstat(self._fd).st_size if self._fd is not None else 0
        except OSError:
            return 0

    def unchanged_since_poll(self) -> bool:
        """True when a poll would find nothing new: the same file, as long as at the last poll. One stat,
        no lock: a view following an idle log asks this instead of polling."""
        try:
            st = os.stat(self.path)
        except OSError:
            return self._identity is None  # still missing; an open file that vanished is polled as before
        return (st.st_dev, st.st_ino) == self._identity and st.st_size == self._polled_size

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                line_count=max(0, self._cum[-1] - self._skip),
                prepended_lines=self.prepended_lines,
                generation=self.generation,
                complete=self.complete,
                indexed_bytes=self._end - self._first_block * self.block_size,
                file_size=self.file_size,
                epoch=self.epoch,
            )

    def index_memory_bytes(self) -> int:
        """Bytes held by the index arrays (not counting the small block cache)."""
        return self._counts.buffer_info()[1] * self._counts.itemsize + self._cum.buffer_info()[1] * self._cum.itemsize

    def close(self) -> None:
        """Close the file. Never waits for a reader in another thread (a view switching files must not
        wait for a poll of the old one): then the file is closed by a thread once the reader is done."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._close_fd()
            finally:
                self._lock.release()
        else:
            threading.Thread(target=self._close_when_free, name="logfile-close", daemon=True).start()

    def _close_when_free(self) -> None:
        with self._lock:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> LogFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- growing the index -------------------------------------------------------------------
    def _count_blocks(self, fd: int, start: int, end: int) -> tuple[list[int], int]:
        """Newline counts of the blocks in [start, end), exactly one per block, and the end reached.

        `start` is block-aligned or the indexed end (inside a block). Reads stop at block boundaries:
        a read ending inside a block used to give that block two counts, which `poll` then assigned
        to two blocks, so counts no longer matched newline positions (IndexError in `_newline`).
        """
        counts: list[int] = []
        bs = self.block_size
        span = max(bs, READ_CHUNK // bs * bs)
        pos = start
        buffer = take_buffer(span)  # reused: a fresh chunk per read was paid for in page faults
        try:
            with memoryview(buffer) as view:
                while pos < end:
                    got = os.preadv(fd, [view[: min(end, pos // bs * bs + span) - pos]], pos)
                    if not got:
                        break  # shrunk meanwhile: the next poll sees the truncation
                    offset = 0
                    while offset < got:
                        stop = min(got, (pos + offset) // bs * bs + bs - pos)
                        count = buffer.count(b"\n", offset, stop)
                        if (pos + offset) % bs and counts:
                            counts[-1] += count  # a short read ended inside this block
                        else:
                            counts.append(count)
                        offset = stop
                    pos += got
        finally:
            give_buffer(buffer)
        return counts, pos

    def index_backward(self, max_bytes: int = 16 * READ_CHUNK) -> int:
        """Extend the region towards the start by up to max_bytes. Returns the lines it prepended."""
        with self._lock:
            if self._fd is None or self.complete:
                return 0
            first, generation = self._first_block, self.generation
            fd = self._fd
        n_blocks = max(1, max_bytes // self.block_size)
        new_first = max(0, first - n_blocks)
        try:
            # Reading happens outside the lock so readers are never held up by a long scan.
            counts, _ = self._count_blocks(fd, new_first * self.block_size, first * self.block_size)
        except OSError:
            return 0
        with self._lock:
            if self.generation != generation or self._first_block != first or len(counts) != first - new_first:
                return 0  # the file was reset, or another thread got here first
            before = max(0, self._cum[-1] - self._skip)
            self._counts = array("I", counts) + self._counts
            self._cum = array("Q", accumulate(self._counts, initial=0))
            self._first_block = new_first
            added = max(0, self._cum[-1] - self._skip) - before
            self.prepended_lines += added
            return added

    def index_backward_while(self, keep_going: Callable[[], bool], max_bytes: int = 16 * READ_CHUNK) -> int:
        """index_backward() until the index is complete or keep_going() is false (asked before each step).
        Returns the blocks it went back by.

        Stops as soon as a step makes no progress: the file closed, unreadable, or reset meanwhile. Looping on
        `complete` alone spun on a closed file (a view switched away during its poll) until its deadline.
        """
        went_back = 0
        while not self.complete and not self._closed and keep_going():
            first = self._first_block
            self.index_backward(max_bytes)
            if self._first_block == first:
                break
            went_back += first - self._first_block
        return went_back

    def _index_initial_lines(self) -> None:
        self.index_backward_while(lambda: self.line_count < self.initial_lines, 16 * self.block_size)

    def index_all(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Index the whole file now (progress(indexed_bytes, total_bytes) after each step)."""

        def report() -> bool:
            if progress is not None:
                s = self.snapshot()
                progress(s.indexed_bytes, s.file_size)
            return True

        self.index_backward_while(report)
        if progress is not None:
            s = self.snapshot()
            progress(s.indexed_bytes, s.file_size)

    def poll(self, max_bytes: int = 64 * READ_CHUNK, skip_over: int | None = None) -> RefreshResult:
        """Pick up appended data (up to max_bytes per call); detect truncation and rotation.

        On truncation or rotation the index is reset to the new file's tail (as when opening),
        `generation` and `epoch` are incremented and `last_reset` says why. With `skip_over`, more than that many
        appended bytes are not read: the index is reset to the file's tail (reset "skipped", `epoch` only),
        and the skipped part is counted later, backwards, like the rest of the past. A view following a
        flood shows only its last lines: reading every byte as it came was most of its cost.
        """
        with self._lock:
            if self._closed:
                return RefreshResult(0)
            reset: str | None = None
            try:
                st = os.stat(self.path)
            except OSError:
                st = None  # deleted or between rotation and re-creation: keep what we have
            if st is not None:
                identity = (st.st_dev, st.st_ino)
                if self._identity is None:
                    self._open_and_anchor()  # the file appeared
                    self._first_block, self._end = 0, 0
                elif identity != self._identity:
                    reset = "rotated"
                elif st.st_size < self._end:
                    reset = "truncated"
            if reset is not None:
                self.generation += 1
                self.epoch += 1
                self.last_reset = reset
                self._open_and_anchor()
            if self._fd is None:
                return RefreshResult(0, reset)
            before = max(0, self._cum[-1] - self._skip)
            file_size = os.fstat(self._fd).st_size
            if reset is None and skip_over is not None and file_size - self._end > skip_over:
                reset = "skipped"  # the same file: byte offsets (searches, filters) hold, line numbers start again
                self.epoch += 1
                self.last_reset = reset
                self._anchor(file_size)
            size = min(file_size, self._end + max_bytes)
            self._polled_size = file_size if size == file_size else -1  # -1: a slice is left to read
            if size > self._end:
                counts, reached = self._count_blocks(self._fd, self._end, size)
                bs = self.block_size
                block = self._end // bs
                for count in counts:
                    index = block - self._first_block
                    if index < len(self._counts):
                        self._counts[index] += count
                        self._cum[index + 1] += count
                    else:
                        self._counts.append(count)
                        self._cum.append(self._cum[-1] + count)
                    block += 1
                self._end = reached
            if reset is not None:
                self._index_initial_lines()
            after = max(0, self._cum[-1] - self._skip)
            return RefreshResult(after if reset is not None else after - before, reset, file_size > self._end)

    def refresh(self) -> int:
        """Pick up all appended data; returns the number of new complete lines (all lines after a reset).

        After a reset (truncation or rotation) `generation` is incremented and `last_reset` says why.
        """
        result = self.poll()
        total = result.new_lines
        while result.more:
            result = self.poll()
            total = result.new_lines if result.reset else total + result.new_lines
        return total

    # ---- reading -------------------------------------------------------------------------------
    def _block_newlines(self, block: int) -> array:
        """Absolute offsets of the newlines in one block (up to the indexed end)."""
        start = block * self.block_size
        end = min(start + self.block_size, self._end)
        key = (self.generation, block, end)
        cached = self._blocks_cache.get(key)
        if cached is not None:
            return cached
        data = os.pread(self._fd, end - start, start)
        positions = array("Q")
        find = data.find
        pos = find(b"\n")
        while pos != -1:
            positions.append(start + pos)
            pos = find(b"\n", pos + 1)
        self._blocks_cache.put(key, positions)
        return positions

    def _newline(self, k: int) -> int:
        """Offset of the k-th newline (0-based) of the region."""
        index = bisect_right(self._cum, k) - 1
        positions = self._block_newlines(self._first_block + index)
        return positions[k - self._cum[index]]

    def _line_start(self, i: int) -> int:
        k = i - 1 + self._skip
        return self._newline(k) + 1 if k >= 0 else self._first_block * self.block_size

    def _shift(self, base: int | None) -> int:
        return 0 if base is None else self.prepended_lines - base

    def get_lines_with_offsets(self, start: int, count: int, base: int | None = None,
                               epoch: int | None = None) -> list[tuple[int, str]]:
        """(start offset, text) of lines start .. start+count-1 (clipped to the indexed lines); none if the
        numbering is no longer that of `epoch` (a reset since the caller's numbers were taken)."""
        with self._lock:
            if self._fd is None or (epoch is not None and epoch != self.epoch):
                return []
            start += self._shift(base)
            total = max(0, self._cum[-1] - self._skip)
            start = max(0, start)
            stop = min(total, start + max(0, count))
            if start >= stop:
                return []
            bounds = [self._line_start(start)]
            for i in range(start, stop):
                bounds.append(self._newline(i + self._skip))
            span = bounds[-1] - bounds[0]
            if span <= _SPAN_READ_LIMIT:
                data = os.pread(self._fd, span, bounds[0])
                out = []
                origin = bounds[0]
                line_start = bounds[0]
                for end in bounds[1:]:
                    raw = data[line_start - origin : end - origin]
                    out.append((line_start, self._text(raw, end - line_start)))
                    line_start = end + 1
                return out
            out = []
            line_start = bounds[0]
            for end in bounds[1:]:
                raw = os.pread(self._fd, min(end - line_start, self.max_line_bytes), line_start)
                out.append((line_start, self._text(raw, end - line_start)))
                line_start = end + 1
            return out

    def _text(self, raw: bytes, length: int) -> str:
        if length > self.max_line_bytes:
            return _decode(raw[: self.max_line_bytes]) + TRUNCATION_MARK
        return _decode(raw)

    def get_lines(self, start: int, count: int, base: int | None = None) -> list[str]:
        """Text of lines start .. start+count-1, clipped to the indexed lines."""
        return [text for _, text in self.get_lines_with_offsets(start, count, base)]

    def get_line(self, index: int, base: int | None = None) -> str:
        """Text of one line; IndexError if it is not (yet) indexed."""
        lines = self.get_lines(index, 1, base)
        if not lines:
            raise IndexError(f"line {index} is not in the index ({self.line_count} lines)")
        return lines[0]

    def line_offset(self, index: int, base: int | None = None, epoch: int | None = None) -> int:
        """Byte offset where line `index` starts (IndexError too if the numbering is no longer `epoch`'s)."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                raise IndexError(index)
            index += self._shift(base)
            if not 0 <= index < max(0, self._cum[-1] - self._skip):
                raise IndexError(index)
            return self._line_start(index)

    def line_of_offset(self, offset: int, base: int | None = None, epoch: int | None = None) -> int | None:
        """Number of the line containing byte `offset`, or None if it is outside the indexed lines (or the
        numbering is no longer `epoch`'s)."""
        with self._lock:
            if self._fd is None or offset < 0 or offset >= self._end or (epoch is not None and epoch != self.epoch):
                return None
            region_start = self._first_block * self.block_size
            if offset < region_start:
                return None
            index = offset // self.block_size - self._first_block
            positions = self._block_newlines(self._first_block + index)
            k = self._cum[index] + bisect_left(positions, offset)
            line = k - self._skip
            if line < 0 or line >= max(0, self._cum[-1] - self._skip):
                return None
            return line - self._shift(base)

    def line_at_offset(self, offset: int) -> str:
        """Text of the line starting at byte `offset` (a stable address: see the module docstring)."""
        with self._lock:
            if self._fd is None:
                return ""
            raw = os.pread(self._fd, self.max_line_bytes + 1, offset)
        end = raw.find(b"\n")
        return self._text(raw, len(raw)) if end == -1 else _decode(raw[:end])

    def partial_line(self) -> str:
        """The held, not yet newline-terminated tail of the file ("" if none)."""
        with self._lock:
            if self._fd is None:
                return ""
            if self._cum[-1] == 0:
                start = self._first_block * self.block_size if self._first_block else 0
            else:
                start = self._newline(self._cum[-1] - 1) + 1
            if start >= self._end:
                return ""
            raw = os.pread(self._fd, min(self._end - start, self.max_line_bytes + 1), start)
            return self._text(raw, self._end - start)

    # ---- scanning (search and filters work on byte offsets, which never shift) -----------------
    def _indexed_window(self) -> tuple[int, int, int]:
        """(generation, first complete line's offset, end of the last complete line) or generation -1."""
        with self._lock:
            if self._fd is None:
                return -1, 0, 0
            start = self._first_block * self.block_size
            if self._skip and self._cum[-1] > 0:
                start = self._newline(0) + 1
            end = self._newline(self._cum[-1] - 1) + 1 if self._cum[-1] > self._skip else start
            return self.generation, start, end

    def _pread_gen(self, generation: int, size: int, offset: int) -> bytes:
        with self._lock:
            if generation != self.generation or self._fd is None:
                return b""  # reset meanwhile: results would belong to another file
            return os.pread(self._fd, size, offset)

    def _read_into(self, generation: int, buffer: bytearray, offset: int, size: int, at: int = 0) -> int:
        """Read up to `size` bytes at file `offset` into buffer[at:]; the count read (0 at the end or after a reset).

        Scans read into a reused buffer: a fresh 4 MiB bytes object per read is a fresh mapping in a worker
        thread, paid for in page faults (~3 µs per 4 KiB here: a quarter of a 1 GiB scan)."""
        with self._lock:
            if generation != self.generation or self._fd is None:
                return 0  # reset meanwhile: results would belong to another file
            with memoryview(buffer) as view:
                return os.preadv(self._fd, [view[at : at + size]], offset)

    def _read_lines_into(self, generation: int, buffer: bytearray, pos: int, size: int) -> int:
        """b"\n" then up to `size` bytes at the line start `pos`, into `buffer` (len(buffer) > size): buffer[i] is
        the file's byte pos - 1 + i, buffer[0] a newline (the one ending the line before is read with them, so
        nothing is copied to put one in front). Returns how many bytes of buffer hold data (0 at the end)."""
        if pos == 0:
            got = self._read_into(generation, buffer, 0, size, 1)
        else:
            got = self._read_into(generation, buffer, pos - 1, size + 1) - 1
        if got <= 0:
            return 0
        buffer[0] = 10  # b"\n": the newline before pos (were pos not a line start, taken as one, as before)
        return got + 1

    def scan_matching(
        self,
        patterns: Patterns,
        start: int | None = None,
        end: int | None = None,
        cancelled: Callable[[], bool] | None = None,
        *,
        ignore_case: bool = False,
    ) -> array:
        """Start offsets of the complete lines matching any of `patterns`, in order.

        Scans [start, end) of the indexed lines (defaults: all of them). Safe to call from a thread.
        See `_Matcher` for how patterns are applied (line starts, case).
        """
        found = array("Q")
        for _, _, offsets in self._iter_chunks(patterns, start, end, cancelled, ignore_case):
            found.extend(offsets)
        return found

    def scan_runs(
        self,
        patterns: Patterns,
        start: int | None = None,
        end: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, int, list[int]]]:
        """scan_matching in the pieces it reads, in order: (first byte, end, offsets) of each piece that matched.
        A piece scanned again alone gives the same offsets (what a `logs.matches.MatchIndex` relies on)."""
        yield from self._iter_chunks(patterns, start, end, cancelled, False)

    def _iter_chunks(self, patterns, start, end, cancelled, ignore_case) -> Iterator[tuple[int, int, list[int]]]:
        generation, lo, hi = self._indexed_window()
        if generation < 0:
            return
        start = lo if start is None else max(lo, start)
        end = hi if end is None else min(hi, end)
        matcher = _Matcher(patterns, ignore_case)
        chunk = 4 * READ_CHUNK
        buffer = take_buffer(chunk + 2)  # + the newline before, + room for a NUL after (`_add_folded_lines`)
        try:
            pos = start
            while pos < end:
                if cancelled is not None and cancelled():
                    return
                # data[0] is the newline before pos: data[i] is the file's byte pos - 1 + i, for i < size.
                data, size = buffer, self._read_lines_into(generation, buffer, pos, min(chunk, end - pos))
                if not size:
                    return
                cut = data.rfind(b"\n", 1, size) + 1 if pos + size - 1 < end else size
                if cut <= 0:  # one line longer than the chunk: take it whole
                    nl = self._next_line_start(generation, pos + size - 1, end)
                    data = bytearray(nl - pos + 2)
                    cut = self._read_lines_into(generation, data, pos, nl - pos)
                    if not cut:
                        return
                found = matcher(data, 0, cut)
                if found:
                    yield pos, pos + cut - 1, [pos - 1 + index for index in found]
                pos += cut - 1
        finally:
            give_buffer(buffer)

    def _next_line_start(self, generation: int, pos: int, end: int) -> int:
        while pos < end:
            chunk = self._pread_gen(generation, min(READ_CHUNK, end - pos), pos)
            if not chunk:
                return end
            i = chunk.find(b"\n")
            if i != -1:
                return pos + i + 1
            pos += len(chunk)
        return end

    def find_next(
        self,
        patterns: Patterns,
        after: int | None,
        cancelled: Callable[[], bool] | None = None,
        *,
        ignore_case: bool = False,
    ) -> int | None:
        """Start offset of the first matching line after the line holding byte `after` (None: from the top)."""
        start = None
        if after is not None:
            generation, _, hi = self._indexed_window()
            if generation < 0:
                return None
            start = self._next_line_start(generation, after, hi)
        for _, _, offsets in self._iter_chunks(patterns, start, None, cancelled, ignore_case):
            return offsets[0]
        return None

    def find_previous(
        self,
        patterns: Patterns,
        before: int | None,
        cancelled: Callable[[], bool] | None = None,
        *,
        ignore_case: bool = False,
    ) -> int | None:
        """Start offset of the last matching line starting before byte `before` (None: from the bottom)."""
        generation, lo, hi = self._indexed_window()
        if generation < 0:
            return None
        end = hi if before is None else min(hi, before)
        matcher = _Matcher(patterns, ignore_case)
        size = 4 * READ_CHUNK
        buffer = take_buffer(size + 2)
        try:
            while end > lo:
                if cancelled is not None and cancelled():
                    return None
                start = max(lo, end - size)
                # Widened past the buffer (a line longer than it): a buffer of its own.
                data = buffer if end - start < len(buffer) - 1 else bytearray(end - start + 2)
                if start > lo:
                    length = self._read_into(generation, data, start, end - start)  # data[i]: byte start + i
                    if not length:
                        return None
                    begin = data.find(b"\n", 0, length)  # the lines searched start after it
                    if begin == -1 or begin + 1 >= length:
                        size *= 2  # no line starts inside this window: widen it
                        continue
                    origin = start
                else:
                    length = self._read_lines_into(generation, data, start, end - start)  # data[i]: byte start - 1 + i
                    if not length:
                        return None
                    begin, origin = 0, start - 1
                found = matcher(data, begin, length)
                if found:
                    return origin + found[-1]
                end = origin + begin + 1
                size = 4 * READ_CHUNK
        finally:
            give_buffer(buffer)
        return None


class _Matcher:
    """How one scan applies its patterns to each chunk, worked out once per scan (parsing each pattern per
    4 MiB chunk cost a few percent of a scan).

    Called with (data, begin, end), data[begin] the newline before the first line, so a pattern beginning with
    "\n" is anchored at a line start. A plain literal pattern is searched by intake's rare-byte search (memchr,
    case folded there), or, without case and with no rare byte, by libc's strcasestr (`_add_folded_lines`); a
    line-start pattern ("\n", one of a few bytes, then nothing that can match a newline) through memchr of
    those bytes where they are rare (`_add_line_starts`); any other with re: give each a literal prefix, re then
    scans at memchr-like speed (an alternation like ``a|b`` is 30 times slower; pass (a, b) instead). With
    ignore_case the patterns must be lower case (ASCII).
    """

    def __init__(self, patterns: Patterns, ignore_case: bool) -> None:
        self.ignore_case = ignore_case
        self.literals: list[tuple[bytes, bool]] = []
        self.line_starts: list[tuple[re.Pattern[bytes], list[bytes]]] = []
        self.regexes: list[re.Pattern[bytes]] = []
        self.rare: dict[bytes, list] = {}  # for `_add_folded_lines`
        for pattern in (patterns,) if isinstance(patterns, re.Pattern) else patterns:
            needle = _literal_needle(pattern)
            if needle is not None:
                # Without ASCII letters a needle reads the same in any case: searched as it is, no lower-case copies.
                self.literals.append((needle, ignore_case and needle.lower() != needle.upper()))
                continue
            keys = None if ignore_case else _line_start_keys(pattern)
            if keys:
                self.line_starts.append((pattern, keys))
            else:
                self.regexes.append(pattern)

    def __call__(self, data: bytes | bytearray, begin: int, end: int) -> list[int]:
        """Sorted starts (indexes in data) of the lines of data[begin + 1:end] that match."""
        starts: set[int] = set()
        literals = self.literals
        if any(folded for _, folded in literals) and isinstance(data, bytearray):
            literals = [(n, f) for n, f in literals
                        if not (f and _add_folded_lines(data, begin, end, n, starts, self.rare))]
        if literals:
            find_lines_holding(data, begin + 1, end, literals, starts)
        for pattern, keys in self.line_starts:
            _add_line_starts(data, begin, end, pattern, keys, starts)
        if self.regexes:
            text, lo, hi, shift = data, begin, end, 0
            if self.ignore_case:  # a lower-cased copy of data[begin:end]: its index 0 is data's `begin`
                text, lo, hi, shift = data[begin:end].lower(), 0, end - begin, begin
            rfind = text.rfind
            for pattern in self.regexes:
                for m in pattern.finditer(text, lo, hi):
                    starts.add(rfind(b"\n", lo, m.start() + 1) + 1 + shift)
        return sorted(starts)


# ---- a needle without case through libc's strcasestr ----------------------------------------------------------
# A case-folded needle whose bytes are all frequent (a search for a name) was lowered piece by piece and then
# searched: two passes, 0.53 s per GiB. strcasestr folds as it compares, in one pass (0.35 s per GiB). It folds
# with the C locale's tolower, so it is used only where that is exactly bytes.lower's ASCII fold (checked on all
# 256 bytes, per locale). It stops at a NUL: one is put after the searched bytes, and one in the data (the needle
# holds none, so no match spans it) only ends a call, the next goes on after it.
_MAX_FOLDED_HITS_PER_MIB = 256  # a libc call per hit (~1.5 µs): beyond this, intake's lower-and-find is cheaper
_RARE_RESAMPLE = 16  # chunks searched before a scan samples them again for a rare byte
_libc_search: list = []  # [strcasestr, strlen, tolower, locale last checked, tolower is the ASCII fold there]


def _strcasestr():
    """libc's strcasestr (haystack address, needle) -> match address or None, if it folds as bytes.lower does.
    `_libc_search[1]` is then libc's strlen."""
    if not _libc_search:
        functions = [None, None, None]
        try:
            import ctypes  # here: the supervisor imports this module too, and never searches

            from xllm_tui.libc import libc as c_library

            libc = c_library()
            functions = [libc.strcasestr, libc.strlen, libc.tolower]
            functions[0].restype, functions[0].argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
            functions[1].restype, functions[1].argtypes = ctypes.c_size_t, [ctypes.c_void_p]
            functions[2].restype, functions[2].argtypes = ctypes.c_int, [ctypes.c_int]
        except (ImportError, OSError, AttributeError):
            functions = [None, None, None]
        _libc_search[:] = functions + [None, False]
    strcasestr, _, tolower, checked_for, folds_ascii = _libc_search
    if strcasestr is None:
        return None
    try:
        current = locale.setlocale(locale.LC_CTYPE)
    except locale.Error:
        return None
    if current != checked_for:
        folds_ascii = all(tolower(b) == (b | 0x20 if 65 <= b <= 90 else b) for b in range(256))
        _libc_search[3:] = [current, folds_ascii]
    return strcasestr if folds_ascii else None


def _has_rare_byte(data: bytearray, begin: int, end: int, needle: bytes) -> bool:
    """True if intake's search would find needle (either case) in data[begin:end] through a rare byte of it."""
    if end - begin <= 4 * _KEY_SAMPLE:
        return True  # too small to sample: intake's search, whose cost does not matter here
    return has_rare_byte(data, begin, end, needle, True)  # its decision, not a second estimate that may differ


def _sampled_count(data, begin: int, end: int, keys) -> int:
    """How often the `keys` occur in three `_KEY_SAMPLE` bytes of data[begin:end] (at its start, middle and
    end; the caller makes sure it is longer than 4 * _KEY_SAMPLE)."""
    count, middle = data.count, begin + (end - begin) // 2
    return sum(count(key, at, at + _KEY_SAMPLE) for key in keys for at in (begin, middle, end - _KEY_SAMPLE))


def _add_folded_lines(data: bytearray, begin: int, end: int, needle: bytes, starts: set[int],
                      rare: dict[bytes, list] | None = None) -> bool:
    """Add the starts of the lines of data[begin + 1:end] holding needle (lower case) without ASCII case, by
    strcasestr; False, having added nothing, where it does not apply (the caller uses intake's search). `rare`:
    a scan's memo of `_has_rare_byte` (sampling every chunk cost 10% of a search).

    strcasestr runs without the GIL (ctypes): a big region is cut in two at a newline, the halves searched at
    once, one by a helper thread, where the process may use two cores."""
    if end >= len(data) or not needle or b"\0" in needle:
        return False
    memo = rare.get(needle) if rare is not None else None
    if memo is None or memo[1] <= 0:
        memo = [_has_rare_byte(data, begin, end, needle), _RARE_RESAMPLE]
        if rare is not None:
            rare[needle] = memo
    memo[1] -= 1
    if memo[0]:
        return False
    strcasestr = _strcasestr()
    if strcasestr is None:
        return False
    bounds = [begin, end]  # the searched spans: lines of data[bounds[i] + 1:bounds[i + 1]], a NUL put at each end
    if end - begin >= _PARALLEL_BYTES and _helper() is not None:
        middle = data.find(b"\n", begin + (end - begin) // 2, end - 1)
        if middle > begin:
            bounds.insert(1, middle)
    saved = [data[at] for at in bounds[1:]]
    for at in bounds[1:]:
        data[at] = 0  # strcasestr reads up to a NUL: each span ends there
    import ctypes

    anchor = ctypes.c_char.from_buffer(data)  # holds the buffer (it cannot be resized) while its address is used
    try:
        base = ctypes.addressof(anchor)
        spans = list(zip(bounds, bounds[1:]))
        args = [(strcasestr, _libc_search[1], base, data, lo, hi, needle) for lo, hi in spans]
        other = None
        if len(spans) == 2:
            try:
                other = _helper().submit(_folded_span, *args[0])
            except RuntimeError:  # the interpreter is shutting down: no new threads
                other = None
        try:
            results = [_folded_span(*arg) for arg in (args[1:] if other is not None else args)]
        finally:
            if other is not None:
                other.exception()  # waits, even if ours failed: the helper reads the buffer until it is done
        if other is not None:
            results.insert(0, other.result())
    finally:
        del anchor
        for at, byte in zip(bounds[1:], saved):
            data[at] = byte
    for (lo, hi), (found, stopped) in zip(spans, results):
        starts.update(found)
        if stopped != -1:  # many lines hold it: a call per line costs more than lowering the rest
            find_lines_holding(data, stopped, hi, [(needle, True)], starts)
    return True


def _folded_span(strcasestr, strlen, base: int, data: bytearray, lo: int, hi: int,
                 needle: bytes) -> tuple[list[int], int]:
    """strcasestr over the lines of data[lo + 1:hi] (a NUL at data[hi]; data[lo], a newline, may be one too).
    Returns the starts of the lines holding needle and -1, or, past the budget of calls, those found so far and
    where the search stopped (a line start)."""
    budget = max(16, (hi - lo) * _MAX_FOLDED_HITS_PER_MIB >> 20)
    find, rfind = data.find, data.rfind
    found: list[int] = []
    pos = lo + 1
    while pos < hi:
        if not budget:  # from the start of the line it stopped in (after a NUL, pos may be inside one)
            return found, rfind(b"\n", lo + 1, pos) + 1 or lo + 1
        budget -= 1
        address = strcasestr(base + pos, needle)
        if not address:
            # It stopped at a NUL: ours at hi, or one in the data (needle holds none: no match spans it). strlen
            # (memchr speed, without the GIL too) tells which, where data.find(b"\0") held the GIL for it.
            pos += strlen(base + pos) + 1
            if pos > hi:
                break
            continue
        at = address - base  # needle holds no newline: its match lies in one line
        found.append(rfind(b"\n", lo + 1, at) + 1 or lo + 1)
        pos = find(b"\n", at, hi) + 1
        if not pos:
            break
    return found, -1


_PARALLEL_BYTES = 1 << 20  # a region at least this big is searched by strcasestr in two halves at once
_helper_pool: list = []  # [process id, ThreadPoolExecutor or None], made on first use (again in a forked child)
_helper_lock = threading.Lock()


def _helper():
    """A ThreadPoolExecutor searching one half of a region while the caller searches the other; None on one core."""
    if not _helper_pool or _helper_pool[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        with _helper_lock:
            if not _helper_pool or _helper_pool[0] != os.getpid():
                try:
                    cores = len(os.sched_getaffinity(0))
                except (AttributeError, OSError):
                    cores = os.cpu_count() or 1
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logfile-search") if cores > 1 else None
                _helper_pool[:] = [os.getpid(), pool]
    return _helper_pool[1]


def _literal_needle(pattern: re.Pattern[bytes]) -> bytes | None:
    """The bytes a pattern matches if it is a plain, flagless literal within one line, else None."""
    literal = plain_literal(pattern.pattern) if not pattern.flags else None
    return literal.encode("latin-1") if literal and "\n" not in literal else None


_MAX_LINE_START_KEYS = 4  # a line-start pattern's first byte: one of at most this many
_KEY_SAMPLE = 4096  # bytes of a chunk sampled at three places to tell how often the key bytes occur
# Key hits per MiB beyond which re's own scan (~0.45 s per GiB for "\n[EF]...") beats memchr plus a Python check
# at each hit (~0.2 µs a hit).
_MAX_KEY_HITS_PER_MIB = 2048


def _line_start_keys(pattern: re.Pattern[bytes]) -> list[bytes] | None:
    """For a flagless pattern "\n", one of a few bytes, then nothing that can match a newline: those bytes.

    Such a pattern matches where a line starts with a key byte, and its matches never hold a second newline, so
    checking it at each line start found through a key (memchr) finds what re.finditer finds."""
    if pattern.flags or not isinstance(pattern.pattern, bytes):
        return None
    try:
        parsed = list(re._parser.parse(pattern.pattern))  # type: ignore[attr-defined]
    except (re.error, AttributeError):
        return None
    constants = re._constants  # type: ignore[attr-defined]
    if len(parsed) < 2 or parsed[0] != (constants.LITERAL, 10):
        return None
    op, value = parsed[1]
    keys: set[int] = set()
    if op is constants.LITERAL:
        keys.add(value)
    elif op is constants.IN:
        for item_op, item in value:
            if item_op is constants.LITERAL:
                keys.add(item)
            elif item_op is constants.RANGE and item[1] - item[0] < _MAX_LINE_START_KEYS:
                keys.update(range(item[0], item[1] + 1))
            else:
                return None  # NEGATE, a category, a wide range
    else:
        return None
    if not keys or len(keys) > _MAX_LINE_START_KEYS or 10 in keys:
        return None
    if not all(_within_a_line(item) for item in parsed[2:]):
        return None
    return [bytes([key]) for key in sorted(keys)]


def _within_a_line(item) -> bool:
    """True if a parsed regex item can never match a newline (a whitelist: anything else is False)."""
    constants = re._constants  # type: ignore[attr-defined]
    op, value = item
    if op is constants.LITERAL:
        return value != 10
    if op is constants.NOT_LITERAL:
        return value == 10
    if op is constants.ANY:
        return True  # flagless: "." is not DOTALL
    if op is constants.IN:
        for item_op, item_value in value:
            if item_op is constants.LITERAL and item_value != 10:
                continue
            if item_op is constants.RANGE and not item_value[0] <= 10 <= item_value[1]:
                continue
            if item_op is constants.CATEGORY and item_value in (constants.CATEGORY_DIGIT, constants.CATEGORY_WORD):
                continue
            return False  # NEGATE, \s, ...
        return True
    if op in (constants.MAX_REPEAT, constants.MIN_REPEAT):
        return all(_within_a_line(sub) for sub in value[2])
    if op is constants.SUBPATTERN:
        return not value[1] and all(_within_a_line(sub) for sub in value[3])  # value[1]: flags it adds
    if op is constants.BRANCH:
        return all(_within_a_line(sub) for branch in value[1] for sub in branch)
    return False


def _add_line_starts(data, begin: int, end: int, pattern: re.Pattern[bytes], keys: list[bytes],
                     starts: set[int]) -> None:
    """Add the starts of the lines of data[begin + 1:end] that a line-start pattern (`_line_start_keys`) matches
    at the newline before them: through memchr of the key bytes where they are rare, else by re."""
    size = end - begin
    limit = max(64, size * _MAX_KEY_HITS_PER_MIB >> 20)
    if size > 4 * _KEY_SAMPLE and _sampled_count(data, begin, end, keys) * size // (3 * _KEY_SAMPLE) > limit:
        keys = []  # frequent here: re
    if keys:
        find, match = data.find, pattern.match
        found: list[int] = []
        hits, cap = 0, 2 * limit
        for key in keys:
            i = find(key, begin + 1, end)
            while i != -1 and hits <= cap:
                hits += 1
                if data[i - 1] == 10 and match(data, i - 1, end):  # 10: b"\n"
                    found.append(i)
                i = find(key, i + 1, end)
            if hits > cap:
                break  # the sample misled: re does the chunk
        else:
            starts.update(found)
            return
    for m in pattern.finditer(data, begin, end):
        starts.add(m.start() + 1)


def tail_lines(path: str | os.PathLike, n: int, *, include_partial: bool = True) -> list[str]:
    """The last n lines of a file, read backwards (like `tail -n`; [] for a missing or empty file).

    With include_partial, a last line without a newline is included, as tail does.
    """
    if n <= 0:
        return []
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return []
        end = size
        if not include_partial and os.pread(fd, 1, size - 1) != b"\n":
            pos = size
            while True:  # end at the last newline
                start = max(0, pos - READ_CHUNK)
                i = os.pread(fd, pos - start, start).rfind(b"\n")
                if i != -1:
                    end = start + i + 1
                    break
                if start == 0:
                    return []
                pos = start
        data = b""
        pos = end
        step = 16 * 1024  # grows: a short tail costs one small read, a long one few reads
        while pos > 0:
            start = max(0, pos - step)
            data = os.pread(fd, pos - start, start) + data
            pos = start
            step = min(step * 4, 16 * READ_CHUNK)
            if data.count(b"\n", 0, len(data) - 1) >= n:
                break
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        return [_decode(raw) for raw in lines[-n:]]
    finally:
        os.close(fd)


class IncrementalReader:
    """Reads the lines appended to a file since the last call; rotation/truncation aware.

    ``reader.read_new()`` returns the complete new lines (a partial last line is held). After the file
    is rotated (the path names a new inode) or truncated, reading restarts at the new file's start and
    `resets` is incremented. Meant for the supervisor's milestone tracking and for `follow`.
    """

    def __init__(self, path: str | os.PathLike, *, from_end: bool = False) -> None:
        self.path = os.fspath(path)
        self.offset = 0
        self.resets = 0
        self._identity: tuple[int, int] | None = None
        self._pending = b""
        if from_end:
            try:
                st = os.stat(self.path)
                self._identity = (st.st_dev, st.st_ino)
                self.offset = st.st_size
            except FileNotFoundError:
                pass

    def read_new(self, max_bytes: int = 16 * READ_CHUNK) -> list[str]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        try:
            st = os.fstat(fd)
            identity = (st.st_dev, st.st_ino)
            if self._identity is not None and (identity != self._identity or st.st_size < self.offset):
                self.offset = 0
                self._pending = b""
                self.resets += 1
            self._identity = identity
            if st.st_size <= self.offset:
                return []
            data = os.pread(fd, min(max_bytes, st.st_size - self.offset), self.offset)
        finally:
            os.close(fd)
        self.offset += len(data)
        data = self._pending + data
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        if cut == 0:
            return []
        return [_decode(raw) for raw in data[: cut - 1].split(b"\n")]


def follow(
    path: str | os.PathLike,
    poll_interval: float = 0.5,
    *,
    from_end: bool = True,
    stop: Callable[[], bool] | None = None,
) -> Iterator[str]:
    """Yield lines as they are appended (like `tail -F`), across rotation and truncation.

    Runs until `stop()` returns True (checked every poll) or the consumer stops iterating.
    """
    reader = IncrementalReader(path, from_end=from_end)
    while stop is None or not stop():
        lines = reader.read_new()
        if lines:
            yield from lines
            continue
        time.sleep(poll_interval)


_GENERATION_SUFFIX = re.compile(r"\.(\d+)$")


def log_generations(log_path: str | os.PathLike) -> list[str]:
    """Earlier generations of a log, newest first: node_3.log.1, node_3.log.2, ..."""
    log_path = os.fspath(log_path)
    directory = os.path.dirname(log_path) or "."
    prefix = os.path.basename(log_path) + "."
    found: list[tuple[int, str]] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith(prefix):
            suffix = name[len(prefix) :]
            if suffix.isdigit() and not suffix.startswith("0"):
                found.append((int(suffix), os.path.join(os.path.dirname(log_path), name)))
    return [p for _, p in sorted(found)]


def stdout_file(pid: int | None) -> tuple[str, os.stat_result] | None:
    """The regular file a process writes its stdout to (a rank: its log, even deleted), by the name it can be
    read through, /proc/PID/fd/1, and its stat. None for a pipe, a terminal, or a process gone."""
    if not pid:
        return None
    name = f"/proc/{pid}/fd/1"
    try:
        st = os.stat(name)
    except OSError:
        return None
    return (name, st) if stat.S_ISREG(st.st_mode) else None


def deleted_log_source(path: str, pid: int | None) -> str | None:
    """When the log `path` is gone but the process `pid` still writes it (its stdout, a deleted regular file:
    logs/ cleared while the rank runs), the name it can still be read by: /proc/PID/fd/1. Else None."""
    if os.path.exists(path):
        return None
    found = stdout_file(pid)
    return found[0] if found is not None and found[1].st_nlink == 0 else None


def rotate_log(path: str | os.PathLike, keep: int = 10) -> str | None:
    """Move `path` to `path.1` (shifting .1 -> .2 ... and dropping generations beyond `keep`).

    Only renames, never truncates, so a process still writing the old file keeps writing to the
    rotated generation. Returns the new name of the old log, or None if there was nothing to rotate
    (missing or empty file). keep < 1 is treated as 1.
    """
    path = os.fspath(path)
    keep = max(1, keep)
    try:
        if os.path.getsize(path) == 0:
            return None
    except FileNotFoundError:
        return None
    for old in log_generations(path):
        if int(_GENERATION_SUFFIX.search(old).group(1)) >= keep:
            os.unlink(old)
    for old in reversed(log_generations(path)):
        n = int(_GENERATION_SUFFIX.search(old).group(1))
        os.replace(old, f"{path}.{n + 1}")
    target = f"{path}.1"
    os.replace(path, target)
    return target
