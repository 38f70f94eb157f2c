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

    python3 bench/bench_tui_flood.py --live            # 16 real ranks flooding, a real supervisor: keys and CPU
    python3 bench/bench_tui_flood.py --live --ranks 16 --lines 500000 --runs 3 --presses 40

--live (issue 9 workloads 1b and 5): xllm-tui's real supervisor (bench/suite.py's xllm-tui setup, in the
suite's cache dir) runs --ranks bench/writer.py ranks, each writing --lines glog lines as fast as it can once
a gate opens; the TUI (this process, headless Pilot, --size) is attached to it through the supervisor's
socket, exactly as `xllm-tui PROFILE` attaches. Every frame the compositor hands to the driver is rendered
to the terminal's byte string (what the terminal driver would write), so drawing costs what it costs in a
terminal. Two kinds of run, alternating, --runs of each:
- follow: the TUI shows rank 0's log (follow on), the gate opens; CPU seconds of this process from the gate
  until the first frame that holds rank 0's last line in the log pane; per million lines of the followed
  log (the issue's target, 0.1 s), and per million lines all ranks wrote meanwhile. A view following the end
  does not read a flood's middle as it comes (it counts it backwards once the log is quiet): "until indexed"
  is the CPU from the gate until the view has numbered every line of the log again.
- keys: once the gate is open, while the ranks flood, --presses keypresses of j / k in the rank table (down
  to the last rank, then up, ...), one at a time, 100-200 ms apart. Keypress to frame: from handing the key
  event to the driver (as the terminal driver does when it reads the key) until the end of the first frame
  whose output contains the log pane's title of the newly selected rank (" rank N "): the frame that shows
  the new selection and that rank's log (the title and the log view switch in the same handler, so they are
  drawn in one frame). Only presses made while some rank was still writing count; median and p95 over all
  counted presses of all keys runs (target p95 under 50 ms).
Peak RSS is this process's (the TUI plus this small harness).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The floor of keypress-to-frame on a loaded machine: a separate small process that wakes every 50-100 ms
# and then needs FLOOR_CPU_MS of CPU (about what the TUI's frame after a key costs), timed wake to done.
FLOOR_CPU_MS = 5.0
FLOOR_PROBE = r"""
import random, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job starts with SIGINT ignored
cpu_s = float(sys.argv[1]) / 1000
out = []
try:
    while True:
        time.sleep(random.uniform(0.05, 0.1))
        t0 = time.perf_counter()
        c0 = time.thread_time()
        while time.thread_time() - c0 < cpu_s:
            pass
        out.append((time.perf_counter() - t0) * 1000)
        if len(out) % 5 == 0:
            print(" ".join(f"{v:.2f}" for v in out[-5:]), flush=True)
except KeyboardInterrupt:
    pass
"""
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
                    if "the last line of the flood" in shown:
                        break
                    await pilot.pause(0.02)
                else:
                    raise RuntimeError(f"the view did not reach the flood's end in {timeout:g}s "
                                       f"({view.line_count - before} of {lines} lines)")
            finally:
                if writer.poll() is None:
                    writer.kill()  # only on a failed run: normally it has finished
                writer.wait()
            cpu_shown = time.process_time() - cpu
            elapsed = time.monotonic() - started
            # A skipped flood is counted once the log is quiet: the whole cost, until every line has its number.
            while not (view.index_complete and view.line_count >= before + lines):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the view did not number the flood's lines in {timeout:g}s")
                await pilot.pause(0.02)
            cpu_indexed = time.process_time() - cpu
        return {"cpu_s": cpu_shown, "net_cpu_s": cpu_shown - idle_rate * elapsed, "idle_rate": idle_rate,
                "elapsed_s": elapsed, "frames": frames["n"], "fps": frames["n"] / elapsed, "cpu_s_until_indexed": cpu_indexed}


async def live_session(kind: str, tool, stamps, gate: Path, ranks: int, lines: int, size: tuple[int, int],
                       presses: int, timeout: float) -> dict:
    import random

    from textual import events

    from xllm_tui.ui.app import XllmApp
    from xllm_tui.ui.source import SupervisorSource
    from xllm_tui.ui.widgets.rank_log import RankLog
    from xllm_tui.ui.widgets.rank_table import RankTable

    from tui_frame import ScreenClock  # bench/ is on sys.path (live())

    app = XllmApp(SupervisorSource(str(tool.run_dir), profile_path=str(tool.profile)), profile_path=str(tool.profile),
                  user_config=False, watch_profile=False)
    clock = ScreenClock(app)  # renders every update to the terminal's bytes, as a terminal driver would
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 60
        while not (app.snapshot and app.main_screen.query_one(RankTable).row_count == ranks
                   and app.main_screen.query_one(RankLog).path):
            if time.monotonic() > deadline:
                raise RuntimeError("the TUI did not show the ranks within 60 s")
            await pilot.pause(0.05)
        await pilot.pause(1.0)
        table = app.main_screen.query_one(RankTable)
        view = app.main_screen.query_one(RankLog).log_widget
        if kind == "follow":
            def end_drawn(now, text) -> bool:
                # The frame holds the flood's last line and the log pane shows it (the rank table's last-line
                # column may show it first; the view no longer counts every line of a flood as it comes).
                if "BENCH-DONE" not in text or not view.path.endswith("node_0.log"):
                    return False
                return any("BENCH-DONE" in view.render_line(y).text
                           for y in range(view.scrollable_content_region.height))

            reached_end = clock.next_frame(end_drawn)
            frames0, cpu0, t0 = len(clock.frames), time.process_time(), time.perf_counter()
            gate.touch()
            try:
                done_at = await asyncio.wait_for(reached_end, timeout)
            except asyncio.TimeoutError:
                raise RuntimeError(f"rank 0's last line not on screen after {timeout:g} s") from None
            cpu, elapsed = time.process_time() - cpu0, done_at - t0
            # What a skipped flood leaves for later: counting it backwards once the log is quiet.
            deadline = time.monotonic() + timeout
            while not (view.index_complete and view.line_count >= lines):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rank 0's log not indexed {timeout:g} s after the flood")
                await asyncio.sleep(0.02)
            cpu_indexed = time.process_time() - cpu0
            with open(view.path, "rb") as f:  # check: the line the view reached is the flood's last
                f.seek(max(0, os.path.getsize(view.path) - 300))
                last = f.read().decode(errors="replace").splitlines()[-1]
            if "BENCH-DONE" not in last:
                raise RuntimeError(f"the log's last line is not the flood's end: {last!r}")
            written = sum(1 for _ in stamps.of("done")) * lines  # lines of the ranks done by then
            return {"cpu_s": cpu, "elapsed_s": elapsed, "frames": len(clock.frames) - frames0,
                    "all_ranks_lines_by_then": max(written, lines), "cpu_s_until_indexed": cpu_indexed}
        # keys
        gate.touch()
        start_wait = time.monotonic() + 30
        while not any(tool.log_path(r).stat().st_size if tool.log_path(r).exists() else 0 for r in range(ranks)):
            if time.monotonic() > start_wait:
                raise RuntimeError("no rank started writing")
            await asyncio.sleep(0.01)
        floor = subprocess.Popen([sys.executable, "-c", FLOOR_PROBE, str(FLOOR_CPU_MS)], stdout=subprocess.PIPE,
                                 text=True)
        latencies, missed, direction = [], 0, 1
        for _ in range(presses):
            if len(stamps.of("done")) >= ranks:
                break  # the flood is over: later presses would not measure it
            current = table.selected_rank or 0
            if not 0 <= current + direction < ranks:
                direction = -direction
            target = current + direction
            key = "j" if direction > 0 else "k"
            marker = f" rank {target} "
            shown = clock.next_frame(lambda now, text: marker in text)
            event = events.Key(key, key)
            event.set_sender(app)
            t0 = time.perf_counter()
            app._driver.send_message(event)  # as the terminal driver does with a key it read
            try:
                latencies.append((await asyncio.wait_for(shown, timeout=5.0) - t0) * 1000)
            except asyncio.TimeoutError:
                missed += 1
                table.select_rank(target)  # resynchronise and go on
            await asyncio.sleep(random.uniform(0.1, 0.2))
        flooding_at_end = len(stamps.of("done")) < ranks
        floor.send_signal(signal.SIGINT)
        floor_ms = [float(v) for v in floor.communicate(timeout=10)[0].split()]
        return {"latencies_ms": latencies, "missed": missed, "flood_still_on": flooding_at_end, "floor_ms": floor_ms}


def live(args) -> dict:
    import xllm_tui.ui.app  # noqa: F401 - first, from PYTHONPATH if set: suite.py puts this tree on sys.path

    sys.path.insert(0, str(REPO / "bench"))
    import suite
    from tui_frame import p95

    cache = suite.Cache(Path(os.environ.get("XLLM_BENCH_CACHE", str(suite.DEFAULT_CACHE))))
    cache.ensure(["xllm-tui"])
    width, height = (int(v) for v in args.size.lower().split("x"))
    results: dict[str, list] = {"follow": [], "keys": []}
    for n in range(max(1, args.runs)):
        for kind in (("follow", "keys") if n % 2 == 0 else ("keys", "follow")):
            if kind not in args.kinds.split(","):
                continue
            lines = args.lines if kind == "follow" else args.key_lines
            with suite.Session(cache, "xllm-tui") as s:
                env = {"BENCH_LINES": str(lines), "BENCH_STAMP": str(s.stamps.path), "BENCH_GATE": str(s.gate),
                       "BENCH_AFTER": "sleep"}
                s.tool.start(args.ranks, [str(REPO / "bench" / "writer.py")], env, restart=False)
                s.stamps.wait("start", args.ranks, 120)
                result = asyncio.run(live_session(kind, s.tool, s.stamps, s.gate, args.ranks, lines,
                                                  (width, height), args.presses, args.timeout))
                print(json.dumps({"run": n + 1, "kind": kind, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                                  for k, v in result.items() if k != "latencies_ms"},
                                  "presses": len(result.get("latencies_ms", []))}), file=sys.stderr, flush=True)
                results[kind].append(result)
    latencies = sorted(v for r in results["keys"] for v in r["latencies_ms"])
    latency_p95 = p95(latencies)
    floor = sorted(v for r in results["keys"] for v in r.get("floor_ms", []))
    follow = results["follow"] or [{"cpu_s": float("nan"), "elapsed_s": float("nan"), "frames": 0,
                                    "all_ranks_lines_by_then": 1}]
    cpu = statistics.median(r["cpu_s"] for r in follow)
    return {
        "ranks": args.ranks, "lines_per_rank_follow": args.lines, "lines_per_rank_keys": args.key_lines,
        "size": args.size,
        "keypress_to_frame_ms_median": round(statistics.median(latencies), 1) if latencies else None,
        "keypress_to_frame_ms_p95": round(latency_p95, 1) if latency_p95 is not None else None,
        "keypress_to_frame_ms_max": round(latencies[-1], 1) if latencies else None,
        "presses_counted": len(latencies), "presses_missed": sum(r["missed"] for r in results["keys"]),
        f"floor_wake_plus_{FLOOR_CPU_MS:g}ms_cpu_ms_median": round(statistics.median(floor), 1) if floor else None,
        f"floor_wake_plus_{FLOOR_CPU_MS:g}ms_cpu_ms_p95": round(p95(floor), 1) if floor else None,
        "follow_cpu_s": [round(r["cpu_s"], 3) for r in follow],
        "follow_elapsed_s": [round(r["elapsed_s"], 2) for r in follow],
        "follow_frames_per_s": [round(r["frames"] / r["elapsed_s"], 1) for r in follow],
        "cpu_s_per_million_lines_followed": round(cpu / (args.lines / 1e6), 4),
        "cpu_s_per_million_lines_until_indexed": round(
            statistics.median(r.get("cpu_s_until_indexed", float("nan")) for r in follow) / (args.lines / 1e6), 4),
        "cpu_s_per_million_lines_all_ranks": round(statistics.median(
            r["cpu_s"] / (r["all_ranks_lines_by_then"] / 1e6) for r in follow), 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "tui_tree": os.path.dirname(os.path.dirname(sys.modules["xllm_tui"].__file__)),
        "targets": {"keypress_p95_ms": 50, "cpu_s_per_million_lines": 0.1, "peak_rss_mib": 100},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="120x40", help="terminal size WxH")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--live", action="store_true", help="a real supervisor and flooding ranks: keypress to "
                        "frame, CPU per million lines while following (see above)")
    parser.add_argument("--ranks", type=int, default=16, help="--live: flooding ranks (default 16)")
    parser.add_argument("--presses", type=int, default=40, help="--live: keypresses per keys run (default 40)")
    parser.add_argument("--key-lines", type=int, default=1_500_000,
                        help="--live: lines per rank in a keys run (default 1,500,000: the flood lasts ~10 s here)")
    parser.add_argument("--kinds", default="follow,keys", help="--live: the kinds of run (default follow,keys)")
    args = parser.parse_args()
    if args.live:
        print(json.dumps(live(args)))
        return 0
    width, height = (int(v) for v in args.size.lower().split("x"))
    runs = [asyncio.run(one_run(args.lines, (width, height), args.timeout)) for _ in range(max(1, args.runs))]
    cpu = statistics.median(r["cpu_s"] for r in runs)
    net = statistics.median(r["net_cpu_s"] for r in runs)
    print(json.dumps({
        "lines": args.lines,
        "cpu_s_per_million_lines": round(cpu / (args.lines / 1e6), 4),
        "net_cpu_s_per_million_lines": round(net / (args.lines / 1e6), 4),
        "cpu_s_per_million_lines_until_indexed": round(
            statistics.median(r["cpu_s_until_indexed"] for r in runs) / (args.lines / 1e6), 4),
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
