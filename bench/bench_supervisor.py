"""What the supervisor costs: a simulated deployment's start-up time, the supervisor's memory and CPU while the
group serves, and how long a snapshot request takes. Prints figures; it is not a test.

    python3 bench/bench_supervisor.py                 # 8 ranks (a3-8card) and 16 ranks (a3-16card-2node)
    python3 bench/bench_supervisor.py --seconds 30    # sample longer

Each deployment runs in its own temporary run directory on free ports (scripts/sim_session.py) and is shut
down with all its ranks at the end, also on error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from sim_session import SimSession  # noqa: E402

PROFILES = {8: REPO / "profiles" / "a3-8card.yaml", 16: REPO / "profiles" / "a3-16card-2node.yaml"}


def measure(ranks: int, seconds: float, time_scale: float) -> dict[str, float]:
    started = time.monotonic()
    with SimSession(PROFILES[ranks], time_scale=time_scale) as sim:
        sim.wait(lambda snap: snap["group"]["state"] == "ready", "the group to be ready", timeout=300)
        ready_after = time.monotonic() - started
        supervisor = psutil.Process(sim.supervisor_pid)
        supervisor.cpu_percent(None)
        cpu, rss = [], []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(1.0)
            cpu.append(supervisor.cpu_percent(None))
            rss.append(supervisor.memory_info().rss / 2**20)
        latencies = []
        for _ in range(50):
            t0 = time.perf_counter()
            sim.request("snapshot")
            latencies.append((time.perf_counter() - t0) * 1000)
        rank_rss = [psutil.Process(r["pid"]).memory_info().rss / 2**20
                    for r in sim.request("snapshot")["ranks"] if r.get("pid")]
    return {
        "ready_s": ready_after,
        "cpu_pct_median": statistics.median(cpu),
        "cpu_pct_max": max(cpu),
        "rss_mib_median": statistics.median(rss),
        "snapshot_ms_median": statistics.median(latencies),
        "rank_rss_mib_median": statistics.median(rank_rss) if rank_rss else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to sample the ready group")
    parser.add_argument("--time-scale", type=float, default=0.05, help="XLLM_SIM_TIME_SCALE for the ranks")
    parser.add_argument("--ranks", type=int, choices=sorted(PROFILES), action="append",
                        help="8 and/or 16 (default both)")
    args = parser.parse_args()
    for ranks in args.ranks or sorted(PROFILES):
        m = measure(ranks, args.seconds, args.time_scale)
        print(f"{ranks} simulated ranks (time scale {args.time_scale:g}): ready after {m['ready_s']:.1f} s "
              f"(includes the supervisor's start); supervisor while serving: CPU median {m['cpu_pct_median']:.1f}% "
              f"(max {m['cpu_pct_max']:.1f}%), RSS {m['rss_mib_median']:.1f} MiB; snapshot request median "
              f"{m['snapshot_ms_median']:.1f} ms; a simulated rank's RSS {m['rank_rss_mib_median']:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
