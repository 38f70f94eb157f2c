"""A rank's log pane: a title line (rank, state, log path) over the shared LogView widget."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from xllm_tui.ui.widgets import format as fmt

try:  # LogView is built by the logs work; until it exists the pane says where the log is.
    from xllm_tui.ui.widgets.log_view import LogView
except ImportError:  # pragma: no cover - only before log_view.py lands
    LogView = None  # type: ignore[assignment,misc]


def make_log_widget(**kwargs: Any) -> Widget:
    if LogView is not None:
        return LogView(classes="rank-log-body", **kwargs)
    return Static("", classes="rank-log-body log-placeholder", **kwargs)


class RankLog(Vertical):
    """Shows one rank's log; show_rank() switches to another rank at once (same widget, new path)."""

    def __init__(self, *, log_id: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._log_id = log_id
        self.rank: int | None = None
        self.path: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="rank-log-title")
        yield make_log_widget(id=self._log_id) if self._log_id else make_log_widget()

    @property
    def log_widget(self) -> Widget:
        return self.query_one(".rank-log-body")

    def show_rank(self, rank: dict[str, Any] | None) -> None:
        title = self.query_one(".rank-log-title", Static)
        if rank is None:
            title.update(Text("no rank selected", style="dim"))
            return
        number, path = int(rank["rank"]), rank.get("log_path")
        state_colour = self.app.theme_variables.get(fmt.STATE_VARIABLE.get(rank.get("state") or "", ""), "")
        text = Text()
        text.append(f" rank {number} ", style="bold reverse")
        text.append(f" {fmt.state_text(rank)} ", style=f"bold {state_colour}")
        text.append(f" gen {rank.get('generation', '-')}  {path or 'no log file'}", style="dim")
        title.update(text)
        if path == self.path and number == self.rank:
            return
        self.rank, self.path = number, path
        widget = self.log_widget
        if LogView is not None and isinstance(widget, LogView):
            if path:
                widget.set_path(path)
        elif isinstance(widget, Static):
            widget.update(Text(f"log view not available yet; the log is {path}", style="dim"))
