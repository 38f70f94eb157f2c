"""The rank table: one row per rank, coloured by state, updated cell by cell (cheap redraws over SSH)."""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from xllm_tui.ui.widgets import format as fmt

COLUMNS = (
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
# glog prefix "I20251129 15:20:01.123456 5123 file.cc:12] " -> keep the severity letter and the message
_GLOG_PREFIX = re.compile(r"^([IWEF])\d{4,8} [\d:.]+ +\d+ +[^\]]*\] ?")


def short_line(line: str) -> str:
    return _GLOG_PREFIX.sub(lambda m: m.group(1) + " ", line.replace("\t", " "), count=1)


class RankTable(DataTable):
    """Ranks of the deployment. Posts RankTable.RankSelected when the cursor moves to another rank."""

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

    def on_mount(self) -> None:
        for label, key in COLUMNS:
            self.add_column(label, key=key)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())

    # -- data -----------------------------------------------------------------------------------------
    def _colour(self, variable: str) -> str:
        return self.app.theme_variables.get(variable, "")

    def _cells(self, rank: dict[str, Any]) -> tuple:
        number = rank["rank"]
        state = rank.get("state") or "?"
        colour = self._colour(fmt.STATE_VARIABLE.get(state, "xllm-state-stopped"))
        rank_label = f"{'*' if number in self.marked else ' '}{number}"
        rank_cell = Text(rank_label, style="bold" if number == self._first_failure else "")
        state_label = fmt.state_text(rank)
        if number == self._first_failure and state in fmt.FAILED_STATES:
            state_label += " (first)"
        if rank.get("relaunch_pending"):
            state_label += " ~"
        state_cell = Text(state_label, style=f"bold {colour}" if colour else "bold")
        if number == self._first_failure:
            ff = self._colour("xllm-first-failure")
            rank_cell.stylize(f"bold reverse {ff}" if ff else "bold reverse")
        last = short_line(rank.get("last_line") or "")
        return (
            rank_cell,
            state_cell,
            str(rank.get("pid") or "-"),
            fmt.uptime(rank, self._now),
            str(rank.get("restarts", 0)),
            fmt.cpu(rank.get("cpu_pct")),
            fmt.size(rank.get("rss_bytes")),
            str(rank.get("device", "-")),
            str(rank.get("cores") or "-"),
            last[:120],
            str(rank.get("machine") or rank.get("host") or "-"),
        )

    def update_ranks(self, ranks: list[dict[str, Any]], first_failure: int | None, now: float) -> None:
        self._now = now
        self._first_failure = first_failure
        seen = set()
        repaint: list[int] = []
        for rank in ranks:
            number = int(rank["rank"])
            seen.add(number)
            self._rank_data[number] = rank
            cells = self._cells(rank)
            previous = self._rendered.get(number)
            if previous is None:
                self.add_row(*cells, key=str(number))
            elif self._update_row(str(number), previous, cells):
                repaint.append(number)
            self._rendered[number] = cells
        if repaint:
            # DataTable.update_cell repaints the whole table; repainting only the changed rows keeps a
            # second's worth of uptime and CPU changes to a few short lines on a slow SSH link.
            self._update_count += 1  # drop the cached renders of changed rows
            for number in repaint:
                self.refresh_row(self.get_row_index(str(number)))
        for gone in set(self._rendered) - seen:
            self.remove_row(str(gone))
            del self._rendered[gone]
            self._rank_data.pop(gone, None)

    def _update_row(self, row_key: str, previous: tuple, cells: tuple) -> bool:
        """Store a row's changed cells; True when the row must be repainted (False: already refreshed,
        or nothing changed). A cell wider than its column goes through update_cell to widen it."""
        changed = False
        for (_, column_key), old, new in zip(COLUMNS, previous, cells):
            if old == new:
                continue
            column = self.columns[ColumnKey(column_key)]
            width = new.cell_len if isinstance(new, Text) else Text(str(new)).cell_len
            if width > column.content_width:
                self.update_cell(row_key, column_key, new, update_width=True)
                continue
            self._data[RowKey(row_key)][ColumnKey(column_key)] = new
            changed = True
        return changed

    def _restyle(self) -> None:
        ranks = [self._rank_data[n] for n in sorted(self._rank_data)]
        self.update_ranks(ranks, self._first_failure, self._now)

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
