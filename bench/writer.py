#!/usr/bin/env python3
"""A rank that logs hard: N glog lines of about 120 bytes to stdout, as fast as it can, then a marker.

    writer.py [xllm flags...]          # the rank comes from --node_rank=N (as xllm-tui launches it), or BENCH_RANK
    BENCH_LINES=500000 BENCH_STAMP=/tmp/stamps writer.py --node_rank=3

Environment: BENCH_PHASE ("serving", the default: the three lines a ready rank logs last come first, before the
gate; "startup": none, so the flood comes while start-up milestones are still looked for), BENCH_LINES (default 500000), BENCH_STAMP (a file: one line "rank start|done <time.time()>"
appended at start and after the marker), BENCH_GATE (a path: wait until it exists before
writing), BENCH_AFTER ("exit", the default, or "sleep": stay alive, silent, until killed). Every other argument is accepted and ignored, so the script
can stand in for the xllm binary of a profile. Output goes to fd 1 in 64 KiB writes (glog buffers likewise).
"""

import os
import sys
import time


def main() -> int:
    t0 = time.time()
    rank = os.environ.get("BENCH_RANK", "0")
    for arg in sys.argv[1:]:
        if arg.startswith("--node_rank="):
            rank = arg.split("=", 1)[1]
        elif arg == "--helpxml":
            return 0
    lines = int(os.environ.get("BENCH_LINES", "500000"))
    stamp = os.environ.get("BENCH_STAMP")
    if stamp:
        with open(stamp, "a") as f:
            f.write(f"{rank} start {t0:.6f} {os.getpid()}\n")
    out = sys.stdout.buffer
    if os.environ.get("BENCH_PHASE", "serving") == "serving":
        # A rank that logs hard while serving (the usual case): what a ready xllm rank logs last (as
        # bench/sleeper.c), before the gate. BENCH_PHASE=startup floods before start-up is over instead.
        ts = time.strftime("I%m%d %H:%M:%S", time.localtime(t0)).encode()
        out.write(b"%s.000000 %6d worker_server.cpp:95] Worker#%s connect to 127.0.0.1:1 success\n"
                  b"%s.000001 %6d llm_engine.cpp:293] kv cache capacity: 1024\n"
                  b"%s.000002 %6d xllm_server.cpp:59] Brpc Server started on port 1 rank=%s\n"
                  % (ts, os.getpid(), rank.encode(), ts, os.getpid(), ts, os.getpid(), rank.encode()))
        out.flush()
    gate = os.environ.get("BENCH_GATE")
    while gate and not os.path.exists(gate):  # all ranks start writing together, once the tool has settled
        time.sleep(0.005)
    t0 = time.time()
    # I1130 14:05:01.123456  4242 worker_impl.cpp:321] ... padded to ~120 bytes per line
    pid = os.getpid()
    prefix = time.strftime("I%m%d %H:%M:%S", time.localtime(t0)).encode()
    body = b" forward done: batch=32 tokens=4096 latency_ms=12.5 kv=1024 rank=" + rank.encode()
    batch = []
    size = 0
    for i in range(lines):
        line = b"%s.%06d %6d worker_impl.cpp:321] %s seq=%d\n" % (prefix, i % 1000000, pid, body, i)
        batch.append(line)
        size += len(line)
        if size >= 65536:
            out.write(b"".join(batch))
            batch.clear()
            size = 0
    if batch:
        out.write(b"".join(batch))
    done = time.time()
    out.write(b"%s.000000 %6d bench.cpp:1] BENCH-DONE rank=%s lines=%d t=%.6f\n" % (prefix, pid, rank.encode(), lines, done))
    out.flush()
    if stamp:
        with open(stamp, "a") as f:
            f.write(f"{rank} done {done:.6f} {pid}\n")
    if os.environ.get("BENCH_AFTER", "exit") == "sleep":  # a rank lives on after a burst: the marker stays last
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
