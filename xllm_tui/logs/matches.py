"""The lines a filter matched in a `LogFile`, by row, without holding them all (no Textual here).

An errors-only filter over an error storm (a rank failing every request) matches millions of lines: an array of
their offsets grew by 8 bytes a line, 80 MB for 10 M lines, in the TUI. `MatchIndex` keeps the matches of each
scanned byte range ("run") only while they are few (`dense_limit`); of a run with more it keeps the count, and
finds its offsets again by scanning that range once more when a row of it is asked for, on the UI thread while
drawing: such a run holds at most COUNTED_RUN matches (a few hundred KB, about a millisecond; the last few are
cached; whole 4 MiB pieces took 14 ms a miss, a dropped frame while scrolling a storm). Byte offsets of line starts never shift, so a range scanned again
gives the same matches. Ranges are added after all the others (appended lines) or before them all (the index
growing towards the file's start), never overlapping.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

DENSE_LIMIT = 256  # offsets kept per run; a run with more keeps its count
COUNTED_RUN = 2048  # matches per counted run
_CACHED_RUNS = 8


class MatchIndex:
    """Start offsets of matching lines, in file order: len(), [row], bisect_left/right(offset)."""

    def __init__(self, logfile: Any, patterns: Any, *, dense_limit: int = DENSE_LIMIT) -> None:
        self._logfile = logfile  # a LogFile: scan_matching(patterns, lo, hi) gives a run's offsets again
        self._patterns = patterns
        self.dense_limit = dense_limit
        self._los: list[int] = []  # each run's first byte; runs are in file order
        self._his: list[int] = []  # each run's end (exclusive)
        self._dense: list[array | None] = []  # a run's offsets, or None: counted only
        self._cum = array("Q", [0])  # rows before each run; _cum[-1] is the total
        self._cache: OrderedDict[int, array] = OrderedDict()  # run start -> offsets found again

    def __len__(self) -> int:
        return self._cum[-1]

    @property
    def range(self) -> tuple[int, int] | None:
        """The bytes scanned so far, or None before the first range."""
        return (self._los[0], self._his[-1]) if self._los else None

    @staticmethod
    def pieces(lo: int, hi: int, offsets: Sequence[int],
               dense_limit: int = DENSE_LIMIT) -> list[tuple[int, int, array | int]]:
        """What `add` needs of a scanned range, small enough to hand between threads (a poll in an error storm
        scanned hundreds of megabytes: millions of ints): the range and its offsets while they are few, else ranges
        of COUNTED_RUN matches each (cut at matching line starts) and their counts."""
        if len(offsets) <= dense_limit:
            return [(lo, hi, array("Q", offsets))]
        n = len(offsets)
        return [(lo if i == 0 else offsets[i], hi if i + COUNTED_RUN >= n else offsets[i + COUNTED_RUN],
                 min(COUNTED_RUN, n - i)) for i in range(0, n, COUNTED_RUN)]

    def add(self, lo: int, hi: int, found: Sequence[int] | int) -> None:
        """The matches in [lo, hi) (their offsets, or their count: see `pieces`): a range after every range
        held, or before them all."""
        count = found if isinstance(found, int) else len(found)
        if not count:
            return
        dense = None if isinstance(found, int) or count > self.dense_limit else array("Q", found)
        first = not self._los
        if first or lo >= self._his[-1]:
            if dense is not None and not first and self._dense[-1] is not None \
                    and len(self._dense[-1]) + count <= self.dense_limit:
                self._dense[-1] = self._dense[-1] + dense  # polls bring a few at a time: one run for many
                self._his[-1] = hi
                self._cum[-1] += count
                return
            self._los.append(lo)
            self._his.append(hi)
            self._dense.append(dense)
            self._cum.append(self._cum[-1] + count)
        elif hi <= self._los[0]:
            self._los.insert(0, lo)
            self._his.insert(0, hi)
            self._dense.insert(0, dense)
            self._cum = array("Q", [0]) + array("Q", (c + count for c in self._cum))
        else:
            raise ValueError(f"bytes {lo}-{hi} overlap the matches held ({self._los[0]}-{self._his[-1]})")

    def _offsets(self, run: int) -> array:
        dense = self._dense[run]
        if dense is not None:
            return dense
        lo = self._los[run]
        found = self._cache.get(lo)
        if found is None:
            found = self._logfile.scan_matching(self._patterns, lo, self._his[run])
            expected = self._cum[run + 1] - self._cum[run]
            if len(found) != expected:  # the file was reset meanwhile (a view then makes a new index)
                found = array("Q", found[:expected]) + array("Q", [found[-1] if found else lo] * (expected - len(found)))
            self._cache[lo] = found
            while len(self._cache) > _CACHED_RUNS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(lo)
        return found

    def __getitem__(self, row: int) -> int:
        total = self._cum[-1]
        if row < 0:
            row += total
        if not 0 <= row < total:
            raise IndexError(row)
        run = bisect_right(self._cum, row) - 1
        return self._offsets(run)[row - self._cum[run]]

    def bisect_left(self, offset: int) -> int:
        """The row of the first match at or after `offset` (len() if none)."""
        return self._bisect(offset, bisect_left)

    def bisect_right(self, offset: int) -> int:
        """The row of the first match after `offset` (len() if none)."""
        return self._bisect(offset, bisect_right)

    def _bisect(self, offset: int, within) -> int:
        run = bisect_right(self._los, offset) - 1
        if run < 0:
            return 0
        if offset >= self._his[run]:
            return self._cum[run + 1]
        return self._cum[run] + within(self._offsets(run), offset)

    def copy(self) -> MatchIndex:
        """The same matches for another thread (a search worker): runs shared, a cache of its own."""
        other = MatchIndex(self._logfile, self._patterns, dense_limit=self.dense_limit)
        other._los, other._his, other._dense = list(self._los), list(self._his), list(self._dense)
        other._cum = array("Q", self._cum)
        return other

    def held_bytes(self) -> int:
        """Bytes of offsets held for good (runs of few matches); the cache of runs scanned again holds at most
        _CACHED_RUNS runs more."""
        return 8 * sum(len(d) for d in self._dense if d is not None)
