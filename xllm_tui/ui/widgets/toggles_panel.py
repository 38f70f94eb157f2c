"""Environment toggle groups as switches, each with the exact variables it adds or removes."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Label, Static, Switch

from xllm_tui.ui.widgets import format as fmt


def toggle_detail(toggle: dict[str, Any]) -> Text:
    text = Text()
    env = toggle.get("env") or {}
    for name, value in env.items():
        text.append(f"  + {name}={value}\n")
    for name in toggle.get("unset") or []:
        text.append(f"  - unset {name}\n")
    for pattern in toggle.get("remove") or []:
        text.append(f"  - delete {pattern} before launch\n")
    if not len(text):
        text.append("  (no variables)\n", style="dim")
    text.rstrip()
    return text


class ToggleRow(Horizontal):
    def __init__(self, toggle: dict[str, Any]):
        super().__init__(classes="toggle-row")
        self.toggle_name = toggle["name"]
        self._toggle = toggle

    def compose(self) -> ComposeResult:
        yield Switch(value=bool(self._toggle.get("enabled")), id=f"toggle-{self.toggle_name}")
        title = Text(self.toggle_name, style="bold")
        if self._toggle.get("description"):
            title.append(f"  {self._toggle['description']}", style="dim")
        title.append("\n")
        title.append_text(toggle_detail(self._toggle))
        yield Label(title, classes="toggle-label")


class TogglesPanel(VerticalScroll):
    """Posts TogglesPanel.ToggleRequested when the operator flips a switch; the switch then shows the
    supervisor's answer on the next snapshot (a refused request snaps back)."""

    class ToggleRequested(Message):
        def __init__(self, group: str, on: bool):
            super().__init__()
            self.group = group
            self.on = on

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._names: tuple[str, ...] = ()
        self._shown_note: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="pending-note")

    def show(self, toggles: list[dict[str, Any]], ranks: list[dict[str, Any]]) -> None:
        names = tuple(t["name"] for t in toggles)
        if names != self._names:
            for row in self.query(ToggleRow):
                row.remove()
            self.mount_all([ToggleRow(t) for t in toggles], before="#pending-note")
            self._names = names
        else:
            for toggle in toggles:
                switch = self.query_one(f"#toggle-{toggle['name']}", Switch)
                if switch.value != bool(toggle.get("enabled")):
                    with switch.prevent(Switch.Changed):
                        switch.value = bool(toggle.get("enabled"))
        pending = [r["rank"] for r in ranks if r.get("relaunch_pending")]
        if not toggles:
            self._note(Text("This profile defines no toggle groups.", style="dim"))
        elif pending:
            self._note(
                Text(
                    f"Relaunch pending for ranks {fmt.rank_list(pending)}: their running environment differs from "
                    "the next launch. Toggles take effect when a rank is (re)started (R restarts the group).",
                    style=self.app.theme_variables.get("warning", ""),
                )
            )
        else:
            self._note(Text("Toggles take effect at each rank's next launch.", style="dim"))

    def _note(self, text: Text) -> None:
        if text != self._shown_note:
            self._shown_note = text
            self.query_one("#pending-note", Static).update(text)

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        name = (event.switch.id or "").removeprefix("toggle-")
        self.post_message(self.ToggleRequested(name, event.value))
