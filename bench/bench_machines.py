"""What machines over ssh cost: machine 0's snapshot latency, `xllm-tui status` wall time, machine 0's
supervisor CPU at idle and its RSS, for 2, 4 and 8 machines. Every "machine" is a loopback address 127.0.0.N
(machine 0 is 127.0.0.1), all of them reached through ONE real sshd on a free port, each with its own state
directory and supervisor; everything runs on this one host and its cores. Prints figures; it is not a test.

    python3 bench/bench_machines.py                          # 2, 4, 8 machines x 16 sleeper ranks, 3 runs each
    python3 bench/bench_machines.py --machines 2 4 --ranks 2 --rank-kind sim --runs 1
    python3 bench/bench_machines.py --tui                    # and the TUI's frame time at each size

Ranks: `sleeper` (default) is bench/sleeper.c compiled with gcc (as bench/suite.py does): a C process that logs
the ready lines and sleeps, so 8 x 16 = 128 ranks fit on 2 cores; the supervisors then run without --simulate
(--over-ssh --machine 127.0.0.1 on machine 0), with the sleeper as the profile's binary. The last columns
say what the world looked like when measured (its group state, how many ranks were ready). `sim` is the
simulator under --simulate with its timings scaled down (XLLM_SIM_TIME_SCALE=0.01): about 25 MiB of Python per
rank. Figures per size are medians over --runs fresh deployments (snapshot: the median of 50 requests in each
run; status: of 5 `xllm-tui status` commands; CPU: machine 0's supervisor over --seconds once every rank runs).

Everything started is ended at the end, also on error: machine 0's supervisor by a shutdown request (which
shuts the other machines' supervisors down), then anything left carrying this run's tag by pid, then sshd.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import yaml  # noqa: E402
from sshd_harness import SshServer  # noqa: E402
from suite import build_sleeper, free_ports, write_model_dir  # noqa: E402 - bench/ is sys.path[0]
from supervisor_helpers import tagged_processes  # noqa: E402

from xllm_tui.client import SupervisorClient, socket_path  # noqa: E402

TAG = "XLLM_TUI_TEST_TAG"
RUNNING = ("starting", "loading", "ready")


def snapshot(run_dir: str) -> dict | None:
    try:
        with SupervisorClient(socket_path(run_dir), timeout=5) as client:
            return client.snapshot()
    except Exception:  # noqa: BLE001
        return None


def everyone_runs(snap: dict | None, total: int, kind: str) -> bool:
    if not snap or len(snap["ranks"]) != total:
        return False
    if kind == "sim":
        return snap["group"]["state"] == "ready"
    return all(r.get("pid") and r["state"] in RUNNING for r in snap["ranks"])


def tui_frames(run_dir: str, profile: str, seconds: float, size: tuple[int, int] = (200, 50)) -> dict:
    """The TUI attached to machine 0's supervisor (headless, Textual's Pilot, in this process) for `seconds`:
    per poll, the snapshot's fetch (socket + JSON) and the frame time, from applying the snapshot to the
    widgets until the compositor hands the resulting frame to the driver (wall time, and this process's CPU time
    in it, which the load of the machine disturbs less); frames per second; its CPU."""
    import asyncio

    from textual._compositor import CompositorUpdate

    from xllm_tui.ui.app import XllmApp
    from xllm_tui.ui.source import SupervisorSource
    from xllm_tui.ui.widgets.rank_table import RankTable

    async def run() -> dict:
        source = SupervisorSource(run_dir, profile_path=profile)
        app = XllmApp(source, user_config=False, watch_profile=False, profile_path=profile)
        fetch_ms: list[float] = []
        frame_ms: list[float] = []
        frame_cpu_ms: list[float] = []
        frames = {"n": 0, "on": False, "applied": None, "applied_cpu": 0.0}
        fetch, apply, display = source.snapshot, app._apply_snapshot, app._display

        async def timed_fetch():
            t = time.perf_counter()
            snap = await fetch()
            if frames["on"]:
                fetch_ms.append((time.perf_counter() - t) * 1000)
            return snap

        def timed_apply(snapshot):
            frames["applied"], frames["applied_cpu"] = time.perf_counter(), time.process_time()
            apply(snapshot)

        def timed_display(screen, renderable) -> None:
            display(screen, renderable)
            if frames["on"] and isinstance(renderable, CompositorUpdate):
                frames["n"] += 1
                if frames["applied"] is not None:
                    frame_ms.append((time.perf_counter() - frames["applied"]) * 1000)
                    frame_cpu_ms.append((time.process_time() - frames["applied_cpu"]) * 1000)
                    frames["applied"] = None

        source.snapshot, app._apply_snapshot, app._display = timed_fetch, timed_apply, timed_display
        async with app.run_test(size=size) as pilot:
            table = app.main_screen.query_one(RankTable)
            deadline = time.monotonic() + 60
            while table.row_count == 0 and time.monotonic() < deadline:
                await pilot.pause(0.1)
            await pilot.pause(2.0)  # the first full paint and the log pane's first read
            frames["on"] = True
            cpu, started = time.process_time(), time.monotonic()
            await pilot.pause(seconds)
            cpu, elapsed = time.process_time() - cpu, time.monotonic() - started
            frames["on"] = False
        return {"tui_fetch_ms": statistics.median(fetch_ms) if fetch_ms else float("nan"),
                "tui_frame_ms": statistics.median(frame_ms) if frame_ms else float("nan"),
                "tui_frame_ms_max": max(frame_ms, default=float("nan")),
                "tui_frame_cpu_ms": statistics.median(frame_cpu_ms) if frame_cpu_ms else float("nan"),
                "tui_fps": frames["n"] / elapsed, "tui_cpu_pct": cpu / elapsed * 100}

    return asyncio.run(run())


def measure(machines: int, ranks: int, seconds: float, tmp: Path, kind: str, sleeper: str | None,
            model: str | None, tui: bool) -> dict:
    tag = uuid.uuid4().hex
    hosts = [f"127.0.0.{i + 2}" for i in range(machines - 1)]
    sshd = SshServer(tmp, hosts, {h: {"XDG_STATE_HOME": str(tmp / f"state-{h}"), TAG: tag} for h in hosts})
    devices = f"0-{ranks - 1}" if ranks > 1 else [0]
    master, base = free_ports(ranks)
    profile = {
        "name": f"bench{machines}m", "binary": sleeper or "/opt/xllm/bin/xllm", "model": model or "/models/sim-model",
        "master_node_addr": f"127.0.0.1:{master}", "base_port": base,
        "machines": [{"host": "127.0.0.1", "devices": devices}] + [
            {"host": h, "devices": devices, "ssh": {"host": h, "user": "root", "port": sshd.port,
                                                    "identity": sshd.user_key,
                                                    "command": [sys.executable, "-m", "xllm_tui"]}}
            for h in hosts],
        "cores": {"rule": "per_device", "count": 1, "first": 0} if kind == "sim" else "none",
        "env": {"XLLM_SIM_TIME_SCALE": "0.01", "XLLM_SIM_WEIGHT_FILES": "2", TAG: tag},
        "stop": {"grace": "2s"},
    }
    if kind == "sleeper":
        profile["working_dir"] = str(tmp)
        profile["readiness"] = {"http_probe": False}
    path = tmp / "profile.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    run_dir = str(tmp / "run0")
    env = {**os.environ, TAG: tag, "XLLM_TUI_SSH_CONFIG": sshd.client_config, "XDG_STATE_HOME": str(tmp / "state0"),
           "PYTHONPATH": str(REPO)}
    mode = ["--simulate", "--over-ssh"] if kind == "sim" else ["--over-ssh", "--machine", "127.0.0.1"]
    cli_mode = ["--simulate"] if kind == "sim" else []
    sshd.start()
    log = open(tmp / "supervisor.out", "wb")
    sup = subprocess.Popen([sys.executable, "-m", "xllm_tui", "supervise", str(path), *mode, "--run-dir", run_dir],
                           env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    started = time.monotonic()
    try:
        while not everyone_runs(snapshot(run_dir), machines * ranks, kind):
            if time.monotonic() - started > 300 or sup.poll() is not None:
                log.flush()
                raise RuntimeError(f"{machines} machines did not come up; machine 0's supervisor said:\n"
                                   + (tmp / "supervisor.out").read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        ready_s = time.monotonic() - started
        time.sleep(3.0)  # the last starts' own work done
        proc = psutil.Process(sup.pid)
        t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
        time.sleep(seconds)
        cpu = (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0) * 100
        rss = proc.memory_info().rss / 2**20
        latencies = []
        with SupervisorClient(socket_path(run_dir), timeout=10) as client:
            for _ in range(50):
                t1 = time.perf_counter()
                client.snapshot()
                latencies.append((time.perf_counter() - t1) * 1000)
        status = []
        for _ in range(5):
            t1 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "xllm_tui", "status", str(path), *cli_mode, "--run-dir", run_dir],
                           env=env, capture_output=True, check=True, timeout=60)
            status.append((time.perf_counter() - t1) * 1000)
        tagged = tagged_processes(tag)
        last = snapshot(run_dir) or {"ranks": [], "group": {}}
        ready = sum(r["state"] == "ready" for r in last["ranks"])
        frames = tui_frames(run_dir, str(path), seconds) if tui else {}
        return {**frames, "ready_ranks": ready, "group": last["group"].get("state"), "ready_s": ready_s, "cpu_pct": cpu, "rss_mib": rss, "snapshot_ms": statistics.median(latencies),
                "snapshot_ms_max": max(latencies), "status_ms": statistics.median(status), "processes": len(tagged)}
    finally:
        try:
            with SupervisorClient(socket_path(run_dir), timeout=5) as client:
                client.request("shutdown", stop_ranks=True)
            sup.wait(120)
        except Exception:  # noqa: BLE001 - then by pid below
            pass
        for leftover in tagged_processes(tag):
            try:
                leftover.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        if sup.poll() is None:
            sup.kill()
            sup.wait(5)
        sshd.stop()
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--ranks", type=int, default=16, help="ranks per machine")
    parser.add_argument("--rank-kind", choices=["sleeper", "sim"], default="sleeper")
    parser.add_argument("--runs", type=int, default=3, help="fresh deployments per size (figures: medians)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to sample machine 0's CPU at idle")
    parser.add_argument("--tui", action="store_true", help="also the TUI's frame time, attached for --seconds")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.rank_kind} ranks; every machine a 127.0.0.N address behind one sshd on this host", flush=True)
    print(f"{'machines':>8} {'ranks':>6} {'ready s':>8} {'idle CPU %':>10} {'RSS MiB':>8} {'snapshot ms':>12} "
          f"{'(max)':>7} {'status ms':>10} {'procs':>6}  group, ready ranks", flush=True)
    tui_rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="xllm-bench-machines-") as top:
        sleeper = str(build_sleeper(Path(top) / "sleeper")) if args.rank_kind == "sleeper" else None
        model = str(write_model_dir(Path(top) / "model")) if args.rank_kind == "sleeper" else None
        for n in args.machines:
            runs = []
            for i in range(args.runs):
                where = Path(top) / f"{n}m-{i}"
                where.mkdir()
                runs.append(measure(n, args.ranks, args.seconds, where, args.rank_kind, sleeper, model, args.tui))

            def med(key: str) -> float:
                return statistics.median(r[key] for r in runs)

            print(f"{n:>8} {n * args.ranks:>6} {med('ready_s'):>8.1f} {med('cpu_pct'):>10.2f} {med('rss_mib'):>8.1f} "
                  f"{med('snapshot_ms'):>12.1f} {max(r['snapshot_ms_max'] for r in runs):>7.1f} "
                  f"{med('status_ms'):>10.0f} {int(med('processes')):>6}  "
                  f"{', '.join(sorted({str(r['group']) for r in runs}))}, {int(med('ready_ranks'))}", flush=True)
            if args.tui:
                tui_rows.append(f"{n:>8} {n * args.ranks:>6} {med('tui_fetch_ms'):>14.1f} {med('tui_frame_ms'):>14.1f} "
                                f"{max(r['tui_frame_ms_max'] for r in runs):>7.1f} {med('tui_frame_cpu_ms'):>13.1f} "
                                f"{med('tui_fps'):>9.1f} "
                                f"{med('tui_cpu_pct'):>11.1f}")
    if args.tui:
        print(f"TUI (headless, {args.seconds:g} s per run; medians of the runs' medians):")
        print(f"{'machines':>8} {'ranks':>6} {'fetch ms':>14} {'frame ms':>14} {'(max)':>7} {'frame CPU ms':>13} "
              f"{'frames/s':>9} "
              f"{'TUI CPU %':>11}")
        print("\n".join(tui_rows))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
