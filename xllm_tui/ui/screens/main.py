"""The main screen: status line, banners, rank table, and the tabs below it (log, events, toggles,
timeline, devices)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from xllm_tui.ui.widgets.devices_pane import DevicesPane
from xllm_tui.ui.widgets.events_pane import EventsPane
from xllm_tui.ui.widgets.rank_log import RankLog
from xllm_tui.ui.widgets.rank_table import RankTable
from xllm_tui.ui.widgets.status_bar import StatusBar
from xllm_tui.ui.widgets.timeline import TimelineTable
from xllm_tui.ui.widgets.toggles_panel import TogglesPanel

# (binding id, keys, action, footer label, show in footer, help text, group)
MAIN_KEYS: list[tuple[str, str, str, str, bool, str, str]] = [
    ("restart-rank", "r", "app.restart_rank", "Restart", True, "restart the selected rank: in a group, its whole world (confirms)", "Actions"),
    ("restart-group", "R", "app.restart_group", "Restart all", True, "restart every rank of the group (confirms)", "Actions"),
    ("stop-rank", "s", "app.stop_rank", "Stop", True, "stop the selected rank (confirms)", "Actions"),
    ("start-rank", "S", "app.start_rank", "Start", True, "start the selected rank", "Actions"),
    ("restart-failed", "F", "app.restart_failed", "Restart failed", False, "restart the failed ranks: their whole world (confirms)", "Actions"),
    ("start-all", "A", "app.start_all", "Start all", False, "start every stopped rank", "Actions"),
    ("stop-all", "ctrl+k", "app.stop_all", "Stop all", False, "stop every rank; the supervisor stays (confirms)", "Actions"),
    ("reload-profile", "ctrl+r", "app.reload_profile", "Reload profile", False, "load the edited profile into the supervisor (used from the next launch)", "Actions"),
    ("start-supervisor", "u", "app.start_supervisor", "New supervisor", False, "start a supervisor when none answers (re-adopts ranks)", "Actions"),
    ("detail", "d", "app.rank_detail", "Detail", True, "rank detail: argv, env, last exit, env diff (also enter)", "Views"),
    ("log", "l", "app.focus_log", "Log", False, "focus the selected rank's log (esc returns)", "Views"),
    ("events", "e", "app.show_tab('events')", "Events", False, "event history of the supervisor", "Views"),
    ("toggles", "t", "app.show_tab('toggles')", "Toggles", False, "environment toggle groups", "Views"),
    ("timeline", "T", "app.show_tab('timeline')", "Timeline", False, "every rank's warnings and errors, merged by time", "Views"),
    ("devices", "D", "app.show_tab('devices')", "Devices", False, "NPUs of this deployment", "Views"),
    ("older-log", "left_square_bracket", "app.log_generation(1)", "Older log", False, "the rank's log from its previous launch (again: further back)", "Views"),
    ("newer-log", "right_square_bracket", "app.log_generation(-1)", "Newer log", False, "back towards the rank's current log", "Views"),
    ("split", "v", "app.split_view", "Split", False, "marked ranks' logs side by side (space marks a rank)", "Views"),
    ("profile-change", "p", "app.show_profile_change", "Profile diff", False, "what the profile edits would change", "Views"),
]


def main_bindings() -> list[Binding]:
    return [
        Binding(keys, action, label, show=show, id=f"main.{binding_id}", tooltip=help_text)
        for binding_id, keys, action, label, show, help_text, _ in MAIN_KEYS
    ]


class MainScreen(Screen[None]):
    BINDINGS = main_bindings() + [Binding("escape", "back", "Back", show=False, id="main.back")]

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static("", id="connection-banner", classes="banner")
        yield Static("", id="profile-banner", classes="banner")
        yield RankTable(id="ranks")
        with TabbedContent(id="bottom", initial="tab-log"):
            with TabPane("Log", id="tab-log"):
                yield RankLog(id="rank-log", log_id="main-log")
            with TabPane("Events", id="tab-events"):
                yield EventsPane(id="events")
            with TabPane("Toggles", id="tab-toggles"):
                yield TogglesPanel(id="toggles")
            with TabPane("Timeline", id="tab-timeline"):
                yield Static("", id="timeline-status")
                yield TimelineTable(id="timeline")
            with TabPane("Devices", id="tab-devices"):
                yield DevicesPane(id="devices")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(RankTable).focus()

    def on_screen_suspend(self) -> None:
        # A screen that hides this one (rank detail, split view; not a dialog, which leaves it in sight): its log
        # stops following until it shows again. A followed flood read behind it, and Textual repainted the whole
        # screen on top for every repaint of the log it covered.
        app: Any = self.app
        if app.main_covered():
            self.query_one("#rank-log", RankLog).set_shown(False)

    def on_screen_resume(self) -> None:
        app: Any = self.app
        app.main_shown()
        if self.query_one(TabbedContent).active == "tab-log":
            self._log_shown(True)

    def _log_shown(self, shown: bool) -> None:
        """The log tab shows or hides (RankLog.set_shown)."""
        self.query_one("#rank-log", RankLog).set_shown(shown)

    def action_back(self) -> None:
        table = self.query_one(RankTable)
        if self.focused is not table:
            table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        app: Any = self.app
        if event.data_table.id == "ranks":
            app.action_rank_detail()
        elif event.data_table.id == "timeline":
            entry = self.query_one(TimelineTable).selected_entry
            if entry is not None:
                app.select_rank(entry.rank)
                app.action_focus_log()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        app: Any = self.app
        app.devices_tab_shown(event.pane.id == "tab-devices")
        self._log_shown(event.pane.id == "tab-log")
        if event.pane.id == "tab-timeline":
            app.refresh_timeline()
        elif event.pane.id == "tab-devices":
            app.refresh_devices()
