#!/usr/bin/env python3
"""Regenerate screenshots/*.svg: the TUI as it exports itself (App.save_screenshot).

    python3 scripts/screenshots.py                 # the frozen eight-rank demo (stable, diff-friendly)
    python3 scripts/screenshots.py --live PROFILE  # attach to a running simulated supervisor instead
                                                   # (start it first: xllm-tui up PROFILE --simulate)

The demo is xllm_tui.ui.demo: rank 3 failed first with an HCCL error, the group restart is pending, and
determinism was switched on after launch (relaunch pending). Times, pids and CPU are fixed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xllm_tui.ui.app import XllmApp  # noqa: E402
from xllm_tui.ui.demo import demo_snapshot  # noqa: E402
from xllm_tui.ui.source import StaticSource  # noqa: E402

Step = Callable[[object], Awaitable[None]]


async def _until(pilot, condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("screenshots: the screen did not settle in time")
        await pilot.pause(0.05)


async def _logs_loaded(pilot) -> None:
    from xllm_tui.ui.widgets.log_view import LogView

    await _until(pilot, lambda: pilot.app.snapshot is not None)
    await _until(pilot, lambda: all(v.line_count > 0 for v in pilot.app.screen.query(LogView) if v.path))
    await pilot.pause(0.2)


def keys(*pressed: str, wait: Callable | None = None) -> Step:
    async def step(pilot) -> None:
        await _logs_loaded(pilot)
        await pilot.press(*pressed)
        if wait is not None:
            await _until(pilot, lambda: wait(pilot.app))
        await pilot.pause(0.3)
        await _logs_loaded(pilot)

    return step


def _timeline_ready(app) -> bool:
    from xllm_tui.ui.widgets.timeline import TimelineTable

    return bool(app.main_screen.query_one(TimelineTable).entries)


# name -> (theme, size, steps)
SHOTS: dict[str, tuple[str, tuple[int, int], Step]] = {
    "main": ("xllm-dark", (160, 48), keys()),
    "main-80x24": ("xllm-dark", (80, 24), keys()),
    "failed-rank-log": ("xllm-dark", (160, 48), keys("down", "down", "down")),
    "timeline": ("xllm-dark", (160, 48), keys("T", wait=_timeline_ready)),
    "events": ("xllm-dark", (160, 48), keys("e")),
    "toggles": ("xllm-dark", (160, 48), keys("t")),
    "devices": ("xllm-dark", (160, 48), keys("D")),
    "confirm-restart": ("xllm-dark", (160, 48), keys("down", "down", "down", "r")),
    "rank-detail": ("xllm-dark", (160, 48), keys("d", wait=lambda app: getattr(app.screen, "loaded", False))),
    "split-view": ("xllm-dark", (160, 48), keys("space", "down", "down", "space", "down", "space", "v")),
    "help": ("xllm-dark", (160, 48), keys("question_mark")),
    "main-light": ("xllm-light", (160, 48), keys()),
    "main-high-contrast": ("xllm-high-contrast", (160, 48), keys()),
}


def shoot(make_app: Callable[[str], XllmApp], name: str, out_dir: Path) -> Path:
    theme, size, step = SHOTS[name]
    app = make_app(theme)

    async def auto_pilot(pilot) -> None:
        await step(pilot)
        app.save_screenshot(f"{name}.svg", str(out_dir))
        app.exit()

    app.run(headless=True, size=size, auto_pilot=auto_pilot)
    return out_dir / f"{name}.svg"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", metavar="PROFILE", help="attach to this profile's running simulated supervisor")
    parser.add_argument("--out", default=str(REPO / "screenshots"), help="output directory (default: screenshots/)")
    parser.add_argument("names", nargs="*", help=f"only these shots ({', '.join(SHOTS)})")
    args = parser.parse_args()
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = args.names or list(SHOTS)
    unknown = [n for n in names if n not in SHOTS]
    if unknown:
        parser.error(f"unknown shot(s) {', '.join(unknown)}; known: {', '.join(SHOTS)}")

    if args.live:
        from xllm_tui import client
        from xllm_tui.profile import load_profile
        from xllm_tui.ui.source import SupervisorSource

        result = load_profile(args.live, simulate=True)
        if result.profile is None:
            print("\n".join(str(d) for d in result.diagnostics), file=sys.stderr)
            return 2
        run_dir = client.run_dir_for(result.profile, True)
        if client.supervisor_answers(run_dir) is None:
            print(f"no supervisor runs for {args.live}; start one: xllm-tui up {args.live} --simulate", file=sys.stderr)
            return 1

        def make_app(theme: str) -> XllmApp:
            source = SupervisorSource(run_dir, profile_path=args.live, simulate=True)
            return XllmApp(source, theme=theme, user_config=False, watch_profile=False,
                           profile_path=args.live, simulate=True)

        for name in names:
            print(shoot(make_app, name, out_dir))
        return 0

    with tempfile.TemporaryDirectory(prefix="xllm-tui-shots-") as work:
        os.chdir(work)  # relative log paths: the screenshots show logs/node_N.log, not a tmp path
        data = demo_snapshot("logs")

        def make_app(theme: str) -> XllmApp:
            return XllmApp(StaticSource(data), theme=theme, user_config=False, watch_profile=False)

        for name in names:
            print(shoot(make_app, name, out_dir))
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    raise SystemExit(main())
