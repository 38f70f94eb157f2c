"""Supervisor-side log intake: CPU seconds per million lines, the old path against logs/intake.py.

    python3 bench/bench_intake.py                      # 8 ranks x 500,000 lines of 120 bytes, 3 runs
    python3 bench/bench_intake.py --lines 100000 --runs 5
    python3 bench/bench_intake.py --profile new        # cProfile of one run of a path, top entries

The logs are written once into a temporary directory (deleted after), as ranks flooding after start-up
would leave them: the start-up milestones first, then 120-byte glog lines of a serving rank with a warning
every 20,000 lines and one error without a known cause. Rank 0 is the master (ready_pattern as the
profile default), the others workers. Each run reads all the ranks' logs to their end the way the
supervisor's log thread does (one call per rank per round, until nothing is pending), in this process:
- old: IncrementalReader.read_new() + Milestones.feed() of every line (what supervisor/daemon.py does today);
- new: LogIntake.feed(milestones) (logs/intake.py), without line counts, as the supervisor uses it.
Runs alternate between the paths (old, new, old, new, ...). Printed: median CPU seconds (process time)
per million lines of each path, the ratio, and a check that both end in the same milestone state.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xllm_tui.logs.intake import LogIntake  # noqa: E402
from xllm_tui.logs.tail import IncrementalReader  # noqa: E402
from xllm_tui.supervisor.probes import Milestones  # noqa: E402

LINE_BYTES = 120
READY_PATTERN = "Brpc Server started"  # the profile default (spec.py)
STARTUP = [
    "xllm.cpp:134] set worker role to local worker",
    "master.cpp:88] Master init options: model_path=/models/GLM-4.7, devices=npu:{rank}",
    "master.cpp:120] Multi-node serving world_size = 8, each_node_ranks = 8",
    "worker_server.cpp:253] Worker#{rank} connect to 127.0.0.1:19888 success.",
    "llm_engine.cpp:99] Initializing model from: /models/GLM-4.7",
    "model_loader.cpp:89] Loading model weights from /models/GLM-4.7/model-00001-of-00002.safetensors",
    "model_loader.cpp:89] Loading model weights from /models/GLM-4.7/model-00002-of-00002.safetensors",
    "remote_worker.cpp:71] Init_model_async succeed.",
    "worker_impl.cpp:112] worker #{rank}: available memory: 10.1 GB, total memory: 64 GB",
    "llm_engine.cpp:301] kv cache capacity: 1000000, blocks: 7812",
    "http_service.cpp:60] Brpc Server started on port 18000, idle_timeout_s: -1, num_threads: 32",
]
SERVING = [
    "llm_engine.cpp:210] Generated {n} tokens in 12.{n} ms, throughput 812.4 tokens/s, running 37",
    "scheduler.cpp:455] step {n}: batch 32, prefill 2048, decode 31, queue 5, blocks used {n}",
    "worker_impl.cpp:377] Execute model done, batch size {n}, elapsed 0.0{n} s",
    "continuous_scheduler.cpp:88] request {n} finished, prompt 1024 tokens, output 512",
]
WARNING = "W{date} {time} {tid} llm_engine.cpp:512] slow step {n}: 48.1 ms over the 40 ms budget"
ERROR = "E{date} {time} {tid} rpc.cpp:77] request {n} timed out, client gone"


def glog(severity: str, i: int, text: str) -> str:
    clock = f"15:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000000:06d}"
    return f"{severity}20261129 {clock} {17000 + i % 64} {text}"


def fit(line: str) -> bytes:
    """The line padded or cut to LINE_BYTES, newline included."""
    raw = line.encode()[: LINE_BYTES - 1]
    return raw + b" " * (LINE_BYTES - 1 - len(raw)) + b"\n"


def write_log(path: str, rank: int, lines: int) -> None:
    rng = random.Random(rank)
    with open(path, "wb") as f:
        startup = STARTUP if rank == 0 else [t for t in STARTUP if "Brpc" not in t]  # only rank 0 serves HTTP
        out = [glog("I", i, text.format(rank=rank)).encode() + b"\n" for i, text in enumerate(startup)]
        for i in range(len(out), lines):
            if i % 20000 == 0:
                line = WARNING.format(date="20261129", time="15:20:01.000000", tid=17001, n=i)
            elif i == lines // 2:
                line = ERROR.format(date="20261129", time="15:20:01.000000", tid=17001, n=i)
            else:
                line = glog("I", i, rng.choice(SERVING).format(n=rng.randrange(100000)))
            out.append(fit(line))
            if len(out) >= 50000:
                f.write(b"".join(out))
                out.clear()
        f.write(b"".join(out))


def new_milestones(rank: int) -> Milestones:
    return Milestones("master" if rank == 0 else "worker", READY_PATTERN)


def run_old(paths: list[str]) -> list[Milestones]:
    readers = [(IncrementalReader(p), new_milestones(rank)) for rank, p in enumerate(paths)]
    busy = True
    while busy:  # rounds, as supervisor/daemon.py's log thread does
        busy = False
        for reader, milestones in readers:
            lines = reader.read_new()
            if lines:
                busy = True
                for line in lines:
                    milestones.feed(line)
    return [m for _, m in readers]


def run_new(paths: list[str]) -> list[Milestones]:
    intakes = [(LogIntake(p, count_lines=False), new_milestones(rank)) for rank, p in enumerate(paths)]
    busy = True
    while busy:
        busy = False
        for intake, milestones in intakes:
            if intake.feed(milestones).grew:
                busy = True
    return [m for _, m in intakes]


PATHS = {"old": run_old, "new": run_new}


def state(m: Milestones) -> tuple:
    return (m.phase, m.progress, m.ready, m.connected, m.failure, m.describe(), m.last_line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--lines", type=int, default=500_000, help="lines per rank")
    parser.add_argument("--runs", type=int, default=3, help="runs of each path (median reported; at least 3)")
    parser.add_argument("--profile", choices=sorted(PATHS), help="profile one run of this path instead")
    parser.add_argument("--dir", help="where to write the logs (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-intake-", dir=args.dir) as tmp:
        paths = [os.path.join(tmp, f"node_{rank}.log") for rank in range(args.ranks)]
        started = time.monotonic()
        for rank, path in enumerate(paths):
            write_log(path, rank, args.lines)
        total_lines = args.ranks * args.lines
        size = sum(os.path.getsize(p) for p in paths)
        print(f"{args.ranks} logs x {args.lines:,} lines ({size / 1e6:.0f} MB) written in "
              f"{time.monotonic() - started:.1f}s; page cache warm (just written)")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            PATHS[args.profile](paths)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
            return
        times: dict[str, list[float]] = {name: [] for name in PATHS}
        states: dict[str, list[tuple]] = {}
        for _ in range(max(3, args.runs)):
            for name, run in PATHS.items():  # interleaved: old, new, old, new, ...
                cpu = time.process_time()
                milestones = run(paths)
                times[name].append(time.process_time() - cpu)
                states[name] = [state(m) for m in milestones]
        same = states["old"] == states["new"]
        per_million = {name: statistics.median(t) / (total_lines / 1e6) for name, t in times.items()}
        for name in PATHS:
            runs = ", ".join(f"{t:.3f}" for t in times[name])
            print(f"{name}: {per_million[name]:.4f} CPU s per million lines (median; runs: {runs} s)")
        print(f"new/old: 1/{per_million['old'] / per_million['new']:.0f}; target <= 0.017 s per million lines: "
              f"{'met' if per_million['new'] <= 0.017 else 'missed'}")
        print(f"same milestone state on every rank: {same}")
        print(f"rank 0: {states['new'][0][5]}; rank 1: {states['new'][1][5]}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
