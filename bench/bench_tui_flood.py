#!/usr/bin/env python3
"""The TUI following a flooding log: its CPU seconds per million lines, frames drawn, peak memory.

    python3 bench/bench_tui_flood.py                  # 500,000 lines of 120 bytes, 3 runs
    python3 bench/bench_tui_flood.py --lines 100000 --runs 5 --size 120x40

The whole app runs headless (Textual's Pilot) on the recorded deployment (xllm_tui/data/tui-demo, a
StaticSource), its log pane following the selected rank's log. A separate writer process appends --lines
glog lines of 120 bytes to that log as fast as it can (100 lines per write), as a flooding rank does. Measured
in the TUI process, from the writer's start until the pane shows the writer's last line: CPU seconds (process
time, all threads: the UI loop and the log view's workers; "net": less the app's CPU rate with nothing
happening, measured for a second just before with the same waiting loop, times the flood's duration), the frames the compositor handed to the driver
(updates are coalesced: they must stay near the frame rate however fast the log grows), and the peak RSS.
Printed as JSON: medians over the runs, and CPU seconds per million lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WRITER = r"""
import sys
path, lines = sys.argv[1], int(sys.argv[2])
line = b"I20261129 15:20:01.123456 17122 llm_engine.cpp:210] Generated 123 tokens in 12.5 ms, throughput 812.4 tokens/s".ljust(119) + b"\n"
last = b"I20261129 15:20:02.000000 17122 llm_engine.cpp:210] the last line of the flood".ljust(119) + b"\n"
with open(path, "ab", buffering=0) as f:
    for _ in range((lines - 1) // 100):
        f.write(line * 100)
    f.write(line * ((lines - 1) % 100) + last)
"""


async def one_run(lines: int, size: tuple[int, int], timeout: float) -> dict:
    from textual._compositor import CompositorUpdate

    from xllm_tui.ui.app import XllmApp
    from xllm_tui.ui.demo import demo_snapshot
    from xllm_tui.ui.source import StaticSource
    from xllm_tui.ui.widgets.log_view import LogView

    with tempfile.TemporaryDirectory(prefix="xllm-tui-flood-") as work:
        app = XllmApp(StaticSource(demo_snapshot(Path(work) / "logs")), user_config=False, watch_profile=False)
        frames = {"n": 0, "on": False}
        original = app._display

        def display(screen, renderable) -> None:
            if frames["on"] and isinstance(renderable, CompositorUpdate):
                frames["n"] += 1
            original(screen, renderable)

        app._display = display
        async with app.run_test(size=size) as pilot:
            view = None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                views = [v for v in app.screen.query(LogView) if v.path and v.line_count]
                if views:
                    view = views[0]
                    break
                await pilot.pause(0.05)
            if view is None:
                raise RuntimeError("no log view showed a log")
            await pilot.pause(0.5)
            # The app's own CPU with nothing happening, measured with the same waiting loop as below.
            idle_cpu, idle_started = time.process_time(), time.monotonic()
            while time.monotonic() - idle_started < 1.0:
                view.render_line(view.scrollable_content_region.height - 1)
                await pilot.pause(0.02)
            idle_rate = (time.process_time() - idle_cpu) / (time.monotonic() - idle_started)
            before = view.line_count
            frames["on"] = True
            cpu, started = time.process_time(), time.monotonic()
            writer = subprocess.Popen([sys.executable, "-c", WRITER, view.path, str(lines)])
            try:
                while time.monotonic() < deadline:
                    if writer.poll():
                        raise RuntimeError(f"the writer failed (exit status {writer.returncode})")
                    shown = view.render_line(view.scrollable_content_region.height - 1).text
                    if view.line_count >= before + lines and "the last line of the flood" in shown:
                        break
                    await pilot.pause(0.02)
                else:
                    raise RuntimeError(f"the view did not reach the flood's end in {timeout:g}s "
                                       f"({view.line_count - before} of {lines} lines)")
            finally:
                if writer.poll() is None:
                    writer.kill()  # only on a failed run: normally it has finished
                writer.wait()
            cpu = time.process_time() - cpu
            elapsed = time.monotonic() - started
        return {"cpu_s": cpu, "net_cpu_s": cpu - idle_rate * elapsed, "idle_rate": idle_rate, "elapsed_s": elapsed,
                "frames": frames["n"], "fps": frames["n"] / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="120x40", help="terminal size WxH")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    runs = [asyncio.run(one_run(args.lines, (width, height), args.timeout)) for _ in range(max(1, args.runs))]
    cpu = statistics.median(r["cpu_s"] for r in runs)
    net = statistics.median(r["net_cpu_s"] for r in runs)
    print(json.dumps({
        "lines": args.lines,
        "cpu_s_per_million_lines": round(cpu / (args.lines / 1e6), 4),
        "net_cpu_s_per_million_lines": round(net / (args.lines / 1e6), 4),
        "idle_cpu_per_s": [round(r["idle_rate"], 3) for r in runs],
        "cpu_s": [round(r["cpu_s"], 3) for r in runs],
        "elapsed_s": [round(r["elapsed_s"], 2) for r in runs],
        "frames_per_s": [round(r["fps"], 1) for r in runs],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target_cpu_s_per_million_lines": 0.1,
    }))
    return 0


if __name__ == "__main__":
    if not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, str(REPO))
    raise SystemExit(main())
