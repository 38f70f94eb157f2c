"""What machines over ssh cost: machine 0's snapshot latency, `xllm-tui status` wall time and machine 0's
supervisor CPU while serving, for 2, 4 and 8 simulated machines (each a loopback address 127.0.0.N reached
through a real sshd on a free port, with its own state directory). Prints figures; it is not a test.

    python3 bench/bench_machines.py                     # 2, 4, 8 machines x 2 ranks
    python3 bench/bench_machines.py --machines 2 4 --ranks 4 --seconds 20

Everything started is ended at the end, also on error: machine 0's supervisor by a shutdown request (which
shuts the other machines' supervisors down), then anything left carrying this run's tag by pid, then sshd.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
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
from supervisor_helpers import tagged_processes  # noqa: E402

from xllm_tui.client import SupervisorClient, socket_path  # noqa: E402

TAG = "XLLM_TUI_TEST_TAG"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(run_dir: str) -> dict | None:
    try:
        with SupervisorClient(socket_path(run_dir), timeout=5) as client:
            return client.snapshot()
    except Exception:  # noqa: BLE001
        return None


def measure(machines: int, ranks: int, seconds: float, tmp: Path) -> dict[str, float]:
    tag = uuid.uuid4().hex
    hosts = [f"127.0.0.{i + 2}" for i in range(machines - 1)]
    sshd = SshServer(tmp, hosts, {h: {"XDG_STATE_HOME": str(tmp / f"state-{h}"), TAG: tag} for h in hosts})
    base_port = free_port()
    devices = f"0-{ranks - 1}" if ranks > 1 else [0]
    profile = {
        "name": f"bench{machines}m", "binary": "/opt/xllm/bin/xllm", "model": "/models/sim-model",
        "master_node_addr": f"127.0.0.1:{free_port()}", "base_port": base_port,
        "machines": [{"host": "127.0.0.1", "devices": devices}] + [
            {"host": h, "devices": devices, "ssh": {"host": h, "user": "root", "port": sshd.port,
                                                    "identity": sshd.user_key,
                                                    "command": [sys.executable, "-m", "xllm_tui"]}}
            for h in hosts],
        "cores": {"rule": "per_device", "count": 1, "first": 0},
        "env": {"XLLM_SIM_TIME_SCALE": "0.01", "XLLM_SIM_WEIGHT_FILES": "2", TAG: tag},
        "stop": {"grace": "2s"},
    }
    path = tmp / "profile.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    run_dir = str(tmp / "run0")
    env = {**os.environ, TAG: tag, "XLLM_TUI_SSH_CONFIG": sshd.client_config, "XDG_STATE_HOME": str(tmp / "state0"),
           "PYTHONPATH": str(REPO)}
    sshd.start()
    log = open(tmp / "supervisor.out", "wb")
    sup = subprocess.Popen([sys.executable, "-m", "xllm_tui", "supervise", str(path), "--simulate", "--over-ssh",
                            "--run-dir", run_dir], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                           start_new_session=True)
    started = time.monotonic()
    try:
        while True:
            snap = snapshot(run_dir)
            if snap and snap["group"]["state"] == "ready" and len(snap["ranks"]) == machines * ranks:
                break
            if time.monotonic() - started > 300 or sup.poll() is not None:
                raise RuntimeError(f"{machines} machines did not come up; see {tmp / 'supervisor.out'}")
            time.sleep(0.2)
        ready_s = time.monotonic() - started
        proc = psutil.Process(sup.pid)
        proc.cpu_percent(None)
        time.sleep(seconds)
        cpu = proc.cpu_percent(None)
        latencies = []
        with SupervisorClient(socket_path(run_dir), timeout=10) as client:
            for _ in range(50):
                t0 = time.perf_counter()
                client.snapshot()
                latencies.append((time.perf_counter() - t0) * 1000)
        status = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "xllm_tui", "status", str(path), "--simulate", "--run-dir", run_dir],
                           env=env, capture_output=True, check=True, timeout=60)
            status.append((time.perf_counter() - t0) * 1000)
        return {"ready_s": ready_s, "supervisor_cpu_pct": cpu, "snapshot_ms_median": statistics.median(latencies),
                "snapshot_ms_max": max(latencies), "status_ms_median": statistics.median(status)}
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
    parser.add_argument("--ranks", type=int, default=2, help="ranks per machine")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to sample machine 0's CPU")
    args = parser.parse_args()
    print(f"{'machines':>8} {'ranks':>6} {'ready s':>8} {'sup CPU %':>9} {'snapshot ms':>12} {'(max)':>7} "
          f"{'status ms':>10}")
    for n in args.machines:
        with tempfile.TemporaryDirectory(prefix=f"xllm-bench-{n}m-") as tmp:
            r = measure(n, args.ranks, args.seconds, Path(tmp))
        print(f"{n:>8} {n * args.ranks:>6} {r['ready_s']:>8.1f} {r['supervisor_cpu_pct']:>9.1f} "
              f"{r['snapshot_ms_median']:>12.1f} {r['snapshot_ms_max']:>7.1f} {r['status_ms_median']:>10.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
