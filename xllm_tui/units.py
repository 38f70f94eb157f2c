"""Byte counts as people read them, one style for the TUI, the CLI and the supervisor's messages: "512B",
"24.8M", "124M" (three significant figures at most)."""

from __future__ import annotations


def size(num_bytes: float | None) -> str:
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit in ("B", "K") or abs(value) >= 100 else f"{value:.1f}{unit}"
        value /= 1024
    return "-"
