#!/usr/bin/env python3
"""How much an idle TUI writes to the terminal: the bytes of screen updates per second, nothing changing.

    python3 bench/bench_tui_idle.py [--seconds 5] [--size 80x24]
    PYTHONPATH=/path/to/older/tree python3 bench/bench_tui_idle.py   # compare against an older tree

The app runs headless on the recorded deployment (xllm_tui/data/tui-demo, a StaticSource: the clock is
frozen, so nothing on screen should change). Headless Textual renders nothing, so the bench renders each
update the compositor hands to the driver, as the terminal driver would, and counts the bytes; the first
second (the initial full paint) is left out. Over SSH every byte is paid for: an idle TUI should write
almost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORDING = REPO / "xllm_tui" / "data" / "tui-demo"


def load_recording(work: Path) -> dict:
    from xllm_tui.ui.demo import demo_snapshot

    return demo_snapshot(work / "logs")


async def measure(seconds: float, size: tuple[int, int]) -> dict:
    from textual._compositor import CompositorUpdate

    from xllm_tui.ui.app import XllmApp
    from xllm_tui.ui.source import StaticSource

    with tempfile.TemporaryDirectory(prefix="xllm-tui-bench-") as work:
        app = XllmApp(StaticSource(load_recording(Path(work))), user_config=False, watch_profile=False)
        counted = {"bytes": 0, "updates": 0, "on": False}
        original = app._display

        def display(screen, renderable) -> None:
            if counted["on"] and isinstance(renderable, CompositorUpdate):
                counted["bytes"] += len(renderable.render_segments(app.console).encode())
                counted["updates"] += 1
            original(screen, renderable)

        app._display = display
        async with app.run_test(size=size) as pilot:
            await pilot.pause(1.0)  # first paint, logs read
            counted["on"] = True
            started = time.monotonic()
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - started
    return {"seconds": round(elapsed, 2), "bytes": counted["bytes"], "updates": counted["updates"],
            "bytes_per_s": round(counted["bytes"] / elapsed, 1), "updates_per_s": round(counted["updates"] / elapsed, 2),
            "tree": os.path.dirname(os.path.dirname(sys.modules["xllm_tui"].__file__))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", default="80x24", help="terminal size WxH (default 80x24)")
    args = parser.parse_args()
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: write it as WIDTHxHEIGHT, e.g. 80x24")
    print(json.dumps(asyncio.run(measure(args.seconds, (width, height)))))
    return 0


if __name__ == "__main__":
    if not os.environ.get("PYTHONPATH"):
        sys.path.insert(0, str(REPO))
    raise SystemExit(main())
