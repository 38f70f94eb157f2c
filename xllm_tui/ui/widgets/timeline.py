"""A merged timeline of every rank's warnings and errors, oldest first, the rank on each line.

The scan reads each rank's current log in a thread (it keeps only W/E/F lines, at most MAX_PER_RANK of the
newest per rank), so a huge log costs time in a worker, never memory or the event loop. The first E/F line
of the merged timeline is the first failure: the table opens with the cursor on it.
"""

from __future__ import annotations

import calendar
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from xllm_tui.ui.widgets import format as fmt

MAX_PER_RANK = 2000
# glog: severity, date (MMDD or YYYYMMDD), time, thread, file:line] message
_GLOG = re.compile(r"^([IWEF])(\d{8}|\d{4}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))? +\d+ +([^\]]*)\] ?(.*)$")
_DEFAULT_YEAR = 2025


@dataclass(frozen=True)
class TimelineEntry:
    ts: float  # seconds since the epoch (UTC reading of the log's wall time: order matters, not the zone)
    rank: int
    severity: str  # W, E or F
    where: str
    message: str
    back: int = 0  # 0: the current log; 1: the previous launch's log (the failure a restart left behind)


def parse_glog(line: str) -> tuple[str, float, str, str] | None:
    """(severity, time, where, message) of a glog line, or None."""
    match = _GLOG.match(line)
    if not match:
        return None
    severity, date, hh, mm, ss, frac, where, message = match.groups()
    year, month, day = (int(date[:4]), int(date[4:6]), int(date[6:8])) if len(date) == 8 else (_DEFAULT_YEAR, int(date[:2]), int(date[2:4]))
    try:
        ts = calendar.timegm((year, month, day, int(hh), int(mm), int(ss), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if frac:
        ts += int(frac) / 10 ** len(frac)
    return severity, float(ts), where, message


_WARNING_LINE = re.compile(rb"\n[WEF][^\n]*")  # a W/E/F line, found after the newline before it
_SCAN_CHUNK = 4 * 1024 * 1024


def scan_log(path: str, rank: int, max_entries: int = MAX_PER_RANK, back: int = 0) -> list[TimelineEntry]:
    """The W/E/F glog lines of a log (the newest max_entries). Searched a chunk at a time by one regex from
    each line's newline (C speed); a line-by-line loop in Python took 1.2 s per GiB, for each rank's log."""
    kept: deque[TimelineEntry] = deque(maxlen=max_entries)

    def take(data: bytes, end: int) -> None:
        for match in _WARNING_LINE.finditer(data, 0, end):
            parsed = parse_glog(match.group()[1:].decode("utf-8", "replace").rstrip("\r"))
            if parsed:
                severity, ts, where, message = parsed
                kept.append(TimelineEntry(ts, rank, severity, where, message, back))

    try:
        with open(path, "rb") as handle:
            pending = b"\n"  # the newline before the first line, then the unfinished line of the last chunk
            while True:
                chunk = handle.read(_SCAN_CHUNK)
                if not chunk:
                    break
                data = pending + chunk
                cut = data.rfind(b"\n") + 1  # lines before it are whole
                take(data, cut)
                pending = data[cut - 1 :]  # from that newline on: the next line's start stays anchored
            take(pending + b"\n", len(pending) + 1)  # a last line without a newline
    except OSError:
        return []
    return list(kept)


def scan_ranks(ranks: list[dict[str, Any]], previous: int = 3, read: list[int] | None = None) -> list[TimelineEntry]:
    """Every rank's warnings and errors merged by time (ties by rank), from the current log and the
    `previous` launches before it: after a group restart the failure is in an earlier log. `read`, if given,
    gets the size of each log scanned."""
    import contextlib
    import os

    from xllm_tui.logs.tail import log_generations

    entries: list[TimelineEntry] = []
    for rank in ranks:
        path = rank.get("log_path")
        if not path:
            continue
        for back, log in [*enumerate(log_generations(path)[:previous], start=1), (0, path)]:
            entries.extend(scan_log(log, int(rank["rank"]), back=back))
            if read is not None:
                with contextlib.suppress(OSError):  # gone meanwhile (a relaunch rotated it): nothing read
                    read.append(os.stat(log).st_size)
    entries.sort(key=lambda e: (e.ts, e.rank))
    return entries


def timeline_summary(entries: list[TimelineEntry], read: list[int]) -> str:
    """What the scan found, in words: an empty timeline says that nothing was found, and in how much."""
    size = sum(read)
    where = f"{len(read)} log{'s' if len(read) != 1 else ''} ({fmt.size(size)})"
    if not entries:
        return f"no warnings or errors in {where}: the ranks' current logs and up to 3 launches before"
    errors = sum(e.severity in ("E", "F") for e in entries)
    counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((errors, "error"), (len(entries) - errors,
                                                                                       "warning")) if n]
    return f"{' and '.join(counts)} in {where}; enter opens that rank's log"


def first_failure_index(entries: list[TimelineEntry]) -> int | None:
    """The first error of the most recent launch that had errors (older episodes are history)."""
    failures = [(e.back, i) for i, e in enumerate(entries) if e.severity in ("E", "F")]
    if not failures:
        return None
    newest = min(back for back, _ in failures)
    return next(i for back, i in failures if back == newest)


class TimelineTable(DataTable):
    def __init__(self, **kwargs: Any):
        super().__init__(cursor_type="row", **kwargs)
        self.entries: list[TimelineEntry] = []

    COLUMNS = (("!", "first"), ("time", "time"), ("rank", "rank"), ("sev", "sev"),
               ("log", "log"),  # "current", or -1 for the previous launch's log, -2 ...
               ("where", "where"), ("message", "message"))

    def on_mount(self) -> None:
        # The first-failure marker has its own column so the rank numbers stay aligned.
        self._set_columns({})

    def _set_columns(self, widths: dict[str, int]) -> None:
        """(Re)create the columns with explicit widths: DataTable otherwise measures them on an idle
        message, which a table filled while its tab is hidden may not get before it is shown."""
        self.clear(columns=True)
        for label, key in self.COLUMNS:
            self.add_column(label, key=key, width=max(len(label), widths.get(key, 0)) if widths else None)

    def show(self, entries: list[TimelineEntry]) -> None:
        if entries == self.entries:
            return
        self.entries = entries
        rows = [(f"-{e.back}" if e.back else "current", fmt.clock_utc(e.ts), e) for e in entries]
        self._set_columns({
            "first": 1,
            "time": max((len(clock) for _, clock, _ in rows), default=0),
            "rank": max((len(str(e.rank)) for e in entries), default=0),
            "sev": 1,
            "log": max((len(log) for log, _, _ in rows), default=0),
            "where": max((len(e.where) for e in entries), default=0),
            "message": min(400, max((len(e.message) for e in entries), default=0)),
        })
        variables = self.app.theme_variables
        first = first_failure_index(entries)
        for index, (log, clock, entry) in enumerate(rows):
            colour = variables.get("xllm-log-warning" if entry.severity == "W" else "xllm-log-error", "")
            is_first = index == first
            self.add_row(
                Text("!" if is_first else "", style=f"bold reverse {colour}" if is_first else ""),
                clock,
                Text(str(entry.rank), style=f"bold {colour}" if is_first else ""),
                Text(entry.severity, style=f"bold {colour}"),
                log,
                entry.where,
                Text(entry.message, style=colour if entry.severity != "W" else ""),
                key=str(index),
            )
        if first is not None:
            self.move_cursor(row=first)

    @property
    def selected_entry(self) -> TimelineEntry | None:
        if not self.entries or self.cursor_row >= len(self.entries):
            return None
        return self.entries[self.cursor_row]
