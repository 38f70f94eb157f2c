"""The rank table: one row per rank, coloured by state, updated cell by cell (cheap redraws over SSH)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from xllm_tui.ui.widgets import format as fmt

COLUMNS = (
    ("", "mark"),  # * marked for a split view, ! the first failure: a column of its own keeps ranks aligned
    ("rank", "rank"),
    ("state", "state"),
    ("pid", "pid"),
    ("up", "uptime"),
    ("rst", "restarts"),
    ("cpu", "cpu"),
    ("mem", "mem"),
    ("dev", "device"),
    ("cores", "cores"),
    ("last log line", "last"),
    ("machine", "machine"),
)
LABELS = dict((key, label) for label, key in COLUMNS)
# Dropped in this order when the terminal is narrow, so the last log line keeps a readable width.
OPTIONAL = ("machine", "cores", "mem", "device")
MIN_LAST = 20  # below this the last log line is a useless sliver: it is left out instead
# Room kept from the start for figures that grow as ranks load and work ("-" -> "97%" -> "100%", "-" -> "24.2M"
# -> "12.3G"): each wider figure otherwise rebuilt and laid out the whole table, once more per digit.
MIN_WIDTHS = {"cpu": len("100%"), "mem": len("12.3G")}
MAX_LAST = 120
# glog prefix "I20251129 15:20:01.123456 5123 file.cc:12] " -> keep the severity letter and the message
_GLOG_PREFIX = re.compile(r"^([IWEF])\d{4,8} [\d:.]+ +\d+ +[^\]]*\] ?")


# A glog fatal ends with stack frames ("    @  0x55d0c0deb7b9  _start") and "*** ..." lines: as a rank's
# last line they say nothing, the exit's classified message says what happened.
_NOT_A_MESSAGE = re.compile(r"^\s*(@\s|\*\*\* )")


def last_line_of(rank: dict[str, Any]) -> str:
    line = rank.get("last_line") or ""
    message = (rank.get("last_exit") or {}).get("message")
    if _NOT_A_MESSAGE.match(line) and message and not rank.get("pid"):
        return message
    return short_line(line)


def short_line(line: str) -> str:
    return _GLOG_PREFIX.sub(lambda m: m.group(1) + " ", line.replace("\t", " "), count=1)


def _plain(value: Any) -> Text:
    return Text(str(value), end="")


def _cell_len(cell: Any) -> int:
    return cell.cell_len if isinstance(cell, Text) else Text(str(cell)).cell_len


def choose_columns(widths: dict[str, int], available: int, padding: int = 1) -> tuple[tuple[str, ...], int]:
    """The columns to show and the last log line's width, for a table `available` cells wide.

    widths: the content width of every column (header included). Optional columns are dropped until the
    last log line gets MIN_LAST cells; if it still cannot, it is left out (width 0)."""
    keys = [key for _, key in COLUMNS if key != "last"]
    dropped: list[str] = []

    def room() -> int:
        return available - sum(widths[k] + 2 * padding for k in keys) - 2 * padding

    for optional in OPTIONAL:
        if room() >= MIN_LAST:
            break
        keys.remove(optional)
        dropped.append(optional)
    last = min(MAX_LAST, room())
    if last < MIN_LAST:
        return tuple(keys), 0
    # Wide enough for everything: the machine goes after the log line, as before.
    shown = [k for k in keys if k != "machine"] + ["last"] + (["machine"] if "machine" in keys else [])
    return tuple(shown), last


class RankTable(DataTable):
    """Ranks of the deployment. Posts RankTable.RankSelected when the cursor moves to another rank (and calls
    cursor_moved at once, if set)."""

    BINDINGS = [
        Binding("space", "mark", "Mark", show=False, id="rank-table.mark"),
        Binding("j", "cursor_down", "Down", show=False, id="rank-table.down"),
        Binding("k", "cursor_up", "Up", show=False, id="rank-table.up"),
    ]

    class RankSelected(Message):
        def __init__(self, rank: int | None):
            super().__init__()
            self.rank = rank

    def __init__(self, **kwargs: Any):
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self._rendered: dict[int, tuple] = {}  # rank -> last rendered cell values (to update only what changed)
        self._rank_data: dict[int, dict[str, Any]] = {}
        self._first_failure: int | None = None
        self.marked: set[int] = set()
        self._now = 0.0
        self._failing = True  # the group is failing: the first failure's marker is shown loud
        # shown column keys, the last log line's width, the other shown columns' widths
        self._layout: tuple[tuple[str, ...], int, tuple[int, ...]] | None = None
        self._widest: dict[str, int] = {}  # the widest content of each column since the last resize
        self._rebuilding = False  # _rebuild is moving the cursor (see there)

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())

    def on_resize(self) -> None:
        self._widest.clear()
        if self._rank_data:
            self._restyle()

    @property
    def shown_columns(self) -> tuple[str, ...]:
        return self._layout[0] if self._layout else ()

    # -- data -----------------------------------------------------------------------------------------
    def _colour(self, variable: str) -> str:
        return self.app.theme_variables.get(variable, "")

    def _cells(self, rank: dict[str, Any]) -> dict[str, Any]:
        number = rank["rank"]
        state = rank.get("state") or "?"
        colour = self._colour(fmt.STATE_VARIABLE.get(state, "xllm-state-stopped"))
        first = number == self._first_failure
        mark = ("*" if number in self.marked else "") + ("!" if first else "")
        ff = self._colour("xllm-first-failure")
        # While the group is failing the first failure stands out; afterwards it stays as a quiet "last failure".
        loud = (f"bold reverse {ff}" if ff else "bold reverse") if self._failing else (f"{ff}" if ff else "")
        mark_cell = Text(mark, style=loud if first else "bold", end="")
        rank_cell = Text(str(number), style="bold" if first else "", end="")
        state_label = fmt.state_text(rank)
        if rank.get("relaunch_pending"):
            state_label += " ~"
        state_cell = Text(state_label, style=f"bold {colour}" if colour else "bold", end="")
        # Plain cells are Text, not str: DataTable parses a str as markup on every render of the cell.
        return {
            "mark": mark_cell,
            "rank": rank_cell,
            "state": state_cell,
            "pid": _plain(rank.get("pid") or "-"),
            "uptime": _plain(fmt.uptime(rank, self._now)),
            "restarts": _plain(rank.get("restarts", 0)),
            "cpu": _plain(fmt.cpu(rank.get("cpu_pct"))),
            "mem": _plain(fmt.size(rank.get("rss_bytes"))),
            "device": _plain(rank.get("device", "-")),
            "cores": _plain(rank.get("cores") or "-"),
            "last": last_line_of(rank),
            "machine": _plain(rank.get("machine") or rank.get("host") or "-"),
        }

    def _choose_layout(self, all_cells: list[dict[str, Any]]) -> tuple[tuple[str, ...], int, tuple[int, ...]]:
        widths = {key: max([len(label), MIN_WIDTHS.get(key, 0)] + [_cell_len(c[key]) for c in all_cells])
                  for label, key in COLUMNS}
        # Columns do not shrink until the terminal is resized or the ranks change: a column narrowing by one
        # cell (uptimes "<1m" -> "1m", cpu "12%" -> "9%") would re-lay the whole table out.
        widths = {key: max(width, self._widest.get(key, 0)) for key, width in widths.items()}
        self._widest = widths
        # A vertical scrollbar may appear (many ranks): keep its width free.
        available = self.size.width - self.styles.scrollbar_size_vertical
        keys, last_width = choose_columns(widths, available, self.cell_padding)
        return keys, last_width, tuple(widths[key] for key in keys if key != "last")

    def _row(self, cells: dict[str, Any], layout: tuple[tuple[str, ...], int, tuple[int, ...]]) -> tuple:
        keys, last_width, _widths = layout
        row = []
        for key in keys:
            cell = cells[key]
            if key == "last":
                text = cell if len(cell) <= last_width else cell[: max(0, last_width - 1)] + "…"
                cell = Text(text, no_wrap=True, end="")
            row.append(cell)
        return tuple(row)

    def _rebuild(self, ranks: list[dict[str, Any]], all_cells: list[dict[str, Any]],
                 layout: tuple[tuple[str, ...], int, tuple[int, ...]]) -> None:
        selected = self.selected_rank
        # clear() puts the cursor on row 0 and the rows put it back: moves no one made, not to be announced
        # (their RankSelected messages, handled later, switched the log pane to rank 0 and back).
        self._rebuilding = True
        try:
            with self.prevent(DataTable.RowHighlighted):
                self.clear(columns=True)
                keys, last_width, widths = layout
                fixed = iter(widths)
                for key in keys:
                    # The widths the layout computed (content and room kept), so a cell never widens its column.
                    self.add_column(LABELS[key], key=key, width=last_width if key == "last" else next(fixed))
                self._rendered.clear()
                for rank, cells in zip(ranks, all_cells):
                    row = self._row(cells, layout)
                    self.add_row(*row, key=str(rank["rank"]))
                    self._rendered[int(rank["rank"])] = row
                self._layout = layout
                if selected is not None:
                    self.select_rank(selected)
        finally:
            self._rebuilding = False
        if self.selected_rank != selected:  # the first rows, or the selected rank is gone
            self._announce_selection()

    def update_ranks(self, ranks: list[dict[str, Any]], first_failure: int | None, now: float,
                     failing: bool = True) -> None:
        self._now = now
        self._first_failure = first_failure
        self._failing = failing
        for rank in ranks:
            self._rank_data[int(rank["rank"])] = rank
        numbers = {int(rank["rank"]) for rank in ranks}
        if numbers != set(self._rendered):
            self._widest.clear()
        for gone in set(self._rank_data) - numbers:
            self._rank_data.pop(gone, None)
        all_cells = [self._cells(rank) for rank in ranks]
        layout = self._choose_layout(all_cells)
        if layout != self._layout or set(self._rendered) != numbers:
            self._rebuild(ranks, all_cells, layout)
            return
        changed: dict[RowKey, set[ColumnKey]] = {}
        for rank, cells in zip(ranks, all_cells):
            number = int(rank["rank"])
            row = self._row(cells, layout)
            columns = self._update_row(str(number), self._rendered[number], row)
            if columns:
                changed[RowKey(str(number))] = columns
            self._rendered[number] = row
        # DataTable.update_cell repaints the whole table; repainting only the changed rows keeps a
        # second's worth of CPU changes to a few short lines on a slow SSH link.
        self._repaint_cells(changed)

    def update_uptimes(self, now: float) -> None:
        """Between snapshots (once a second): only the uptime cells whose text changed, at most one per
        rank per minute after its first minute."""
        self._now = now
        if not self._layout or "uptime" not in self._layout[0]:
            return
        column = self._layout[0].index("uptime")
        changed: dict[RowKey, set[ColumnKey]] = {}
        for number, rendered in self._rendered.items():
            rank = self._rank_data.get(number)
            if rank is None:
                continue
            cell = _plain(fmt.uptime(rank, now))
            if cell == rendered[column]:
                continue
            if _cell_len(cell) != _cell_len(rendered[column]):
                self._restyle()  # the column's width changes: the layout may too
                return
            row = rendered[:column] + (cell,) + rendered[column + 1:]
            self._data[RowKey(str(number))][ColumnKey("uptime")] = cell
            self._rendered[number] = row
            changed[RowKey(str(number))] = {ColumnKey("uptime")}
        self._repaint_cells(changed)

    def _update_row(self, row_key: str, previous: tuple, cells: tuple) -> set[ColumnKey]:
        """Store a row's changed cells; returns those the row must repaint. Every cell fits its column: the
        layout's widths include it (a wider one changes the layout, and the table is rebuilt)."""
        changed: set[ColumnKey] = set()
        for column_key, old, new in zip(self.shown_columns, previous, cells):
            if old == new:
                continue
            self._data[RowKey(row_key)][ColumnKey(column_key)] = new
            changed.add(ColumnKey(column_key))
        return changed

    def _repaint_cells(self, changed: dict[RowKey, set[ColumnKey]]) -> None:
        """Repaint the rows of changed cells. DataTable keys its render caches by one update count for the whole
        table (bumping it re-renders every row): a flood changes each row's last log line every second, and that
        held the UI loop long enough to delay keys by a second on a busy machine. Here only the changed rows'
        entries go: their renderables (which `_render_line_in_row` reads), the line cache, and DataTable's own
        cell and row caches (still used by the header and by any row that falls back to DataTable's path)."""
        if not changed:
            return
        cells = self._cell_render_cache
        for key in [k for k in cells.keys() if k[1] in changed.get(k[0], ())]:
            cells.discard(key)
        rows = self._row_render_cache
        for key in [k for k in rows.keys() if k[0] in changed]:
            rows.discard(key)
        indexes = {self.get_row_index(key.value) for key in changed}
        renderables = self._row_renderable_cache
        for key in [k for k in renderables.keys() if k[1] in indexes]:
            renderables.discard(key)
        self._line_cache.clear()
        for index in indexes:
            self.refresh_row(index)

    def _render_line_in_row(self, row_key: RowKey, line_no: int, base_style: Style, cursor_location: Coordinate,
                            hover_location: Coordinate) -> tuple[list, list]:
        """A body row of single-line Text cells, rendered straight to segments: what DataTable's path gives
        (after Strip.simplify), without a Rich render (Padding, Styled, wrapping) per cell. A flood changes
        every row's last log line each second, and those renders were most of a frame while keys waited.
        Anything else (the header, a cell too wide or with spans) goes through DataTable."""
        row_index = self._row_locations.get(row_key) if row_key in self._row_locations else -1
        if (row_index < 0 or line_no or self.fixed_columns or self.cursor_type != "row" or self.zebra_stripes
                or (self._labelled_row_exists and self.show_row_labels) or row_index < self.fixed_rows):
            return super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
        _label, cells = self._get_row_renderables(row_index)
        columns = self.ordered_columns
        pad = self.cell_padding
        cursor = self.show_cursor and cursor_location.row == row_index
        hover = self._show_hover_cursor and self.show_cursor and hover_location.row == row_index
        css_fg, css_bg = self.cursor_foreground_priority == "css", self.cursor_background_priority == "css"
        component, post = self._get_styles_to_render_cell(False, False, False, hover, cursor, self.show_cursor,
                                                          self._show_hover_cursor, css_fg, css_bg)
        get_style = self.app.console.get_style
        row: list[list[Segment]] = []
        table_width = 0
        for column_index, (column, cell) in enumerate(zip(columns, cells)):
            width = column.get_render_width(self)
            table_width += width
            if not isinstance(cell, Text) or cell.spans or "\n" in cell.plain or "\t" in cell.plain:
                return super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
            text = cell.plain
            room = width - 2 * pad
            used = cell_len(text)
            if used > room or room < 0:
                return super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
            pre = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component
            blank = pre + post
            segments = [Segment(" " * pad, blank)] if pad else []
            if text:
                segments.append(Segment(text, pre + get_style(cell.style) + post))
            if room - used + pad:
                segments.append(Segment(" " * (room - used + pad), blank))
            row.append(segments)
        extend, _ = self._get_styles_to_render_cell(False, False, False, hover_location.row == row_index, cursor,
                                                    self.show_cursor, self._show_hover_cursor, False, False)
        extend = base_style + extend + Style.from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
        row.append([Segment(" " * max(0, self.size.width - table_width - self._row_label_column_width), extend)])
        return [], row

    def _restyle(self) -> None:
        ranks = [self._rank_data[n] for n in sorted(self._rank_data)]
        self.update_ranks(ranks, self._first_failure, self._now, self._failing)

    # -- selection ------------------------------------------------------------------------------------
    @property
    def selected_rank(self) -> int | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return int(key.value) if key.value is not None else None

    def select_rank(self, rank: int) -> None:
        try:
            self.move_cursor(row=self.get_row_index(str(rank)))
        except Exception:  # unknown rank: keep the cursor where it is
            pass

    # Called at once when the cursor moves to another rank, before the table is drawn: what the callee changes
    # is drawn in the same frame as the cursor. Through RankSelected (a message, handled a turn of the event
    # loop later) the table was drawn first and the log pane one frame later: 17 ms more per keypress, and a
    # second wake-up to wait for on a loaded machine.
    cursor_moved: Callable[[int | None], None] | None = None

    def watch_cursor_coordinate(self, old_coordinate: Any, new_coordinate: Any) -> None:
        super().watch_cursor_coordinate(old_coordinate, new_coordinate)
        if old_coordinate != new_coordinate and self.cursor_moved is not None and not self._rebuilding:
            self.cursor_moved(self.selected_rank)

    def _announce_selection(self) -> None:
        if self.cursor_moved is not None:
            self.cursor_moved(self.selected_rank)
        self.post_message(self.RankSelected(self.selected_rank))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        key = event.row_key.value
        self.post_message(self.RankSelected(int(key) if key is not None else None))

    def action_mark(self) -> None:
        rank = self.selected_rank
        if rank is None:
            return
        self.marked.symmetric_difference_update({rank})
        self._restyle()
