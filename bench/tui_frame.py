#!/usr/bin/env python3
"""The TUI measured for real: xllm-tui's app (XllmApp, SupervisorSource) attached to a running supervisor,
headless under Textual's Pilot, with clocks hooked onto its data path and its screen updates.

    python3 bench/tui_frame.py frames --run-dir RUN [--samples 12] [--size 160x48]
    python3 bench/tui_frame.py biglog --run-dir RUN --rank 1 --tail-marker TEXT --needle TEXT [--repeats 5]

Each prints one JSON object. Run it as its own process (as the suite does) so that its RSS and CPU are the
TUI's alone; it only reads from the supervisor (snapshot and event requests), it never acts on the ranks.

Frame time (`frames`): for each snapshot the app's poll loop receives, in which every rank's row has changed
(the hook appends " #N" to each rank's `last_line` in the reply, N counting the snapshots, as a busy deployment
changes every row; `--as-is` leaves the replies alone), from the moment the socket reply has
arrived and been decoded (`source.snapshot()` returns) to the end of rendering the first screen update the
compositor hands to the terminal driver after the app applied that snapshot (the update's segments are rendered
to the escape-sequence string a real driver writes; headless Textual skips that step, so the hook does it, as
bench_tui_idle.py does). A snapshot after which nothing on screen changed produces no update: it is counted in
`no_repaint` and has no frame time. Also reported: `apply_ms` (arrival until `_apply_snapshot` returns: the rank
table, status bar and panels updated in the DOM), `request_ms` (the TUI's own snapshot request, sent to
decoded), the bytes of each update, the TUI's RSS and its CPU over the sampling window.

Big log (`biglog`): with rank-1 selected in the rank table, press "down" to select `rank` (whose log ends in a
line holding `tail_marker` and one more line, so that the rank table's last-line column never shows the marker);
*tail on screen* is the time from the keypress to the end of rendering the first screen update that shows the
marker (`set_path_ms`: the log view's own share). Then, with the log view focused,
"E" (warnings and errors) and again "E" (errors only), timed from that second keypress until the errors-only
filter covers the whole file (the view's index complete, its filter scanned from the first line to the end) and
the next screen update is rendered. Then "E" (all lines), "G", "/" and the `needle` (a line near the file's start)
in the prompt: from Enter until the first update showing the needle after the view moved its current line to
the match (the app searches backwards from the live end, so nearly the whole file is scanned). Memory: the
process's RSS sampled every 20 ms from before the first selection to the end; growth = peak minus that baseline.

Headless means no terminal: the figures leave out the terminal's own drawing and the tty write, and include the
rendering of each update into the bytes a terminal would get.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-95 * len(ordered) // 100) - 1))]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ScreenClock:
    """Hooks an app: every screen update the compositor hands to the driver is rendered as a terminal driver
    would; `frames` keeps (time rendered, the rendered text, bytes). Snapshot arrivals and applies are stamped."""

    def __init__(self, app: Any, keep_text: bool = False, touch_rows: bool = False):
        from textual._compositor import CompositorUpdate

        self.app = app
        self.keep_text = keep_text
        self.frames: list[tuple[float, str, int]] = []
        self.arrivals: list[tuple[float, float]] = []  # (request sent, reply decoded)
        self.applied: list[tuple[float, float]] = []  # (arrival it belongs to, apply returned)
        self._waiters: list[tuple[Any, asyncio.Future]] = []
        original_display = app._display

        def display(screen: Any, renderable: Any) -> None:
            if isinstance(renderable, CompositorUpdate):
                text = renderable.render_segments(app.console)
                now = time.perf_counter()
                self.frames.append((now, text if self.keep_text else "", len(text.encode())))
                for waiter in list(self._waiters):
                    check, future = waiter
                    if not future.done() and check(now, text):
                        future.set_result(now)
                        self._waiters.remove(waiter)
            original_display(screen, renderable)

        app._display = display
        source = app.source
        original_snapshot = source.snapshot

        async def snapshot() -> dict:
            sent = time.perf_counter()
            reply = await original_snapshot()
            if touch_rows:  # every rank's row has changed, as in a busy deployment (an idle one may draw nothing)
                for rank in reply.get("ranks") or []:
                    rank["last_line"] = f"{rank.get('last_line') or ''} #{len(self.arrivals)}"
            self.arrivals.append((sent, time.perf_counter()))
            return reply

        source.snapshot = snapshot
        original_apply = app._apply_snapshot

        def apply(snap: dict) -> None:
            original_apply(snap)
            if self.arrivals:
                self.applied.append((self.arrivals[-1][1], time.perf_counter()))

        app._apply_snapshot = apply

    def next_frame(self, check=lambda now, text: True) -> asyncio.Future:
        """A future set to the render time of the next screen update for which check(time, text) holds."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((check, future))
        return future


async def wait_until(condition, timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(step)


def make_app(run_dir: str) -> Any:
    from xllm_tui.ui.app import XllmApp
    from xllm_tui.ui.source import SupervisorSource

    return XllmApp(SupervisorSource(run_dir), user_config=False, watch_profile=False)


async def measure_frames(run_dir: str, samples: int = 12, size: tuple[int, int] = (160, 48),
                         warmup: int = 2, timeout: float = 120, touch_rows: bool = True) -> dict:
    """Frame time of the real TUI on the supervisor of `run_dir` (see the module docstring)."""
    from xllm_tui.ui.widgets.rank_table import RankTable

    app = make_app(run_dir)
    clock = ScreenClock(app, touch_rows=touch_rows)
    async with app.run_test(size=size) as pilot:
        table = app.main_screen.query_one(RankTable)
        await wait_until(lambda: app.snapshot is not None and table.row_count == len(app.snapshot["ranks"]),
                         timeout, "the rank table filled")
        await wait_until(lambda: len(clock.applied) >= warmup + 1, timeout, "the warm-up snapshots")
        first = len(clock.applied)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await wait_until(lambda: len(clock.applied) >= first + samples + 1, timeout + samples * 3, "the samples")
        cpu1, t1 = time.process_time(), time.perf_counter()
        await pilot.pause()
    frame_ms, apply_ms, update_bytes, no_repaint = [], [], [], 0
    window = clock.applied[first:first + samples]
    next_arrivals = [arrived for arrived, _ in clock.applied[first + 1:first + samples + 1]]
    for (arrived, applied), following in zip(window, next_arrivals):
        apply_ms.append((applied - arrived) * 1000)
        frame = next((f for f in clock.frames if applied <= f[0] < following), None)
        if frame is None:
            no_repaint += 1
        else:
            frame_ms.append((frame[0] - arrived) * 1000)
            update_bytes.append(frame[2])
    request_ms = [(got - sent) * 1000 for sent, got in clock.arrivals[first:first + samples]]
    return {
        "ranks": len(app.snapshot["ranks"]) if app.snapshot else 0,
        "samples": len(window),
        "frame_ms_median": statistics.median(frame_ms) if frame_ms else None,
        "frame_ms_p95": p95(frame_ms),
        "frame_ms": [round(v, 3) for v in frame_ms],
        "no_repaint": no_repaint,
        "apply_ms_median": statistics.median(apply_ms) if apply_ms else None,
        "request_ms_median": statistics.median(request_ms) if request_ms else None,
        "update_bytes_median": statistics.median(update_bytes) if update_bytes else None,
        "tui_cpu_pct": (cpu1 - cpu0) / (t1 - t0) * 100,
        "tui_rss_mib": rss_bytes() / 2**20,
    }


class RssSampler:
    def __init__(self, every: float = 0.02):
        self.peak = 0
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


async def measure_biglog(run_dir: str, rank: int, tail_marker: str, needle: str, repeats: int = 5,
                         size: tuple[int, int] = (160, 48), timeout: float = 120) -> dict:
    """Tail on screen, the errors-only filter and a search near the start of `rank`'s (big) log, in the real
    TUI (see the module docstring)."""
    from textual.widgets import Input

    from xllm_tui.ui.widgets.log_view import LogView
    from xllm_tui.ui.widgets.rank_log import RankLog
    from xllm_tui.ui.widgets.rank_table import RankTable

    app = make_app(run_dir)
    clock = ScreenClock(app)
    out: dict[str, Any] = {}
    async with app.run_test(size=size) as pilot:
        table = app.main_screen.query_one(RankTable)
        await wait_until(lambda: app.snapshot is not None and table.row_count == len(app.snapshot["ranks"]),
                         timeout, "the rank table filled")
        view = app.main_screen.query_one(RankLog).log_widget
        assert isinstance(view, LogView)
        previous = rank - 1
        rows = [int(r["rank"]) for r in app.snapshot["ranks"]]
        if previous not in rows or rank not in rows:
            raise ValueError(f"rank {rank} and rank {previous} (selected before it) must both exist")
        big = next(r for r in app.snapshot["ranks"] if int(r["rank"]) == rank)
        file_size = os.path.getsize(big["log_path"])
        set_path_ms: list[float] = []
        original_set_path = view.set_path

        def timed_set_path(path: Any) -> None:
            started = time.perf_counter()
            original_set_path(path)
            if path is not None and os.fspath(path) == big["log_path"]:
                set_path_ms.append((time.perf_counter() - started) * 1000)

        view.set_path = timed_set_path
        tail_ms: list[float] = []
        with RssSampler() as memory:
            for _ in range(repeats):
                table.focus()
                app.select_rank(previous)
                await wait_until(lambda: view.path != big["log_path"], timeout, f"rank {previous}'s log shown")
                await pilot.pause(0.2)
                shown = clock.next_frame(lambda now, text: tail_marker in text)
                pressed = time.perf_counter()
                await pilot.press("down")
                tail_ms.append((await asyncio.wait_for(shown, timeout) - pressed) * 1000)
            out["tail_ms"] = [round(v, 3) for v in tail_ms]
            out["tail_ms_median"] = statistics.median(tail_ms)
            out["set_path_ms_median"] = statistics.median(set_path_ms) if set_path_ms else None

            view.focus()
            await pilot.pause()

            def filtered_whole_file() -> bool:
                log = view.log_file
                if view.filter_level != "error" or not view.index_complete or log is None:
                    return False
                span = getattr(view, "_filter_range", None)
                return span is not None and span[0] <= log._indexed_window()[1] and span[1] >= file_size

            await pilot.press("E")  # warnings and errors; the next E: errors only, the one timed
            await wait_until(lambda: view.filter_level == "warning", timeout, "the warnings filter on")
            await pilot.pause(0.2)
            pressed = time.perf_counter()
            await pilot.press("E")
            await wait_until(filtered_whole_file, timeout, "the errors-only filter over the whole file", step=0.005)
            covered = time.perf_counter()
            shown = clock.next_frame(lambda now, text: now >= covered)
            view.refresh()
            out["filter_s"] = (await asyncio.wait_for(shown, timeout) - pressed)
            out["filter_rows"] = view.row_count

            await pilot.press("E")  # back to all lines
            await wait_until(lambda: view.filter_level is None, timeout, "the filter off")
            await pilot.press("G")  # the live end, following again
            await pilot.pause(0.2)
            await pilot.press("slash")
            await wait_until(lambda: isinstance(app.focused, Input), timeout, "the search prompt")
            app.focused.value = needle
            found: list[float] = []  # the prompt shows the needle too: only frames after the search's result count
            original_move = view._move_current

            def move_current(offset: int) -> None:  # the view moving its current line to the match
                found.append(time.perf_counter())
                original_move(offset)

            view._move_current = move_current
            shown = clock.next_frame(lambda now, text: bool(found) and needle in text)
            pressed = time.perf_counter()
            await pilot.press("enter")
            out["search_s"] = (await asyncio.wait_for(shown, timeout) - pressed)
            out["search_line"] = view.current_line
        out["rss_baseline_mib"] = memory.baseline / 2**20
        out["rss_peak_mib"] = memory.peak / 2**20
        out["rss_growth_mib"] = (memory.peak - memory.baseline) / 2**20
        out["file_bytes"] = file_size
    return out


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    frames = sub.add_parser("frames", help="frame time over a number of snapshots")
    frames.add_argument("--samples", type=int, default=12)
    frames.add_argument("--as-is", action="store_true",
                        help="do not mark every rank's row changed in each snapshot (an idle deployment may then "
                             "draw nothing: no frame to time)")
    big = sub.add_parser("biglog", help="tail on screen, errors-only filter, search, memory, on a big log")
    big.add_argument("--rank", type=int, required=True, help="the rank with the big log (rank-1 must exist)")
    big.add_argument("--tail-marker", required=True, help="text of the log's tail line (second to last: the rank table shows the last)")
    big.add_argument("--needle", required=True, help="text of a line near the log's start")
    big.add_argument("--repeats", type=int, default=5)
    for p in (frames, big):
        p.add_argument("--run-dir", required=True, help="the supervisor's run directory")
        p.add_argument("--size", type=parse_size, default=(160, 48), help="terminal WxH (default 160x48)")
    args = parser.parse_args(argv)
    if args.what == "frames":
        result = asyncio.run(measure_frames(args.run_dir, args.samples, args.size, touch_rows=not args.as_is))
    else:
        result = asyncio.run(measure_biglog(args.run_dir, args.rank, args.tail_marker, args.needle, args.repeats,
                                            args.size))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, str(REPO))
    raise SystemExit(main())
