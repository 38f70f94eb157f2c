"""The supervisor's event history: every event once, oldest first, including those from before we attached."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from xllm_tui.ui.widgets import format as fmt

KIND_VARIABLE = {"state": "", "group": "primary", "action": "accent", "toggle": "secondary", "supervisor": "secondary"}


class EventsPane(RichLog):
    """Appends events by sequence number; a repeated or older event is ignored."""

    def __init__(self, **kwargs: Any):
        super().__init__(max_lines=5000, wrap=False, markup=False, highlight=False, auto_scroll=True, **kwargs)
        self.last_seq: int | None = None
        self.count = 0

    def add_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            seq = event.get("seq")
            if seq is not None and self.last_seq is not None and seq <= self.last_seq:
                continue
            if seq is not None:
                self.last_seq = seq
            self.count += 1
            self.write(self._line(event))

    def _line(self, event: dict[str, Any]) -> Text:
        variables = self.app.theme_variables
        to_state = event.get("to")
        if event.get("kind") == "state" and to_state:
            colour = variables.get(fmt.STATE_VARIABLE.get(to_state, ""), "")
        else:
            colour = variables.get(KIND_VARIABLE.get(event.get("kind", ""), ""), "")
        line = Text(fmt.clock(event.get("ts")) + " ", style="dim")
        line.append(f"{event.get('kind', '?'):<10} ", style="dim")
        line.append(fmt.event_text(event), style=colour)
        return line
