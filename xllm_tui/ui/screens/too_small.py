"""Shown instead of the layout while the terminal is smaller than the minimum the layout is made for."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

MIN_WIDTH = 80
MIN_HEIGHT = 24


def too_small_message(width: int, height: int) -> str:
    return (
        f"Terminal too small: {width}x{height}.\n"
        f"xllm-tui needs at least {MIN_WIDTH}x{MIN_HEIGHT}.\n"
        "Enlarge the window (or the font smaller).\n"
        "The ranks keep running; q quits."
    )


class TooSmallScreen(Screen[None]):
    BINDINGS = [Binding("q", "app.quit", "Quit", id="too-small.quit")]

    def compose(self) -> ComposeResult:
        yield Static(too_small_message(*self.app.size), id="too-small-message")

    def on_resize(self) -> None:
        self.query_one("#too-small-message", Static).update(too_small_message(*self.app.size))
