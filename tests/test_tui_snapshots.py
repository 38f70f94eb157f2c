"""Snapshot tests (pytest-textual-snapshot) of the main screens, in each shipped theme, at 80x24 and 160x48.

The deployment is the frozen demo (xllm_tui.ui.demo): a recording of a real simulated run
(xllm_tui/data/tui-demo, scripts/record_tui_demo.py) replayed with its own clock frozen, so the SVGs are stable. Log paths are relative (the test runs in its own tmp directory) so no tmp path shows.
Regenerate after an intended change: python3 -m pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import time

import pytest

from conftest import until
from xllm_tui.ui.app import XllmApp
from xllm_tui.ui.demo import demo_snapshot
from xllm_tui.ui.source import StaticSource

THEMES = ["xllm-dark", "xllm-light", "xllm-high-contrast"]
SIZES = [(80, 24), (160, 48)]


@pytest.fixture
def demo_app(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def make(theme: str) -> XllmApp:
        source = StaticSource(demo_snapshot("logs"))
        return XllmApp(source, theme=theme, user_config=False, watch_profile=False)

    return make


async def _steady(pilot, timeout: float = 10.0) -> None:
    """Wait until two screens taken a moment apart are the same: the layout has settled (column widths
    measured, workers' results drawn). Bounded; no fixed sleep decides it."""
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        await pilot.pause(0.05)
        current = pilot.app.export_screenshot()
        if current == previous:
            return
        assert time.monotonic() < deadline, "the screen kept changing"
        previous = current


async def _settle_logs(pilot) -> None:
    """Wait until every visible log view has read its file (LogView indexes in a worker)."""
    from xllm_tui.ui.widgets.log_view import LogView

    await until(pilot, lambda: all(v.line_count > 0 for v in pilot.app.screen.query(LogView) if v.path))
    await _steady(pilot)


async def _main(pilot) -> None:
    await _settle_logs(pilot)


async def _help(pilot) -> None:
    await _settle_logs(pilot)
    await pilot.press("question_mark")
    await pilot.pause(0.1)


async def _confirm(pilot) -> None:
    await _settle_logs(pilot)
    await pilot.press("down", "down", "down", "r")
    await pilot.pause(0.1)


async def _detail(pilot) -> None:
    await _settle_logs(pilot)
    await pilot.press("d")
    await until(pilot, lambda: getattr(pilot.app.screen, "loaded", False))


async def _toggles(pilot) -> None:
    await _settle_logs(pilot)
    await pilot.press("t")
    await pilot.pause(0.1)


async def _timeline(pilot) -> None:
    from xllm_tui.ui.widgets.timeline import TimelineTable

    await _settle_logs(pilot)
    await pilot.press("T")
    await until(pilot, lambda: pilot.app.main_screen.query_one(TimelineTable).entries)
    await _steady(pilot)  # the rows are in; the table measures its columns before the shot


async def _devices(pilot) -> None:
    await _settle_logs(pilot)
    await pilot.press("D")
    await pilot.pause(0.1)


SCREENS = {
    "main": _main,
    "help": _help,
    "confirm": _confirm,
    "detail": _detail,
    "toggles": _toggles,
    "timeline": _timeline,
    "devices": _devices,
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare, demo_app, screen, theme, size):
    assert snap_compare(demo_app(theme), terminal_size=size, run_before=SCREENS[screen])


def test_too_small(snap_compare, demo_app):
    assert snap_compare(demo_app("xllm-dark"), terminal_size=(60, 20))


async def _compact_log(pilot) -> None:
    from xllm_tui.ui.widgets.log_view import LogView

    await _settle_logs(pilot)
    await pilot.press("l", "c")  # focus the selected rank's log, then its compact mode
    await until(pilot, lambda: all(v.compact for v in pilot.app.screen.query(LogView)))
    await _steady(pilot)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compact_log(snap_compare, demo_app, size):
    """The log pane in compact mode: time and message, the severity as the colour (80 columns is why)."""
    assert snap_compare(demo_app("xllm-dark"), terminal_size=size, run_before=_compact_log)
