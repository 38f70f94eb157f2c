"""A scrollable page of text (profile change, errors): esc closes."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class TextScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "close", "Close", id="text.close")]

    def __init__(self, title: str, body: Text | str):
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="text-dialog"):
            yield Static(Text(self.title_text, style="bold"), id="text-title")
            yield Static(self.body, id="text-body", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
