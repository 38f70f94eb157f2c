"""`:` command prompt (k9s style): type a command, enter runs it, esc cancels."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

PROMPT_HELP = (
    "restart N|failed|all · stop N|all · start N|all · toggle NAME on|off · rank N · split N M ...\n"
    "timeline · events · toggles · theme NAME · help · quit"
)


class PromptScreen(ModalScreen[str | None]):
    """A one-line prompt; dismisses with the text, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, placeholder: str = "command, e.g. restart 3", help_text: str = PROMPT_HELP, value: str = ""):
        super().__init__()
        self.placeholder = placeholder
        self.help_text = help_text
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-dialog"):
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static(self.help_text, id="prompt-help", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
