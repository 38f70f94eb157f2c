"""LogView in a tiny app: tail, follow, pause with a new-lines count, search, filter, first error, switching."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Size

from conftest import record_layouts, until, until_quiet
from xllm_tui.ui.widgets.log_view import LogView

TIMEOUT = 15.0


def glog_line(i: int, sev: str = "I", text: str | None = None) -> str:
    return f"{sev}20251129 15:20:{i % 60:02d}.123456 12345 llm_engine.cpp:210] {text or f'message {i}'}"


def write_lines(path, lines, mode="a") -> None:
    with open(path, mode) as f:
        f.write("".join(line + "\n" for line in lines))


class LogApp(App):
    def __init__(self, path, **kwargs) -> None:
        super().__init__()
        self.path = path
        self.messages: list = []
        self.kwargs = kwargs

    def compose(self) -> ComposeResult:
        yield LogView(self.path, id="log", poll_interval=0.05, **self.kwargs)

    def on_mount(self) -> None:
        self.query_one(LogView).focus()

    def on_log_view_search_result(self, message: LogView.SearchResult) -> None:
        self.messages.append(message)

    def on_log_view_file_reset(self, message: LogView.FileReset) -> None:
        self.messages.append(message)

    def on_log_view_search_requested(self, message: LogView.SearchRequested) -> None:
        self.messages.append(message)


def visible(view: LogView) -> list[str]:
    height = view.scrollable_content_region.height
    return [view.render_line(y).text.rstrip() for y in range(height)]


async def wait_for(pilot, condition, what: str):
    return await until(pilot, condition, TIMEOUT, what)


@contextlib.asynccontextmanager
async def tail_shown(path, lines: int = 300, app_class: type[App] | None = None, size=(100, 24)):
    """A LogView on a log of `lines` glog lines, its last line on screen: yields (app, pilot, view)."""
    write_lines(path, [glog_line(i) for i in range(lines)], "w")
    app = (app_class or LogApp)(path)
    async with app.run_test(size=size) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: visible(view)[-1].endswith(f"message {lines - 1}"), "the tail")
        yield app, pilot, view


async def append_shown(pilot, view: LogView, path, first: int, last: int, what: str = "the appended lines") -> None:
    """Append glog lines first..last and wait until the last is the view's last line on screen."""
    write_lines(path, [glog_line(i) for i in range(first, last + 1)])
    await wait_for(pilot, lambda: visible(view)[-1].endswith(f"message {last}"), what)


async def test_shows_tail_then_follows_appended_lines(tmp_path):
    path = tmp_path / "node_0.log"
    async with tail_shown(path) as (app, pilot, view):
        assert view.line_count == 300
        assert "message 298" in visible(view)[-2]
        await append_shown(pilot, view, path, 300, 304)
        assert view.new_lines == 0 and not view.paused
        assert "follow" in str(view.border_title)


async def test_pauses_when_scrolled_up_and_counts_new_lines(tmp_path):
    path = tmp_path / "node_1.log"
    async with tail_shown(path) as (app, pilot, view):
        await pilot.press("pageup")
        await wait_for(pilot, lambda: view.paused, "follow to pause")
        shown = visible(view)
        write_lines(path, [glog_line(i) for i in range(300, 307)])
        await wait_for(pilot, lambda: view.new_lines == 7, "7 new lines to be counted")
        assert "+7 new lines" in view.status_text
        assert visible(view) == shown  # the view did not move
        await pilot.press("G")
        await wait_for(pilot, lambda: visible(view)[-1].endswith("message 306"), "the bottom")
        assert view.new_lines == 0 and view.status_text == ""
        await append_shown(pilot, view, path, 307, 307, "following again")


async def test_search_next_and_previous(tmp_path):
    path = tmp_path / "node_2.log"
    lines = [glog_line(i, text=("needle here" if i in (40, 120, 250) else None)) for i in range(300)]
    write_lines(path, lines, "w")
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 300, "the file")
        await pilot.press("slash")
        await wait_for(pilot, lambda: any(isinstance(m, LogView.SearchRequested) for m in app.messages), "request")
        view.set_search("NEEDLE")
        await pilot.press("g")  # from the top
        await pilot.press("n")
        await wait_for(pilot, lambda: view.current_line == 40, "first match")
        assert any("needle here" in row for row in visible(view))
        await pilot.press("n")
        await wait_for(pilot, lambda: view.current_line == 120, "second match")
        await pilot.press("n")
        await wait_for(pilot, lambda: view.current_line == 250, "third match")
        await pilot.press("N")
        await wait_for(pilot, lambda: view.current_line == 120, "back to the second match")
        assert "needle here" in " ".join(visible(view))
        results = [m for m in app.messages if isinstance(m, LogView.SearchResult)]
        assert [m.line for m in results] == [40, 120, 250, 120]
        await pilot.press("n")
        await wait_for(pilot, lambda: view.current_line == 250, "the last match")
        await pilot.press("n")  # past the last match: wraps to the first, and says so
        await wait_for(pilot, lambda: view.current_line == 40, "the search to wrap to the top")
        assert "search wrapped to the top" in str(view.border_title)
        assert app.messages[-1].wrapped == "search wrapped to the top"
        await pilot.press("N")  # before the first match: wraps to the last
        await wait_for(pilot, lambda: view.current_line == 250, "the search to wrap to the bottom")
        assert "search wrapped to the bottom" in str(view.border_title)
        await pilot.press("N")
        await wait_for(pilot, lambda: view.current_line == 120, "the previous match")
        assert "wrapped" not in str(view.border_title)
        view.set_search("no such text")
        await pilot.press("n")
        await wait_for(pilot, lambda: not app.messages[-1].found, "a not-found result")
        assert view.current_line == 120  # stays where it was


@pytest.mark.parametrize("wake", ["poll timer", "inotify"])
async def test_an_idle_view_does_not_repaint(tmp_path, monkeypatch, wake):
    """Nothing new in the file: the view's wake-ups (its poll timer without inotify; with inotify, the events of
    a writer opening and closing the file) must not repaint (each repaint is output over SSH)."""
    import xllm_tui.ui.widgets.log_view as log_view_module

    if wake == "poll timer":
        def no_inotify(path):
            raise OSError(38, "inotify not available")

        monkeypatch.setattr(log_view_module, "FileWatch", no_inotify)
    path = tmp_path / "node_3.log"
    async with tail_shown(path) as (app, pilot, view):
        assert view.polling_by_timer == (wake == "poll timer")
        repaints, looks = [], []
        original = view.refresh

        def counting_refresh(*args, **kwargs):
            repaints.append(args)
            return original(*args, **kwargs)

        view.refresh = counting_refresh
        log_file = view.log_file
        unchanged = log_file.unchanged_since_poll
        log_file.unchanged_since_poll = lambda: looks.append(1) or unchanged()
        await until_quiet(pilot, repaints, 0.2)  # the first frames drawn (the rows' width measured)
        looks.clear()
        while len(looks) < 5:  # five looks at the unchanged file (bounded by wait_for below)
            if wake == "inotify":
                open(path, "a").close()  # IN_CLOSE_WRITE, no new byte
            await wait_for(pilot, lambda n=len(looks): len(looks) > n, "the view looking at its file")
        assert repaints == []
        write_lines(path, [glog_line(300)])
        await wait_for(pilot, lambda: repaints, "a repaint once a line is appended")


async def test_errors_only_filter_and_first_error(tmp_path):
    path = tmp_path / "node_3.log"
    severities = {50: "W", 90: "E", 150: "W", 200: "F"}
    lines = [glog_line(i, severities.get(i, "I")) for i in range(300)]
    lines.append("ERROR: unknown command line flag 'enable_graph'")
    write_lines(path, lines, "w")
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 301, "the file")
        await pilot.press("E")  # warnings and errors
        await wait_for(pilot, lambda: view.row_count == 5, "the warnings/errors filter")
        rows = [row for row in visible(view) if row]
        assert [row.split()[-2:] for row in rows[:4]] == [["message", "50"], ["message", "90"],
                                                         ["message", "150"], ["message", "200"]]
        assert rows[4].startswith("ERROR: unknown command line flag")
        await pilot.press("E")  # errors only
        await wait_for(pilot, lambda: view.filter_level == "error" and view.row_count == 3, "the errors filter")
        await pilot.press("E")  # everything again
        await wait_for(pilot, lambda: view.row_count == 301, "no filter")
        await pilot.press("e")
        await wait_for(pilot, lambda: view.current_line == 90, "the first error")
        assert any(row.endswith("message 90") for row in visible(view))
        await pilot.press("E", "w")  # filter and wrap keep the current line in view
        await wait_for(pilot, lambda: view.row_count == 5 and view.wrap, "filtered, wrapped")
        await wait_for(pilot, lambda: any(row.endswith("message 90") for row in visible(view)), "current line")


async def test_an_error_storm_filtered_shows_every_error_without_holding_their_offsets(tmp_path):
    """A rank failing every request: thousands of error lines at once, errors-only on. Every row is there, from
    the first error to the last, and search runs within them; the view keeps a count, not an offset a line."""
    path = tmp_path / "node_4.log"
    write_lines(path, [glog_line(i) for i in range(300)], "w")
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 300, "the file")
        await pilot.press("E", "E")
        await wait_for(pilot, lambda: view.filter_level == "error", "errors only")
        write_lines(path, [glog_line(i, "E", f"request {i} failed") for i in range(5000)])
        await wait_for(pilot, lambda: view.row_count == 5000 and visible(view)[-1].endswith("request 4999 failed"),
                       "the storm's last error")
        assert view._filter_offsets.held_bytes() < 8 * 5000 / 2
        await pilot.press("g")
        await wait_for(pilot, lambda: visible(view)[0].endswith("request 0 failed"), "the first error at the top")
        view.set_search("request 2500 ")
        await pilot.press("n")
        await wait_for(pilot, lambda: view.current_line == 300 + 2500, "the search within the filtered rows")
        assert view.filter_level == "error"
        assert any(row.endswith("request 2500 failed") for row in visible(view))


async def test_a_filter_that_matches_nothing_says_so(tmp_path):
    """A flood of info lines filtered to warnings: the pane says that none came yet (and which key goes on),
    instead of staying blank like a log that stopped; the first warning then replaces the message."""
    path = tmp_path / "node_0.log"
    async with tail_shown(path) as (app, pilot, view):
        view.focus()
        await pilot.press("E")
        await wait_for(pilot, lambda: visible(view)[0].startswith("no warnings or errors in 300 lines so far"),
                       "the no-match message")
        assert visible(view)[0].endswith("(E: errors only)") and not any(visible(view)[1:])
        await pilot.press("E")
        await wait_for(pilot, lambda: visible(view)[0].startswith("no errors in 300 lines so far"), "errors only")
        write_lines(path, [glog_line(300), glog_line(301, "E", text="the first error")])
        await wait_for(pilot, lambda: visible(view)[0].endswith("the first error"), "the first error, filtered")
        assert not any(visible(view)[1:])


async def test_set_path_switches_at_once_and_rotation_is_noticed(tmp_path):
    first = tmp_path / "node_4.log"
    second = tmp_path / "node_5.log"
    write_lines(first, [glog_line(i, text=f"first file {i}") for i in range(100)], "w")
    write_lines(second, [glog_line(i, text=f"second file {i}") for i in range(50)], "w")
    app = LogApp(first)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: visible(view)[-1].endswith("first file 99"), "the first file")
        view.set_path(second)
        assert view.line_count == 50  # synchronously: no waiting for a worker
        await wait_for(pilot, lambda: visible(view)[-1].endswith("second file 49"), "the second file")
        assert "node_5.log" in str(view.border_title)
        os.rename(second, str(second) + ".1")
        write_lines(second, [glog_line(0, text="after restart")], "w")
        await wait_for(pilot, lambda: visible(view)[0].endswith("after restart"), "the rotated file")
        assert visible(view)[1] == ""  # only the new file's line
        await wait_for(pilot, lambda: any(isinstance(m, LogView.FileReset) and m.reason == "rotated"
                                          for m in app.messages), "the FileReset message")
        view.set_path(None)
        assert view.line_count == 0


async def test_big_file_indexes_in_background_without_moving_the_view(tmp_path):
    path = tmp_path / "big.log"
    # ~3 MB: the view opens on the last megabyte, the worker indexes the rest backwards.
    write_lines(path, [glog_line(i, text=f"big {i} " + "z" * 80) for i in range(30_000)], "w")
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: "big 29999 " in visible(view)[-1], "the tail")
        await wait_for(pilot, lambda: view.index_complete, "the full index")
        assert view.line_count == 30_000
        # Prepending 22,000 lines kept the view on the tail (a scrollbar appearing may take a frame to settle).
        await wait_for(pilot, lambda: "big 29999 " in visible(view)[-1] and "big 29998 " in visible(view)[-2], "tail")
        await pilot.press("g")
        await wait_for(pilot, lambda: "big 0 " in visible(view)[0], "the first line")


async def test_wrap_shows_long_lines_on_several_rows(tmp_path):
    path = tmp_path / "wrap.log"
    long_text = "start " + "w" * 250 + " end"
    write_lines(path, [glog_line(i) for i in range(10)] + [glog_line(10, text=long_text)], "w")
    app = LogApp(path)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 11, "the file")
        assert not any(row.endswith(" end") for row in visible(view))  # cut at the right edge
        await pilot.press("w")
        await wait_for(pilot, lambda: view.wrap and any(row.endswith(" end") for row in visible(view)), "wrap")
        rows = [row for row in visible(view) if row]
        assert rows[-1].endswith(" end") and "message 9" in " ".join(rows)


def message_color(view: LogView, y: int):
    """Colour of the message part (after the glog prefix) of visible row y."""
    segments = [seg for seg in view.render_line(y) if seg.text.strip()]
    return segments[-1].style.color if segments else None


async def test_severity_colours_come_from_the_theme(tmp_path):
    path = tmp_path / "colours.log"
    write_lines(path, [glog_line(0, "I"), glog_line(1, "W"), glog_line(2, "E"), "Check failed: x > 0"], "w")
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 4, "the file")
        error_color = view.get_component_rich_style("log-view--error").color
        warning_color = view.get_component_rich_style("log-view--warning").color
        assert error_color != warning_color
        assert message_color(view, 1) == warning_color
        assert message_color(view, 2) == error_color
        assert message_color(view, 3) == view.get_component_rich_style("log-view--fatal").color
        prefix = [seg for seg in view.render_line(2) if seg.text.startswith("E2025")]
        assert prefix and prefix[0].style.color == view.get_component_rich_style("log-view--prefix").color
        app.theme = "nord"  # its error colour differs from the default theme's
        await wait_for(pilot, lambda: message_color(view, 2) != error_color, "the new theme's error colour")
        assert message_color(view, 2) == view.get_component_rich_style("log-view--error").color


async def test_follow_off_keeps_the_view_and_missing_file_appears_later(tmp_path):
    path = tmp_path / "later.log"
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        assert view.line_count == 0 and visible(view)[0] == ""
        write_lines(path, [glog_line(i) for i in range(100)], "w")
        await wait_for(pilot, lambda: visible(view)[-1].endswith("message 99"), "the file to appear")
        await pilot.press("f")
        assert not view.follow
        shown = visible(view)
        write_lines(path, [glog_line(i) for i in range(100, 110)])
        await wait_for(pilot, lambda: view.line_count == 110 and view.new_lines == 10, "lines counted, not shown")
        assert visible(view) == shown
        await pilot.press("f")
        await wait_for(pilot, lambda: visible(view)[-1].endswith("message 109"), "follow again")


async def test_unreadable_path_is_explained_not_raised(tmp_path):
    app = LogApp(tmp_path)  # a directory
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await pilot.pause()
        assert view.line_count == 0
        assert "not a regular file" in view.status_text


async def test_follows_a_file_flooded_by_megabytes_a_second_and_keys_still_work(tmp_path):
    """A rank logging at full speed (tens of MB/s): the view keeps up, raises nothing, and keys respond.

    Under such a flood the index used to give one block two counts and render_line died with
    IndexError in LogFile._newline within seconds.
    """
    import threading

    path = tmp_path / "node_0.log"
    write_lines(path, [glog_line(i) for i in range(100)], "w")
    line = (glog_line(0, text="x" * 67) + "\n").encode()
    total_writes = 2_000  # x 100 lines x 120 bytes = 24 MB
    app = LogApp(path)
    done = threading.Event()

    def writer() -> None:
        with open(path, "ab", buffering=0) as f:
            for _ in range(total_writes):
                f.write(line * 100)
            f.write((glog_line(1, text="the last line") + "\n").encode())
        done.set()

    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 100, "the first lines")
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            await wait_for(pilot, lambda: view.line_count > 1000, "the flood to arrive")
            await pilot.press("w")
            await wait_for(pilot, lambda: view.wrap, "the wrap key during the flood")
            await pilot.press("w")
            await wait_for(pilot, lambda: not view.wrap, "the wrap key again")
            await wait_for(pilot, lambda: done.is_set() and visible(view)[-1].endswith("the last line"),
                           "the last line on screen")
        finally:
            thread.join(60)
        # What the flood skipped is counted once the log is quiet: then every line has its number.
        await wait_for(pilot, lambda: view.index_complete, "the whole file indexed")
        assert view.line_count == 100 + 100 * total_writes + 1
        assert not view.paused and view.new_lines == 0


@pytest.fixture
def small_flood_skip(monkeypatch):
    """A view following the end skips appends over 64 KiB (4 MiB in the app): one write of a few MB is a flood."""
    from xllm_tui.ui.widgets import log_view

    monkeypatch.setattr(log_view, "FLOOD_SKIP_BYTES", 64 * 1024)


async def test_following_a_flood_skips_to_its_end_and_numbers_every_line_once_quiet(tmp_path, small_flood_skip,
                                                                                   monkeypatch):
    path = tmp_path / "node_0.log"
    flood = 20_000  # 2.4 MB in one write, far over the skip
    titles = []
    update_title = LogView._update_title

    def recording_update_title(self) -> None:
        update_title(self)
        titles.append(str(self.border_title))

    monkeypatch.setattr(LogView, "_update_title", recording_update_title)
    async with tail_shown(path) as (app, pilot, view):
        write_lines(path, [glog_line(i) for i in range(300, 300 + flood)] + [glog_line(1, text="the last line")])
        await wait_for(pilot, lambda: visible(view)[-1].endswith("the last line"), "the flood's last line")
        assert view.log_file.last_reset == "skipped"  # the middle was not read as it came
        assert "node_0.log · follow · flood: its end only" in titles
        await wait_for(pilot, lambda: "flood" not in str(view.border_title), "the flood's end noticed")
        assert "message 20299" in visible(view)[-2]
        assert not view.paused and view.new_lines == 0 and not app.messages  # no "file reset" for a skip
        await wait_for(pilot, lambda: view.index_complete, "the skipped part counted once quiet")
        assert view.line_count == 300 + flood + 1
        await pilot.press("g")
        await wait_for(pilot, lambda: visible(view)[0].endswith("message 0"), "the first line at the top")


async def test_the_skipped_part_is_counted_while_the_rank_goes_on_logging_slowly(tmp_path, small_flood_skip):
    """A serving rank logs a line per request after its flood: a log that never stops growing must still be
    counted back to its start (the title said "indexing" for good, and `g` stopped short of the first line)."""
    import threading

    path = tmp_path / "node_2.log"
    stop = threading.Event()

    def trickle() -> None:
        i = 0
        while not stop.wait(0.02):
            write_lines(path, [glog_line(i, text=f"request {i}")])
            i += 1

    async with tail_shown(path) as (app, pilot, view):
        write_lines(path, [glog_line(i) for i in range(300, 20_300)])
        await wait_for(pilot, lambda: view.log_file.last_reset == "skipped", "the flood skipped")
        thread = threading.Thread(target=trickle)
        thread.start()
        try:
            await wait_for(pilot, lambda: view.index_complete, "the skipped part counted while lines trickle in")
        finally:
            stop.set()
            thread.join(10)
        await wait_for(pilot, lambda: visible(view)[-1].endswith(read_last_line(path)), "the last request")
        with open(path, "rb") as f:
            assert view.line_count == sum(1 for _ in f)


async def test_a_rank_that_stops_after_a_flood_is_counted_back_all_the_same(tmp_path, monkeypatch):
    """Its last burst was no flood to skip but no quiet poll either, and then nothing changed to wake the view:
    "flood: its end only" stayed for good and `g` stopped short of the first line."""
    from xllm_tui.ui.widgets import log_view

    monkeypatch.setattr(log_view, "FLOOD_SKIP_BYTES", 512 * 1024)
    path = tmp_path / "node_3.log"
    async with tail_shown(path) as (app, pilot, view):
        write_lines(path, [glog_line(i) for i in range(300, 30_300)])  # 3.6 MB: skipped
        await wait_for(pilot, lambda: view.log_file.last_reset == "skipped", "the flood skipped")
        # Then 2,000 lines (240 KB: under the skip, over a quiet poll's lines) and the rank dies.
        write_lines(path, [glog_line(i, "E", f"error {i}") for i in range(2000)])
        await wait_for(pilot, lambda: visible(view)[-1].endswith("error 1999"), "the last burst")
        await wait_for(pilot, lambda: view.index_complete, "the whole log counted, no change to wake the view")
        assert view.line_count == 32_300 and "flood" not in str(view.border_title)


async def test_a_search_started_while_a_followed_flood_is_skipped_finds_its_line(tmp_path, small_flood_skip,
                                                                                 monkeypatch):
    """A skip reset the file's generation, and a search reading meanwhile read nothing: "not found"."""
    import threading
    import time

    from xllm_tui.logs.tail import LogFile

    path = tmp_path / "node_5.log"
    stop = threading.Event()
    line = (glog_line(0, text="x" * 67) + "\n").encode()

    def flood() -> None:
        with open(path, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(line * 2000)  # 240 KB, far over the skip
                time.sleep(0.01)

    find_next = LogFile.find_next

    def slow_find_next(self, *args, **kwargs):
        time.sleep(0.5)  # a search through a big log: the flood goes on meanwhile
        return find_next(self, *args, **kwargs)

    monkeypatch.setattr(LogFile, "find_next", slow_find_next)
    async with tail_shown(path) as (app, pilot, view):
        thread = threading.Thread(target=flood)
        thread.start()
        try:
            await wait_for(pilot, lambda: view.log_file.last_reset == "skipped", "the flood skipped")
            view.set_search("message 250")
            await pilot.press("n")
            await wait_for(pilot, lambda: any(isinstance(m, LogView.SearchResult) for m in app.messages), "result")
        finally:
            stop.set()
            thread.join(10)
        result = [m for m in app.messages if isinstance(m, LogView.SearchResult)][-1]
        assert result.found and result.line is not None


async def test_floods_are_skipped_again_after_a_search(tmp_path, small_flood_skip):
    """A look's result was taken for still pending (its worker not yet marked done when the result came), and
    no flood of that log was skipped again."""
    path = tmp_path / "node_6.log"
    async with tail_shown(path) as (app, pilot, view):
        view.set_search("no such text")
        await pilot.press("n")
        await wait_for(pilot, lambda: any(isinstance(m, LogView.SearchResult) for m in app.messages), "the result")
        await pilot.press("G")
        write_lines(path, [glog_line(i) for i in range(300, 20_300)])
        await wait_for(pilot, lambda: visible(view)[-1].endswith("message 20299"), "the flood's end")
        assert view.log_file.last_reset == "skipped"


async def test_a_search_result_that_comes_before_a_skip_is_told_keeps_its_line(tmp_path, small_flood_skip,
                                                                              monkeypatch):
    """The skip's poll is slow to report; the search's result comes first. It was numbered with the view's old
    numbering in the file's new one (a wrong line), and the skip's reset then dropped the current line."""
    import threading

    from xllm_tui.logs.tail import LogFile

    path = tmp_path / "node_7.log"
    poll = LogFile.poll
    skipped = threading.Event()
    found_handled = threading.Event()
    on_found = LogView.on_log_view__found

    def slow_to_tell(self, *args, **kwargs):
        result = poll(self, *args, **kwargs)
        if result.reset == "skipped" and not skipped.is_set():
            skipped.set()
            found_handled.wait(10)  # the search's result reaches the UI thread first
        return result

    def found_then_tell(self, message):
        on_found(self, message)
        found_handled.set()

    monkeypatch.setattr(LogFile, "poll", slow_to_tell)
    monkeypatch.setattr(LogView, "on_log_view__found", found_then_tell)
    async with tail_shown(path) as (app, pilot, view):
        write_lines(path, [glog_line(i) for i in range(300, 20_300)] + [glog_line(9, text="NEEDLE at the end")])
        await wait_for(pilot, lambda: skipped.is_set(), "a skip under way")
        view.set_search("needle at the end")
        view.search_previous()
        await wait_for(pilot, lambda: any(isinstance(m, LogView.SearchResult) for m in app.messages), "the result")
        await wait_for(pilot, lambda: view._epoch == view.log_file.epoch, "the skip told")
        result = [m for m in app.messages if isinstance(m, LogView.SearchResult)][-1]
        assert result.found
        assert view.current_line is not None
        assert view.log_file.get_line(view.current_line, base=view._base).endswith("NEEDLE at the end")
        assert result.line == view.current_line


async def test_a_log_whose_start_cannot_be_read_is_not_polled_in_a_loop(tmp_path, monkeypatch):
    """Counting a big log backwards fails (a read error): each failed try was followed by another at once, a
    thread busy for good. The view now tries again after the wake gap."""
    import time

    from xllm_tui.logs.tail import LogFile
    from xllm_tui.ui.widgets.log_view import WAKE_GAP_S

    path = tmp_path / "node_8.log"
    write_lines(path, [glog_line(i) for i in range(3000)], "w")  # several blocks: opened at its tail
    tries: list[float] = []

    def failing(self, max_bytes=0):
        tries.append(time.monotonic())
        return 0  # no progress, as on EIO

    monkeypatch.setattr(LogFile, "index_backward", failing)
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: len(tries) >= 5, "a few tries")
        assert not view.index_complete
        gaps = [b - a for a, b in zip(tries[2:], tries[3:])]  # after opening's own tries
        assert min(gaps) >= WAKE_GAP_S / 2, gaps


def read_last_line(path) -> str:
    with open(path) as f:
        return f.read().splitlines()[-1]


async def test_a_view_scrolled_up_or_filtered_reads_a_flood_whole(tmp_path, small_flood_skip):
    """Skipping is for a view that shows only the end: scrolled up, the new lines are counted exactly; with a
    filter, an error in the middle of a flood is found."""
    path = tmp_path / "node_1.log"
    async with tail_shown(path) as (app, pilot, view):
        await pilot.press("pageup")
        await wait_for(pilot, lambda: view.paused, "follow to pause")
        write_lines(path, [glog_line(i) for i in range(300, 20_300)])
        await wait_for(pilot, lambda: view.new_lines == 20_000, "every new line counted")
        assert "+20000 new lines" in view.status_text
        await pilot.press("G")
        await wait_for(pilot, lambda: visible(view)[-1].endswith("message 20299"), "the bottom")
        await pilot.press("E", "E")
        await wait_for(pilot, lambda: view.filter_level == "error", "errors only")
        flood = [glog_line(i) for i in range(20_300, 40_300)]
        flood[10_000] = glog_line(7, "E", "an error mid-flood")
        write_lines(path, flood + [glog_line(8, "E", "the flood's last error")])
        await wait_for(pilot, lambda: [v for v in visible(view) if v][-2:] == [
            glog_line(7, "E", "an error mid-flood"), glog_line(8, "E", "the flood's last error")], "both errors")
        assert view.log_file.last_reset is None


async def test_compact_mode_shows_time_and_message_coloured_by_severity_and_is_remembered(tmp_path):
    path = tmp_path / "compact.log"
    lines = [glog_line(i, "W" if i == 5 else "E" if i == 7 else "I", f"message {i}") for i in range(10)]
    write_lines(path, lines + ["not a glog line"], "w")
    other = tmp_path / "other.log"
    write_lines(other, [glog_line(0, text="on the other rank")], "w")
    app = LogApp(path)
    async with app.run_test(size=(60, 16)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 11, "the file")
        assert visible(view)[7].startswith("E20251129 15:20:07.123456")
        await pilot.press("c")
        await wait_for(pilot, lambda: visible(view)[7] == "15:20:07.123 message 7", "the compact rows")
        rows = visible(view)
        assert rows[10] == "not a glog line" and rows[5] == "15:20:05.123 message 5"
        assert "compact" in str(view.border_title)
        error, warning = (view.get_component_rich_style(f"log-view--{name}").color for name in ("error", "warning"))
        assert message_color(view, 7) == error and message_color(view, 5) == warning
        time_part = [seg for seg in view.render_line(7) if seg.text.startswith("15:20:07")]
        assert time_part and time_part[0].style.color == view.get_component_rich_style("log-view--prefix").color
        # Search highlights what is shown; the errors-only filter keeps the compact form.
        view.set_search("message 7")
        await pilot.pause()
        match = view.get_component_rich_style("log-view--match")
        assert any(seg.text == "message 7" and seg.style.bgcolor == match.bgcolor for seg in view.render_line(7))
        await pilot.press("E", "E")
        await wait_for(pilot, lambda: view.filter_level == "error" and view.row_count == 1, "errors only")
        await wait_for(pilot, lambda: visible(view)[0] == "15:20:07.123 message 7", "the compact error row")
        await pilot.press("E")
        # Remembered: another file, or another log view of the app, starts compact.
        view.set_path(other)
        await wait_for(pilot, lambda: visible(view)[0] == "15:20:00.123 on the other rank", "the other file, compact")
        second = LogView(other, id="second")
        await app.mount(second)
        await wait_for(pilot, lambda: second.compact and second.line_count == 1, "a new view in compact mode")
        await pilot.press("c")
        await wait_for(pilot, lambda: visible(view)[0].startswith("I20251129 15:20:00.123456"), "full lines again")
        assert getattr(app, "log_view_compact") is False


async def test_compact_mode_is_remembered_between_runs(tmp_path, monkeypatch):
    from xllm_tui.ui.app import XllmApp, preferences_path
    from xllm_tui.ui.demo import demo_snapshot
    from xllm_tui.ui.source import StaticSource

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    app = XllmApp(StaticSource(demo_snapshot(tmp_path / "logs")), watch_profile=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.log_view_compact is False
        await pilot.press("l", "c")  # focus the log pane, compact mode
        await pilot.pause()
        assert app.log_view_compact is True
    assert json.loads(preferences_path().read_text())["log_compact"] is True
    again = XllmApp(StaticSource(demo_snapshot(tmp_path / "logs2")), watch_profile=False)
    assert again.log_view_compact is True


async def test_inotify_wakes_the_view_without_a_poll_timer(tmp_path):
    """Appends, truncation and rotation are read on inotify's word: the poll timer (an hour here) never runs."""
    path = tmp_path / "node_0.log"

    class SlowPollApp(LogApp):
        def compose(self) -> ComposeResult:
            yield LogView(self.path, id="log", poll_interval=3600)

    async with tail_shown(path, app_class=SlowPollApp) as (app, pilot, view):
        await append_shown(pilot, view, path, 300, 304)
        assert view.watching and not view.polling_by_timer
        write_lines(path, [glog_line(0, text="after truncation")], "w")
        await wait_for(pilot, lambda: visible(view)[0].endswith("after truncation"), "the truncated file")
        os.rename(path, str(path) + ".1")
        write_lines(path, [glog_line(0, text="after rotation")], "w")
        await wait_for(pilot, lambda: visible(view)[0].endswith("after rotation"), "the rotated file")
        write_lines(path, [glog_line(1, text="appended to the new file")])
        await wait_for(pilot, lambda: visible(view)[1].endswith("appended to the new file"), "the new file's append")
        assert not view.polling_by_timer


async def test_without_inotify_the_poll_timer_reads_the_file(tmp_path, monkeypatch):
    import xllm_tui.ui.widgets.log_view as log_view_module

    def no_inotify(path):
        raise OSError(38, "inotify not available")

    monkeypatch.setattr(log_view_module, "FileWatch", no_inotify)
    path = tmp_path / "node_0.log"
    async with tail_shown(path) as (app, pilot, view):
        assert view.polling_by_timer and not view.watching
        await append_shown(pilot, view, path, 300, 304)
        view.set_path(None)
        assert not view.polling_by_timer  # nothing to poll


async def test_following_appended_lines_does_not_lay_the_screen_out(tmp_path):
    """A followed log grows at each read: its new height repaints the view and its scrollbar, no layout."""
    path = tmp_path / "node_0.log"
    async with tail_shown(path) as (app, pilot, view):
        # The first read may widen the view (the width of lines seen).
        await append_shown(pilot, view, path, 300, 300, "the first appended line")
        layouts = record_layouts(view)
        await append_shown(pilot, view, path, 301, 339)
        assert view.virtual_size.height == 340 and view.scroll_offset.y == view.max_scroll_y
        assert view.vertical_scrollbar.window_virtual_size == 340
        assert layouts == []


async def test_a_short_log_growing_past_a_screenful_lays_nothing_out(tmp_path):
    """The vertical scrollbar is always there: a log that starts short (a rank just launched) and then floods
    repaints the view and moves the thumb to the end; making the scrollbar appear cost three layouts of the
    whole screen, most of the TUI's work while it followed a flood."""
    path = tmp_path / "node_0.log"
    write_lines(path, [glog_line(i) for i in range(3)], "w")
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: visible(view)[2].endswith("message 2"), "the short log")
        assert view.show_vertical_scrollbar
        layouts = record_layouts(view)
        bar_layouts = record_layouts(view.vertical_scrollbar)
        await append_shown(pilot, view, path, 3, 299)
        assert layouts == [] and bar_layouts == []
        bar = view.vertical_scrollbar
        assert view.scroll_offset.y == view.max_scroll_y > 0
        assert (bar.window_virtual_size, bar.position) == (300, view.max_scroll_y)


async def test_a_first_line_wider_than_the_pane_lays_nothing_out(tmp_path):
    """The horizontal scrollbar is always there too: a log of short lines (a rank in start-up) that gets a line
    wider than the pane (the flood's first), or a switch between a narrow and a wide log, keeps the pane's height
    and lays nothing out. The scrollbar appearing cost three layouts of the whole screen, the larger part of the
    TUI's work while it followed a fresh flood."""
    narrow, wide = tmp_path / "node_0.log", tmp_path / "node_1.log"
    write_lines(narrow, [glog_line(i) for i in range(3)], "w")
    write_lines(wide, [glog_line(i, text="y" * 150) for i in range(3)], "w")
    app = LogApp(narrow)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: visible(view)[2].endswith("message 2") and view._width_measured, "the short log")
        height = view.scrollable_content_region.height
        assert view.show_horizontal_scrollbar and view.virtual_size.width < view.scrollable_content_region.width
        layouts = record_layouts(view)
        bar_layouts = record_layouts(view.horizontal_scrollbar)
        write_lines(narrow, [glog_line(i, text="x" * 150) for i in range(3, 40)])
        await wait_for(pilot, lambda: visible(view)[-1].endswith("x" * 10) and view.virtual_size.width > 150,
                       "the wide lines followed")
        view.set_path(wide)
        await wait_for(pilot, lambda: visible(view)[2].endswith("y" * 10), "the wide log")
        view.set_path(tmp_path / "node_2.log")
        write_lines(tmp_path / "node_2.log", [glog_line(0, text="narrow again")], "w")
        await wait_for(pilot, lambda: visible(view)[0].endswith("narrow again"), "a narrow log")
        assert layouts == [] and bar_layouts == []
        assert view.scrollable_content_region.height == height


async def test_a_log_directory_cleared_and_made_again_is_followed(tmp_path):
    """logs/ deleted under the view (an operator clearing it before a restart), then made again with a new
    log of the name: the view polls while the directory is gone, shows the new file, and watches it again.
    It used to stay blind: its inotify watch had gone with the old directory."""
    import shutil

    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "node_0.log"
    async with tail_shown(path) as (app, pilot, view):
        assert view.watching
        shutil.rmtree(logs)
        await wait_for(pilot, lambda: view.polling_by_timer and not view.watching, "polling while logs/ is gone")
        logs.mkdir()
        write_lines(path, [glog_line(0, text="the new run")], "w")
        await wait_for(pilot, lambda: visible(view)[0].endswith("the new run"), "the new file")
        await wait_for(pilot, lambda: view.watching and not view.polling_by_timer, "the watch back")
        write_lines(path, [glog_line(1, text="appended to the new run")])
        await wait_for(pilot, lambda: visible(view)[1].endswith("appended to the new run"), "the append")


async def test_a_wider_line_moves_the_horizontal_thumb_without_repainting_the_rows(tmp_path):
    """Rows are cropped to the view whatever the virtual width: a wider line (every few reads of a flood) only
    moves the horizontal scrollbar's thumb. It used to repaint the whole pane, a second frame per read."""
    path = tmp_path / "node_0.log"
    write_lines(path, [glog_line(i, text="x" * 150) for i in range(300)], "w")
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.show_horizontal_scrollbar and view._width_measured, "the wide log")
        repaints: list = []
        original = view.refresh
        view.refresh = lambda *regions, **kwargs: repaints.append((regions, kwargs)) or original(*regions, **kwargs)
        wider = view.virtual_size.width + 7
        view._set_virtual_size(Size(wider, view.virtual_size.height))
        assert repaints == []
        assert view.virtual_size.width == wider and view.horizontal_scrollbar.window_virtual_size == wider


async def test_a_log_selected_while_it_grows_is_read_again_after_the_wake_gap(tmp_path, monkeypatch):
    """Opening a log reads its tail: that is the read the wake gap counts from. A log growing as it is selected
    (a flooding rank, at every j/k) used to be read again at once: a second frame right after the key's."""
    import xllm_tui.ui.widgets.log_view as log_view_module

    # A gap no loaded machine outlasts between the opening and inotify's report (0.2 s could be).
    monkeypatch.setattr(log_view_module, "WAKE_GAP_S", 3.0)
    first, flooding = tmp_path / "node_0.log", tmp_path / "node_1.log"
    write_lines(flooding, [glog_line(i) for i in range(300)], "w")
    async with tail_shown(first) as (app, pilot, view):
        view.set_path(flooding)
        write_lines(flooding, [glog_line(i) for i in range(300, 400)])
        # inotify reports the append: no read yet, one waits for the gap
        await wait_for(pilot, lambda: getattr(view, "_wake_pending", False) or view._poll_busy
                       or visible(view)[-1].endswith("message 399"), "the append noticed")
        assert view._wake_pending and not view._poll_busy
        await wait_for(pilot, lambda: visible(view)[-1].endswith("message 399"), "the lines appended after opening")


async def test_switching_between_wide_logs_lays_nothing_out_and_keeps_the_watch(tmp_path):
    """A rank switch (set_path) between two logs wider and longer than the view: the horizontal and vertical
    scrollbars stay, so the screen needs no layout (it used to take two: the width went to 0 and back), and
    the inotify descriptor is moved to the new file, not closed and made again."""
    paths = [tmp_path / f"node_{n}.log" for n in range(2)]
    for n, path in enumerate(paths):
        write_lines(path, [glog_line(i, text=f"rank {n} line {i} " + "x" * (150 + 40 * n)) for i in range(300)], "w")
    async with tail_shown(tmp_path / "start.log") as (app, pilot, view):

        async def switch_to(n: int) -> None:
            view.set_path(paths[n])
            await wait_for(pilot, lambda: f"rank {n} line 299 " in visible(view)[-1], f"rank {n}'s last line")
            await wait_for(pilot, lambda: view.virtual_size.width >= len(glog_line(0, text=f"rank {n} line 0 "))
                           + 150 + 40 * n, f"rank {n}'s width")

        await switch_to(0)
        layouts = record_layouts(view)  # from here on, every switch: 0 -> 1 -> 0 -> 1
        watch_fd = view._file_watch.fd
        for n in (1, 0, 1):
            await switch_to(n)
        assert layouts == []
        assert view._file_watch.fd == watch_fd
        assert view.virtual_size.width == len(glog_line(299, text="rank 1 line 299 ")) + 190
        write_lines(paths[1], [glog_line(300, text="appended after the switches")])
        await wait_for(pilot, lambda: visible(view)[-1].endswith("appended after the switches"), "the append")


async def test_a_file_written_while_its_watch_is_set_up_is_read(tmp_path, monkeypatch):
    """A file written after the view opened it but before its inotify watch was in place (a remote log's
    copy arriving just then) gives no event: the view reads it anyway once the watch is set up."""
    import xllm_tui.ui.widgets.log_view as log_view_module
    from xllm_tui.logs.inotify import FileWatch

    late = tmp_path / "node_1.log.1"

    class WrittenMeanwhile(FileWatch):
        def watch(self, path: str) -> None:
            if path == str(late):
                write_lines(late, [glog_line(i, text="copied in the gap") for i in range(20)], "w")
            super().watch(path)

    monkeypatch.setattr(log_view_module, "FileWatch", WrittenMeanwhile)
    async with tail_shown(tmp_path / "node_1.log") as (app, pilot, view):
        view.set_path(late)  # not there yet when opened
        await wait_for(pilot, lambda: view.line_count == 20 and sum(row.endswith("copied in the gap")
                                                                    for row in visible(view)) == 20,
                       "the file written in the gap")


def test_clean_drops_control_sequences_and_leaves_plain_lines_alone():
    from xllm_tui.ui.widgets.log_view import _clean

    plain = glog_line(1, text="plain ünïcode line")
    assert _clean(plain) is plain
    assert _clean("a\tb") == "a    b"
    assert _clean("x\x1b[31mred\x1b[0m\x07") == "xred"
    assert _clean("rub\x7fout") == "rubout"


async def test_plain_rows_render_as_the_rich_text_path_does(tmp_path):
    """The fast path for plain rows gives the same segments as rendering the row's rich Text."""
    from rich.segment import Segment

    path = tmp_path / "node_0.log"
    write_lines(path, [glog_line(1)], "w")
    app = LogApp(path)
    async with app.run_test(size=(100, 24)) as pilot:
        view = app.query_one(LogView)
        await wait_for(pilot, lambda: view.line_count == 1, "the file")
        rows = [glog_line(2), glog_line(3, "W"), glog_line(4, "E"), glog_line(5, "F"), "not a glog line", "",
                "I1129 " + "x" * 100 + "] late bracket", glog_line(6, text=""), "E only severity-like"]
        for text in rows:
            for current in (False, True):
                fast = list(Segment.simplify(view._plain_strip(text, current)))
                rich = list(Segment.simplify(view._styled(text, current).render(app.console)))
                assert [(s.text, s.style) for s in fast if s.text] == [(s.text, s.style) for s in rich if s.text], \
                    (text, current)
                assert view._plain_strip(text, current).cell_length == view._styled(text, current).cell_len


async def test_the_scrollbar_repaints_only_when_its_thumb_moves_visibly(tmp_path):
    path = tmp_path / "node_0.log"
    async with tail_shown(path, 20000) as (app, pilot, view):
        await append_shown(pilot, view, path, 20000, 20000, "the first appended line")
        bar = view.vertical_scrollbar
        repaints = []
        original = bar.refresh
        bar.refresh = lambda *a, **k: (repaints.append(k), original(*a, **k))[1]
        await append_shown(pilot, view, path, 20001, 20010)
        assert bar.window_virtual_size == view.virtual_size.height and bar.position == view.max_scroll_y
        assert repaints == []  # ten lines more in twenty thousand: the thumb stays on the same cell
        view.action_top()
        await wait_for(pilot, lambda: repaints, "the thumb moved to the top")
        assert bar.position == 0


async def test_a_flood_is_read_less_often_than_a_trickle(tmp_path):
    from xllm_tui.ui.widgets.log_view import FLOOD_WAKE_GAP_S, WAKE_GAP_S

    path = tmp_path / "node_0.log"
    async with tail_shown(path) as (app, pilot, view):
        await append_shown(pilot, view, path, 300, 300, "one more line")
        assert view._wake_gap() == WAKE_GAP_S
        await append_shown(pilot, view, path, 301, 1300, "the flood")  # a thousand lines in one read
        assert view._wake_gap() == FLOOD_WAKE_GAP_S > WAKE_GAP_S
        await append_shown(pilot, view, path, 1301, 1301, "the trickle again")
        assert view._wake_gap() == WAKE_GAP_S
