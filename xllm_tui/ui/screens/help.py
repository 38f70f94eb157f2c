"""`?`: every key of the TUI, grouped, as currently bound (a user keymap shows its own keys)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str, str, str]]):
        """rows: (group, keys, description, binding id)."""
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_column(style="dim", no_wrap=True)
        group = None
        for row_group, keys, description, binding_id in self.rows:
            if row_group != group:
                if group is not None:
                    table.add_row("", "", "")
                table.add_row("", Text(row_group, style="bold underline"), "")
                group = row_group
            table.add_row(keys, description, binding_id)
        with VerticalScroll(id="help-dialog"):
            yield Static(Text("Keys  (esc closes; ids are for keymap.toml)", style="bold"), id="help-title")
            yield Static(table, id="help-table")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
