"""Log intake for the supervisor: new bytes of a rank's log, searched in chunks, never split into lines (no Textual).

Why
---
A rank can write hundreds of thousands of lines a second. The supervisor only needs the few lines that can
change what it reports (start-up milestones, failures, readiness) and the last line; decoding and parsing
every line in Python (``IncrementalReader.read_new`` + ``Milestones.feed`` per line) cost about 14 CPU
seconds per million lines. `LogIntake` reads the appended bytes in slices of `SCAN_BYTES`, finds line
boundaries and the *interesting* lines with bytes-level searches (C speed), decodes and feeds only those,
and counts the rest.

Interesting lines (a superset of what `glog.StartupTracker.feed` reacts to; each is then checked exactly
by the existing code, so milestones, failures and readiness are the same as feeding every line; once the
tracker is `settled` (start-up over: rank 0 serving, a worker ready with its kv cache), milestone and
ready_pattern lines are no longer looked for, only failures, which is most of a flooding rank's cost saved):
- while the sink has no failure yet: lines starting with ``E`` or ``F`` (glog error/fatal), lines holding
  ``Check failed:`` or ``ERROR:`` (what `glog.severity_of` calls E/F);
- lines holding a literal run of a `glog._MILESTONES` pattern (read from the patterns themselves, in their
  case; ``serving`` without case), so an extended pattern list is followed; if a pattern has no literal
  run, the literals of `milestone_of`'s case-insensitive gate (`glog._CHEAP_FILTER`), else that gate as a regex;
- rank 0 (the sink's tracker ``is_master``): lines matching the profile's ``ready_pattern`` (without case).
Lines are fed in file order; `last_line` is set to the last non-blank line read, as feeding every line did.
Known difference: ASCII letters are folded bytewise, so a Unicode look-alike that ``re.I`` folds to an ASCII
letter (Kelvin sign, long s) is not found; xllm prints ASCII.

How lines are found: per slice, each literal is looked for through its rarest byte in that log (estimated
from a few KiB sampled now and then), with memchr (``bytes.find`` of one byte, ~20 GB/s), and checked at
each hit; literals sharing that byte share the pass. A literal with no rare byte is searched whole
(``bytes.find``, ~3 GB/s). Newlines are counted with ``bytes.count``.

API (all the supervisor needs; replaces IncrementalReader + adopted_log_reader)
---------------------------------------------------------------------------------
    intake = LogIntake(path, from_end=True)         # before spawning a rank: its first line is not missed
    intake = LogIntake.adopt(path)                  # a rank of an earlier supervisor: only the last
                                                    # ADOPT_BACKLOG bytes are read (its first, cut line dropped)
    result = intake.feed(milestones)                # in the log thread, once per round per rank
    result.grew      # bytes were read (the log grew): the rank's last_growth
    result.more      # more than max_bytes was pending: call again (soon) to catch up
    result.lines     # complete lines consumed (0 with count_lines=False); result.fed: lines decoded and fed; result.reset: "rotated" | ...
    intake.offset, intake.resets, intake.lines_read

`feed(sink, max_bytes=ROUND_BYTES)` does bounded work: at most max_bytes per call, searched in slices of
SCAN_BYTES, so one C-level search holds the GIL well under a millisecond and the event loop answering
clients is never held up. Memory is bounded whatever the growth speed: one slice, plus at most
MAX_LINE_BYTES of a line still being written (a longer line is cut to that head; glog's own limit is 30000).
Rotation (the path names a new inode) and truncation (the file shrank) restart reading at the new file's
start, like IncrementalReader, and are reported in `result.reset`. One feed runs at a time per intake (a
lock): the log thread and the event loop reading a dead rank's last lines never feed a line twice.
Measured (2026-11-30): bench/bench_intake.py --lines 100000 (ranks still in start-up: milestones looked for)
0.086 CPU s per million lines, against 12.5 for IncrementalReader + Milestones.feed of every line; the whole
supervisor under bench/run.sh's flood, 0.175 during start-up and 0.0275 once serving, where half is the kernel's
copy of the bytes out of the page cache (perf) and a fifth the memchr passes.

The sink is a `supervisor.probes.Milestones` or anything with the same shape: ``feed(line: str)``, a
``last_line`` attribute, ``failure`` (None while failures are still looked for) and ``tracker`` with
``is_master`` and ``ready_pattern``.

Wiring in supervisor/daemon.py (what changes there):
    launch:     reader = LogIntake(launch.log_path, from_end=True)
    take_over:  r.reader = LogIntake.adopt(r.launch.log_path); r.reader.feed(r.milestones, ADOPT_BACKLOG)
    _read_logs: if reader.feed(milestones).grew: grew.append(r)
    on_exit:    r.reader.feed(r.milestones)
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from xllm_tui.logs import glog

ROUND_BYTES = 16 * 1024 * 1024  # default bytes per feed() call (as IncrementalReader.read_new)
SCAN_BYTES = 512 * 1024  # bytes read and searched at once: bounds memory and each C call's GIL hold
MAX_LINE_BYTES = 64 * 1024  # a line longer than this is kept and fed cut to its head
ADOPT_BACKLOG = 16 * 1024 * 1024  # adopting a running rank: the log's tail read for its milestones
_LAST_LINE_LOOKBACK = 64  # blank lines skipped looking for the last non-blank one


class MilestoneSink(Protocol):
    last_line: str
    tracker: Any

    def feed(self, line: str) -> None: ...

    @property
    def failure(self) -> tuple[str, str] | None: ...


@dataclass(frozen=True)
class IntakeResult:
    """What one `LogIntake.feed` call consumed."""

    bytes: int = 0  # bytes read (a held partial line included)
    lines: int = 0  # complete lines consumed
    fed: int = 0  # lines decoded and fed to the sink
    more: bool = False  # unread bytes remain beyond max_bytes: call again
    reset: str | None = None  # "rotated" or "truncated": reading restarted at the new file's start

    @property
    def grew(self) -> bool:
        return self.bytes > 0


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\r") else text


def plain_literal(pattern: str | bytes) -> str | None:
    """The text a regex matches if it is a plain literal (no class, repeat, anchor, ...), else None (for a
    bytes pattern, its bytes as latin-1 characters)."""
    try:
        parsed = re._parser.parse(pattern)  # type: ignore[attr-defined]
    except (re.error, AttributeError):
        return None
    chars = []
    for op, value in parsed.data:
        if op is not re._constants.LITERAL:  # type: ignore[attr-defined]
            return None
        chars.append(chr(value))
    return "".join(chars)


def _ascii_folded(text: str) -> bytes | None:
    """text as lower-case ASCII bytes, or None if it is not ASCII (bytes.lower folds ASCII only)."""
    return text.lower().encode("ascii") if text.isascii() else None


_MIN_RUN = 3  # shorter literal runs are not worth searching for


def _required_runs(items: list) -> list[list[str]] | None:
    """Literal runs a match of a parsed regex must hold: alternatives (one per top-level branch), each a list
    of runs that are all in every match of that alternative; None when none can be told."""
    constants = re._constants  # type: ignore[attr-defined]
    runs: list[str] = []
    run = ""
    branches = None
    for op, value in items:
        if op is constants.LITERAL:
            run += chr(value)
            continue
        if len(run) >= _MIN_RUN:
            runs.append(run)
        run = ""
        if op is constants.SUBPATTERN:
            inner = list(value[-1])
            if len(inner) == 1 and inner[0][0] is constants.BRANCH:
                branches = branches or inner[0][1][1]
            else:
                found = _required_runs(inner)
                if found and len(found) == 1:
                    runs.extend(found[0])
        elif op is constants.BRANCH:
            branches = branches or value[1]
    if len(run) >= _MIN_RUN:
        runs.append(run)
    if runs:
        return [runs]
    if branches:
        alternatives: list[list[str]] = []
        for branch in branches:
            found = _required_runs(list(branch))
            if not found:
                return None
            alternatives.extend(found)
        return alternatives
    return None


Wanted = list[tuple[tuple[bytes, ...], bool]]  # (literal runs: a line holding any is fed, ignore case)


_INLINE_FLAG = re.compile(r"\(\?[aiLmsux-]")  # (?i) (?i:...) (?-i:...), not (?: (?P (?= (?! (?<


def _wanted_from_patterns() -> Wanted | None:
    """Per alternative of each glog._MILESTONES pattern, the literal runs its matches hold; None if unknown."""
    wanted: Wanted = []
    try:
        for _phase, pattern in glog._MILESTONES:
            parsed = re._parser.parse(pattern.pattern, pattern.flags)  # type: ignore[attr-defined]
            alternatives = _required_runs(list(parsed))
            if not alternatives:
                return None
            # Any inline flag (or re.I) is taken as ignore case: finds more lines, never fewer. A group such as
            # "(?:...)" is not a flag; searching case-sensitively lets a literal's capital letter be its key byte.
            ignore_case = bool(parsed.state.flags & re.IGNORECASE) or _INLINE_FLAG.search(pattern.pattern) is not None
            for runs in alternatives:
                if not all(run.isascii() for run in runs):
                    return None
                item = (tuple((r.lower() if ignore_case else r).encode() for r in runs), ignore_case)
                if item not in wanted:
                    wanted.append(item)
    except (AttributeError, TypeError, ValueError, re.error):
        return None
    return wanted


def _wanted_from_gate() -> tuple[Wanted, re.Pattern[bytes] | None]:
    """The literals of milestone_of's case-insensitive gate; or the gate itself as a bytes regex (slow, exact)."""
    gate = glog._CHEAP_FILTER
    wanted: Wanted = []
    for alternative in gate.pattern.split("|"):
        literal = plain_literal(alternative)
        folded = _ascii_folded(literal) if literal else None
        if not folded or not gate.flags & re.IGNORECASE:
            return [], re.compile(gate.pattern.encode(), re.IGNORECASE)
        wanted.append(((folded,), True))
    return wanted, None


def _milestone_wanted() -> tuple[Wanted, re.Pattern[bytes] | None]:
    """What to look for so that no line glog.milestone_of would mark is missed (see the module docstring)."""
    wanted = _wanted_from_patterns()
    return (wanted, None) if wanted else _wanted_from_gate()


_MILESTONE_WANTED, _MILESTONE_REGEX = _milestone_wanted()
_ERROR_START = re.compile(rb"\n[EF]")  # glog E/F lines; the first line of a region is checked apart
_FAILURE_WANTED = [((b"Check failed:",), False), ((b"ERROR:",), False)]  # severity_of's E/F for any line


# A ready_pattern with these can match across a newline or only at the ends of the text: searched over a
# whole slice it could find what no single line holds, or miss a line's match; such patterns see every line.
_MAY_CROSS_LINES = re.compile(r"\\[AZsSDWb]|\[\^|\(\?[a-zA-Z]*s")


class _ReadyMatcher:
    """The profile's ready_pattern over bytes: a folded literal, or a bytes regex (re.I, re.M)."""

    def __init__(self, pattern: str) -> None:
        literal = plain_literal(pattern)
        self.needle = _ascii_folded(literal) if literal else None
        self.regex = None
        if self.needle is None and pattern.isascii() and not _MAY_CROSS_LINES.search(pattern):
            try:
                self.regex = re.compile(pattern.encode(), re.IGNORECASE | re.MULTILINE)
            except (re.error, UnicodeEncodeError):
                self.regex = None
        self.every_line = self.needle is None and self.regex is None  # cannot search bytes: feed all lines


# ---- finding lines by literal: a rare byte of each needle with memchr, then the needle checked there ----
# bytes.find of a 10-25 byte needle runs at about 3 GB/s, of one byte (memchr) at about 20 GB/s. So each
# needle is looked for through its rarest byte in this slice (estimated from a small sample); needles sharing
# that byte share the pass. Where no byte of a needle is rare enough, the needle itself is searched.
_SAMPLE_BYTES = 1024  # taken at three places of a slice
_PASS_COST = 32  # a memchr pass over a MiB costs about as much as checking this many hits in Python
_MAX_HITS_PER_MIB = 64  # a byte found more often costs more in Python than a plain search
_REPLAN_SLICES = 64  # slices searched with one plan before the sample is taken again
_SHARED_PREFIX = 10  # plain needles sharing this much of a start are searched as one


def _sample(data: bytes, start: int, end: int) -> bytes:
    size = end - start
    if size <= 3 * _SAMPLE_BYTES:
        return data[start:end]
    middle = start + size // 2
    return data[start : start + _SAMPLE_BYTES] + data[middle : middle + _SAMPLE_BYTES] + data[end - _SAMPLE_BYTES : end]


@dataclass
class _Plan:
    """How one slice is searched: key bytes (memchr) with the needles checked at their hits, plain needles."""

    groups: dict[tuple[bytes, ...], list[tuple[bytes, int, bool]]]  # keys -> [(needle, key offset, ignore case)]
    plain: list[tuple[bytes, bool]]  # (needle, ignore case): searched as a whole
    error_starts_by_key: bool  # E/F line starts found by memchr of "E" and "F" (else by regex)
    uses: int = 0


def _plan(data: bytes, start: int, end: int, wanted: list[tuple[tuple[bytes, ...], bool]], error_starts: bool) -> _Plan:
    sample = _sample(data, start, end)
    per_mib = (1 << 20) / max(1, len(sample))
    counts: dict[bytes, int] = {}

    def hits_per_mib(keys: tuple[bytes, ...]) -> float:
        for key in keys:
            if key not in counts:
                counts[key] = sample.count(key)
        return sum(counts[k] for k in keys) * per_mib

    groups: dict[tuple[bytes, ...], list[tuple[bytes, int, bool]]] = {}
    plain: list[tuple[bytes, bool]] = []
    error_keys = (b"E", b"F")
    by_key = error_starts and hits_per_mib(error_keys) <= _MAX_HITS_PER_MIB
    if by_key:
        groups[error_keys] = [(b"", 0, False)]  # b"": "a line starts here"
    # Per needle, where each key (set of bytes) it could be found by sits in it.
    places: list[dict[tuple[bytes, ...], tuple[bytes, int, bool]]] = []
    for runs, ignore_case in wanted:
        where: dict[tuple[bytes, ...], tuple[bytes, int, bool]] = {}
        for run in runs:
            for offset in range(len(run)):
                byte = run[offset : offset + 1]
                keys = (byte, byte.upper()) if ignore_case and byte.isalpha() else (byte,)
                if by_key and keys in ((b"E",), (b"F",)):
                    keys = error_keys  # "ERROR:" found in the E/F line starts' passes: no pass of its own
                if keys not in where and hits_per_mib(keys) <= _MAX_HITS_PER_MIB:
                    where[keys] = (run, offset, ignore_case)
        if where:
            places.append(where)
        else:
            plain.append((max(runs, key=len), ignore_case))  # the longest run searches fastest
    # Fewest passes for their hits (greedy set cover): a key's cost is a pass (unless already made) plus a
    # check per hit per needle it serves, shared among the needles it covers.
    while places:
        def cost_per_needle(keys: tuple[bytes, ...]) -> float:
            served = sum(keys in where for where in places)
            return ((0 if keys in groups else _PASS_COST) + hits_per_mib(keys) * served) / served
        candidates = {keys for where in places for keys in where}
        chosen = min(candidates, key=lambda keys: (cost_per_needle(keys), keys))
        groups.setdefault(chosen, []).extend(where[chosen] for where in places if chosen in where)
        places = [where for where in places if chosen not in where]
    return _Plan(groups, _shared_prefixes(plain), by_key)


_MIN_SAMPLED_REGION = 16 * 1024  # smaller regions are searched without a plan made from their sample


def _whole_needles_plan(wanted: Wanted) -> _Plan:
    """A plan that searches each wanted literal whole (no key bytes, E/F line starts by regex)."""
    return _Plan({}, [(max(runs, key=len), ignore_case) for runs, ignore_case in wanted], False)


def _shared_prefixes(plain: list[tuple[bytes, bool]]) -> list[tuple[bytes, bool]]:
    """Needles with a long common prefix searched once, by that prefix (a line holding either holds it)."""
    merged: list[tuple[bytes, bool]] = []
    for needle, ignore_case in sorted(set(plain)):
        if merged and merged[-1][1] == ignore_case:
            previous = merged[-1][0]
            common = os.path.commonprefix([previous, needle])
            if len(common) >= _SHARED_PREFIX:
                merged[-1] = (common, ignore_case)
                continue
        merged.append((needle, ignore_case))
    return merged


def _find_lines(data: bytes, start: int, end: int, plan: _Plan, error_starts: bool, starts: set[int]) -> bool:
    """Add to `starts` the start of every line of data[start:end] holding a needle of the plan (ignore_case:
    given lower-case, matched without ASCII case), and with error_starts every line starting with E or F.
    Returns False when a key byte turned out frequent here (the plan should be made again)."""
    find, rfind, startswith = data.find, data.rfind, data.startswith
    budget = max(64, 4 * ((end - start) * _MAX_HITS_PER_MIB >> 20))
    plan_holds = True
    overflow: list[tuple[bytes, bool]] = []  # needles whose key byte was frequent here: searched whole instead
    starts_by_key = plan.error_starts_by_key
    for keys, members in plan.groups.items():
        found = 0
        for key in keys:
            i = find(key, start, end)
            while i != -1 and found <= budget:
                found += 1
                for needle, offset, ignore_case in members:
                    at = i - offset
                    if not needle:
                        if at == start or data[at - 1] == 10:  # 10: b"\n"
                            starts.add(at)
                    elif at >= start and at + len(needle) <= end and (
                            data[at : at + len(needle)].lower() == needle if ignore_case else startswith(needle, at)):
                        starts.add(rfind(b"\n", start, at) + 1 or start)
                i = find(key, i + 1, end)
        if found > budget:  # the Python loop over hits would cost more than a whole-needle search
            plan_holds = False
            overflow += [(needle, ignore_case) for needle, _, ignore_case in members if needle]
            starts_by_key = starts_by_key and all(needle for needle, _, _ in members)
    if error_starts and not starts_by_key:
        if data[start : start + 1] in (b"E", b"F"):
            starts.add(start)
        for m in _ERROR_START.finditer(data, start, end):
            starts.add(m.start() + 1)
    plain = plan.plain + overflow
    for needle, ignore_case in plain:
        if not ignore_case:
            _add_matches(data, needle, start, end, starts)
    folded_needles = [needle for needle, ignore_case in plain if ignore_case]
    if folded_needles:
        _add_folded_matches(data, folded_needles, start, end, starts)
    return plan_holds


def find_lines_holding(data: bytes, start: int, end: int, needles: list[tuple[bytes, bool]], starts: set[int]) -> None:
    """Add to `starts` the start of every line of data[start:end] holding one of `needles` ((needle,
    ignore_case); an ignore_case needle given lower-case, matched without ASCII case). One slice, searched
    with a plan made from its own sample (the log view's search and filters over a file)."""
    wanted = [((needle,), ignore_case) for needle, ignore_case in needles]
    _find_lines(data, start, end, _plan(data, start, end, wanted, False), False, starts)


def has_rare_byte(data: bytes, start: int, end: int, needle: bytes, ignore_case: bool) -> bool:
    """True if find_lines_holding would look for needle in data[start:end] through a rare byte of it (memchr),
    not whole: its own plan, from the slice's sample."""
    return bool(_plan(data, start, end, [((needle,), ignore_case)], False).groups)


def _add_matches(haystack: bytes, needle: bytes, start: int, end: int, starts: set[int], shift: int = 0) -> None:
    """Add the start (plus shift) of each line of haystack[start:end] holding needle; one hit per line."""
    find, rfind = haystack.find, haystack.rfind
    i = find(needle, start, end)
    while i != -1:
        line_start = rfind(b"\n", start, i) + 1 or start
        starts.add(line_start + shift)
        line_end = find(b"\n", i, end)
        if line_end == -1:
            return
        i = find(needle, line_end + 1, end)


_FOLD_PIECE = 64 * 1024  # bytes lowered at once: a copy this small is reused from the heap, not a fresh mapping


def _add_folded_matches(data: bytes, needles: list[bytes], start: int, end: int, starts: set[int]) -> None:
    """Add the start of each line of data[start:end] holding one of `needles` (lower-case) without ASCII case.

    Lowered piece by piece: one lower-case copy of a whole 512 KiB slice was two fresh mappings (the slice,
    then its lower-case copy), each paid for in page faults."""
    overlap = max(map(len, needles)) - 1  # a match starting in a piece ends in its overlap
    find, rfind = data.find, data.rfind
    piece_start = start
    while piece_start < end:
        piece_end = min(end, piece_start + _FOLD_PIECE)
        folded = data[piece_start : min(end, piece_end + overlap)].lower()
        for needle in needles:
            i = folded.find(needle, 0, piece_end - piece_start + len(needle) - 1)
            while i != -1:
                at = piece_start + i
                starts.add(rfind(b"\n", start, at) + 1 or start)
                line_end = find(b"\n", at, end)
                if line_end == -1 or line_end + 1 >= piece_end:
                    break  # the rest of the piece is on this line; the next piece starts past it or finds it again
                i = folded.find(needle, line_end + 1 - piece_start, piece_end - piece_start + len(needle) - 1)
        piece_start = piece_end


# Slices are read into reused buffers: a fresh bytes object per slice (1 MiB then) made the allocator (glibc's rising mmap
# threshold) keep the freed ones resident, and cost a page fault per 4 KiB. One buffer per concurrent reader; the log
# view's scans (logs/tail.py) take theirs, of other sizes, from the same pool.
_spare_buffers: dict[int, list[bytearray]] = {}
_buffers_lock = threading.Lock()
_MAX_SPARE_BUFFERS = 2  # per size


def take_buffer(size: int | None = None) -> bytearray:
    """A reused bytearray of `size` bytes (default SCAN_BYTES); hand it back with give_buffer."""
    size = SCAN_BYTES if size is None else size
    with _buffers_lock:
        spares = _spare_buffers.get(size)
        if spares:
            return spares.pop()
    return bytearray(size)


def give_buffer(buffer: bytearray) -> None:
    with _buffers_lock:
        spares = _spare_buffers.setdefault(len(buffer), [])
        if len(spares) < _MAX_SPARE_BUFFERS:
            spares.append(buffer)


class LogIntake:
    """Reads what a rank appended to its log and feeds the interesting lines to a sink (see module docstring)."""

    def __init__(self, path: str | os.PathLike, *, from_end: bool = False, count_lines: bool = True,
                 writer_pid: int | None = None) -> None:
        self.path = os.fspath(path)
        # The rank writing the log (its stdout): while the log's name is gone (logs/ cleared as it runs), the file
        # it still writes is read through /proc/PID/fd/1. Else a rank cleared in its start-up stayed `loading`.
        self.writer_pid = writer_pid
        self.orphaned = False  # the last look found the name gone and read the writer's stdout: no write wakes us
        # Counting newlines is a whole pass over the bytes (a third of the work once start-up is over); the
        # supervisor reports no line counts, so it does not ask for them.
        self.count_lines = count_lines
        self.offset = 0
        self.resets = 0
        self.lines_read = 0
        self._identity: tuple[int, int] | None = None
        self._pending = b""  # a line still being written (at most MAX_LINE_BYTES of it)
        self._discard_to_newline = False  # the rest of an over-long line (or of a cut first line) is dropped
        self._ready_key: str | None = None
        self._ready: _ReadyMatcher | None = None
        self._plan: _Plan | None = None  # how slices are searched, re-made from samples now and then
        self._plan_key: tuple | None = None
        # The log thread and the event loop (a rank's exit) may both read: one at a time, no line fed twice.
        self._lock = threading.Lock()
        if from_end:
            try:
                st = os.stat(self.path)
            except OSError:
                return
            self._identity = (st.st_dev, st.st_ino)
            self.offset = st.st_size

    @classmethod
    def adopt(cls, path: str | os.PathLike, backlog: int = ADOPT_BACKLOG, *, count_lines: bool = True,
              writer_pid: int | None = None) -> LogIntake:
        """An intake positioned `backlog` bytes before the end (a rank started by an earlier supervisor).

        A multi-gigabyte log is not read from its start: start-up milestones are long past. The line cut by
        the starting point is dropped. Feed it with max_bytes=backlog to read the backlog in one call.
        """
        intake = cls(path, count_lines=count_lines, writer_pid=writer_pid)
        found = intake._locate()
        if found is None:
            return intake
        where, st = found
        intake._identity = (st.st_dev, st.st_ino)
        intake.offset = max(0, st.st_size - backlog)
        if intake.offset > 0:
            try:
                with open(where, "rb") as f:
                    f.seek(intake.offset - 1)
                    intake._discard_to_newline = f.read(1) != b"\n"
            except OSError:
                intake._discard_to_newline = True
        return intake

    # ---- reading -------------------------------------------------------------------------------------
    def feed(self, sink: MilestoneSink, max_bytes: int = ROUND_BYTES) -> IntakeResult:
        """Read up to max_bytes appended since the last call; feed the interesting lines to `sink`."""
        with self._lock:
            return self._feed(sink, max_bytes)

    def _locate(self) -> tuple[str, os.stat_result] | None:
        """Where the log is read: its name; when the name is gone, the file its writer still writes (its stdout,
        a regular file, the one read so far if any). None: nothing to read (not written yet, or between a
        rotation and the new file)."""
        try:
            found = self.path, os.stat(self.path)
            self.orphaned = False
            return found
        except OSError:
            pass
        from xllm_tui.logs.tail import stdout_file

        found = stdout_file(self.writer_pid)
        if found is None or self._identity not in (None, (found[1].st_dev, found[1].st_ino)):
            return None
        self.orphaned = True
        return found

    def _feed(self, sink: MilestoneSink, max_bytes: int) -> IntakeResult:
        found = self._locate()
        if found is None:
            return IntakeResult()
        where, st = found
        if (st.st_dev, st.st_ino) == self._identity and st.st_size == self.offset:
            return IntakeResult()  # nothing new: one stat per idle round
        try:
            fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return IntakeResult()
        try:
            st = os.fstat(fd)
            identity = (st.st_dev, st.st_ino)
            reset = None
            if self._identity is not None and identity != self._identity:
                reset = "rotated"
            elif st.st_size < self.offset:
                reset = "truncated"
            if reset is not None:
                self.offset = 0
                self._pending = b""
                self._discard_to_newline = False
                self.resets += 1
            self._identity = identity
            end = min(st.st_size, self.offset + max(1, max_bytes))
            scan = _Scan(self, sink)
            pos = self.offset
            buffer = take_buffer()
            try:
                while pos < end:
                    with memoryview(buffer) as view:
                        got = os.preadv(fd, [view[: min(SCAN_BYTES, end - pos)]], pos)
                    if not got:
                        break  # shrunk meanwhile: the next call sees the truncation
                    scan.consume(buffer, got)
                    pos += got
            finally:
                give_buffer(buffer)
        finally:
            os.close(fd)
        consumed = pos - self.offset
        self.offset = pos
        self.lines_read += scan.lines
        scan.finish()
        return IntakeResult(consumed, scan.lines, scan.fed, st.st_size > pos, reset)

    def _ready_matcher(self, sink: MilestoneSink) -> _ReadyMatcher | None:
        tracker = getattr(sink, "tracker", None)
        pattern = getattr(tracker, "ready_pattern", None) if getattr(tracker, "is_master", False) else None
        if pattern != self._ready_key or (pattern is not None and self._ready is None):
            self._ready_key = pattern
            self._ready = _ReadyMatcher(pattern) if pattern else None
        return self._ready


class _Scan:
    """One feed() call's pass over the slices it read."""

    def __init__(self, intake: LogIntake, sink: MilestoneSink) -> None:
        self.intake = intake
        self.sink = sink
        self.ready = intake._ready_matcher(sink)
        self.lines = 0
        self.fed = 0
        self.last_raw: bytes | None = None  # the last non-blank line read, if it was not fed
        self.last_text: str | None = None

    def consume(self, chunk: bytes | bytearray, size: int | None = None) -> None:
        """The next chunk[:size] of the log (a reused buffer: nothing of it is kept without a copy)."""
        intake = self.intake
        size = len(chunk) if size is None else size
        start = 0
        if intake._pending or intake._discard_to_newline:
            newline = chunk.find(b"\n", 0, size)
            if newline == -1:
                self._hold(chunk, 0, size)
                return
            line = intake._pending + (b"" if intake._discard_to_newline else bytes(chunk[:newline]))
            line = line[:MAX_LINE_BYTES] + b"\n"
            was_cut_head = intake._discard_to_newline and not intake._pending
            intake._pending = b""
            intake._discard_to_newline = False
            if not was_cut_head:  # the cut first line of an adopted log is not a line
                self._region(line, 0, len(line))
            elif intake.count_lines:
                self.lines += 1
            start = newline + 1
        cut = chunk.rfind(b"\n", start, size) + 1
        if cut > start:
            self._region(chunk, start, cut)
            start = cut
        if start < size:
            self._hold(chunk, start, size)

    def _hold(self, data: bytes | bytearray, start: int, end: int) -> None:
        """Keep data[start:end], a line still being written (its head only, if it grows too long)."""
        intake = self.intake
        if intake._discard_to_newline:
            return
        room = MAX_LINE_BYTES - len(intake._pending)
        intake._pending += bytes(data[start : min(end, start + room)])
        if end - start > room:
            intake._discard_to_newline = True  # keep the head, drop the rest up to the newline

    def _region(self, data: bytes, start: int, end: int) -> None:
        """Complete lines data[start:end] (end is just past a newline)."""
        if self.intake.count_lines:
            self.lines += data.count(b"\n", start, end)
        starts = self._interesting(data, start, end)
        last_fed_end = -1
        for line_start in sorted(starts):
            line_end = data.find(b"\n", line_start, end)
            self.sink.feed(_decode(data[line_start:line_end]))
            self.fed += 1
            last_fed_end = line_end
        self._note_last_line(data, start, end, last_fed_end)

    @property
    def settled(self) -> bool:
        """The sink's start-up is over (glog.StartupTracker.settled): only failures are still looked for."""
        return bool(getattr(getattr(self.sink, "tracker", None), "settled", False))

    def _interesting(self, data: bytes, start: int, end: int) -> set[int]:
        settled = self.settled
        if self.ready is not None and self.ready.every_line and not settled:
            return self._every_line(data, start, end)
        starts: set[int] = set()
        rfind = data.rfind
        wanted = [] if settled else list(_MILESTONE_WANTED)
        if not settled and self.ready is not None and self.ready.needle is not None:
            wanted.append(((self.ready.needle,), True))
        error_starts = self.sink.failure is None  # the tracker keeps the first failure only
        if error_starts:
            wanted += _FAILURE_WANTED
        if not wanted and not error_starts:
            return starts  # start-up over and a failure already known: nothing left to find
        key = (tuple(wanted), error_starts)
        if end - start < _MIN_SAMPLED_REGION:
            # A line completed across two slices (or a short write): a sample of it would mislead the plan
            # kept for the next slices; its needles are searched whole, which costs nothing on so few bytes.
            _find_lines(data, start, end, _whole_needles_plan(wanted), error_starts, starts)
        else:
            plan = self.intake._plan
            if plan is None or self.intake._plan_key != key or plan.uses >= _REPLAN_SLICES:
                plan = self.intake._plan = _plan(data, start, end, wanted, error_starts)
                self.intake._plan_key = key
            plan.uses += 1
            if not _find_lines(data, start, end, plan, error_starts, starts):
                self.intake._plan = None  # a key byte is frequent in this log: sample again next slice
        if _MILESTONE_REGEX is not None and not settled:
            for m in _MILESTONE_REGEX.finditer(data, start, end):
                starts.add(rfind(b"\n", start, m.start()) + 1 or start)
        if not settled and self.ready is not None and self.ready.regex is not None:
            for m in self.ready.regex.finditer(data, start, end):
                starts.add(rfind(b"\n", start, m.start()) + 1 or start)
        return starts

    @staticmethod
    def _every_line(data: bytes, start: int, end: int) -> set[int]:
        starts = set()
        pos = start
        while pos < end:
            starts.add(pos)
            pos = data.find(b"\n", pos, end) + 1
        return starts

    def _note_last_line(self, data: bytes, start: int, end: int, last_fed_end: int) -> None:
        """Remember the region's last non-blank line (as Milestones.feed would have left last_line)."""
        line_end = end - 1
        for _ in range(_LAST_LINE_LOOKBACK):
            if line_end < start:
                return
            line_start = data.rfind(b"\n", start, line_end) + 1 or start
            if line_end <= last_fed_end:
                self.last_raw = None  # the last non-blank line was fed: last_line is already right
                return
            raw = data[line_start:line_end]
            if _decode(raw).strip():  # str.strip, as Milestones.feed judges a blank line
                self.last_raw = raw
                return
            line_end = line_start - 1

    def finish(self) -> None:
        if self.last_raw is not None:
            self.sink.last_line = _decode(self.last_raw)
