"""Several ranks' logs side by side (marked ranks, or the selected one and its neighbours)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer

from xllm_tui.ui.widgets.rank_log import RankLog

MAX_PANES = 4


class SplitScreen(Screen[None]):
    COVERS_MAIN = True  # opaque and full: the main screen's log stops following under it
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="split.back"),
        Binding("tab", "focus_next", "Next pane", show=False, id="split.next"),
    ]

    def __init__(self, ranks: list[dict[str, Any]]):
        super().__init__()
        self.ranks = ranks[:MAX_PANES]

    def compose(self) -> ComposeResult:
        with Horizontal(id="split-panes"):
            for rank in self.ranks:
                yield RankLog(classes="split-pane", id=f"split-{rank['rank']}")
        yield Footer()

    def on_mount(self) -> None:
        for rank in self.ranks:
            pane = self.query_one(f"#split-{rank['rank']}", RankLog)
            pane.show_rank(rank)
            view = pane.log_widget
            if hasattr(view, "wrap"):
                # A pane is a fraction of the width: unwrapped, the glog prefix would hide every message.
                view.wrap = True

    def update_ranks(self, ranks_by_number: dict[int, dict[str, Any]]) -> None:
        for rank in self.ranks:
            fresh = ranks_by_number.get(int(rank["rank"]))
            if fresh:
                self.query_one(f"#split-{rank['rank']}", RankLog).show_rank(fresh)
