"""Pilot tests of the TUI against a frozen deployment (StaticSource records every request it gets).

Each test drives the app with keys as an operator would and checks what they see (screens, banners,
notifications) and what the supervisor was asked to do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Static, Switch, TabbedContent

from conftest import record_layouts, until, until_quiet
from xllm_tui.ui.app import XllmApp, load_keymap
from xllm_tui.ui.demo import demo_snapshot
from xllm_tui.ui.screens.confirm import ConfirmScreen
from xllm_tui.ui.screens.help import HelpScreen
from xllm_tui.ui.screens.main import MainScreen
from xllm_tui.ui.screens.rank_detail import RankDetailScreen
from xllm_tui.ui.screens.split import SplitScreen
from xllm_tui.ui.screens.text import TextScreen
from xllm_tui.ui.screens.too_small import TooSmallScreen
from xllm_tui.ui.source import StaticSource
from xllm_tui.ui.widgets.rank_table import RankTable
from xllm_tui.ui.widgets.timeline import TimelineTable

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def source(tmp_path):
    return StaticSource(demo_snapshot(tmp_path / "logs"))


def make_app(source, **kwargs) -> XllmApp:
    kwargs.setdefault("user_config", False)
    kwargs.setdefault("watch_profile", False)
    return XllmApp(source, **kwargs)


def screen_text(app) -> str:
    """The terminal's text as the operator sees it."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, force_terminal=True)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def texts(app) -> str:
    """Everything the Static widgets of the current screen show, for assertions on what the user reads."""
    return "\n".join(str(w.render()) for w in app.screen.query(Static))


async def test_main_screen_shows_every_rank_and_marks_the_first_failure(source):
    messages = []
    app = make_app(source)
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8, what="8 rank rows")
        # The recording (xllm_tui/data/tui-demo): rank 3 failed with an HCCL error, the others were
        # stopped as collateral, the group restart is counting down on the frozen clock.
        assert "failed hccl_error" in str(table.get_cell("3", "state"))
        assert str(table.get_cell("3", "mark")) == "!"  # the first failure, in its own column
        assert str(table.get_cell("0", "mark")) == ""
        assert "stopped" in str(table.get_cell("1", "state"))
        assert str(table.get_cell("1", "pid")) == "-"
        status = str(app.main_screen.query_one("#status", Static).render())
        assert "group failed │ restart in 4s │ first failure: rank 3 hccl_error" in status
        # Moving the cursor switches the log pane to the next rank at once.
        await pilot.press("down")
        await until(pilot, lambda: app.main_screen.query_one("#rank-log").rank == 1, what="log of rank 1")
        assert any(type(m).__name__ == "RankSelected" for m in messages)


async def test_the_start_up_heap_is_frozen_while_the_app_runs(source):
    """Once the ranks are shown, the start-up objects are left out of the cyclic GC's passes (a full pass
    over them was the worst keypress under a flood); ending the app gives them back."""
    import gc

    before = gc.get_freeze_count()  # 0, unless an earlier app in this process ended without unmounting
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8 and gc.get_freeze_count() > before, what="the heap frozen")
        assert gc.get_freeze_count() > before + 10_000  # the widgets, styles and modules, not a handful
        await pilot.press("down")  # the app works on as before
        await until(pilot, lambda: app.main_screen.query_one("#rank-log").rank == 1, what="log of rank 1")
    assert gc.get_freeze_count() == 0


async def test_a_cursor_move_switches_the_log_pane_before_the_table_is_drawn(source):
    """j moves the cursor and, in the same call, switches the log pane (RankTable.cursor_moved): the screen's
    next frame draws both. Through the RankSelected message, handled a turn of the event loop later, the table
    was drawn first and the log pane one screen tick (17 ms) after."""
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        rank_log = app.main_screen.query_one("#rank-log")
        await until(pilot, lambda: table.row_count == 8 and rank_log.rank == 0, what="log of rank 0")
        for target in (1, 2, 1):
            if target > table.selected_rank:
                table.action_cursor_down()
            else:
                table.action_cursor_up()
            # No await since: nothing has been drawn, no message handled, and the pane shows the new rank.
            assert table.selected_rank == target
            assert rank_log.rank == target
            assert rank_log.log_widget.path == rank_log.path and rank_log.path.endswith(f"node_{target}.log")
            await pilot.pause()
        await pilot.press("k")  # and through a key, as the user does
        await until(pilot, lambda: rank_log.rank == 0, what="log of rank 0 again")


async def test_the_table_laid_out_again_keeps_the_earlier_log_shown(source):
    """A snapshot or a resize can rebuild the rank table (clear() puts its cursor on row 0, then back): the
    log pane stays on the generation chosen with [. The rebuild's RankSelected messages, handled later,
    switched it to rank 0 and back to rank 3's current log (the two-machine test then waited in vain)."""
    from xllm_tui.ui.widgets.rank_log import RankLog

    log_path = next(r["log_path"] for r in source.data["ranks"] if int(r["rank"]) == 3)
    Path(log_path + ".1").write_text("".join(f"I0101 00:00:0{i % 10}.000000 1 a.cc:1] earlier {i}\n"
                                             for i in range(20)))
    app = make_app(source)
    async with app.run_test(size=(160, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        rank_log = app.main_screen.query_one(RankLog)
        title = rank_log.query_one(".rank-log-title", Static)
        await until(pilot, lambda: table.row_count == 8, what="8 rank rows")
        table.select_rank(3)
        await until(pilot, lambda: rank_log.rank == 3, what="rank 3 shown")
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: rank_log.back == 1 and rank_log.log_widget.line_count == 20, what="earlier log")
        selections = []
        post = table.post_message

        def recording_post(message):
            if isinstance(message, RankTable.RankSelected):
                selections.append(message.rank)
            return post(message)

        table.post_message = recording_post
        layout = table._layout
        await pilot.resize_terminal(120, 40)
        await until(pilot, lambda: table._layout != layout, what="the table laid out again")
        for _ in range(3):
            await pilot.pause()
        assert selections == []  # no move to announce: the cursor is on rank 3 as before
        assert table.selected_rank == 3
        assert rank_log.rank == 3 and rank_log.back == 1 and rank_log.path == log_path + ".1"
        assert " rank 3 " in str(title.render()) and "earlier log" in str(title.render())


async def test_rank_selected_messages_handled_late_do_not_move_the_log_pane(source):
    """The log pane follows the cursor through RankTable.cursor_moved alone. The RankSelected messages of two
    quick moves are handled after [ was pressed on the second rank: they showed the first rank, then the
    second rank's current log."""
    log_path = next(r["log_path"] for r in source.data["ranks"] if int(r["rank"]) == 2)
    Path(log_path + ".1").write_text("I0101 00:00:00.000000 1 a.cc:1] earlier\n")
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        rank_log = app.main_screen.query_one("#rank-log")
        await until(pilot, lambda: table.row_count == 8 and rank_log.rank == 0, what="log of rank 0")
        handled = []
        on_message = app._on_message

        async def recording_on_message(message):
            await on_message(message)
            if isinstance(message, RankTable.RankSelected):
                handled.append(message.rank)

        app._on_message = recording_on_message
        table.action_cursor_down()
        table.action_cursor_down()
        app.action_log_generation(1)  # before the app has handled either move's message
        assert rank_log.rank == 2 and rank_log.back == 1
        await until(pilot, lambda: 2 in handled, what="the second move's RankSelected handled by the app")
        assert rank_log.rank == 2 and rank_log.back == 1 and rank_log.path == log_path + ".1"


@pytest.mark.parametrize(
    "keys, expected_op, expected_args",
    [
        (["r"], "restart", {"ranks": [0]}),
        (["R"], "restart", {"ranks": "all"}),
        (["s"], "stop", {"ranks": [0]}),
        (["F"], "restart", {"ranks": "failed"}),
        (["ctrl+k"], "stop", {"ranks": "all"}),
    ],
    ids=["restart-rank", "restart-group", "stop-rank", "restart-failed", "stop-all"],
)
async def test_destructive_actions_confirm_then_send(source, keys, expected_op, expected_args):
    messages = []
    app = make_app(source)
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await pilot.press(*keys)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        body = str(app.screen.query_one("#confirm-body", Static).render())
        assert "rank" in body.lower()
        assert source.actions == []  # nothing happens before the operator says yes
        await pilot.press("y")
        await until(pilot, lambda: source.actions, what="the request")
        assert source.actions == [(expected_op, expected_args)]
        assert isinstance(app.screen, MainScreen)
        await until(pilot, lambda: app._notifications, what="a notification about the request")


@pytest.mark.parametrize("cancel_key", ["n", "escape"])
async def test_cancelling_a_confirmation_does_nothing(source, cancel_key):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "All 8 ranks are stopped" in str(app.screen.query_one("#confirm-body", Static).render())
        await pilot.press(cancel_key)
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        # Then a stop, confirmed: its request arrives alone. A cancelled restart, had it been sent, would have
        # come first (no fixed pause decides that nothing came).
        await pilot.press("ctrl+k")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the stop's confirmation")
        await pilot.press("y")
        await until(pilot, lambda: source.actions, what="the stop request")
        assert source.actions == [("stop", {"ranks": "all"})]


async def test_restart_rank_confirmation_explains_the_group(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("down", "down", "down", "r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        body = str(app.screen.query_one("#confirm-body", Static).render())
        assert "Rank 3" in body and "other 7 ranks" in body and "fail together" in body
        await pilot.press("enter")  # enter on the focused default button (Cancel) must not restart
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        assert source.actions == []


async def test_start_rank_needs_no_confirmation(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("down", "down", "down", "S")
        await until(pilot, lambda: source.actions)
        assert source.actions == [("start", {"ranks": [3]})]


async def test_toggle_switch_sends_toggle(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        switch = app.main_screen.query_one("#toggle-profiling", Switch)
        await until(pilot, lambda: switch.region.height > 0, what="toggles tab shown")
        assert "PROFILING_MODE=dynamic" in texts(app) or "PROFILING_MODE=dynamic" in "".join(
            str(w.render()) for w in app.main_screen.query(".toggle-label")
        )
        await pilot.click("#toggle-profiling")
        await until(pilot, lambda: source.actions)
        assert source.actions == [("toggle", {"group": "profiling", "on": True})]
        note = str(app.main_screen.query_one("#pending-note", Static).render())
        assert "next launch" in note  # nothing runs in the recording: no rank is relaunch pending


async def test_help_screen_lists_keys_and_closes(source):
    app = make_app(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await until(pilot, lambda: "restart the selected rank" in screen_text(app), what="the keys listed")
        text = screen_text(app)
        assert "restart the selected rank" in text and "main.restart-rank" in text
        assert "quit the TUI; the supervisor and" in text
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_small_terminal_shows_a_message_instead_of_the_layout(source):
    app = make_app(source)
    async with app.run_test(size=(60, 20)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, TooSmallScreen), what="too-small screen")
        message = str(app.screen.query_one("#too-small-message", Static).render())
        assert "Terminal too small: 60x20" in message and "80x24" in message
        await pilot.resize_terminal(100, 30)
        await until(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen after resize")


async def test_supervisor_gone_banner_keeps_last_state_and_recovers(source, monkeypatch):
    monkeypatch.setattr("xllm_tui.ui.app.RETRY_S", 0.05)
    app = make_app(source, poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8)
        source.available = False
        app.refresh_now()
        banner = app.main_screen.query_one("#connection-banner", Static)
        await until(pilot, lambda: banner.has_class("visible"), what="disconnected banner")
        assert "Supervisor unreachable" in str(banner.render())
        assert table.row_count == 8  # the last state stays on screen
        await pilot.press("r", "y")  # an action while disconnected is reported, not a crash
        await until(pilot, lambda: any("unreachable" in n.message for n in app._notifications))
        source.available = True
        await until(pilot, lambda: not banner.has_class("visible"), what="banner gone after reconnect")


async def test_rank_failure_notifies_and_rings_the_bell(source, monkeypatch):
    app = make_app(source, poll_interval=0.05, bell=True)
    rings = []
    monkeypatch.setattr(app, "bell", lambda: rings.append(1))
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8)
        source.data["ranks"][5]["state"] = "failed"
        source.data["ranks"][5]["last_exit"] = {"code": 1, "signal": None, "cause": "kv_cache_oom"}
        app.refresh_now()
        await until(pilot, lambda: any("rank 5 failed" in n.message for n in app._notifications))
        assert "kv_cache_oom" in " ".join(n.message for n in app._notifications)
        assert rings == [1]


async def test_rank_detail_shows_argv_env_and_diff(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, RankDetailScreen))
        await until(pilot, lambda: app.screen.loaded)
        body = str(app.screen.query_one("#detail-body", Static).render())
        assert "--node_rank=0" in body and "xllm_tui.sim.xllm" in body  # the recorded simulated launch
        assert "rank 3 failed first" in body and "collateral" in body
        assert "not running: the next launch is" in body  # stopped as collateral: only its next launch
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_timeline_merges_ranks_and_opens_at_the_first_failure(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("T")
        timeline = app.main_screen.query_one(TimelineTable)
        await until(pilot, lambda: timeline.entries, what="timeline scanned")
        assert {e.rank for e in timeline.entries} == {3}  # only the failed rank logged an error
        first = timeline.selected_entry
        assert first.rank == 3 and first.severity == "F" and "HCCL error" in first.message
        assert str(timeline.get_cell_at((timeline.cursor_row, 0))) == "!"
        assert timeline.get_cell_at((timeline.cursor_row, 4)) == "current"
        errors = sum(e.severity in ("E", "F") for e in timeline.entries)
        status = str(app.main_screen.query_one("#timeline-status", Static).render())
        assert status.startswith(f"{errors} error") and "in 8 logs (" in status and "enter opens" in status
        await pilot.press("enter")  # jump to that rank's log
        await until(pilot, lambda: app.main_screen.query_one("#rank-log").rank == 3)


async def test_a_timeline_with_nothing_to_show_says_so(source):
    """Logs without a warning or an error (a rank flooding info lines, gigabytes of them): the timeline says it
    is reading while it scans, then that it found nothing and in how much, instead of an empty table."""
    from xllm_tui.ui.widgets import timeline as timeline_module

    for rank in source.data["ranks"]:  # every log without its W/E/F lines
        path = Path(rank["log_path"])
        lines = [line for line in path.read_text().splitlines(keepends=True) if line[:1] not in "WEF"]
        path.write_text("".join(lines))
    release = threading.Event()
    scan_log = timeline_module.scan_log

    def slow_scan(*args, **kwargs):
        release.wait(10)  # a big log: the scan is still going when the tab shows
        return scan_log(*args, **kwargs)

    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        timeline_module.scan_log = slow_scan
        try:
            await pilot.press("T")
            status = app.main_screen.query_one("#timeline-status", Static)
            await until(pilot, lambda: "reading the warnings and errors of 8 ranks' logs" in str(status.render()),
                        what="the scan under way")
            release.set()
            await until(pilot, lambda: str(status.render()).startswith("no warnings or errors in 8 logs ("),
                        what="nothing found, said")
        finally:
            timeline_module.scan_log = scan_log
        assert app.main_screen.query_one(TimelineTable).row_count == 0


async def test_split_view_shows_marked_ranks(source):
    app = make_app(source)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("space", "down", "down", "space", "v")
        await until(pilot, lambda: isinstance(app.screen, SplitScreen))
        assert [int(r["rank"]) for r in app.screen.ranks] == [0, 2]
        from xllm_tui.ui.widgets.log_view import LogView

        views = list(app.screen.query(LogView))
        assert len(views) == 2 and all(v.wrap for v in views)  # narrow panes wrap, so messages show
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_a_covered_main_screen_stops_following_and_catches_up_when_shown(source):
    """Under the split view (or a rank's detail) the main screen cannot be seen: its log stops following and
    snapshots are not drawn on it. Textual repaints the whole screen on top for each repaint of a screen it
    covers, so a flood followed behind a split view of flooding ranks redrew the split view whole at every read.
    Back on the main screen, what came meanwhile is shown at once."""
    from textual._compositor import Compositor

    from xllm_tui.ui.widgets.log_view import LogView

    app = make_app(source, poll_interval=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        view = app.main_screen.query_one("#main-log", LogView)
        await until(pilot, lambda: view.line_count > 0 and view.watching, what="the main log")
        lines = view.line_count
        table = app.main_screen.query_one(RankTable)
        await pilot.press("v")  # the selected rank and its neighbours, side by side
        await until(pilot, lambda: isinstance(app.screen, SplitScreen) and view.suspended, what="covered")
        pane = next(v for v in app.screen.query(LogView) if v.path == view.path)
        await until(pilot, lambda: pane.line_count == lines, what="the split view's pane on the same log")
        full_repaints = []
        render_full_update = Compositor.render_full_update
        Compositor.render_full_update = lambda self, *a, **k: full_repaints.append(1) or render_full_update(self, *a, **k)
        try:
            with open(view.path, "a") as f:
                f.write("I20251129 15:21:00.000000 12345 llm_engine.cpp:210] written under the split view\n")
            source.data["ranks"][0]["last_line"] = "a snapshot that came under the split view"
            await until(pilot, lambda: pane.line_count == lines + 1, what="the line read by the split view's pane")
            await until(pilot, lambda: app.snapshot["ranks"][0]["last_line"].startswith("a snapshot that came"),
                        what="the snapshot received")
            assert view.line_count == lines and view.suspended  # the covered log was not read
            assert "a snapshot that came" not in table._rendered[0][-1]  # nor the snapshot drawn under it
            assert full_repaints == []
        finally:
            Compositor.render_full_update = render_full_update
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))
        await until(pilot, lambda: view.line_count == lines + 1 and not view.suspended, what="the main log caught up")
        assert any("a snapshot that came" in str(cell) for cell in table._rendered[0])


async def test_another_tab_stops_the_log_following_and_it_catches_up_when_shown(source):
    """The events, toggles, timeline or devices tab hides the log: a flooding rank's log was still read behind
    it. Back on the log tab, what was written meanwhile is read at once."""
    from xllm_tui.ui.widgets.log_view import LogView

    app = make_app(source, poll_interval=0.2)
    applied = []
    apply_snapshot = app._apply_snapshot
    app._apply_snapshot = lambda snapshot: applied.append(1) or apply_snapshot(snapshot)
    async with app.run_test(size=(160, 48)) as pilot:
        view = app.main_screen.query_one("#main-log", LogView)
        await until(pilot, lambda: view.line_count > 0 and view.watching, what="the main log")
        lines = view.line_count
        await pilot.press("e")
        await until(pilot, lambda: view.suspended, what="the log hidden by the events tab")
        with open(view.path, "a") as f:
            f.write("I20251129 15:21:00.000000 12345 llm_engine.cpp:210] written behind the events tab\n")
        applied.clear()
        # Several snapshot polls: a followed log would have read the line long before (its wake gap is 0.2 s).
        await until(pilot, lambda: len(applied) >= 4, 20, "four more snapshots applied")
        assert view.line_count == lines and view.suspended
        await pilot.press("T")  # from one hidden tab to another: still not read
        await until(pilot, lambda: app.main_screen.query_one(TabbedContent).active == "tab-timeline")
        assert view.suspended
        await pilot.press("l")
        await until(pilot, lambda: view.line_count == lines + 1 and not view.suspended, what="the log caught up")


async def test_ranks_selected_behind_another_tab_open_no_log_until_it_shows(source):
    """j/k in the rank table while the events tab hides the log: each rank's tail was opened and read on the UI
    loop for a pane nobody saw. The last rank selected is opened when the log tab shows again."""
    from xllm_tui.ui.widgets.log_view import LogView

    app = make_app(source)
    async with app.run_test(size=(160, 48)) as pilot:
        view = app.main_screen.query_one("#main-log", LogView)
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: view.line_count > 0 and view.path.endswith("node_0.log"), what="rank 0's log")
        opened = view.log_file
        await pilot.press("e")
        await until(pilot, lambda: view.suspended, what="the log hidden by the events tab")
        table.focus()
        await pilot.press("j", "j")
        await until(pilot, lambda: table.selected_rank == 2, what="rank 2 selected")
        assert view.log_file is opened and view.path.endswith("node_0.log")
        await pilot.press("l")
        await until(pilot, lambda: not view.suspended and view.path.endswith("node_2.log") and view.line_count > 0,
                    what="rank 2's log once shown")


async def test_a_rank_whose_log_was_deleted_shows_what_it_still_writes(source, tmp_path):
    """logs/ cleared while the ranks run (to make room): selecting a rank showed no log at all, though it writes on
    into its deleted file. The view reads that file through the rank's stdout, and its title says so."""
    from conftest import say, start_writer
    from xllm_tui.ui.widgets.log_view import LogView

    log = tmp_path / "node_5.log"
    writer = start_writer(log)
    try:
        say(writer, "I20251129 15:21:00.000000 12345 a.cpp:1] before the log was deleted")
        log.unlink()
        say(writer, "I20251129 15:21:01.000000 12345 a.cpp:2] after the log was deleted")
        source.data["ranks"][5].update(pid=writer.pid, log_path=str(log))
        app = make_app(source, poll_interval=0.2)
        async with app.run_test(size=(160, 48)) as pilot:
            view = app.main_screen.query_one("#main-log", LogView)
            app.select_rank(5)
            await until(pilot, lambda: view.path == f"/proc/{writer.pid}/fd/1" and view.line_count == 2,
                        what="the deleted log read through the rank's stdout")
            assert "(deleted; read through /proc/" in screen_text(app)
            say(writer, "I20251129 15:21:02.000000 12345 a.cpp:3] and on")
            await until(pilot, lambda: view.line_count == 3, what="followed")
            # The rank exits (no pid in the snapshot): its last lines stay on screen, read from the open file.
            source.data["ranks"][5].update(pid=None, state="failed")
            await until(pilot, lambda: app.snapshot["ranks"][5]["pid"] is None, what="the exit in a snapshot")
            assert view.path == f"/proc/{writer.pid}/fd/1" and view.line_count == 3
    finally:
        writer.stdin.close()
        writer.wait(10)


async def test_a_dialog_over_the_split_view_still_leaves_the_main_screen_undrawn(source):
    """The help (or a search prompt) on top of the split view: the main screen is still hidden, and snapshots
    are not drawn on it (it looked only at the top screen)."""
    app = make_app(source, poll_interval=0.2)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, SplitScreen))
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        source.data["ranks"][0]["last_line"] = "a snapshot that came under the help over the split view"
        await until(pilot, lambda: app.snapshot["ranks"][0]["last_line"].startswith("a snapshot that came"),
                    what="the snapshot received")
        assert not any("a snapshot that came" in str(cell) for cell in table._rendered[0])


async def test_command_prompt_runs_commands(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"restart 3", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: source.actions)
        assert source.actions == [("restart", {"ranks": [3]})]
        await pilot.press("colon", *"toggle debug-logs on", "enter")
        await until(pilot, lambda: len(source.actions) == 2)
        assert source.actions[1] == ("toggle", {"group": "debug-logs", "on": True})
        await pilot.press("colon", *"frobnicate", "enter")
        await until(pilot, lambda: any("unknown command" in n.message for n in app._notifications))


async def run_from_palette(pilot, app, query: str) -> None:
    """Type `query` in the command palette and press Enter once the palette highlights a command saying it
    (its search runs in the background: Enter before the results would pick nothing, or an older result)."""
    from textual.command import CommandList, CommandPalette

    def offered() -> bool:
        if not isinstance(app.screen, CommandPalette):
            return False
        results = app.screen.query_one(CommandList)
        index = results.highlighted
        return index is not None and query in str(results.get_option_at_index(index).prompt).lower()

    await pilot.press("ctrl+p", *query)
    await until(pilot, offered, what=f"the palette offering {query!r}")
    await pilot.press("enter")


async def test_command_palette_offers_every_action(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await run_from_palette(pilot, app, "restart the failed")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="palette ran restart-failed")
        assert "Restart the failed ranks (3)" in str(app.screen.query_one("#confirm-title").render())
        await pilot.press("n")
        await run_from_palette(pilot, app, "toggle profiling on")
        await until(pilot, lambda: source.actions, what="toggle from the palette")
        assert source.actions == [("toggle", {"group": "profiling", "on": True})]
        await run_from_palette(pilot, app, "stop rank 5")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation for rank 5")
        assert "Stop rank 5" in str(app.screen.query_one("#confirm-title").render())


async def test_user_keymap_rebinds_an_action(source, tmp_path, monkeypatch):
    config = tmp_path / "xdg-config" / "xllm-tui"
    config.mkdir(parents=True)
    (config / "keymap.toml").write_text('"main.restart-rank" = "x"\n"main.nonsense" = "z"\n')
    app = make_app(source, user_config=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: any("unknown binding id" in n.message for n in app._notifications))
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Restart rank 0" in str(app.screen.query_one("#confirm-title").render())


def test_keymap_file_errors_are_reported(tmp_path):
    bad = tmp_path / "keymap.toml"
    bad.write_text("this is = = not toml")
    keymap, problems = load_keymap(bad)
    assert keymap == {} and "cannot read the keymap" in problems[0]
    good = tmp_path / "keymap.yaml"
    good.write_text("keymap:\n  main.stop-rank: x\n  app.help: 5\n")
    keymap, problems = load_keymap(good)
    assert keymap == {"main.stop-rank": "x"} and "keys must be a string" in problems[0]


def profile_read(app) -> bool:
    """No read of the profile (a _load_profile worker) is under way."""
    return not any(w.group in ("profile", "profile-toggles") and w.is_running for w in app.workers)


@contextlib.asynccontextmanager
async def profile_planned(source, tmp_path, watch_profile: bool):
    """The app on a copy of profiles/a3-8card.yaml, its plan made: yields (app, pilot, profile, change banner)."""
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO / "profiles", profiles)
    profile = profiles / "a3-8card.yaml"
    app = make_app(source, profile_path=str(profile), simulate=True, watch_profile=watch_profile)
    async with app.run_test(size=(120, 40)) as pilot:
        # Planned, and planned again with the first snapshot's toggles if they differ (that re-plan reads the
        # file: on a loaded machine it came after a test's edit and took the edit as the baseline).
        await until(pilot, lambda: app.profile_plan is not None and app.snapshot is not None and profile_read(app),
                    what="profile planned")
        yield app, pilot, profile, app.main_screen.query_one("#profile-banner", Static)


async def test_profile_edit_is_validated_and_shows_the_change(source, tmp_path):
    async with profile_planned(source, tmp_path, watch_profile=False) as (app, pilot, profile, banner):
        original = profile.read_text()
        profile.write_text(original.replace("max_memory_utilization: 0.86", "max_memory_utilization: 0.9"))
        app._load_profile()
        await until(pilot, lambda: banner.has_class("visible"), what="change banner")
        assert "a relaunch would change ranks 0-7" in str(banner.render())
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, TextScreen))
        body = str(app.screen.query_one("#text-body", Static).render())
        assert "--max_memory_utilization=0.9" in body and "--max_memory_utilization=0.86" in body
        await pilot.press("escape")
        profile.write_text(original.replace("machines:", "machines: [oops\nbroken:"))
        app._load_profile()
        await until(pilot, lambda: banner.has_class("error"), what="error banner")
        assert "Profile error" in str(banner.render()) and "a3-8card.yaml:" in str(banner.render())
        assert source.actions == []  # an edit is never applied by itself
        await pilot.press("ctrl+r")  # a broken profile is not sent to the supervisor
        await until(pilot, lambda: any("has errors" in n.message for n in app._notifications))
        assert source.actions == []
        profile.write_text(original.replace("max_memory_utilization: 0.86", "max_memory_utilization: 0.9"))
        app._load_profile()
        await until(pilot, lambda: not banner.has_class("error"), what="valid again")
        await pilot.press("ctrl+r")  # the operator loads it: the supervisor uses it from the next launch
        await until(pilot, lambda: source.actions, what="reload request")
        assert source.actions == [("reload", {})]
        await until(pilot, lambda: "loaded into the supervisor" in str(banner.render()))
        profile.write_text(original)  # back to 0.86: a change against what the supervisor now launches
        app._load_profile()
        await until(pilot, lambda: "a relaunch would change ranks 0-7" in str(banner.render()), what="the edit back")


def edited(profile) -> str:
    """The profile's text with max_seqs_per_batch edited (saved again and again, it still differs from the
    profile at start: the banner compares with that, see the next test)."""
    return profile.read_text().replace("max_seqs_per_batch: 256", "max_seqs_per_batch: 128")


async def save_until_noticed(pilot, banner, save: Callable[[], None]) -> None:
    """save() every 0.5 s until the change banner shows (bounded): the watcher may start after the first save."""
    deadline = time.monotonic() + 20
    while not banner.has_class("visible"):
        assert time.monotonic() < deadline, "the profile edit was not noticed"
        save()
        await pilot.pause(0.5)


async def test_profile_edits_are_compared_with_the_profile_at_start(source, tmp_path):
    """The same edit read twice (a save whose events came in two reads, or saved again) still shows what a
    relaunch would change; an edit undone shows that nothing changes."""
    async with profile_planned(source, tmp_path, watch_profile=False) as (app, pilot, profile, banner):
        original = profile.read_text()
        profile.write_text(edited(profile))
        for _ in range(2):
            app._load_profile()
            await until(pilot, lambda: banner.has_class("visible") and "change" in str(banner.render()),
                        what="change banner")
            await until(pilot, lambda: profile_read(app), what="the profile read")
            assert "a relaunch would change ranks 0-7" in str(banner.render())
        profile.write_text(original)
        app._load_profile()
        await until(pilot, lambda: "no rank's launch changes" in str(banner.render()), what="the undo noticed")


async def test_a_toggle_keeps_an_edit_not_yet_loaded_out_of_the_baseline(source, tmp_path):
    """A toggle switched while the profile has an edit not loaded (ctrl+r): both are planned again with the
    toggle, each from its own text. The toggle's re-plan used to read the file, so the edit became the
    baseline: the banner's diff went stale and an undo of the edit showed as a change."""
    async with profile_planned(source, tmp_path, watch_profile=False) as (app, pilot, profile, banner):
        original = profile.read_text()
        profile.write_text(edited(profile))
        app._load_profile()
        await until(pilot, lambda: "a relaunch would change ranks 0-7" in str(banner.render()), what="the edit")
        baseline = app.profile_baseline
        profiling = next(t for t in source.data["toggles"] if t["name"] == "profiling")
        profiling["enabled"] = not profiling["enabled"]
        app.refresh_now()
        await until(pilot, lambda: app.profile_baseline is not baseline and profile_read(app), what="re-planned")
        assert app.profile_baseline.text == original
        assert app.profile_baseline.toggles["profiling"] == profiling["enabled"] == app.profile_plan.toggles["profiling"]
        assert "a relaunch would change ranks 0-7" in str(banner.render())
        assert "PROFILING_MODE" not in "\n".join(app.profile_change[1])  # the toggle is in both: not a change
        assert "max_seqs_per_batch" in "\n".join(app.profile_change[1])
        profile.write_text(original)  # the edit undone: nothing changes against what the supervisor launches
        app._load_profile()
        await until(pilot, lambda: "no rank's launch changes" in str(banner.render()), what="the undo noticed")


async def test_profile_file_is_watched(source, tmp_path):
    async with profile_planned(source, tmp_path, watch_profile=True) as (app, pilot, profile, banner):
        text = edited(profile)
        await save_until_noticed(pilot, banner, lambda: profile.write_text(text))
        assert "a relaunch would change ranks 0-7" in str(banner.render())
        assert source.actions == []


async def test_profile_file_is_watched_by_inotify_without_a_polling_thread(source, tmp_path, monkeypatch):
    import watchfiles

    def no_polling(*args, **kwargs):
        raise AssertionError("watchfiles polls: its thread wakes twice a second")

    monkeypatch.setattr(watchfiles, "awatch", no_polling)
    async with profile_planned(source, tmp_path, watch_profile=True) as (app, pilot, profile, banner):
        text = edited(profile)

        def editors_save() -> None:  # a new file renamed over the profile
            swap = profile.parent / ".a3-8card.yaml.swp"
            swap.write_text(text)
            os.rename(swap, profile)

        await save_until_noticed(pilot, banner, editors_save)
        assert "a relaunch would change ranks 0-7" in str(banner.render())


async def test_switching_ranks_does_not_lay_the_screen_out(source):
    """The log pane's title has a fixed height: a new title repaints it, it does not reflow the whole screen."""
    from xllm_tui.ui.widgets.rank_log import RankLog

    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.main_screen.query_one(RankLog)
        await until(pilot, lambda: pane.rank == 0, what="rank 0 shown")
        title = pane.query_one(".rank-log-title", Static)
        layouts = record_layouts(title)
        await pilot.press("down")
        await until(pilot, lambda: pane.rank == 1 and " rank 1 " in str(title.render()), what="rank 1 shown")
        assert layouts == []


async def test_quit_leaves_everything_running(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert source.actions == []  # no stop, no shutdown: q only closes the TUI


async def test_shutdown_confirms_then_stops_everything_and_quits(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "supervisor exits" in str(app.screen.query_one("#confirm-body", Static).render())
        await pilot.press("y")
        await until(pilot, lambda: source.actions)
    assert source.actions == [("shutdown", {"stop_ranks": True})]


async def test_a_malformed_snapshot_is_reported_not_fatal(source, monkeypatch):
    monkeypatch.setattr("xllm_tui.ui.app.RETRY_S", 0.05)
    app = make_app(source, poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8)
        source.data["ranks"][2] = {"rank": "not a number", "state": None}
        app.refresh_now()
        await until(pilot, lambda: any("unexpected error" == n.title for n in app._notifications), what="report")
        source.data = demo_snapshot(Path(source.data["ranks"][0]["log_path"]).parent)
        await until(pilot, lambda: [r["rank"] for r in (app.snapshot or {}).get("ranks") or []] == list(range(8)),
                    what="a good snapshot shown again")
        assert app.is_running and table.row_count == 8


async def test_a_long_journal_shows_its_recent_part(tmp_path, monkeypatch):
    monkeypatch.setattr("xllm_tui.ui.app.EVENT_BACKLOG", 5)
    data = demo_snapshot(tmp_path / "logs")
    data["events"] = [{"seq": i, "ts": 1764430000.0 + i, "kind": "supervisor", "rank": None, "reason": f"event {i}"}
                      for i in range(1, 21)]
    app = make_app(StaticSource(data))
    async with app.run_test(size=(120, 40)) as pilot:
        pane = app.main_screen.query_one("#events")
        await until(pilot, lambda: pane.last_seq == 20, what="events up to 20")
        assert pane.count == 5  # events 16..20
        await pilot.press("e")
        await until(pilot, lambda: "15 earlier events" in screen_text(app), what="the events pane")
        text = screen_text(app)
        assert "15 earlier events" in text and "event 16" in text and "event 15\n" not in text


async def test_toggles_work_from_the_keyboard_alone(source):
    app = make_app(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("t")  # the toggles tab, focus on the first switch
        await until(pilot, lambda: isinstance(app.focused, Switch), what="a focused switch")
        assert app.focused.id == "toggle-determinism"
        await pilot.press("space")  # determinism is on in the demo: switch it off
        await until(pilot, lambda: source.actions)
        assert source.actions == [("toggle", {"group": "determinism", "on": False})]
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.focused, RankTable), what="back on the rank table")


async def test_an_idle_app_writes_nothing_to_the_terminal(source):
    """Frozen deployment, nothing changes: after the first paint no screen update may be sent (each one is
    output over SSH). Headless Textual does not render, so the updates handed to the driver are counted."""
    from textual._compositor import CompositorUpdate

    app = make_app(source)
    updates = []
    original = app._display

    def display(screen, renderable):
        if isinstance(renderable, CompositorUpdate):
            updates.append(len(renderable.render_segments(app.console)))
        return original(screen, renderable)

    app._display = display
    applied = []
    apply_snapshot = app._apply_snapshot
    app._apply_snapshot = lambda snapshot: applied.append(1) or apply_snapshot(snapshot)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8, what="8 rank rows")
        await until(pilot, lambda: app.main_screen.query_one("#rank-log").query_one("LogView").line_count > 0,
                    what="the log")
        # The start-up settles (the log's older part is indexed, widths measured: longer on a loaded machine)
        await until_quiet(pilot, updates, 0.5)
        # Then several snapshots applied (a frozen source has no clock ticks), each of which could have drawn
        applied.clear()
        await until(pilot, lambda: len(applied) >= 2, 20, "two more snapshots applied")
        assert updates == []
        await pilot.press("down")  # a real change is drawn
        await until(pilot, lambda: updates, what="an update after a key")


@pytest.mark.parametrize("width", [80, 100, 120, 160])
async def test_rank_table_columns_fit_the_width(source, width):
    """No sliver of a column: the last log line gets a readable width or is left out; narrow terminals
    drop machine, cores, memory first; the state column is never dropped."""
    from xllm_tui.ui.widgets.rank_table import MIN_LAST

    app = make_app(source)
    async with app.run_test(size=(width, 30)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8, what="8 rank rows")
        shown = table.shown_columns
        assert {"mark", "rank", "state", "pid"} <= set(shown)
        if "last" in shown:
            last = table.columns[next(k for k in table.columns if k.value == "last")]
            assert last.content_width >= MIN_LAST
        total = sum(c.get_render_width(table) for c in table.columns.values())
        assert total <= width
        if width >= 160:
            assert "machine" in shown and "last" in shown
        if width == 80:
            assert "machine" not in shown and "cores" not in shown
        status = str(app.main_screen.query_one("#status", Static).render())
        assert "first failure: rank 3 hccl_error" in status[:width]  # the essentials fit the width


async def test_restart_failed_says_the_whole_world_restarts(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("F")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        title = str(app.screen.query_one("#confirm-title").render())
        body = str(app.screen.query_one("#confirm-body", Static).render())
        assert "all 8 ranks" in title
        assert "Rank 3 failed; xllm ranks cannot rejoin a running world: restarting all 8 ranks" in body
        await pilot.press("y")
        await until(pilot, lambda: source.actions)
        assert source.actions == [("restart", {"ranks": "failed"})]
        await until(pilot, lambda: any("restarting all 8 ranks" in n.message for n in app._notifications),
                    what="the explanation as a notification")


async def test_restart_one_rank_only_from_the_prompt(source):
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("colon", *"restart 3 only", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "alone" in str(app.screen.query_one("#confirm-title").render())
        await pilot.press("y")
        await until(pilot, lambda: source.actions)
        assert source.actions == [("restart", {"ranks": [3], "only": True})]


class RunningClockSource(StaticSource):
    """A live-like deployment: snapshots change only when the test changes them; the clock is the test's."""

    frozen = False

    def __init__(self, data, clock: float):
        super().__init__(data)
        self.clock = clock
        self.served = 0  # snapshots handed to the app

    async def snapshot(self) -> dict:
        self.served += 1
        return await super().snapshot()

    def now(self) -> float:
        return self.clock


def uptime_cell(table: RankTable, rank: int) -> str:
    return str(table.get_cell(str(rank), "uptime"))


async def test_idle_screen_redraws_only_what_the_clock_changes(tmp_path):
    """Unchanged snapshots draw nothing; uptimes (whole minutes for ready ranks, seconds for a starting one)
    move with the clock between snapshots, cell by cell; a changed snapshot is drawn."""
    from textual._compositor import CompositorUpdate

    data = demo_snapshot(tmp_path / "logs")
    now = float(data["time"])
    ranks = {r["rank"]: r for r in data["ranks"]}
    ranks[0].update(state="ready", pid=ranks[0].get("pid") or 4242, started_at=now - 30)
    ranks[1].update(state="loading", pid=ranks[1].get("pid") or 4243, started_at=now - 30, progress=[3, 48])
    source = RunningClockSource(data, now)
    app = make_app(source, poll_interval=0.05)
    updates = []
    original = app._display

    def display(screen, renderable):
        if isinstance(renderable, CompositorUpdate):
            updates.append(renderable.render_segments(app.console))
        return original(screen, renderable)

    app._display = display
    ticks = []
    tick = app._tick
    app._tick = lambda: (ticks.append(source.clock), tick())[-1]
    async with app.run_test(size=(160, 40)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8, what="8 rank rows")
        assert (uptime_cell(table, 0), uptime_cell(table, 1)) == ("<1m", "30s")
        await until_quiet(pilot, updates, 0.3)  # first paint, the log read
        served, ticked = source.served, len(ticks)
        # Unchanged snapshots come every QUIET_POLL_S once nothing moves; the clock ticks each second (rank 1's
        # uptime shows seconds).
        await until(pilot, lambda: source.served >= served + 1 and len(ticks) >= ticked + 2,
                    what="an unchanged snapshot and two ticks at the same clock")
        assert updates == []
        source.clock += 45  # no new snapshot: the tick moves the uptimes
        await until(pilot, lambda: (uptime_cell(table, 0), uptime_cell(table, 1)) == ("1m", "1m"), what="uptimes")
        await until(pilot, lambda: any("1m" in u for u in updates), what="the uptimes drawn")
        assert " 1m " in screen_text(app)
        source.data["ranks"][2]["last_line"] = "I20261130 10:00:00.000000 1 x.cc:1] a new line from rank 2"
        await until(pilot, lambda: "a new line from rank 2" in screen_text(app), what="the changed snapshot")


def test_the_clock_ticks_each_second_only_while_seconds_show():
    from xllm_tui.ui.app import MAX_TICK_S, next_clock_change

    ready = {"rank": 0, "pid": 10, "state": "ready", "started_at": 1000.0}
    starting = {"rank": 1, "pid": 11, "state": "starting", "started_at": 1000.0}
    stopped = {"rank": 2, "pid": None, "state": "stopped", "started_at": 0}
    assert next_clock_change(None, 0) == 1.0
    # Idle ready ranks: the next whole minute of the uptime shown ("<1m" -> "1m", "5m" -> "6m"), not every second.
    assert next_clock_change({"ranks": [ready, stopped]}, 1030.0) == pytest.approx(30.05)
    assert next_clock_change({"ranks": [ready]}, 1000.0 + 5 * 3600 + 59.5) == pytest.approx(0.55)
    assert next_clock_change({"ranks": [stopped]}, 1030.0) == MAX_TICK_S
    # Seconds show: a rank starting up in its first minute, or the group's restart countdown.
    assert next_clock_change({"ranks": [ready, starting]}, 1030.0) == 1.0
    assert next_clock_change({"ranks": [ready], "group": {"next_restart_at": 1040.0}}, 1030.0) == 1.0


class LiveStaticSource(StaticSource):
    """The frozen snapshot, but the app runs its timers as for a live supervisor."""

    frozen = False


async def test_an_idle_tui_ticks_once_a_minute_not_once_a_second(tmp_path):
    snapshot = demo_snapshot(tmp_path / "logs")
    snapshot["group"].pop("next_restart_at", None)
    now = snapshot["time"]
    for rank in snapshot["ranks"]:
        rank.update(state="ready", pid=1000 + int(rank["rank"]), started_at=now - 3600 - 10)

    app = make_app(LiveStaticSource(snapshot))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app._tick_timer is not None, what="a snapshot")
        assert app._tick_timer._interval == pytest.approx(50.05, abs=0.5)  # the next whole minute of uptimes


async def test_the_devices_are_read_again_only_while_their_tab_is_shown(tmp_path):
    """The 5 s devices timer is paused unless the Devices tab is open: an idle TUI has no wake-up for it."""
    from textual.widgets import TabbedContent

    app = make_app(LiveStaticSource(demo_snapshot(tmp_path / "logs")))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app._devices_timer is not None, what="the devices timer")
        assert app._devices_timer._active.is_set() is False  # paused: the Log tab is shown
        tabs = app.main_screen.query_one(TabbedContent)
        tabs.active = "tab-devices"
        await until(pilot, lambda: app._devices_timer._active.is_set(), what="the timer running on the Devices tab")
        tabs.active = "tab-log"
        await until(pilot, lambda: not app._devices_timer._active.is_set(), what="the timer paused again")


@pytest.mark.parametrize("theme", ["xllm-dark", "xllm-high-contrast"])
async def test_rank_rows_render_as_the_data_table_would(source, theme, monkeypatch):
    """RankTable renders its body rows straight to segments (no Rich render per cell): every row, with the
    cursor and the hover cursor anywhere, is what DataTable's own path gives, segment for segment."""
    from itertools import chain

    from textual.coordinate import Coordinate
    from textual.strip import Strip
    from textual.widgets import DataTable

    def flat(pair) -> list:
        fixed, scrollable = pair
        return list(Strip(list(chain.from_iterable(fixed)) + list(chain.from_iterable(scrollable))).simplify())

    app = make_app(source, theme=theme)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8, what="8 rank rows")
        rows = list(table.rows)
        delegated = []
        data_table_path = DataTable._render_line_in_row
        monkeypatch.setattr(DataTable, "_render_line_in_row",
                            lambda self, *args: delegated.append(args[0]) or data_table_path(self, *args))
        compared = 0
        for cursor in range(len(rows)):
            for hover in (Coordinate(-1, 0), Coordinate(cursor, 0), Coordinate((cursor + 1) % len(rows), 2)):
                for show_hover in (False, True):
                    table._show_hover_cursor = show_hover
                    for key in rows:
                        args = (key, 0, table.rich_style, Coordinate(cursor, 0), hover)
                        ours = flat(table._render_line_in_row(*args))
                        assert delegated == [], "a body row went through DataTable's path"
                        assert ours == flat(data_table_path(table, *args)), (key, cursor, hover, show_hover)
                        compared += 1
        assert compared == 8 * 8 * 3 * 2


async def test_loading_and_busy_figures_do_not_rebuild_the_rank_table(source):
    """cpu and mem grow from "-" to "100%" and "12.3G" as ranks load and work: their room is kept from the start,
    so the table is not rebuilt and laid out again for each wider figure (18 ms at 16 ranks, under a flood)."""
    app = make_app(source)
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: table.row_count == 8, what="8 rank rows")
        rebuilds = []
        rebuild = table._rebuild
        table._rebuild = lambda *args: rebuilds.append(args) or rebuild(*args)
        ranks = [dict(r) for r in app.snapshot["ranks"]]
        for cpu, rss in ((7, 24.2 * 2**20), (97, 1.2 * 2**30), (100, 12.3 * 2**30)):
            for rank in ranks:
                rank.update(cpu_pct=cpu, rss_bytes=rss)
            table.update_ranks(ranks, table._first_failure, table._now, table._failing)
        assert rebuilds == []
        assert str(table.get_cell("0", "cpu")) == "100%" and str(table.get_cell("0", "mem")) == "12.3G"


async def test_an_open_rank_detail_shows_the_next_launch_planned_again_for_a_toggle(source, tmp_path):
    """The detail page's next launch is the profile's plan: a toggle switched while the page is open shows
    there once the plan is made again with it. The page was redrawn by the toggle's snapshot, before the
    re-plan finished, and kept the launch without the toggle."""
    async with profile_planned(source, tmp_path, watch_profile=False) as (app, pilot, profile, banner):
        source._process_info[0] = {"env": {}, "argv": list(app.next_launch(0)["argv"])}
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, RankDetailScreen) and app.screen.loaded, what="detail")
        detail = app.screen.query_one("#detail-body", Static)
        assert "PROFILING_MODE" not in str(detail.render())
        profiling = next(t for t in source.data["toggles"] if t["name"] == "profiling")
        profiling["enabled"] = True
        app.refresh_now()
        await until(pilot, lambda: app.profile_plan.toggles.get("profiling") and profile_read(app),
                    what="re-planned with profiling on")
        assert "PROFILING_MODE" in app.next_launch(0)["env"]
        assert "PROFILING_MODE=dynamic" in str(detail.render())
