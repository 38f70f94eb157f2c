#!/usr/bin/env python3
"""Start a simulated xllm group many times and count how often it reaches rank 0's Brpc line.

    python bench/stress_sim.py --runs 20 --ranks 8 --time-scale 0.2 --load 4 --draft

Each run launches N ranks directly (`python -m xllm_tui.sim.xllm ...`, argv lists, no shell) on free
loopback ports, workers first in a shuffled order and rank 0 last (so workers are in their 3 s retry
loop when rank 0 starts accepting), each in its own session. --load K starts K busy-looping
processes for the whole stress run, to imitate a loaded 2-core machine. A run succeeds when rank 0's
log shows `Brpc Server started` within --bound seconds; for a run that does not, the script prints
every rank's last log line. Every process it starts (ranks and load) is ended by its process group,
in a finally block, and it checks none is left.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SIM = [sys.executable, "-m", "xllm_tui.sim.xllm"]
READY_TEXT = "Brpc Server started"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessGroups:
    """Processes started in their own session; ended by process group, never by name."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], env: dict[str, str], log_path: str | None = None,
              cwd: str | None = None) -> subprocess.Popen:
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
                                    cwd=cwd, start_new_session=True)
        finally:
            if log_path:
                out.close()
        self.procs.append(proc)
        return proc

    def stop_all(self) -> list[int]:
        """SIGKILL every group we started; returns the pids still alive afterwards (should be none)."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        left = []
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                left.append(proc.pid)
        self.procs.clear()
        return left


def last_line(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty)"


def contains(path: str, text: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return text.encode() in handle.read()
    except OSError:
        return False


def rank_argv(rank: int, nnodes: int, master: str, port: int, draft: bool, source: str | None = None) -> list[str]:
    # -S: without site, the editable install cannot shadow the tree given with --source.
    sim = [sys.executable, "-S", "-m", "xllm_tui.sim.xllm"] if source else SIM
    argv = sim + ["--model=/models/GLM-4.7-w8a8", "--host=127.0.0.1", f"--port={port}",
                  f"--devices=npu:{rank}", f"--master_node_addr={master}", f"--nnodes={nnodes}",
                  f"--node_rank={rank}", "--max_memory_utilization=0.86"]
    if draft:
        argv += ["--draft_model=/models/GLM-4.7-mtp", "--draft_devices=npu:%d" % rank,
                 "--num_speculative_tokens=1"]
    return argv


def freeze_rank0(proc: subprocess.Popen, log_path: str, seconds: float, deadline: float) -> None:
    """Starve rank 0 the way an overloaded machine can: stop its process group for `seconds` right after
    its registration server is listening, while the workers keep connecting (and timing out)."""
    while time.monotonic() < deadline and proc.poll() is None:
        if contains(log_path, "Collective server started"):
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def one_run(index: int, args, env: dict[str, str], workdir: str) -> tuple[bool, float, list[str]]:
    run_dir = os.path.join(workdir, f"run{index:03d}")
    os.makedirs(run_dir)
    master = f"127.0.0.1:{free_port()}"
    http_port = free_port()
    logs = [os.path.join(run_dir, f"node_{r}.log") for r in range(args.ranks)]
    group = ProcessGroups()
    started = time.monotonic()
    ok = False
    report: list[str] = []
    try:
        order = list(range(1, args.ranks))
        random.shuffle(order)
        for rank in order + [0]:
            group.start(rank_argv(rank, args.ranks, master, http_port, args.draft, args.source), env, logs[rank],
                        cwd=run_dir)  # also keeps `-m` from importing the tree of the current directory
            if args.stagger > 0:
                time.sleep(random.uniform(0, args.stagger))
        deadline = started + args.bound
        if args.freeze_master > 0:
            freeze_rank0(group.procs[-1], logs[0], args.freeze_master, deadline)
        while time.monotonic() < deadline:
            if contains(logs[0], READY_TEXT):
                ok = True
                break
            if any(proc.poll() is not None for proc in group.procs):
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        if not ok:
            for rank in range(args.ranks):
                report.append(f"  rank {rank}: {last_line(logs[rank])}")
    finally:
        left = group.stop_all()
        if left:
            report.append(f"  processes still alive after SIGKILL: {left}")
    return ok, elapsed, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--time-scale", type=float, default=0.2)
    parser.add_argument("--weight-files", type=int, default=8)
    parser.add_argument("--draft", action="store_true", help="add --draft_model (one draft weight file)")
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes to start for the whole stress")
    parser.add_argument("--bound", type=float, default=0.0,
                        help="seconds a run may take to reach the Brpc line (default: 4x the nominal start-up)")
    parser.add_argument("--stagger", type=float, default=0.3, help="random delay (s) between rank launches")
    parser.add_argument("--freeze-master", type=float, default=0.0,
                        help="SIGSTOP rank 0 for this many seconds once its registration server listens "
                             "(a starved process on an overloaded machine), then SIGCONT")
    parser.add_argument("--source", default=None,
                        help="run the simulator from this source tree instead (e.g. an older commit: "
                             "git archive <commit> xllm_tui | tar -x -C DIR), to compare before and after")
    parser.add_argument("--keep-logs", action="store_true", help="keep the per-run logs directory")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.seed is not None:
        random.seed(args.seed)
    nominal = (1 + 2 + 1 + 2 * (args.weight_files + (1 if args.draft else 0)) + 2 + 1) * args.time_scale
    if args.bound <= 0:
        args.bound = max(4 * nominal + 10, 20.0)
    env = dict(os.environ, XLLM_SIM_TIME_SCALE=str(args.time_scale),
               XLLM_SIM_WEIGHT_FILES=str(args.weight_files))
    if args.source:
        env["PYTHONPATH"] = os.path.abspath(args.source)
    else:
        env.setdefault("PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # SIGTERM/SIGHUP end the stress like Ctrl-C does: through the finally blocks that stop every group.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    load = ProcessGroups()
    workdir = tempfile.mkdtemp(prefix="stress_sim_")
    successes = 0
    durations: list[float] = []
    try:
        for _ in range(args.load):
            load.start([sys.executable, "-c", "while True: pass"], dict(os.environ))
        for index in range(args.runs):
            ok, elapsed, report = one_run(index, args, env, workdir)
            successes += ok
            if ok:
                durations.append(elapsed)
            print(f"run {index + 1}/{args.runs}: {'ok' if ok else 'STUCK'} after {elapsed:.1f}s", flush=True)
            for line in report:
                print(line, flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        left = load.stop_all()
        if left:
            print(f"load processes still alive: {left}")
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}")
    runs = args.runs
    median = sorted(durations)[len(durations) // 2] if durations else 0.0
    print(f"{successes}/{runs} runs reached '{READY_TEXT}' within {args.bound:.0f}s "
          f"(ranks={args.ranks}, time scale={args.time_scale}, load={args.load}, draft={args.draft}, "
          f"freeze rank 0={args.freeze_master}s; "
          f"median {median:.1f}s, nominal {nominal:.1f}s)")
    return 0 if successes == runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
