#!/usr/bin/env python3
"""Regenerate screenshots/*.svg: the TUI attached to a real simulated deployment, as it exports itself.

    python3 scripts/screenshots.py            # every shot
    python3 scripts/screenshots.py main help  # only these

Nothing is staged: each scene is a real supervisor with eight simulated a3-8card ranks
(scripts/sim_session.py: a private run dir under a temp dir, free ports via --port-offset,
XLLM_SIM_TIME_SCALE=0.05), brought to the state worth showing, and each SVG is App.save_screenshot of the
TUI attached to it:

- healthy: every rank ready (main screen in each theme, 80x24, devices, help, rank detail, split view);
  then determinism switched on (toggles tab; the running ranks are "relaunch pending"); then rank 5
  killed with SIGKILL from outside: the first failure, the others stopped as collateral, the restart
  countdown (main, the restart confirmation, the event history).
- hccl: XLLM_SIM_FAIL=serving:hccl_error on rank 3: the simulator's HCCL failure in rank 3's log and in
  the merged timeline.
Both scenes use a profile extending profiles/a3-8card.yaml with a 60 s restart backoff, so the countdown
lasts while it is shot. Everything started is stopped at the end, also after an error (sim_session).

The exported SVGs get xml:space="preserve" on their root element: without it some renderers (librsvg,
used by rsvg-convert) drop the leading spaces of each text run, which shifts table cells by a column.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_session import REPO, SimSession, exit_on_termination  # noqa: E402

from xllm_tui.ui.app import XllmApp  # noqa: E402
from xllm_tui.ui.source import SupervisorSource  # noqa: E402

Step = Callable[[object], Awaitable[None]]
BIG, SMALL = (160, 48), (80, 24)


async def _until(pilot, condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"screenshots: timed out waiting for {what}")
        await pilot.pause(0.05)


async def _settled(pilot) -> None:
    from xllm_tui.ui.widgets.log_view import LogView
    from xllm_tui.ui.widgets.rank_table import RankTable

    app = pilot.app
    await _until(pilot, lambda: app.snapshot is not None and app.main_screen.query_one(RankTable).row_count > 0,
                 "the first snapshot")
    await _until(pilot, lambda: all(v.line_count > 0 for v in app.screen.query(LogView) if v.path), "the logs")
    await pilot.pause(0.3)


def keys(*pressed: str, wait: Callable | None = None) -> Step:
    async def step(pilot) -> None:
        await _settled(pilot)
        for key in pressed:
            await pilot.press(key)
            await pilot.pause(0.05)
        if wait is not None:
            await _until(pilot, lambda: wait(pilot.app), f"the screen after {pressed}")
        await pilot.pause(0.3)
        await _settled(pilot)

    return step


def _timeline_ready(app) -> bool:
    from xllm_tui.ui.widgets.timeline import TimelineTable

    return bool(app.main_screen.query_one(TimelineTable).entries)


def _detail_loaded(app) -> bool:
    return getattr(app.screen, "loaded", False)


# Scene -> [(name, theme, size, steps)]
READY_SHOTS = [
    ("main", "xllm-dark", BIG, keys()),
    ("main-80x24", "xllm-dark", SMALL, keys()),
    ("main-light", "xllm-light", BIG, keys()),
    ("main-high-contrast", "xllm-high-contrast", BIG, keys()),
    ("devices", "xllm-dark", BIG, keys("D")),
    ("help", "xllm-dark", BIG, keys("question_mark")),
    ("rank-detail", "xllm-dark", BIG, keys("d", wait=_detail_loaded)),
    ("split-view", "xllm-dark", BIG, keys("space", "down", "down", "space", "down", "space", "v")),
]
TOGGLED_SHOTS = [
    ("toggles", "xllm-dark", BIG, keys("t")),
]
KILLED_SHOTS = [
    ("rank-killed", "xllm-dark", BIG, keys("down", "down", "down", "down", "down")),
    ("rank-killed-80x24", "xllm-dark", SMALL, keys()),
    ("confirm-restart", "xllm-dark", BIG, keys("down", "down", "down", "down", "down", "r")),
    ("events", "xllm-dark", BIG, keys("e")),
]
HCCL_SHOTS = [
    ("failed-rank-log", "xllm-dark", BIG, keys("down", "down", "down")),
    ("timeline", "xllm-dark", BIG, keys("T", wait=_timeline_ready)),
]
ALL_SHOTS = [s[0] for s in READY_SHOTS + TOGGLED_SHOTS + KILLED_SHOTS + HCCL_SHOTS]


def _preserve_spaces(path: Path) -> None:
    svg = path.read_text(encoding="utf-8")
    if 'xml:space="preserve"' not in svg[:400]:
        path.write_text(svg.replace("<svg ", '<svg xml:space="preserve" ', 1), encoding="utf-8")


def shoot(sim: SimSession, name: str, theme: str, size: tuple[int, int], step: Step, out_dir: Path) -> Path:
    source = SupervisorSource(sim.run_dir, profile_path=sim.profile_path, simulate=True, port_offset=sim.port_offset)
    app = XllmApp(source, theme=theme, user_config=False, watch_profile=False, profile_path=sim.profile_path,
                  simulate=True, port_offset=sim.port_offset, poll_interval=0.5)
    failure: list[BaseException] = []

    async def auto_pilot(pilot) -> None:
        try:
            await step(pilot)
            app.save_screenshot(f"{name}.svg", str(out_dir))
        except BaseException as error:  # reported after the app has exited cleanly
            failure.append(error)
        app.exit()

    app.run(headless=True, size=size, auto_pilot=auto_pilot)
    if failure:
        raise failure[0]
    path = out_dir / f"{name}.svg"
    _preserve_spaces(path)
    print(path, flush=True)
    return path


def _take(sim: SimSession, shots, wanted: set[str], out_dir: Path) -> None:
    for name, theme, size, step in shots:
        if name in wanted:
            shoot(sim, name, theme, size, step, out_dir)


def _ready(snap) -> bool:
    ranks = snap.get("ranks") or []
    return (snap["group"]["state"] == "ready" and all(r["state"] == "ready" for r in ranks)
            and all(r.get("cpu_pct") is not None for r in ranks) and snap.get("devices") is not None)


def _countdown_after(rank: int):
    def check(snap) -> bool:
        group = snap["group"]
        return ((group.get("first_failure") or {}).get("rank") == rank and bool(group.get("next_restart_at"))
                and all(r["state"] in ("stopped", "failed") for r in snap["ranks"]))

    return check


def healthy_scene(wanted: set[str], out_dir: Path) -> None:
    with SimSession(backoff_s=60) as sim:
        sim.wait(_ready, "every rank ready with CPU and device readings")
        _take(sim, READY_SHOTS, wanted, out_dir)
        sim.request("toggle", group="determinism", on=True)
        sim.wait(lambda s: all(r.get("relaunch_pending") for r in s["ranks"]), "relaunch pending")
        _take(sim, TOGGLED_SHOTS, wanted, out_dir)
        if wanted & {s[0] for s in KILLED_SHOTS}:
            sim.kill_rank(5, signal.SIGKILL)
            sim.wait(_countdown_after(5), "rank 5's failure, the collateral stops and the restart countdown")
            _take(sim, KILLED_SHOTS, wanted, out_dir)


def hccl_scene(wanted: set[str], out_dir: Path) -> None:
    env = {"XLLM_SIM_FAIL": "serving:hccl_error", "XLLM_SIM_FAIL_RANKS": "3", "XLLM_SIM_FAIL_AFTER": "60"}
    with SimSession(env=env, backoff_s=60) as sim:
        sim.wait(_countdown_after(3), "rank 3's HCCL failure and the restart countdown")
        _take(sim, HCCL_SHOTS, wanted, out_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "screenshots"), help="output directory (default: screenshots/)")
    parser.add_argument("names", nargs="*", help=f"only these shots ({', '.join(ALL_SHOTS)})")
    args = parser.parse_args()
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(args.names or ALL_SHOTS)
    unknown = sorted(wanted - set(ALL_SHOTS))
    if unknown:
        parser.error(f"unknown shot(s) {', '.join(unknown)}; known: {', '.join(ALL_SHOTS)}")
    if wanted & {s[0] for s in READY_SHOTS + TOGGLED_SHOTS + KILLED_SHOTS}:
        healthy_scene(wanted, out_dir)
    if wanted & {s[0] for s in HCCL_SHOTS}:
        hccl_scene(wanted, out_dir)
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    exit_on_termination()
    raise SystemExit(main())
