"""LogView: a live, searchable view of one (possibly huge) log file, built on `xllm_tui.logs.tail.LogFile`.

Embedding
---------
    view = LogView(path=None, id="log")        # path may be set later
    view.set_path("/run/logs/node_3.log")      # switch files instantly (the tail shows at once)

Nothing holds the file's lines: rows are read on demand with pread through the block index of
`LogFile` and rendered by `render_line` with LRU caches (the Line API of `ScrollView`, as Toolong does).
File I/O that can take long (indexing the rest of a big file, filters, search) runs in thread workers
that post messages back. Appended data is read when inotify says the file changed (`logs/inotify.py`
FileWatch on the event loop: an idle log costs no wake-up at all; under a flood one read per
`WAKE_GAP_S`, `FLOOD_WAKE_GAP_S` while each read brings more than a screenful); where inotify cannot be had, a timer polls the file (`poll_interval`, default 0.5 s).

Public methods
    set_path(path | None)        show another file (None: empty view); resets search, filter, current line
    set_search(text | None)      highlight matches (case-insensitive, literal); then:
    search_next() / search_previous()   move the current line to the next/previous matching line
    jump_to_first_error()        current line = first E/F/"Check failed:" line of the file
    set_filter(level | None)     "warning" (W/E/F lines only), "error" (E/F only) or None (all lines)
    scroll_to_line(n)            make line n (file numbering) visible
    follow / wrap / compact      reactive bools (also toggled by keys). compact: each glog line as its time
                                 (to the millisecond) and message, the severity as the line's colour; the
                                 choice is remembered on the app (`app.log_view_compact`): every LogView of
                                 the app starts in the mode last chosen (switching ranks, split panes; the
                                 app keeps it in the user's preferences.json for the next run)
Read-only state
    path, line_count (indexed lines), row_count (rows shown: lines, or matching lines when filtered),
    current_line (file line number of the search/error cursor, or None), new_lines (unseen lines while
    scrolled up), paused (follow is on but the view is not at the bottom), filter_level, search_text,
    status_text (the border subtitle: "+N new lines", or why the file cannot be read), index_complete,
    log_file (the underlying LogFile). The border title shows the file name and the active modes
    (follow / follow paused, wrap, filter, /search, indexing %).
A search or jump moves the current line and scrolls to it; with follow on, that pauses following like
scrolling up does (G or scrolling to the end resumes it).
Messages (all carry `log_view`)
    LogView.SearchRequested    "/" was pressed: the host opens a prompt and calls set_search + search_next
    LogView.SearchResult       a search/jump finished: found (bool), line (int | None), query
                               (query is "first error" for jump_to_first_error)
    LogView.FileReset          the file was truncated or rotated (reason), the view restarted on it
    LogView.IndexProgress      indexing a big file: indexed_bytes, total_bytes, complete
Keys (Binding ids, for user keymaps): log_view.search "/", log_view.next "n", log_view.previous "N",
    log_view.first_error "e", log_view.follow "f", log_view.wrap "w", log_view.compact "c",
    log_view.filter "E" (warnings and
    errors only, again: errors only, again: all), log_view.top "g", log_view.bottom "G".
Component classes (styled from theme variables in DEFAULT_CSS; override in .tcss):
    log-view--prefix, log-view--info, log-view--warning, log-view--error, log-view--fatal,
    log-view--match, log-view--current.

Filters and search work on byte offsets of line starts (stable while the index still grows backwards)
and scan the file in thread workers: a filtered view is a `logs.matches.MatchIndex` of their offsets, which
keeps a count rather than the offsets of a stretch with many matches (an error storm) and scans it again to show it.

Wrapping: without wrap, lines are one row each with horizontal scrolling (the virtual width grows to the
widest line seen). With wrap, scrolling still moves one *log line* at a time and only the visible region
is wrapped: the viewport is filled from the top line downwards (or, at the bottom, from the last line
upwards so the newest line is always visible). Wrapping every line of a 1 GB file to know the total
row count would defeat the index, and operators use wrap to read a few long lines, not to scroll far.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBar
from textual.strip import Strip
from textual.timer import Timer
from textual.widget import Widget
from textual.worker import NoActiveWorker, WorkerState, get_current_worker

from xllm_tui.logs.glog import ERRORS_PATTERNS, WARNINGS_PATTERNS, severity_of
from xllm_tui.logs.inotify import FileWatch
from xllm_tui.logs.matches import MatchIndex
from xllm_tui.logs.tail import LogFile, RefreshResult, Snapshot

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
_FILTER_PATTERNS = {"warning": WARNINGS_PATTERNS, "error": ERRORS_PATTERNS}
_SEVERITY_CLASS = {"I": "log-view--info", "W": "log-view--warning", "E": "log-view--error", "F": "log-view--fatal"}
_FETCH_AHEAD = 200  # lines read per pread batch when a row is not cached
_INDEX_SLICE_S = 0.15  # seconds of indexing per poll worker run
# Appended bytes read per lock hold: the UI thread reads visible rows under the same lock, so a slice is
# what a frame may wait for (8 MiB slices held frames for tens of ms on a busy machine).
_POLL_SLICE_BYTES = 1024 * 1024
_QUIET_LINES = 1000  # a poll bringing fewer lines finds the log quiet enough to count its past meanwhile
# Under a flood, reads woken by inotify start at most this often: each one redraws the pane. The first
# change after a quiet spell is read at once.
WAKE_GAP_S = 0.2
# While each read brings more lines than the view shows (a flood: nobody reads a screen replaced five times a
# second), reads start at most this often: every frame costs the UI thread, and on a busy machine keys wait
# behind frames.
FLOOD_WAKE_GAP_S = 0.5
# A view following the end, with no filter and no current line, does not read more than this of a flood: it
# goes on from the file's last lines (the log file resets its index there, "skipped") and counts the rest
# backwards once the log is quiet. Nobody reads the megabytes a flood brings between two frames.
FLOOD_SKIP_BYTES = 4 * 1024 * 1024
COMPACT_PREFERENCE = "log_view_compact"  # attribute of the app remembering the last chosen mode
# The glog prefix compact mode drops: severity, date, time (kept, cut to milliseconds), thread, file:line.
_GLOG_PREFIX = re.compile(r"^[IWEF](?:\d{8}|\d{4}) (\d\d:\d\d:\d\d)(\.\d{1,3})?\d*\s+\d+ [^\s\]]+\] ?")


def _pieces(logfile: LogFile, pattern, lo: int, hi: int, cancelled=None) -> list[tuple]:
    """The matches of [lo, hi) as MatchIndex.add takes them, scanned in a worker thread."""
    if lo >= hi:
        return []
    return [q for p in logfile.scan_runs(pattern, lo, hi, cancelled) for q in MatchIndex.pieces(*p)]


def _match_count(piece: tuple) -> int:
    found = piece[2]
    return found if isinstance(found, int) else len(found)


def _quiet(refresh: RefreshResult) -> bool:
    """The poll found the log growing slowly if at all: the time to count its past."""
    return refresh.reset is None and refresh.new_lines < _QUIET_LINES


def compact_text(text: str) -> str:
    """A glog line as "HH:MM:SS.mmm message"; any other line unchanged."""
    m = _GLOG_PREFIX.match(text)
    if m is None:
        return text
    return f"{m[1]}{m[2] or ''} {text[m.end():]}"


_NEEDS_CLEANING = re.compile(r"[\x00-\x1f\x7f]")  # tab, escape and the other control characters


def _clean(text: str) -> str:
    """Drop terminal control sequences and expand tabs: a log must not drive the terminal."""
    # One regex scan in C: a generator over the characters cost more than rendering the row under a flood.
    if _NEEDS_CLEANING.search(text) is not None:
        text = _CONTROL.sub("", text.replace("\t", "    "))
    return text


def _glog_prefix_end(text: str, severity: str | None) -> int:
    """Index of the "]" ending the glog prefix of a row (shown muted), or -1 where it has none."""
    end = text.find("] ") if severity is not None and text[:1] == severity else -1
    return end if 0 < end < 80 else -1


def _thumb_steps(cells: int, virtual: float, window: float, position: float) -> tuple[int, int] | None:
    """Where ScrollBarRender.render_bar draws a vertical thumb, in eighths of a cell (None: no thumb drawn)."""
    if not (window and cells and virtual and cells != virtual) or virtual == window:
        return None
    thumb = max(1, window / (virtual / cells))
    start = int((cells - thumb) * (position / (virtual - window)) * 8)
    return start, start + math.ceil(thumb * 8)


@dataclass
class _PollResult:
    token: int
    snapshot: Snapshot
    refresh: RefreshResult
    filter_key: tuple | None  # (level, lo, hi) the filter update below extends
    filter_before: list | None  # MatchIndex.pieces before the filtered range, in order
    filter_after: list | None  # the same after it
    filter_range: tuple[int, int] | None
    went_back: int = 0  # blocks the index grew towards the file's start in this poll


class LogView(ScrollView, can_focus=True):
    """A live view of a log file: follow, search, severity filter, first error, wrap. See module docstring."""

    COMPONENT_CLASSES = {
        "log-view--prefix",
        "log-view--info",
        "log-view--warning",
        "log-view--error",
        "log-view--fatal",
        "log-view--match",
        "log-view--current",
    }

    DEFAULT_CSS = """
    LogView {
        background: $surface;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        border-subtitle-color: $warning;
        scrollbar-gutter: stable;
        /* Both scrollbars always shown: one appearing lays the whole screen out (3 times), when a followed log
           passes a screenful or its first line wider than the pane comes; and the pane keeps its height from
           one rank's log to the next. */
        overflow-y: scroll;
        overflow-x: scroll;
    }
    LogView:focus { border: round $primary; }
    LogView > .log-view--prefix { color: $text-muted; }
    LogView > .log-view--info { color: $text; }
    LogView > .log-view--warning { color: $warning; }
    LogView > .log-view--error { color: $error; }
    LogView > .log-view--fatal { color: $error; text-style: bold; }
    LogView > .log-view--match { background: $accent 60%; color: $text; text-style: bold; }
    LogView > .log-view--current { background: $primary 35%; }
    """

    BINDINGS = [
        Binding("slash", "search", "Search", id="log_view.search"),
        Binding("n", "search_next", "Next match", id="log_view.next"),
        Binding("N", "search_previous", "Prev match", id="log_view.previous"),
        Binding("e", "first_error", "First error", id="log_view.first_error"),
        Binding("f", "toggle_follow", "Follow", id="log_view.follow"),
        Binding("w", "toggle_wrap", "Wrap", id="log_view.wrap"),
        Binding("c", "toggle_compact", "Compact", id="log_view.compact"),
        Binding("E", "cycle_filter", "Warn/err only", id="log_view.filter"),
        Binding("g", "top", "Top", show=False, id="log_view.top"),
        Binding("G", "bottom", "Bottom", show=False, id="log_view.bottom"),
    ]

    follow: reactive[bool] = reactive(True, init=False)
    wrap: reactive[bool] = reactive(False, init=False)
    compact: reactive[bool] = reactive(False, init=False)

    # ---- messages --------------------------------------------------------------------------------
    class SearchRequested(Message):
        def __init__(self, log_view: LogView) -> None:
            super().__init__()
            self.log_view = log_view

    class SearchResult(Message):
        def __init__(self, log_view: LogView, query: str, found: bool, line: int | None, wrapped: str = "") -> None:
            super().__init__()
            self.log_view = log_view
            self.query = query
            self.found = found
            self.line = line
            self.wrapped = wrapped  # "search wrapped to the top/bottom", or ""

    class FileReset(Message):
        def __init__(self, log_view: LogView, reason: str) -> None:
            super().__init__()
            self.log_view = log_view
            self.reason = reason

    class IndexProgress(Message):
        def __init__(self, log_view: LogView, indexed_bytes: int, total_bytes: int, complete: bool) -> None:
            super().__init__()
            self.log_view = log_view
            self.indexed_bytes = indexed_bytes
            self.total_bytes = total_bytes
            self.complete = complete

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, LogView.IndexProgress) and message.log_view is self.log_view

    class _Polled(Message):
        def __init__(self, result: _PollResult | None) -> None:
            super().__init__()
            self.result = result

    class _Found(Message):
        def __init__(self, token: int, query: str, offset: int | None, snapshot: Snapshot, kind: str) -> None:
            super().__init__()
            self.token = token
            self.query = query
            self.offset = offset
            self.snapshot = snapshot
            self.kind = kind
            self.wrapped = ""  # search only: "search wrapped to the top/bottom"
            try:
                self.worker = get_current_worker()  # posted from the look's worker thread
            except NoActiveWorker:
                self.worker = None

    class _FilterReady(Message):
        def __init__(self, token: int, level: str, offsets: MatchIndex, lo: int, hi: int, snapshot: Snapshot) -> None:
            super().__init__()
            self.token = token
            self.level = level
            self.offsets = offsets
            self.lo = lo
            self.hi = hi
            self.snapshot = snapshot

    # ---- set-up ------------------------------------------------------------------------------------
    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        poll_interval: float = 0.5,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.poll_interval = poll_interval
        self._initial_path = os.fspath(path) if path is not None else None
        self._path_when_shown: tuple | None = None  # (path,) set while suspended: opened by resume()
        self._view_mounted = False
        self._logfile: LogFile | None = None
        self.path: str | None = None
        self._token = 0
        self._base = 0  # prepended_lines our line numbers refer to
        self._epoch = 0  # the log file's numbering (LogFile.epoch) our line numbers refer to
        self._finding = None  # the Worker of the last search or first-error look: no flood is skipped meanwhile
        self._deferred_found = None  # a look's result waiting for the numbering of a skip to be adopted
        self._skipping = False  # the last poll skipped a flood's middle (counted backwards once quiet)
        self._lines = 0
        self._complete = True
        self._index_progress = (0, 0)
        self._poll_busy = False
        self._poll_wanted = False  # a change was seen while a poll ran: poll again when it is done
        self._suspended = False  # another screen covers the view: nothing is read until resume()
        self._poll_started = 0.0  # monotonic time the last poll worker started
        self._wake_pending = False  # a timer will poll once the wake gap has passed
        self._last_read_lines = 0  # lines the last poll appended
        self._poll_timer: Timer | None = None  # only while the file has no inotify watch
        self._file_watch: FileWatch | None = None
        self._text_cache: LRUCache[tuple, tuple[int, str]] = LRUCache(4096)
        self._offset_text_cache: LRUCache[tuple, str] = LRUCache(4096)
        self._strip_cache: LRUCache[tuple, list[Strip]] = LRUCache(2048)
        self._max_width = 0  # the widest row rendered since the last measure_widths()
        self._width_measured = True  # False until a row of a new file (or style) has been rendered
        self._width_pending = False
        self._unseen = 0
        self._pinned = True  # the view was at the bottom after its last scroll
        self._current_offset: int | None = None
        self._search_text: str | None = None
        self._search_bytes: re.Pattern[bytes] | None = None
        self._search_str: re.Pattern[str] | None = None
        self._filter_level: str | None = None
        self._filter_offsets: MatchIndex | None = None  # the filtered rows' line starts
        self._filter_range: tuple[int, int] | None = None  # bytes the filter has scanned
        self._wrap_layout_key: tuple | None = None
        self._wrap_layout: list[Strip] = []
        self._shown_title: str | None = None
        self._style_memo: dict = {}  # see _line_styles and _base_style
        self._shown_subtitle: str | None = None
        self._search_wrapped = ""  # "search wrapped to the top/bottom" after a search went round the file

    def on_mount(self) -> None:
        super().on_mount()
        self.set_reactive(LogView.compact, bool(getattr(self.app, COMPACT_PREFERENCE, False)))
        self._view_mounted = True
        self.set_path(self._initial_path)

    def on_unmount(self) -> None:
        self._stop_watch()
        self._set_poll_timer(False)
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None

    # ---- public state ------------------------------------------------------------------------------
    @property
    def line_count(self) -> int:
        return self._lines

    @property
    def row_count(self) -> int:
        return len(self._filter_offsets) if self._filter_offsets is not None else self._lines

    @property
    def index_complete(self) -> bool:
        return self._complete

    @property
    def filter_level(self) -> str | None:
        return self._filter_level

    @property
    def search_text(self) -> str | None:
        return self._search_text

    @property
    def new_lines(self) -> int:
        return self._unseen

    @property
    def paused(self) -> bool:
        return self.follow and not (self._at_bottom() or self._pinned)

    @property
    def current_line(self) -> int | None:
        if self._current_offset is None or self._logfile is None:
            return None
        return self._logfile.line_of_offset(self._current_offset, base=self._base, epoch=self._epoch)

    @property
    def status_text(self) -> str:
        return str(self.border_subtitle or "")

    @property
    def polling_by_timer(self) -> bool:
        """True while the file is polled by a timer (it has no inotify watch)."""
        return self._poll_timer is not None

    @property
    def watching(self) -> bool:
        """True while inotify wakes the view when its file changes."""
        return self._file_watch is not None and not self._file_watch.lost

    @property
    def log_file(self) -> LogFile | None:
        """The underlying LogFile (shared with workers; treat as read-only)."""
        return self._logfile

    # ---- switching files ---------------------------------------------------------------------------
    def set_path(self, path: str | os.PathLike | None) -> None:
        """Show another file; its tail is indexed synchronously (about a megabyte), the rest in a worker."""
        if not self._view_mounted:
            self._initial_path = os.fspath(path) if path is not None else None  # opened on mount
            return
        if self._suspended:
            # Hidden (another tab): j/k in the rank table opened and read each rank's tail on the UI loop for a
            # pane nobody saw. The last one asked for is opened when the view shows again.
            self._path_when_shown = (path,)
            return
        self._path_when_shown = None
        if self._logfile is not None:
            self._logfile.close()
        self._token += 1
        self.path = os.fspath(path) if path is not None else None
        self._logfile = LogFile(self.path, initial_lines=500) if self.path is not None else None
        self._reset_view_state()
        self._last_read_lines = 0
        self._skipping = False
        self._finding = None
        self._deferred_found = None
        # Opening read the tail: that counts as a read, so a log flooding as it is selected is read again after
        # the wake gap, not at once (a second frame right after the key's, at every rank switch).
        self._poll_started = time.monotonic()
        self._start_watch()
        snapshot = self._logfile.snapshot() if self._logfile else None
        self._base = snapshot.prepended_lines if snapshot else 0
        self._epoch = snapshot.epoch if snapshot else 0
        self._lines = snapshot.line_count if snapshot else 0
        self._complete = snapshot.complete if snapshot else True
        self._index_progress = (snapshot.indexed_bytes, snapshot.file_size) if snapshot else (0, 0)
        self._update_virtual_size()
        self._pinned = True
        self.scroll_to(0, self.max_scroll_y, animate=False, immediate=True, force=True)
        self._update_title()
        self.refresh()
        if self._logfile is not None and not self._complete:
            self._poll_after_gap()

    def _reset_view_state(self) -> None:
        self._text_cache.clear()
        self._offset_text_cache.clear()
        self._strip_cache.clear()
        self._measure_widths()
        self._unseen = 0
        self._current_offset = None
        self._filter_offsets = None
        self._filter_range = None
        self._wrap_layout_key = None
        if self._filter_level is not None and self._logfile is not None:
            self._start_filter(self._filter_level)

    # ---- waking on change (inotify, else the poll timer) ----------------------------------------
    def _start_watch(self) -> None:
        if self.path is None:
            self._stop_watch()
        else:
            try:
                if self._file_watch is not None:
                    self._file_watch.watch(self.path)  # the same descriptor: no close on a rank switch
                else:
                    self._file_watch = FileWatch(self.path)
            except (OSError, AttributeError):  # no inotify, out of watches, no such directory: poll instead
                self._stop_watch()
        self._set_poll_timer(self.path is not None and self._file_watch is None)
        self._listen()
        if self._file_watch is not None and self._logfile is not None and not self._logfile.unchanged_since_poll():
            # Written between the file's opening and the watch (a remote log's copy arriving): no event says so.
            self._poll_after_gap()

    def _set_poll_timer(self, running: bool) -> None:
        if running and self._poll_timer is None:
            self._poll_timer = self.set_interval(self.poll_interval, self._schedule_poll, name="log-view-poll")
        elif not running and self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None

    def _stop_watch(self) -> None:
        if self._file_watch is not None:
            self._file_watch.close()
            self._file_watch = None

    def _listen(self) -> None:
        if self._file_watch is not None and not self._suspended:
            self._file_watch.listen(self._on_file_change)

    def suspend(self) -> None:
        """Stop reading the file while the view cannot be seen (a screen covers it). Following a flood there
        cost a read at every wake, and Textual repaints the whole screen on top for each repaint of one it
        covers."""
        self._suspended = True
        self._unlisten()

    def resume(self) -> None:
        """Read what was written meanwhile and follow again."""
        if self._suspended:
            self._suspended = False
            if self._path_when_shown is not None:
                self.set_path(self._path_when_shown[0])
            self._schedule_poll()

    @property
    def suspended(self) -> bool:
        return self._suspended

    def _unlisten(self) -> None:
        if self._file_watch is not None:
            self._file_watch.unlisten()

    def _on_file_change(self) -> None:
        # One wake-up per read under a flood: listening resumes when the poll is done.
        self._unlisten()
        if self._file_watch is not None:
            if self._file_watch.lost:
                self._regain_watch()
            elif self._poll_timer is not None:
                self._set_poll_timer(False)  # the name is back, in the watched directory
        self._poll_after_gap()

    def _regain_watch(self) -> None:
        """The log's name is gone (rotated away, deleted, logs/ cleared or moved before a restart): poll until a
        file of the name is back, then watch it by name again (its directory may be a new one)."""
        if os.path.exists(self.path):
            try:
                self._file_watch.rewatch()
            except OSError:
                pass
            else:
                self._set_poll_timer(False)
                return
        self._set_poll_timer(True)

    def _poll_after_gap(self) -> None:
        """Poll now, or once the wake gap since the last read has passed (one timer at most)."""
        if self._wake_pending:
            return
        wait = self._poll_started + self._wake_gap() - time.monotonic()
        if wait > 0:
            self._wake_pending = True
            self.set_timer(wait, self._poll_woken, name="log-view-wake")
        else:
            self._schedule_poll()

    def _poll_woken(self) -> None:
        self._wake_pending = False
        self._schedule_poll()

    def _wake_gap(self) -> float:
        """Least time between the starts of two reads woken by inotify."""
        flooding = self._skipping or self._last_read_lines > max(1, self.scrollable_content_region.height)
        return FLOOD_WAKE_GAP_S if flooding else WAKE_GAP_S

    # ---- polling (thread worker) -------------------------------------------------------------------
    def _schedule_poll(self) -> None:
        if self._logfile is None or self._suspended:
            return
        if self._poll_timer is not None and self._file_watch is not None and self._file_watch.lost:
            self._regain_watch()
        if self._poll_busy:
            self._poll_wanted = True
            return
        if self._complete and self._logfile.unchanged_since_poll():
            self._listen()
            return  # an idle log: no thread, no message, no redraw
        self._poll_busy = True
        self._poll_wanted = False
        self._poll_started = time.monotonic()
        level = self._filter_level
        key = (level, *self._filter_range) if level and self._filter_range else None
        self._poll_worker(self._logfile, self._token, key)

    def _skip_over(self) -> int | None:
        """FLOOD_SKIP_BYTES when a flood's middle would not be seen anyway: following the end, no filter, no current
        line, no search under way. Asked by the poll worker just before it reads (a key pressed meanwhile counts)."""
        finding = self._finding  # until its result is handled (on_log_view__found forgets it)
        searching = finding is not None and finding.state not in (WorkerState.ERROR, WorkerState.CANCELLED)
        if self.follow and self._pinned and self._filter_level is None and self._current_offset is None \
                and not searching:
            return FLOOD_SKIP_BYTES
        return None

    @work(thread=True, exit_on_error=False, group="log-view-poll")
    def _poll_worker(self, logfile: LogFile, token: int, filter_key: tuple | None) -> None:
        try:
            deadline = time.monotonic() + _INDEX_SLICE_S
            # Appends first (in slices, so readers on the UI thread never wait long for the lock).
            refresh = logfile.poll(_POLL_SLICE_BYTES, self._skip_over())
            new_lines, reset = refresh.new_lines, refresh.reset
            while refresh.more and time.monotonic() < deadline:
                refresh = logfile.poll(_POLL_SLICE_BYTES, self._skip_over())
                new_lines = refresh.new_lines if refresh.reset else new_lines + refresh.new_lines
                if reset in (None, "skipped"):  # a rotation or truncation is what the view must hear of
                    reset = refresh.reset or reset
            refresh = RefreshResult(new_lines, reset, refresh.more)
            # The start of the file is indexed only while it does not flood: following a flooding log,
            # counting its past too kept the UI thread waiting for the GIL (keys took a second). A log that
            # goes on growing slowly (a serving rank) is counted back all the same.
            went_back = logfile.index_backward_while(lambda: time.monotonic() < deadline) if _quiet(refresh) else 0
            snapshot = logfile.snapshot()
            before = after = None
            new_range = None
            if filter_key is not None and refresh.reset is None:
                level, lo, hi = filter_key
                pattern = _FILTER_PATTERNS[level]
                generation, new_lo, new_hi = logfile._indexed_window()
                if generation == snapshot.generation:
                    before = _pieces(logfile, pattern, new_lo, lo)
                    after = _pieces(logfile, pattern, hi, new_hi)
                    new_range = (min(lo, new_lo), max(hi, new_hi))
            result = _PollResult(token, snapshot, refresh, filter_key, before, after, new_range, went_back)
        except Exception:  # noqa: BLE001 - never stop polling: the next run retries
            result = None
        self.post_message(self._Polled(result))

    def on_log_view__polled(self, message: _Polled) -> None:
        message.stop()
        self._poll_busy = False
        self._listen()
        if self._poll_wanted:
            self.call_later(self._schedule_poll)
        result = message.result
        if result is None or result.token != self._token or self._logfile is None:
            if self._logfile is not None and (not self._complete or self._logfile.epoch != self._epoch):
                self.call_later(self._schedule_poll)  # a new file is waiting to be indexed, or a reset to be told
            return
        reset = result.refresh.reset
        if reset is None and result.snapshot.epoch != self._epoch:
            reset = self._logfile.last_reset or "skipped"  # a poll that reset and then failed posted nothing
        self._skipping = reset == "skipped" or (self._skipping and not _quiet(result.refresh))
        self._last_read_lines = result.refresh.new_lines if reset is None else 0
        current = self._current_offset if reset == "skipped" else None  # byte offsets outlive a skip
        if reset is not None:
            self._reset_view_state()
            self._current_offset = current
            self._base = result.snapshot.prepended_lines
            self._epoch = result.snapshot.epoch
            self._lines = 0
            if reset != "skipped":  # a skip keeps following the end (_sync), or the place a key moved to meanwhile
                self.scroll_to(0, 0, animate=False, immediate=True, force=True)
                self.post_message(self.FileReset(self, reset))
        if (
            result.filter_key is not None
            and self._filter_offsets is not None
            and self._filter_range is not None
            and result.filter_key == (self._filter_level, *self._filter_range)
            and result.filter_range is not None
        ):
            for piece in reversed(result.filter_before):
                self._filter_offsets.add(*piece)
            for piece in result.filter_after:
                self._filter_offsets.add(*piece)
            self._filter_range = result.filter_range
            self._sync(result.snapshot, prepended_rows=sum(map(_match_count, result.filter_before)),
                       appended_rows=sum(map(_match_count, result.filter_after)))
        else:
            appended = result.refresh.new_lines if reset is None else 0
            self._sync(result.snapshot, appended_rows=appended if self._filter_offsets is None else 0)
        if not result.snapshot.complete or result.refresh.reset:
            s = result.snapshot
            self._index_progress = (s.indexed_bytes, s.file_size)
            self._update_title()
            self.post_message(self.IndexProgress(self, s.indexed_bytes, s.file_size, s.complete))
        if result.refresh.more or (not result.snapshot.complete and result.went_back):
            self.call_later(self._schedule_poll)  # keep reading / indexing without waiting for the timer
        elif not result.snapshot.complete:
            # No change may come to wake us (a rank that stopped after a flood): its past is counted once quiet.
            # Nor at once when counting it got nowhere (a read error): that polled in a loop for good.
            self._poll_after_gap()
        if current is not None:
            self._move_current(current)
        deferred, self._deferred_found = self._deferred_found, None
        if deferred is not None and deferred.snapshot.generation == self._logfile.generation:
            self.on_log_view__found(deferred)  # else its offset is of the file before a rotation: dropped

    def _sync(self, snapshot: Snapshot, *, prepended_rows: int | None = None, appended_rows: int = 0) -> None:
        """Adopt a newer snapshot of the index: shift our numbering, keep the viewport on the same lines."""
        if self._logfile is None or snapshot.epoch != self._epoch:
            return  # numbered otherwise than this view (a reset whose poll result has not come yet, or an old one)
        # Pinned: the user has not scrolled away from the end (a scrollbar may have shifted it by a row).
        at_bottom = self._at_bottom() or (self.follow and self._pinned)
        lines_before = self._lines
        shift = snapshot.prepended_lines - self._base
        self._base = snapshot.prepended_lines
        self._lines = snapshot.line_count
        self._complete = snapshot.complete
        if self._filter_offsets is None:
            prepended_rows = shift
        self._update_virtual_size()
        if prepended_rows:
            self.scroll_to(y=self.scroll_offset.y + prepended_rows, animate=False, immediate=True, force=True)
        if appended_rows or prepended_rows or lines_before != self._lines:
            self._wrap_layout_key = None
            if self.follow and at_bottom:
                self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
            elif appended_rows > 0:
                self._unseen += appended_rows
            self.refresh()
        self._update_title()

    # ---- geometry and follow -----------------------------------------------------------------------
    def _at_bottom(self) -> bool:
        return self.scroll_offset.y >= self.max_scroll_y

    def _update_virtual_size(self) -> None:
        if self.wrap:
            # Scrolling moves by log lines; the extra height lets any line, even the last, be the top one.
            extra = max(0, self.scrollable_content_region.height - 1) if self.row_count else 0
            self._set_virtual_size(Size(0, self.row_count + extra))
        else:
            measured = self._width_measured or not self.row_count
            width = self._max_width if measured else max(self._max_width, self.virtual_size.width)
            self._set_virtual_size(Size(width, self.row_count))

    def _measure_widths(self) -> None:
        """Measure the rows' width again from the next rows rendered. Until then the view keeps its width: going
        to 0 and back hid and showed the horizontal scrollbar, two layouts of the screen at every rank switch."""
        self._max_width = 0
        self._width_measured = False

    def _set_virtual_size(self, size: Size) -> None:
        """Widget.virtual_size is a layout reactive: each change lays the whole screen out again, and a followed
        log grows at every read (that reflow was the larger part of a frame under a flood). A change of height
        alone needs no layout, unless the vertical scrollbar appears or goes: its thumb is updated here and the
        view repaints."""
        old = self.virtual_size
        if size == old:
            return
        if not self.container_size or not self.is_mounted:
            self.virtual_size = size
            return
        height = self.container_size.height - self.scrollbar_size_horizontal
        if self.styles.overflow_y == "auto" and (size.height > height) != self.show_vertical_scrollbar:
            self.virtual_size = size  # the vertical scrollbar appears or goes: that is a layout
            return
        if size.width != old.width:
            # Widget._refresh_scrollbars judges the width against the container with or without the vertical
            # scrollbar: a width between the two might show or hide the horizontal one, so that is a layout.
            full = self.container_size.width
            shows = self.show_horizontal_scrollbar
            if self.styles.overflow_x == "auto" and (
                    (size.width > full) != shows or (size.width > full - self.styles.scrollbar_size_vertical) != shows):
                self.virtual_size = size
                return
            self.set_reactive(Widget.virtual_size, size)
            if shows:
                bar = self.horizontal_scrollbar
                bar.window_virtual_size = size.width
                bar.window_size = full - self.scrollbar_size_vertical
            self.scroll_x = self.validate_scroll_x(self.scroll_x)  # a change repaints (ScrollView.watch_scroll_x)
            if size.height == old.height:
                # Rows are cropped to the view whatever the width: nothing else to draw. Under a flood a wider
                # line comes every few reads, and repainting the pane for it was a second frame each time.
                return
        self.set_reactive(Widget.virtual_size, size)
        if self.show_vertical_scrollbar:
            # Only the vertical scrollbar's thumb moves (Widget._scroll_update repaints both scrollbars).
            # Following: the view is about to scroll to the new end, so judge the thumb there (the state in
            # between, the new height at the old position, would move it by an eighth of a cell and back).
            end = max(0, size.height - height) if self.follow and self._pinned else None
            self._set_vertical_thumb(virtual=size.height, window=height, position=end)
        self.scroll_y = self.validate_scroll_y(self.scroll_y)
        self.refresh()

    def _set_vertical_thumb(self, *, virtual: int | None = None, window: int | None = None,
                            position: float | None = None) -> None:
        """Give the vertical scrollbar new figures; repaint it only if its thumb moves by a step the terminal
        shows. Following a flooding log, each read moves the thumb by a sliver of a cell, and repainting the
        scrollbar at every frame was a tenth of the frame."""
        bar = self.vertical_scrollbar
        old = (bar.window_virtual_size, bar.window_size, bar.position)
        new = (old[0] if virtual is None else virtual, old[1] if window is None else window,
               old[2] if position is None else bar.validate_position(position))
        if new == old:
            return
        cells = bar.size.height
        if cells and (steps := _thumb_steps(cells, *old)) is not None and steps == _thumb_steps(cells, *new):
            bar.set_reactive(ScrollBar.window_virtual_size, new[0])
            bar.set_reactive(ScrollBar.window_size, new[1])
            bar.set_reactive(ScrollBar.position, new[2])
        else:
            bar.window_virtual_size, bar.window_size, bar.position = new

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        # ScrollView.watch_scroll_y, with the thumb repainted only when it moves visibly.
        if self.show_vertical_scrollbar:
            self._set_vertical_thumb(position=new_value)
        if round(old_value) != round(new_value):
            self.refresh(self.size.region)
        self._wrap_layout_key = None
        self._pinned = self._at_bottom()
        if self._unseen and self._at_bottom():
            self._unseen = 0
            self._update_title()
        elif self.follow:
            self._update_title()

    def on_resize(self) -> None:
        self._wrap_layout_key = None
        if self.wrap:
            self._update_virtual_size()
        if self.follow and self._pinned:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        self._update_title()

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._unseen = 0
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        self._update_title()

    def watch_compact(self, compact: bool) -> None:
        self._strip_cache.clear()
        self._wrap_layout_key = None
        self._measure_widths()  # compact lines are narrower
        self._update_virtual_size()
        self._update_title()
        self.refresh()
        if self.follow and self._pinned:
            self.call_after_refresh(self._stick_to_bottom)

    def watch_wrap(self, wrap: bool) -> None:
        self._strip_cache.clear()
        self._wrap_layout_key = None
        if wrap:
            self.scroll_to(x=0, animate=False, immediate=True, force=True)
        self._update_virtual_size()
        self._update_title()
        self.refresh()

    def _update_title(self) -> None:
        name = os.path.basename(self.path) if self.path else "no log"
        flags = []
        if self.follow:
            flags.append("follow paused" if self.paused else "follow")
        if self.wrap:
            flags.append("wrap")
        if self.compact:
            flags.append("compact")
        if self._filter_level:
            flags.append("warnings+errors" if self._filter_level == "warning" else "errors only")
        if self._search_text:
            flags.append(f"/{self._search_text}")
        if self._filter_level and self._filter_range is None:
            flags.append("filtering…")
        if not self._complete and self._skipping:
            flags.append("flood: its end only")
        elif not self._complete:
            done, total = self._index_progress
            flags.append(f"indexing {100 * done // total}%" if total else "indexing")
        if self._search_wrapped:
            flags.append(self._search_wrapped)
        title = f"{name} · {' · '.join(flags)}" if flags else name
        error = self._logfile.error if self._logfile is not None else None
        subtitle = f"+{self._unseen} new lines (G: bottom)" if self._unseen else (error or "")
        # Assigning a border title repaints the widget even when it is unchanged: on every poll that
        # cost a full redraw several times a second, so assign only what changed.
        if title != self._shown_title:
            self._shown_title = title
            self.border_title = title
        if subtitle != self._shown_subtitle:
            self._shown_subtitle = subtitle
            self.border_subtitle = subtitle

    # ---- rows ----------------------------------------------------------------------------------------
    def _row_entry(self, row: int) -> tuple[int, str] | None:
        """(line start offset, cleaned text) of a visible row."""
        logfile = self._logfile
        if logfile is None or row < 0:
            return None
        # The numbering this view adopted: until a reset's result reaches the UI thread (a flood skipped in a
        # worker), rows already read keep showing, and no row is read with numbers of the file before it.
        generation = self._epoch
        if self._filter_offsets is not None:
            if row >= len(self._filter_offsets):
                return None
            offset = self._filter_offsets[row]
            key = (self._token, generation, offset)
            text = self._offset_text_cache.get(key)
            if text is None:
                text = _clean(logfile.line_at_offset(offset))
                self._offset_text_cache.set(key, text)
            return offset, text
        if row >= self._lines:
            return None
        stable = row - self._base
        entry = self._text_cache.get((self._token, generation, stable))
        if entry is None:
            start = max(0, row - 10)
            fetched = logfile.get_lines_with_offsets(start, _FETCH_AHEAD, base=self._base, epoch=generation)
            for i, (offset, text) in enumerate(fetched):
                self._text_cache.set((self._token, generation, start + i - self._base), (offset, _clean(text)))
            entry = self._text_cache.get((self._token, generation, stable))
        return entry

    def _foreground(self, component: str) -> Style:
        """A component's text colour and attributes, without its background (which the row owns)."""
        full = self.get_component_rich_style(component)
        return Style(color=full.color, bold=full.bold, dim=full.dim, italic=full.italic,
                     underline=full.underline, reverse=full.reverse)

    def _current_background(self) -> Style:
        return Style(bgcolor=self.get_component_rich_style("log-view--current").bgcolor)

    def _base_style(self) -> Style:
        """The widget's own style (rich_style walks the ancestors' backgrounds: too slow for every row)."""
        style = self._style_memo.get("base")
        if style is None:
            style = self._style_memo["base"] = self.rich_style
        return style

    def _line_styles(self, severity: str | None, current: bool) -> tuple[Style, Style]:
        """(line style, prefix style): computed once per style change, not per row (a flood renders a
        screenful of new rows twice a second, and each style lookup walks the CSS)."""
        key = (severity, current)
        styles = self._style_memo.get(key)
        if styles is None:
            base = self._base_style()
            if current:
                base = base + self._current_background()
            style_name = _SEVERITY_CLASS.get(severity or "I", "log-view--info")
            styles = (base + self._foreground(style_name), self._foreground("log-view--prefix"))
            self._style_memo[key] = styles
        return styles

    def _styled(self, text: str, current: bool) -> Text:
        """The row as rich Text: widget colours, then severity, prefix, current line, search matches."""
        severity = severity_of(text)
        line_style, prefix_style = self._line_styles(severity, current)
        shown = compact_text(text) if self.compact else text
        line = Text(shown, style=line_style, no_wrap=not self.wrap, end="")
        line.stylize(line_style)  # a span: Text.render drops the base style of span-less text
        if shown is not text:  # compact: the time muted, the message in the severity's colour
            line.stylize(prefix_style, 0, shown.find(" "))
        elif (end := _glog_prefix_end(text, severity)) != -1:
            line.stylize(prefix_style, 0, end + 1)
        if self._search_str is not None:
            match_style = self.get_component_rich_style("log-view--match")
            for m in self._search_str.finditer(shown):
                if m.end() > m.start():
                    line.stylize(match_style, m.start(), m.end())
        return line

    def _plain_strip(self, text: str, current: bool) -> Strip:
        """What `_styled(text, current)` renders to, without building rich Text: the common row (no wrap, no
        search, not compact) is two segments, the glog prefix muted and the rest in the severity's colour.
        Under a flood every row on screen is new at each frame."""
        severity = severity_of(text)
        line_style, prefix_style = self._line_styles(severity, current)
        end = _glog_prefix_end(text, severity)
        if end != -1:
            prefix, rest = text[:end + 1], text[end + 1:]
            segments = [Segment(prefix, line_style + prefix_style)]
            if rest:
                segments.append(Segment(rest, line_style))
        else:
            segments = [Segment(text, line_style)] if text else []
        return Strip(segments, cell_len(text))

    def _note_width(self, length: int) -> None:
        """A row `length` cells wide was rendered: widen the view (after this refresh) if it is the widest yet."""
        if length > self._max_width or not self._width_measured:
            self._max_width = max(self._max_width, length)
            if not self._width_pending:
                self._width_pending = True
                self.call_after_refresh(self._grow_width)

    def _row_strips(self, row: int, width: int | None) -> list[Strip] | None:
        """Rendered strips of a row: one (no wrap) or several (wrapped to width)."""
        entry = self._row_entry(row)
        if entry is None:
            return None
        offset, text = entry
        current = offset == self._current_offset
        key = (self._token, offset, text, width, current, self._search_text, self.compact)
        strips = self._strip_cache.get(key)
        if strips is not None:
            return strips
        if width is None:
            if self._search_str is None and not self.compact:
                strip = self._plain_strip(text, current)
            else:
                line = self._styled(text, current)
                strip = Strip(list(line.render(self.app.console)), line.cell_len)
            self._note_width(strip.cell_length)
            strips = [strip]
        else:
            console = self.app.console
            line = self._styled(text, current)
            strips = [Strip(list(part.render(console)), part.cell_len) for part in line.wrap(console, max(1, width))]
            strips = strips or [Strip.blank(0)]
        self._strip_cache.set(key, strips)
        return strips

    def _grow_width(self) -> None:
        self._width_pending = False
        self._width_measured = True
        self._update_virtual_size()
        if self.follow and self._pinned:
            # A horizontal scrollbar may have appeared and taken a row: stay on the last line.
            self.call_after_refresh(self._stick_to_bottom)

    def _stick_to_bottom(self) -> None:
        if self.follow and self._pinned:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)

    def _no_match_strip(self, width: int) -> Strip | None:
        """A filter that matched nothing says so on the first row, rather than leave an empty pane (a flood of
        info lines filtered to warnings looked like a log that had stopped)."""
        if not self._filter_level or self._filter_offsets is None or len(self._filter_offsets) \
                or self._filter_range is None:
            return None
        what = "warnings or errors" if self._filter_level == "warning" else "errors"
        then = "errors only" if self._filter_level == "warning" else "all lines"
        text = f"no {what} in {self._lines:,} lines{' so far' if self.follow else ''} (E: {then})"
        style = self._base_style() + self._foreground("log-view--prefix")
        return Strip([Segment(text, style)], cell_len(text)).crop_extend(0, width, self._base_style())

    def render_line(self, y: int) -> Strip:
        if y == 0 and (strip := self._no_match_strip(self.scrollable_content_region.width)) is not None:
            return strip
        if y == 0 and self.follow and self._pinned and not self._at_bottom() and not self._width_pending:
            # A scrollbar appeared (or the index grew) since we scrolled to the end: go back there.
            self._width_pending = True
            self.call_after_refresh(self._grow_width)
        width = self.scrollable_content_region.width
        base_style = self._base_style()
        if self.wrap:
            layout = self._visible_wrapped(width, self.scrollable_content_region.height)
            strip = layout[y] if y < len(layout) else Strip.blank(width, base_style)
            return strip.crop_extend(0, width, base_style)
        row = self.scroll_offset.y + y
        strips = self._row_strips(row, None)
        if not strips:
            return Strip.blank(width, base_style)
        strip = strips[0]
        scroll_x = self.scroll_offset.x
        if strip is not None and self._current_offset is not None and self._row_is_current(row):
            pad_style = base_style + self._current_background()
        else:
            pad_style = base_style
        return strip.crop_extend(scroll_x, scroll_x + width, pad_style)

    def _row_is_current(self, row: int) -> bool:
        entry = self._row_entry(row)
        return entry is not None and entry[0] == self._current_offset

    def _visible_wrapped(self, width: int, height: int) -> list[Strip]:
        key = (self.scroll_offset.y, width, height, self.row_count, self._current_offset, self._search_text)
        if key == self._wrap_layout_key:
            return self._wrap_layout
        rows: list[Strip] = []
        if (self._at_bottom() or (self.follow and self._pinned)) and self.row_count:
            row = self.row_count - 1
            while row >= 0 and len(rows) < height:
                rows[:0] = self._row_strips(row, width) or []
                row -= 1
            rows = rows[-height:]
        else:
            row = self.scroll_offset.y
            while row < self.row_count and len(rows) < height:
                rows.extend(self._row_strips(row, width) or [])
                row += 1
            rows = rows[:height]
        self._wrap_layout_key = key
        self._wrap_layout = rows
        return rows

    def notify_style_update(self) -> None:
        self._style_memo.clear()
        super().notify_style_update()
        self._strip_cache.clear()
        self._wrap_layout_key = None

    # ---- moving around ---------------------------------------------------------------------------
    def scroll_to_line(self, line: int) -> None:
        """Scroll so file line `line` is visible (roughly centred); in a filtered view, its nearest row."""
        if self._filter_offsets is not None and self._logfile is not None:
            try:
                offset = self._logfile.line_offset(line, base=self._base, epoch=self._epoch)
            except IndexError:
                return
            row = self._filter_offsets.bisect_left(offset)
        else:
            row = line
        self._scroll_to_row(row)

    def _scroll_to_row(self, row: int) -> None:
        height = self.scrollable_content_region.height or 1
        top = self.scroll_offset.y
        if not top <= row < top + height or (self.wrap and row != top):
            target = max(0, row - height // 2) if not self.wrap else min(row, max(0, self.row_count - 2))
            self.scroll_to(y=min(target, self.max_scroll_y), animate=False, immediate=True, force=True)
        self._wrap_layout_key = None
        self.refresh()

    def _move_current(self, offset: int) -> None:
        self._current_offset = offset
        if self._filter_offsets is not None:
            row = self._filter_offsets.bisect_left(offset)
            if row >= len(self._filter_offsets) or self._filter_offsets[row] != offset:
                self.set_filter(None)  # the match is not a filtered line: show everything
                row = None
        else:
            row = None
        if row is None and self._logfile is not None:
            row = self._logfile.line_of_offset(offset, base=self._base, epoch=self._epoch)
        if row is not None:
            self._scroll_to_row(row)
        self.refresh()

    def action_top(self) -> None:
        self.scroll_to(y=0, animate=False, immediate=True, force=True)

    def action_bottom(self) -> None:
        self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        self._unseen = 0
        self._update_title()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_toggle_wrap(self) -> None:
        self.wrap = not self.wrap

    def action_toggle_compact(self) -> None:
        self.compact = not self.compact
        setattr(self.app, COMPACT_PREFERENCE, self.compact)  # the next LogView starts this way too

    def action_cycle_filter(self) -> None:
        order = [None, "warning", "error"]
        self.set_filter(order[(order.index(self._filter_level) + 1) % len(order)])

    def action_search(self) -> None:
        self.post_message(self.SearchRequested(self))

    def action_search_next(self) -> None:
        self.search_next()

    def action_search_previous(self) -> None:
        self.search_previous()

    def action_first_error(self) -> None:
        self.jump_to_first_error()

    # ---- search ----------------------------------------------------------------------------------
    def set_search(self, text: str | None) -> None:
        """Highlight `text` (literal, case-insensitive); None or "" clears the search."""
        self._search_text = text or None
        self._search_wrapped = ""
        if text:
            # Case-insensitive by lower-casing the scanned bytes: re.I would be much slower on big files.
            self._search_bytes = re.compile(re.escape(text.encode("utf-8").lower()))
            self._search_str = re.compile(re.escape(text), re.I)
        else:
            self._search_bytes = self._search_str = None
        self._strip_cache.clear()
        self._wrap_layout_key = None
        self._update_title()
        self.refresh()

    def _search_anchor(self, forward: bool) -> int | None:
        """Byte offset searches start from: the current line, else the top (or bottom) visible row."""
        if self._current_offset is not None:
            return self._current_offset
        row = self.scroll_offset.y if forward else self.scroll_offset.y + self.scrollable_content_region.height
        entry = self._row_entry(min(row, self.row_count - 1)) if self.row_count else None
        if entry is None:
            return None
        # From the top row forwards includes that row; from the bottom row backwards includes it too.
        return entry[0] - 1 if forward and entry[0] > 0 else (entry[0] + 1 if not forward else None)

    def search_next(self) -> None:
        if self._search_bytes is not None and self._logfile is not None:
            self._finding = self._search_worker(self._logfile, self._token, self._search_text, self._search_bytes,
                                                self._search_anchor(True), True, self._filter_snapshot())

    def search_previous(self) -> None:
        if self._search_bytes is not None and self._logfile is not None:
            self._finding = self._search_worker(self._logfile, self._token, self._search_text, self._search_bytes,
                                                self._search_anchor(False), False, self._filter_snapshot())

    def _filter_snapshot(self) -> MatchIndex | None:
        return self._filter_offsets.copy() if self._filter_offsets is not None else None

    @work(thread=True, exclusive=True, exit_on_error=False, group="log-view-search")
    def _search_worker(self, logfile, token, query, pattern, anchor, forward, filtered) -> None:
        worker = get_current_worker()

        def find(anchor: int | None) -> int | None:
            if filtered is not None:
                # Only rows of the filtered view: check their text, nearest first.
                start = filtered.bisect_right(anchor) if anchor is not None else 0
                rows = range(start, len(filtered)) if forward else range(
                    (filtered.bisect_left(anchor) if anchor is not None else len(filtered)) - 1, -1, -1)
                for row in rows:
                    if worker.is_cancelled:
                        return None
                    if pattern.search(logfile.line_at_offset(filtered[row]).encode("utf-8", "replace").lower()):
                        return filtered[row]
                return None
            logfile.index_all()  # matches may lie before the indexed region (about 1 s per GB, once)
            cancelled = lambda: worker.is_cancelled  # noqa: E731
            if forward:
                return logfile.find_next(pattern, anchor, cancelled, ignore_case=True)
            return logfile.find_previous(pattern, anchor, cancelled, ignore_case=True)

        offset = find(anchor)
        wrapped = False
        if offset is None and anchor is not None and not worker.is_cancelled:
            # Past the last match: go round the file, as less and vim do, and say so.
            offset = find(None)
            wrapped = offset is not None
        message = self._Found(token, query or "", offset, logfile.snapshot(), "search")
        message.wrapped = "search wrapped to the top" if wrapped and forward else (
            "search wrapped to the bottom" if wrapped else "")
        self.post_message(message)

    def jump_to_first_error(self) -> None:
        """Make the first E/F/"Check failed:" line current (indexes the whole file first, in a worker)."""
        if self._logfile is not None:
            self._finding = self._first_error_worker(self._logfile, self._token)

    @work(thread=True, exclusive=True, exit_on_error=False, group="log-view-search")
    def _first_error_worker(self, logfile: LogFile, token: int) -> None:
        worker = get_current_worker()
        logfile.index_all()
        offset = logfile.find_next(ERRORS_PATTERNS, None, lambda: worker.is_cancelled)
        self.post_message(self._Found(token, "first error", offset, logfile.snapshot(), "error"))

    def on_log_view__found(self, message: _Found) -> None:
        message.stop()
        if message.token != self._token:
            return
        if self._logfile is not None and self._logfile.epoch != self._epoch:
            # A flood was skipped and its poll's result has not come: the line's number is for then.
            self._deferred_found = message
            return
        if message.worker is self._finding:
            self._finding = None  # a newer look still running keeps floods unskipped
        self._search_wrapped = message.wrapped
        self._sync(message.snapshot)
        line = None
        if message.offset is not None:
            # Follow stays on: moving away from the bottom pauses it, as scrolling up does.
            self._move_current(message.offset)
            line = self.current_line
        self.post_message(self.SearchResult(self, message.query, message.offset is not None, line, message.wrapped))

    # ---- filter ----------------------------------------------------------------------------------
    def set_filter(self, level: str | None) -> None:
        """Show only "warning" (W/E/F) or "error" (E/F) lines; None shows every line."""
        if level not in (None, "warning", "error"):
            raise ValueError(f"unknown filter level {level!r}: use None, 'warning' or 'error'")
        anchor = self._row_entry(self.scroll_offset.y)
        self._filter_level = level
        self._filter_offsets = None
        self._filter_range = None
        self._wrap_layout_key = None
        self._unseen = 0
        if level is not None and self._logfile is not None:
            self._start_filter(level)
        self._update_virtual_size()
        if level is None:
            if self._current_offset is not None:
                self._move_current(self._current_offset)
            elif self.follow or anchor is None:
                self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
            elif self._logfile is not None:
                line = self._logfile.line_of_offset(anchor[0], base=self._base, epoch=self._epoch)
                if line is not None:
                    self.scroll_to(y=line, animate=False, immediate=True, force=True)
        self._update_title()
        self.refresh()

    def _start_filter(self, level: str) -> None:
        self._filter_offsets = MatchIndex(self._logfile, _FILTER_PATTERNS[level])  # empty until the worker reports
        self._filter_range = None
        self._filter_worker(self._logfile, self._token, level)

    @work(thread=True, exclusive=True, exit_on_error=False, group="log-view-filter")
    def _filter_worker(self, logfile: LogFile, token: int, level: str) -> None:
        worker = get_current_worker()
        generation, lo, hi = logfile._indexed_window()
        snapshot = logfile.snapshot()
        offsets = MatchIndex(logfile, _FILTER_PATTERNS[level])
        for piece in _pieces(logfile, _FILTER_PATTERNS[level], lo, hi, lambda: worker.is_cancelled):
            offsets.add(*piece)
        if not worker.is_cancelled and generation == snapshot.generation == logfile.generation:
            self.post_message(self._FilterReady(token, level, offsets, lo, hi, snapshot))

    def on_log_view__filter_ready(self, message: _FilterReady) -> None:
        message.stop()
        if message.token != self._token or message.level != self._filter_level:
            return
        if self._logfile is None or message.snapshot.generation != self._logfile.generation:
            return  # another file since the scan (rotated, truncated): the filter restarted on it
        self._filter_offsets = message.offsets
        self._filter_range = (message.lo, message.hi)
        self._wrap_layout_key = None
        self._sync(message.snapshot)
        self._update_virtual_size()
        if self._current_offset is not None:
            row = self._filter_offsets.bisect_left(self._current_offset)
            self._scroll_to_row(row)
        else:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        self.refresh()
