#!/usr/bin/env python3
"""xllm-tui side by side with supervisord, PM2 and mprocs, and the floor: run by bench/run.sh (see bench/README.md).

    bench/run.sh                       # every workload, every tool, 3 interleaved runs -> bench/RESULTS.md
    bench/run.sh --quick               # smaller counts, one run (a smoke test)
    bench/run.sh --only floor,xllm-tui --workloads flood,crash --runs 5 --out /tmp/R.md

Everything is measured from outside: the tools' daemons with psutil/proc (cpu_times until idle again, VmHWM),
the ranks' own records (bench/writer.py and bench/sleeper.c append "RANK start|done TIME PID" to a stamp file),
xllm-tui's state through its socket and its events.jsonl. Every process the suite starts carries
BENCH_TAG=<uuid> in its environment; at the end of each measurement the ones still alive are found by that tag
in /proc/<pid>/environ and killed by pid, so nothing else on the machine is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from tui_frame import p95  # noqa: E402 - bench/ is on the path: the suite runs as bench/suite.py

TOOLS = ["floor", "xllm-tui", "supervisord", "pm2", "mprocs"]
ANCHORS = ["supervisord", "pm2", "mprocs"]
WORKLOADS = ["flood", "idle", "crash", "start", "tui-idle", "tui-flood", "scale", "biglog"]
SCALE_TOOLS = ["floor", "xllm-tui"]  # scale: the floor where it makes sense (start, CPU, RSS); biglog: xllm-tui only
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xllm-tui-bench"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def with_repo(env: dict[str, str]) -> dict[str, str]:
    """`env` with this checkout first on PYTHONPATH: the xllm_tui measured is this tree's."""
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ----------------------------------------------------------------------------------------- installation


class Cache:
    """The anchors, installed by the suite itself outside the repository (pip into a venv, npm into a prefix)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @property
    def supervisord(self) -> Path:
        return self.root / "venv" / "bin" / "supervisord"

    @property
    def pm2(self) -> Path:
        return self.root / "npm" / "node_modules" / ".bin" / "pm2"

    @property
    def mprocs(self) -> Path:
        # the native binary, not the node wrapper in .bin, so the process measured is mprocs itself
        found = sorted((self.root / "npm" / "node_modules" / "mprocs").glob("mprocs-*-linux-x86_64-musl/mprocs"))
        return found[-1] if found else self.root / "npm" / "missing-mprocs"

    @property
    def sleeper(self) -> Path:
        return self.root / "sleeper"

    def ensure(self, tools: list[str]) -> None:
        build_sleeper(self.sleeper)
        if "xllm-tui" in tools:
            # As installed (pip compiles a package's bytecode): with PYTHONDONTWRITEBYTECODE set, as on our
            # machines, every changed module would be compiled again at each start of the CLI and supervisor.
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "xllm_tui")], check=True,
                           stdout=subprocess.DEVNULL)
        if "supervisord" in tools and not self.supervisord.exists():
            log("installing supervisor from PyPI into " + str(self.root / "venv"))
            subprocess.run([sys.executable, "-m", "venv", str(self.root / "venv")], check=True)
            subprocess.run([str(self.root / "venv" / "bin" / "pip"), "install", "-q", "supervisor"], check=True)
        if ("pm2" in tools and not self.pm2.exists()) or ("mprocs" in tools and not self.mprocs.exists()):
            log("installing pm2 and mprocs from npm into " + str(self.root / "npm"))
            subprocess.run(["npm", "install", "--prefix", str(self.root / "npm"), "--no-audit", "--no-fund",
                            "pm2", "mprocs"], check=True, stdout=subprocess.DEVNULL)
        if "mprocs" in tools and not shutil.which("tmux"):
            raise SystemExit("mprocs runs in tmux: install tmux")

    def versions(self, tools: list[str]) -> dict[str, str]:
        out = {}

        def ask(argv: list[str]) -> str:
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                   env={**os.environ, "PM2_HOME": str(self.root / "pm2-version-home")})
                return (r.stdout.strip() or r.stderr.strip()).splitlines()[-1]
            except (OSError, subprocess.SubprocessError, IndexError):
                return "?"

        import xllm_tui
        out["xllm-tui"] = getattr(xllm_tui, "__version__", "?") + " (" + subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() + ")"
        if "supervisord" in tools:
            out["supervisord"] = ask([str(self.supervisord), "--version"])
        if "pm2" in tools:
            out["pm2"] = ask([str(self.pm2), "--version"])
            ask([str(self.pm2), "kill"])  # `pm2 --version` starts a daemon in that PM2_HOME: end it
            shutil.rmtree(self.root / "pm2-version-home", ignore_errors=True)
        if "mprocs" in tools:
            out["mprocs"] = ask([str(self.mprocs), "--version"]) + ", in " + ask(["tmux", "-V"])
        return out


# ----------------------------------------------------------------------------------------- processes


def tagged_pids(tag: str) -> list[int]:
    needle = f"BENCH_TAG={tag}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_tagged(tag: str, timeout: float = 10.0) -> None:
    """SIGKILL, by pid, every live process carrying our tag; wait until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in tagged_pids(tag) if alive(p)]
        if not pids:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of the benchmark survived SIGKILL: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def sched_seconds(pids: list[int]) -> float:
    """On-CPU time of the processes' live threads from /proc/PID/task/TID/schedstat (ns resolution, where
    cpu_times counts 10 ms ticks: one tick in 60 s is already 0.017 % of a core)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total / 1e9


def proc_status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(block: int) -> tuple[int, int]:
    """A free master port and a base port whose block of `block` ports does not hold it."""
    master = free_port()
    base = free_port()
    while base <= master < base + block or base + block > 65000:
        base = free_port()
    return master, base


def build_sleeper(binary: Path) -> Path:
    """bench/sleeper.c compiled to `binary` unless it is already there and newer than the source."""
    src = BENCH / "sleeper.c"
    if not binary.exists() or binary.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(src)], check=True)
    return binary


def write_model_dir(d: Path) -> Path:
    """A model directory the profile check accepts; the sleeper loads nothing from it."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text('{"model_type": "qwen2"}')
    (d / "tokenizer.json").write_text("{}")
    (d / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    header = b'{"__metadata__": {"format": "pt"}}'
    (d / "model-00001-of-00001.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return d


class Stamps:
    """The ranks' own records: "RANK start|done TIME PID" lines appended to one file."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.records: list[tuple[int, str, float, int]] = []

    def read(self) -> list[tuple[int, str, float, int]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.records
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode().splitlines():
            rank, kind, t, pid = line.split()
            self.records.append((int(rank), kind, float(t), int(pid)))
        return self.records

    def of(self, kind: str) -> list[tuple[int, str, float, int]]:
        return [r for r in self.read() if r[1] == kind]

    def wait(self, kind: str, count: int, timeout: float) -> list[tuple[int, str, float, int]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.of(kind)
            if len({r[3] for r in got}) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {count} '{kind}' stamps after {timeout:.0f} s")
            time.sleep(0.002)


# ----------------------------------------------------------------------------------------- the tools


class Tool:
    """One tool running `n` ranks. The argv of rank r is program + [--node_rank=r]; its log is logs/node_r.log."""

    name = ""

    def __init__(self, cache: Cache, work: Path, tag: str):
        self.cache, self.work, self.tag = cache, work, tag
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.daemons: list[int] = []  # the processes whose cost is measured

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["BENCH_TAG"] = self.tag
        return env

    def rank_env(self, rank: int, env: dict[str, str]) -> dict[str, str]:
        return {**env, "BENCH_RANK": str(rank), "BENCH_TAG": self.tag}

    def log_path(self, rank: int) -> Path:
        return self.logs / f"node_{rank}.log"

    def start(self, n: int, program: list[str], env: dict[str, str], restart: bool) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        pass


class Floor(Tool):
    name = "floor"

    def start(self, n, program, env, restart):
        ranks = [{"argv": [*program, f"--node_rank={r}"], "env": {**self.base_env(), **self.rank_env(r, env)},
                  "log": str(self.log_path(r))} for r in range(n)]
        spec = self.work / "ranks.json"
        spec.write_text(json.dumps(ranks))
        proc = subprocess.Popen([sys.executable, str(BENCH / "floor.py"), str(spec), *(["--restart"] if restart else [])],
                                env=self.base_env(), start_new_session=True, stdin=subprocess.DEVNULL)
        self.proc = proc
        self.daemons = [proc.pid]

    def stop(self):
        if getattr(self, "proc", None) is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class XllmTui(Tool):
    name = "xllm-tui"

    def model_dir(self) -> Path:
        d = self.cache.root / "model"
        if not (d / "config.json").exists():
            write_model_dir(d)
        return d

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "xllm_tui", *args], env=with_repo(self.base_env()),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, n, program, env, restart):
        import yaml

        if len(program) != 1:
            raise ValueError("xllm-tui runs one binary per rank")
        master, base = free_ports(n)
        profile = {
            "name": f"bench{n}",
            "binary": program[0],
            "model": str(self.model_dir()),
            "working_dir": str(self.work),
            "master_node_addr": f"127.0.0.1:{master}",
            "base_port": base,
            "machines": [{"host": "127.0.0.1", "devices": f"0-{n - 1}" if n > 1 else [0]}],
            "cores": "none",
            "env": {**env, "BENCH_TAG": self.tag},
            "readiness": {"http_probe": False},
            "restart": ({"mode": "on-failure", "scope": "rank",
                         "backoff": {"initial": "0s", "max": "0s", "factor": 1}, "max_restarts": 10000,
                         "window": "10m"} if restart else {"mode": "manual", "scope": "rank"}),
            "stop": {"grace": "1s"},
        }
        self.profile = self.work / f"bench{n}.yaml"
        self.profile.write_text(yaml.safe_dump(profile, sort_keys=False))
        self.run_dir = self.work / "run"
        r = self.cli("up", str(self.profile), "--run-dir", str(self.run_dir))
        if r.returncode != 0:
            raise RuntimeError(f"xllm-tui up failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
        self.daemons = [int(self.client_request("hello")["pid"])]

    def client_request(self, op: str, timeout: float = 10, **args) -> dict:
        from xllm_tui.client import SupervisorClient, socket_path

        with SupervisorClient(socket_path(str(self.run_dir)), timeout=timeout) as c:
            return c.request(op, **args)

    def events(self) -> list[dict]:
        out = []
        with open(self.run_dir / "events.jsonl") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def stop(self):
        try:
            self.cli("down", str(self.profile), "--run-dir", str(self.run_dir), timeout=30)
        except (subprocess.SubprocessError, AttributeError):
            pass


class Supervisord(Tool):
    name = "supervisord"

    def start(self, n, program, env, restart):
        lines = ["[supervisord]", "nodaemon=true", f"logfile={self.work / 'supervisord.log'}",
                 f"pidfile={self.work / 'supervisord.pid'}", f"childlogdir={self.work}", "loglevel=warn", ""]
        for r in range(n):
            renv = self.rank_env(r, env)
            lines += [
                f"[program:rank{r}]",
                "command=" + " ".join([*program, f"--node_rank={r}"]),
                "environment=" + ",".join(f'{k}="{v}"' for k, v in renv.items()),
                f"stdout_logfile={self.log_path(r)}",
                "stdout_logfile_maxbytes=0",
                "stdout_logfile_backups=0",
                "redirect_stderr=true",
                "autostart=true",
                f"autorestart={'true' if restart else 'false'}",
                "startsecs=0",
                "startretries=10000",
                "stopasgroup=true",
                "killasgroup=true",
                "stopwaitsecs=1",
                "",
            ]
        conf = self.work / "supervisord.conf"
        conf.write_text("\n".join(lines))
        self.proc = subprocess.Popen([str(self.cache.supervisord), "-c", str(conf)], env=self.base_env(),
                                     start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.daemons = [self.proc.pid]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


class PM2(Tool):
    name = "pm2"

    def env_pm2(self) -> dict[str, str]:
        return {**self.base_env(), "PM2_HOME": str(self.work / "pm2home")}

    def start(self, n, program, env, restart):
        apps = []
        for r in range(n):
            apps.append({
                "name": f"rank{r}", "script": program[0], "args": [*program[1:], f"--node_rank={r}"],
                "interpreter": "none", "exec_mode": "fork", "instances": 1,
                "env": self.rank_env(r, env), "cwd": str(self.work),
                "out_file": str(self.log_path(r)), "error_file": str(self.logs / f"node_{r}.err.log"),
                "merge_logs": True, "time": False, "autorestart": restart, "restart_delay": 0,
                "max_restarts": 10000, "min_uptime": 0, "watch": False, "vizion": False, "pmx": False,
                "automation": False, "treekill": True, "kill_timeout": 1000,
            })
        eco = self.work / "ecosystem.json"
        eco.write_text(json.dumps({"apps": apps}))
        r = subprocess.run([str(self.cache.pm2), "start", str(eco)], env=self.env_pm2(), capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"pm2 start failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        self.daemons = [int((self.work / "pm2home" / "pm2.pid").read_text().strip())]

    def stop(self):
        subprocess.run([str(self.cache.pm2), "kill"], env=self.env_pm2(), capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)


class Mprocs(Tool):
    """mprocs has no per-process log file: a rank's output goes to its pty, which mprocs reads and renders."""

    name = "mprocs"

    def start(self, n, program, env, restart):
        procs = {f"rank{r}": {"cmd": [*program, f"--node_rank={r}"], "env": self.rank_env(r, env),
                              "autostart": True, "autorestart": restart} for r in range(n)}
        conf = self.work / "mprocs.yaml"
        conf.write_text(json.dumps({"procs": procs}))  # JSON is YAML
        self.socket = f"xllm-bench-{self.tag[:12]}"
        subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-s", "bench", "-x", "160",
                        "-y", "48", f"exec {self.cache.mprocs} --config {conf}"], env=self.base_env(), check=True,
                       stdin=subprocess.DEVNULL)
        out = subprocess.run(["tmux", "-L", self.socket, "list-panes", "-a", "-F", "#{pane_pid}"],
                             capture_output=True, text=True, check=True).stdout
        self.daemons = [int(out.split()[0])]

    def stop(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


TOOL_CLASSES = {c.name: c for c in (Floor, XllmTui, Supervisord, PM2, Mprocs)}


class Session:
    """One tool in a fresh work dir; on exit everything tagged is killed and the work dir removed."""

    def __init__(self, cache: Cache, name: str):
        self.tag = uuid.uuid4().hex
        self.work = Path(tempfile.mkdtemp(prefix=f"run-{name}-", dir=cache.root))
        self.stamps = Stamps(self.work / "stamps")
        self.gate = self.work / "gate"
        self.tool: Tool = TOOL_CLASSES[name](cache, self.work, self.tag)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.tool.stop()
        except Exception as e:  # noqa: BLE001
            log(f"{self.tool.name}: stop failed: {e}")
        finally:
            kill_tagged(self.tag)
            shutil.rmtree(self.work, ignore_errors=True)


# ----------------------------------------------------------------------------------------- workloads


def wait_idle(pids: list[int], window: float, threshold: float, timeout: float) -> tuple[float, float, bool]:
    """Sample the daemons' CPU time until a `window` in which they used less than threshold*window seconds.
    Returns (CPU seconds at the start of that quiet window, the time then, whether it went idle)."""
    deadline = time.monotonic() + timeout
    samples = [(time.time(), cpu_seconds(pids))]
    step = window / 4
    while time.monotonic() < deadline:
        time.sleep(step)
        samples.append((time.time(), cpu_seconds(pids)))
        past = [s for s in samples if s[0] <= samples[-1][0] - window + 1e-3]
        if past:
            t0, c0 = past[-1]
            if samples[-1][1] - c0 < threshold * window:
                return c0, t0, True
    return samples[-1][1], samples[-1][0], False


def last_bytes(path: Path, n: int = 400) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read()
    except OSError:
        return b""


def flood(cache: Cache, name: str, ranks: int, lines: int, timeout: float, after: str = "sleep",
          phase: str = "serving") -> dict:
    with Session(cache, name) as s:
        env = {"BENCH_LINES": str(lines), "BENCH_STAMP": str(s.stamps.path), "BENCH_GATE": str(s.gate),
               "BENCH_AFTER": after,  # by default ranks live on after the burst (as a loaded rank does)
               "BENCH_PHASE": phase}  # serving: ranks are ready (start-up lines logged) when the flood begins
        s.tool.start(ranks, [str(BENCH / "writer.py")], env, restart=False)
        s.stamps.wait("start", ranks, 120)
        time.sleep(2.0)  # let the tool settle after the start-up
        pids = s.tool.daemons
        hwm_before = sum(proc_status_kib(p, "VmHWM") for p in pids)
        cpu0 = cpu_seconds(pids)
        t_gate = time.time()
        s.gate.touch()
        seen_at: float | None = None
        hwm_peak = hwm_before
        deadline = time.monotonic() + timeout
        snapshot_s: list[float] = []  # xllm-tui: how long the supervisor takes to answer during the flood
        next_look = 0.0
        while time.monotonic() < deadline:
            done = s.stamps.of("done")
            if name == "xllm-tui" and (len(done) >= ranks or time.monotonic() >= next_look):
                # a snapshot every 0.5 s while the ranks write (as an attached TUI asks), every 50 ms after
                next_look = time.monotonic() + 0.5
                t_ask = time.monotonic()
                try:
                    snap = s.tool.client_request("snapshot", timeout=60)
                except Exception:  # noqa: BLE001 - a supervisor too busy to answer in 60 s: keep counting
                    snap = {"ranks": [{}]}
                snapshot_s.append(time.monotonic() - t_ask)
            if len(done) >= ranks:
                if name == "xllm-tui":
                    ok = all("BENCH-DONE" in (r.get("last_line") or "") for r in snap["ranks"])
                elif name == "mprocs":
                    ok = True  # no log file to look at: its screen is not read
                else:
                    ok = all(b"BENCH-DONE" in last_bytes(s.tool.log_path(r)) for r in range(ranks))
                if ok:
                    seen_at = time.time()
                    break
            hwm_peak = max(hwm_peak, sum(proc_status_kib(p, "VmHWM") for p in pids))
            time.sleep(0.05)
        done = s.stamps.of("done")
        last_done = max((r[2] for r in done), default=float("nan"))
        cpu_end, t_idle, idle = wait_idle(pids, 2.0, 0.01, max(10.0, deadline - time.monotonic()))
        hwm = max(hwm_peak, sum(proc_status_kib(p, "VmHWM") for p in pids))
        total = ranks * lines
        return {
            "cpu_s": cpu_end - cpu0,
            "cpu_s_per_mline": (cpu_end - cpu0) / (total / 1e6),
            "idle_again_s": t_idle - t_gate,
            "went_idle": idle,
            "writers_s": last_done - t_gate,
            "lag_s": (seen_at - last_done) if (seen_at and name != "mprocs") else None,
            "peak_rss_mib": hwm / 1024,
            "rss_before_mib": hwm_before / 1024,
            "all_done": len(done) >= ranks,
            "snapshot_max_s": max(snapshot_s) if snapshot_s else None,
        }


def idle_all(cache: Cache, names: list[str], ranks: int, seconds: float) -> dict[str, dict]:
    """Every tool's deployment at once (idle tools hardly disturb each other), measured over the same window."""
    import contextlib

    out: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        sessions = {}
        for name in names:
            try:
                s = stack.enter_context(Session(cache, name))
                s.tool.start(ranks, [str(cache.sleeper)], {"BENCH_STAMP": str(s.stamps.path)}, restart=True)
                s.stamps.wait("start", ranks, 120)
                sessions[name] = s
            except Exception as e:  # noqa: BLE001
                out[name] = {"error": f"{type(e).__name__}: {e}"}
        time.sleep(8.0)  # settle: readiness reached, start-up work done
        c0 = {n: cpu_seconds(s.tool.daemons) for n, s in sessions.items()}
        p0 = {n: sched_seconds(s.tool.daemons) for n, s in sessions.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        c1 = {n: cpu_seconds(s.tool.daemons) for n, s in sessions.items()}
        p1 = {n: sched_seconds(s.tool.daemons) for n, s in sessions.items()}
        t1 = time.monotonic()
        states = None
        if "xllm-tui" in sessions:  # asked after the window: a snapshot request makes it sample psutil for a while
            snap = sessions["xllm-tui"].tool.client_request("snapshot")
            states = sorted({r["state"] for r in snap["ranks"]})
        for n, s in sessions.items():
            ticks, precise = c1[n] - c0[n], p1[n] - p0[n]
            # threads that ended in the window are missing from schedstat: then the ticks are the better figure
            used = ticks if ticks > precise + 0.02 else max(precise, 0.0)
            out[n] = {"cpu_pct": used / (t1 - t0) * 100, "cpu_pct_ticks": ticks / (t1 - t0) * 100,
                      "rss_mib": sum(proc_status_kib(p, "VmRSS") for p in s.tool.daemons) / 1024}
        if states is not None:
            out["xllm-tui"]["states"] = states
    return out


def tui_idle(cache: Cache, ranks: int, seconds: float) -> dict:
    """xllm-tui's TUI attached to a supervisor of `ranks` sleeping ranks, drawn into a detached tmux (160x48):
    the CPU of the TUI process and of the tmux server that receives its screen updates, nothing changing."""
    with Session(cache, "xllm-tui") as s:
        s.tool.start(ranks, [str(cache.sleeper)], {"BENCH_STAMP": str(s.stamps.path)}, restart=True)
        s.stamps.wait("start", ranks, 120)
        sock = f"xllm-bench-tui-{s.tag[:12]}"
        env = with_repo(s.tool.base_env())
        try:
            subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", "new-session", "-d", "-s", "tui", "-x", "160",
                            "-y", "48", f"exec {sys.executable} -m xllm_tui {s.tool.profile} --run-dir {s.tool.run_dir}"],
                           env=env, check=True, stdin=subprocess.DEVNULL)
            fields = subprocess.run(["tmux", "-L", sock, "display-message", "-p", "-t", "tui", "#{pane_pid} #{pid}"],
                                    capture_output=True, text=True, check=True).stdout.split()
            tui, server = int(fields[0]), int(fields[1])
            time.sleep(10.0)  # the TUI's start and first full paint
            c0 = {p: max(cpu_seconds([p]), sched_seconds([p])) for p in (tui, server)}
            t0 = time.monotonic()
            time.sleep(seconds)
            c1 = {p: max(cpu_seconds([p]), sched_seconds([p])) for p in (tui, server)}
            t1 = time.monotonic()
            return {"tui_cpu_pct": (c1[tui] - c0[tui]) / (t1 - t0) * 100,
                    "tmux_cpu_pct": (c1[server] - c0[server]) / (t1 - t0) * 100,
                    "tui_rss_mib": proc_status_kib(tui, "VmRSS") / 1024, "tui_alive": alive(tui)}
        finally:
            subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=30)


def tui_flood(cache: Cache, ranks: int, lines: int, key_lines: int, presses: int) -> dict:
    """xllm-tui's TUI under a flood (bench_tui_flood.py --live, one follow run and one keys run, in its own
    process: the TUI measured is the only one there): CPU per million lines followed, keypress to frame."""
    env = with_repo({**os.environ, "XLLM_BENCH_CACHE": str(cache.root)})
    done = subprocess.run([sys.executable, str(BENCH / "bench_tui_flood.py"), "--live", "--runs", "1",
                           "--ranks", str(ranks), "--lines", str(lines), "--key-lines", str(key_lines),
                           "--presses", str(presses)], env=env, capture_output=True, text=True, timeout=1800,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"bench_tui_flood.py failed ({done.returncode}): {done.stderr[-2000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    floor_p95 = next((v for k, v in got.items() if k.startswith("floor_") and k.endswith("_p95")), None)
    return {"follow_cpu_s_per_mline": got["cpu_s_per_million_lines_followed"],
            "follow_indexed_cpu_s_per_mline": got.get("cpu_s_per_million_lines_until_indexed"),
            "key_ms_median": got["keypress_to_frame_ms_median"], "key_ms_p95": got["keypress_to_frame_ms_p95"],
            "key_ms_max": got["keypress_to_frame_ms_max"], "presses": got["presses_counted"],
            "presses_missed": got["presses_missed"], "floor_ms_p95": floor_p95, "tui_peak_rss_mib": got["peak_rss_mib"]}


def crash(cache: Cache, name: str, ranks: int, kills: int, victim: int = 1) -> dict:
    with Session(cache, name) as s:
        s.tool.start(ranks, [str(cache.sleeper)], {"BENCH_STAMP": str(s.stamps.path)}, restart=True)
        s.stamps.wait("start", ranks, 120)
        time.sleep(2.0)
        exec_ms, event_ms, missed = [], [], 0
        for _ in range(kills):
            mine = [r for r in s.stamps.of("start") if r[0] == victim]
            pid = mine[-1][3]
            before = len(mine)
            time.sleep(1.2)  # every rank has lived over a second (mprocs does not restart a faster exit)
            t_kill = time.time()
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            new = None
            while time.monotonic() < deadline:
                mine = [r for r in s.stamps.of("start") if r[0] == victim]
                if len(mine) > before:
                    new = mine[-1]
                    break
                time.sleep(0.002)
            if new is None:
                missed += 1
                continue
            exec_ms.append((new[2] - t_kill) * 1000)
            if name == "xllm-tui":
                time.sleep(0.2)
                evs = [e for e in s.tool.events() if e.get("rank") == victim and e.get("ts", 0) >= t_kill - 0.001]
                if evs:
                    event_ms.append(max(0.0, (evs[0]["ts"] - t_kill) * 1000))
        out = {"exec_ms": exec_ms, "exec_ms_median": statistics.median(exec_ms) if exec_ms else None,
               "missed": missed}
        if name == "xllm-tui":
            out["event_ms"] = event_ms
            out["event_ms_median"] = statistics.median(event_ms) if event_ms else None
        return out


def start(cache: Cache, name: str, ranks: int) -> dict:
    with Session(cache, name) as s:
        env = {"BENCH_STAMP": str(s.stamps.path)}
        children = []
        t0 = time.time()
        if name == "floor":  # the bare spawn loop, in this already running process (no interpreter start)
            sys.path.insert(0, str(BENCH))
            from floor import spawn

            base = s.tool.base_env()
            for r in range(ranks):
                children.append(spawn({"argv": [str(cache.sleeper), f"--node_rank={r}"],
                                       "env": {**base, **s.tool.rank_env(r, env)}, "log": str(s.tool.log_path(r))}))
        else:
            s.tool.start(ranks, [str(cache.sleeper)], env, restart=True)
        got = s.stamps.wait("start", ranks, 120)
        if children:
            s.tool.proc = None
            for pid in children:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        return {"start_s": max(r[2] for r in got) - t0, "first_s": min(r[2] for r in got) - t0}


def wait_snapshot(tool: XllmTui, condition, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        snap = tool.client_request("snapshot")
        if condition(snap):
            return snap
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.1)


def tui_measure(tool: XllmTui, *args: str, timeout: float = 600) -> dict:
    """bench/tui_frame.py in its own process (its RSS and CPU are the TUI's), tagged like every process here."""
    env = with_repo(tool.base_env())
    r = subprocess.run([sys.executable, str(BENCH / "tui_frame.py"), *args, "--run-dir", str(tool.run_dir)],
                       env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"tui_frame.py {args[0]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def scale(cache: Cache, name: str, ranks: int, seconds: float, calls: int, frames: int) -> dict:
    """`ranks` sleepers: start time, the daemon's idle CPU and RSS; for xllm-tui also `status --json` and the
    raw socket snapshot round trip, and the TUI's frame time (bench/tui_frame.py)."""
    with Session(cache, name) as s:
        t0 = time.time()
        s.tool.start(ranks, [str(cache.sleeper)], {"BENCH_STAMP": str(s.stamps.path)}, restart=True)
        got = s.stamps.wait("start", ranks, 300)
        out: dict = {"start_s": max(r[2] for r in got) - t0}
        if name == "xllm-tui":
            wait_snapshot(s.tool, lambda snap: all(r["state"] == "ready" for r in snap["ranks"]), 180,
                          f"{ranks} ranks ready")
        time.sleep(3.0)  # settle after the start-up
        pids = s.tool.daemons
        c0, p0, t_0 = cpu_seconds(pids), sched_seconds(pids), time.monotonic()
        time.sleep(seconds)
        c1, p1, t_1 = cpu_seconds(pids), sched_seconds(pids), time.monotonic()
        ticks, precise = c1 - c0, p1 - p0
        used = ticks if ticks > precise + 0.02 else max(precise, 0.0)  # as in idle_all
        out["cpu_pct"] = used / (t_1 - t_0) * 100
        out["rss_mib"] = sum(proc_status_kib(p, "VmRSS") for p in pids) / 1024
        if name != "xllm-tui":
            return out
        from xllm_tui.client import SupervisorClient, socket_path

        socket_ms, size = [], 0
        for _ in range(calls * 2):
            t = time.perf_counter()
            with SupervisorClient(socket_path(str(s.tool.run_dir)), timeout=10) as c:
                snap = c.request("snapshot")
            socket_ms.append((time.perf_counter() - t) * 1000)
        size = len(json.dumps(snap))
        status_ms = []
        for _ in range(calls):
            t = time.perf_counter()
            r = s.tool.cli("status", str(s.tool.profile), "--run-dir", str(s.tool.run_dir), "--json", timeout=60)
            status_ms.append((time.perf_counter() - t) * 1000)
            if r.returncode != 0:
                raise RuntimeError(f"status --json failed ({r.returncode}): {r.stderr[-1000:]}")
        tui = tui_measure(s.tool, "frames", "--samples", str(frames))
        out.update({
            "status_ms_median": statistics.median(status_ms), "status_ms_p95": p95(status_ms),
            "socket_ms_median": statistics.median(socket_ms), "socket_ms_p95": p95(socket_ms),
            "snapshot_kib": size / 1024,
            "frame_ms_median": tui["frame_ms_median"], "frame_ms_p95": tui["frame_ms_p95"],
            "frame_apply_ms": tui["apply_ms_median"], "frame_no_repaint": tui["no_repaint"],
            "tui_rss_mib": tui["tui_rss_mib"], "tui_cpu_pct": tui["tui_cpu_pct"],
        })
        return out


def grep_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        # into a pipe: GNU grep writing to /dev/null stops at the first match (it knows nobody reads)
        subprocess.run(argv, stdout=subprocess.PIPE, check=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def biglog(cache: Cache, size: int, repeats: int) -> dict:
    """Two sleepers under xllm-tui; `size` bytes of glog lines appended to rank 1's log (bench_logs.generate),
    a line near the start to search for, a tail line to find on screen and a last line after it (the rank
    table shows that one); then the TUI (bench/tui_frame.py)."""
    sys.path.insert(0, str(BENCH))
    from bench_logs import generate

    with Session(cache, "xllm-tui") as s:
        s.tool.start(2, [str(cache.sleeper)], {"BENCH_STAMP": str(s.stamps.path)}, restart=True)
        s.stamps.wait("start", 2, 120)
        snap = wait_snapshot(s.tool, lambda sn: all(r["state"] == "ready" for r in sn["ranks"]), 120, "ranks ready")
        path = next(r["log_path"] for r in snap["ranks"] if r["rank"] == 1)
        needle, marker = f"BIGLOG-NEEDLE-{s.tag[:8]}", f"BIGLOG-TAIL-{s.tag[:8]}"
        with open(path, "ab") as f:
            f.write(f"I1130 00:00:01.000000 4242 bench.cc:1] {needle} near the start\n".encode())
        t = time.perf_counter()
        lines = generate(path, size, mode="ab")
        generated_s = time.perf_counter() - t
        end = f"BIGLOG-END-{s.tag[:8]}"
        with open(path, "ab") as f:
            # The rank table shows each rank's last line: the marker goes second to last, so that only the log
            # pane can show it (matching it in the table's row timed the cursor's repaint, not the log's tail).
            f.write(f"I1130 23:59:59.000000 4242 bench.cc:2] {marker} the tail\n".encode())
            f.write(f"I1130 23:59:59.000001 4242 bench.cc:3] {end} the last line\n".encode())
        pids = s.tool.daemons
        cpu0 = cpu_seconds(pids)
        # the supervisor digests the appended gigabyte first; the TUI is measured on a quiet machine after
        wait_snapshot(s.tool, lambda sn: end in (sn["ranks"][1].get("last_line") or ""), 300,
                      "the supervisor's last_line of rank 1 at the end")
        cpu_end, _, _ = wait_idle(pids, 2.0, 0.01, 120)
        file_bytes = os.path.getsize(path)
        log(f"  {file_bytes / 2**30:.2f} GiB, {lines:,} lines written in {generated_s:.1f} s; the supervisor "
            f"took {cpu_end - cpu0:.2f} CPU s to digest them")
        tui = tui_measure(s.tool, "biglog", "--rank", "1", "--tail-marker", marker, "--needle", needle,
                          "--repeats", str(repeats))
        errors = ["grep", "-c", "-E", r"^[EF][0-9]{4}[ 0-9]|Check failed:|ERROR:", path]
        search = ["grep", "-c", "-F", needle, path]
        out = {"file_gib": file_bytes / 2**30, "supervisor_digest_cpu_s": cpu_end - cpu0,
               "grep_errors_s": grep_seconds(errors, 3), "grep_search_s": grep_seconds(search, 3)}
        out.update({k: tui[k] for k in ("tail_ms_median", "set_path_ms_median", "filter_s", "filter_rows",
                                        "search_s", "rss_baseline_mib", "rss_growth_mib")})
        out["filter_vs_grep"] = out["filter_s"] / out["grep_errors_s"]
        out["search_vs_grep"] = out["search_s"] / out["grep_search_s"]
        return out


# ----------------------------------------------------------------------------------------- report


def med(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def ratio(v: float | None, ref: float | None) -> str:
    if v is None or ref is None or ref <= 0:
        return "-"
    return f"{v / ref:.2f}x"


def table(rows: dict[str, dict[str, list]], metrics: list[tuple[str, str]], tools: list[str]) -> list[str]:
    """Medians per tool; under each metric xllm-tui's ratio to the best anchor and to the floor."""
    head = ["tool"] + [label for _, label in metrics]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    medians = {t: {m: med(rows.get(t, {}).get(m, [])) for m, _ in metrics} for t in tools}
    for t in tools:
        if t not in rows:
            continue
        n = len(next(iter(rows[t].values()), []))
        out.append(f"| {t} ({n} run{'s' if n != 1 else ''}) | " + " | ".join(fmt(medians[t][m]) for m, _ in metrics) + " |")
    if "xllm-tui" in rows:
        best_cells, floor_cells = [], []
        for m, _ in metrics:
            anchors = [(medians[a][m], a) for a in ANCHORS if a in rows and medians[a][m] is not None]
            best = min(anchors) if anchors else None
            best_cells.append(f"{ratio(medians['xllm-tui'][m], best[0])} ({best[1]})" if best else "-")
            floor_cells.append(ratio(medians["xllm-tui"][m], medians.get("floor", {}).get(m)) if "floor" in rows else "-")
        if any(a in rows for a in ANCHORS):
            out.append("| xllm-tui / best anchor | " + " | ".join(best_cells) + " |")
        if "floor" in rows:
            out.append("| xllm-tui / floor | " + " | ".join(floor_cells) + " |")
    return out


SCALE_METRICS = [  # (key, label, unit) in the scale table, the linearity check and the plot
    ("start_s", "start: launch to all ranks running", "s"),
    ("cpu_pct", "supervisor CPU at idle", "% of a core"),
    ("rss_mib", "supervisor RSS", "MiB"),
    ("status_ms_median", "`status --json` (CLI start included)", "ms"),
    ("socket_ms_median", "socket snapshot round trip", "ms"),
    ("snapshot_kib", "snapshot size", "KiB"),
    ("frame_ms_median", "TUI frame time (snapshot to screen)", "ms"),
    ("frame_apply_ms", "TUI snapshot applied to the widgets", "ms"),
    ("tui_rss_mib", "TUI RSS", "MiB"),
]


def scale_medians(results: dict) -> dict[str, dict[int, dict[str, float | None]]]:
    """tool -> ranks -> metric -> median over runs."""
    out: dict[str, dict[int, dict[str, float | None]]] = {}
    for key, res in results.items():
        if key.startswith("scale:"):
            n = int(key.split(":")[1])
            for tool, metrics in res.items():
                out.setdefault(tool, {})[n] = {m: med(v) for m, v in metrics.items() if m != "error"}
    return out


def linearity(points: list[tuple[int, float]]) -> tuple[str, list[float]]:
    """Cost per added rank between successive rank counts, and a verdict comparing the last step's cost per
    rank with that from the first count to the one before the last (a quadratic cost over 1, 64, 128 gives
    about 3x). Medians that go down by more than 10 % of the range as ranks are added say noise dominates:
    then no verdict is given."""
    points = sorted(p for p in points if p[1] is not None)
    if len(points) < 3:
        return "too few points", []
    slopes = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(points, points[1:])]
    (n0, c0), (nb, cb), n1 = points[0], points[-2], points[-1][0]
    values = [c for _, c in points]
    if max(values) - min(values) < 0.1 * max(abs(c0), 1e-9):
        return "flat: the fixed cost dominates", slopes
    drops = [a[1] - b[1] for a, b in zip(points, points[1:])]
    if max(drops) > 0.1 * (max(values) - min(values)):
        return "not monotonic: noise dominates, no verdict", slopes
    before = (cb - c0) / (nb - n0)
    if before <= 0:
        return f"grows only in the last step ({n1 - nb} ranks)", slopes
    r = slopes[-1] / before
    if r <= 1.5:
        return f"linear or better (last step {r:.2f}x the cost per rank before it)", slopes
    return f"**superlinear**: the last step costs {r:.2f}x per rank what the ranks before it did", slopes


def svg_plot(series: dict[str, dict[str, list[tuple[int, float]]]], units: dict[str, str], path: Path,
             title: str) -> None:
    """Small multiples, one panel per metric: cost against ranks for each tool (xllm-tui solid, floor dashed),
    and a dotted straight line from the first to the last xllm-tui point (what linear would look like)."""
    panels = [m for m in series if any(series[m].values())]
    cols, pw, ph, ml = 3, 300, 190, 52
    rows = -(-len(panels) // cols)
    width, height = cols * pw + 20, rows * ph + 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="10">', '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    colours = {"xllm-tui": "#1f6feb", "floor": "#888888"}
    for i, metric in enumerate(panels):
        ox, oy = 10 + (i % cols) * pw, 30 + (i // cols) * ph
        x0, y0, w, h = ox + ml, oy + 22, pw - ml - 20, ph - 60
        pts = [p for tool_pts in series[metric].values() for p in tool_pts]
        xmax = max(p[0] for p in pts)
        ymax = max(p[1] for p in pts) * 1.1 or 1.0

        def X(v: float) -> float:
            return x0 + v / xmax * w

        def Y(v: float) -> float:
            return y0 + h - v / ymax * h

        out.append(f'<text x="{ox + 4}" y="{oy + 14}" font-weight="bold">{escape(metric)} ({escape(units[metric])})</text>')
        out.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="black"/>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + h}" stroke="black"/>')
        for k in range(5):
            v = ymax * k / 4
            out.append(f'<text x="{x0 - 4}" y="{Y(v) + 3:.1f}" text-anchor="end">{fmt(v)}</text>')
            out.append(f'<line x1="{x0}" y1="{Y(v):.1f}" x2="{x0 + w}" y2="{Y(v):.1f}" stroke="#eee"/>')
        for n in sorted({p[0] for p in pts}):
            out.append(f'<text x="{X(n):.1f}" y="{y0 + h + 12}" text-anchor="middle">{n}</text>')
        out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 25}" text-anchor="middle">ranks</text>')
        mine = sorted(series[metric].get("xllm-tui", []))
        if len(mine) >= 2:
            (a, ya), (b, yb) = mine[0], mine[-1]
            out.append(f'<line x1="{X(a):.1f}" y1="{Y(ya):.1f}" x2="{X(b):.1f}" y2="{Y(yb):.1f}" stroke="#1f6feb" '
                       'stroke-dasharray="1,3"/>')
        for tool, tool_pts in series[metric].items():
            tool_pts = sorted(tool_pts)
            colour = colours.get(tool, "#d62728")
            dash = ' stroke-dasharray="5,3"' if tool == "floor" else ""
            line = " ".join(f"{X(n):.1f},{Y(v):.1f}" for n, v in tool_pts)
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>')
            out += [f'<circle cx="{X(n):.1f}" cy="{Y(v):.1f}" r="2.5" fill="{colour}"/>' for n, v in tool_pts]
    out.append(f'<text x="10" y="{height - 8}">xllm-tui solid blue, floor dashed grey; dotted: a straight line '
               'from the first to the last xllm-tui point (linear cost). Medians over runs.</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "")


def scale_section(results: dict, svg_path: Path | None) -> list[str]:
    per = scale_medians(results)
    mine, floor = per.get("xllm-tui", {}), per.get("floor", {})
    counts = sorted(set(mine) | set(floor))
    runs = max((len(v) for k, r in results.items() if k.startswith("scale:") for t in r.values()
                for v in t.values() if isinstance(v, list)), default=0)
    seconds = next(k.split(":")[2] for k in results if k.startswith("scale:"))
    L = [f"## Scale: 1 to {counts[-1]} sleeping ranks (xllm-tui, and the floor where it applies)", "",
         f"Medians of {runs} run(s) per rank count; idle CPU over {seconds} s after the ranks are ready; "
         "`status --json` and the socket round trip: median / p95 of the calls; TUI frame: median / p95 over the "
         "snapshots of one TUI run (bench/tui_frame.py, headless Pilot at 160x48).", ""]
    L.append("| ranks | start s (floor) | supervisor CPU % idle (floor) | supervisor RSS MiB (floor) | "
             "`status --json` ms | socket snapshot ms | snapshot KiB | TUI frame ms | TUI apply ms | TUI RSS MiB |")
    L.append("|" + "---|" * 10)

    def pair(a: float | None, b: float | None) -> str:
        return f"{fmt(a)} / {fmt(b)}"

    for n in counts:
        m, f = mine.get(n, {}), floor.get(n, {})
        L.append(f"| {n} | {fmt(m.get('start_s'))} ({fmt(f.get('start_s'))}) | {fmt(m.get('cpu_pct'))} "
                 f"({fmt(f.get('cpu_pct'))}) | {fmt(m.get('rss_mib'))} ({fmt(f.get('rss_mib'))}) | "
                 f"{pair(m.get('status_ms_median'), m.get('status_ms_p95'))} | "
                 f"{pair(m.get('socket_ms_median'), m.get('socket_ms_p95'))} | {fmt(m.get('snapshot_kib'))} | "
                 f"{pair(m.get('frame_ms_median'), m.get('frame_ms_p95'))} | {fmt(m.get('frame_apply_ms'))} | "
                 f"{fmt(m.get('tui_rss_mib'))} |")
    errors = [f"{t} at {k.split(':')[1]} ranks: {e}" for k, r in results.items() if k.startswith("scale:")
              for t, v in r.items() for e in v.get("error", []) if e]
    if errors:
        L += ["", "Errors: " + "; ".join(errors) + "."]
    L += ["", "Is the cost linear in ranks? (xllm-tui; cost per added rank between successive rank counts)", "",
          "| metric | per added rank, step by step | verdict |", "|---|---|---|"]
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    units = {}
    for key, label, unit in SCALE_METRICS:
        pts = [(n, mine[n].get(key)) for n in sorted(mine) if mine[n].get(key) is not None]
        verdict, slopes = linearity(pts)
        if pts:
            L.append(f"| {label} ({unit}) | {', '.join(fmt(s) for s in slopes) or '-'} | {verdict} |")
        series[label] = {"xllm-tui": pts}
        fpts = [(n, floor[n].get(key)) for n in sorted(floor) if floor[n].get(key) is not None]
        if fpts:
            series[label]["floor"] = fpts
        units[label] = unit
    if svg_path is not None and mine:
        svg_plot(series, units, svg_path, "xllm-tui: cost against ranks (bench/run.sh --workloads scale)")
        L += ["", f"![cost against ranks]({svg_path.name})"]
    return L


def biglog_section(key: str, res: dict) -> list[str]:
    size = int(key.split(":")[1])
    mine = res.get("xllm-tui", {})
    n = len(mine.get("tail_ms_median", []))
    L = [f"## Big log: {size / 2**30:.3g} GiB of glog lines in rank 1's log, the TUI (160x48) on it", "",
         f"Medians of {n} run(s). Tail: keypress selecting the rank until the frame showing its tail line "
         "(the log pane is all that shows it) (median of the repeats in each run); `set_path`: the log view's own "
         "part of it. Filter: the second E (errors only) "
         "until the whole file is filtered and drawn; grep: `grep -c -E '^[EF][0-9]{4}[ 0-9]|Check failed:|ERROR:'`. "
         "Search: Enter in the search prompt until the line near the start is on screen; grep: `grep -c -F NEEDLE`. "
         "Memory: the TUI process's peak RSS minus its RSS before the first selection. The ratios to grep are medians of "
         "each run's ratio.", "",
         "| tool | tail on screen ms | of which set_path ms | errors-only filter s | grep s | filter / grep | "
         "search near the start s | grep s | search / grep | TUI RSS growth MiB | supervisor CPU s to digest the file |",
         "|" + "---|" * 11]
    if mine:
        g = lambda k: med(mine.get(k, []))  # noqa: E731
        L.append(f"| xllm-tui ({n} run{'s' if n != 1 else ''}) | {fmt(g('tail_ms_median'))} | {fmt(g('set_path_ms_median'))} | "
                 f"{fmt(g('filter_s'))} | {fmt(g('grep_errors_s'))} | {fmt(g('filter_vs_grep'))}x | "
                 f"{fmt(g('search_s'))} | {fmt(g('grep_search_s'))} | {fmt(g('search_vs_grep'))}x | "
                 f"{fmt(g('rss_growth_mib'))} | {fmt(g('supervisor_digest_cpu_s'))} |")
        if mine.get("error"):
            L += ["", "Errors: " + "; ".join(e for e in mine["error"] if e) + "."]
    return L


def table_section(heading: str, res: dict, metrics: list[tuple[str, str]], tools: list[str],
                  intro: str = "") -> list[str]:
    """A report section: `## heading`, a blank line, the optional paragraph `intro` and a blank line, the table."""
    return [f"## {heading}", ""] + ([intro, ""] if intro else []) + table(res, metrics, tools)


def report(results: dict, meta: dict, tools: list[str], svg_path: Path | None = None) -> str:
    L = ["# Benchmark results", ""]
    L.append(f"`{meta['command']}` on {meta['when']} ({meta['elapsed_min']:.1f} min).")
    L.append("")
    L.append(f"Machine: {meta['machine']}. **The machine was shared with other engineers' builds and tests while "
             "this ran: its 2 cores were busy and the figures are noisy** (load average at the start "
             f"{meta['load_start']}, at the end {meta['load_end']}). Medians of {meta['runs']} interleaved run(s) "
             "(each run takes every tool in a rotated order); lower is better everywhere; `-` = not measured or "
             "not applicable. How each figure is taken: bench/README.md.")
    L.append("")
    L.append("Versions: " + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".")
    L.append("")
    scale_done = False
    for key, res in results.items():
        kind = key.split(":")[0]
        if kind == "scale":
            if scale_done:
                continue  # every rank count is in the one table
            L += scale_section(results, svg_path)
            scale_done = True
        elif kind == "biglog":
            L += biglog_section(key, res)
        elif kind == "flood":
            _, ranks, lines = key.split(":")
            L += table_section(f"Flood: {ranks} ranks x {int(lines):,} glog lines of ~120 bytes, as fast as they can"
                               + (" (then they exit)" if meta.get("flood_after") == "exit" else "")
                               + (", during start-up" if meta.get("flood_phase") == "startup" else ", once ready"),
                               res, [("cpu_s_per_mline", "CPU s per M lines, until idle"),
                                     ("peak_rss_mib", "peak RSS MiB"),
                                     ("lag_s", "lag s: last line to state (xllm-tui) / in the log file"),
                                     ("writers_s", "writers' time s"),
                                     ("idle_again_s", "gate to idle again s"),
                                     ("snapshot_max_s", "slowest snapshot answer s (xllm-tui)")], tools)
            notdone = [f"{t} run {i + 1}" for t, r in res.items() for i, ok in enumerate(r.get("went_idle", []))
                       if not ok]
            if notdone:
                L.append("")
                L.append("Did not go idle within the time limit (CPU counted to the limit): " + ", ".join(notdone) + ".")
        elif kind == "idle":
            _, ranks, seconds = key.split(":")
            L += table_section(f"Idle: {ranks} sleeping ranks (ready), {seconds} s", res,
                               [("cpu_pct", "CPU % of a core"), ("rss_mib", "RSS MiB")], tools)
            if "xllm-tui" in res and res["xllm-tui"].get("states"):
                L.append("")
                L.append("xllm-tui rank states just after the window: "
                         + ", ".join(sorted({s for run in res["xllm-tui"]["states"] for s in run})) + ".")
        elif kind == "crash":
            _, ranks, kills = key.split(":")
            L += table_section(f"Crash: SIGKILL rank 1 of {ranks}, {kills} times, zero restart delay", res,
                               [("exec_ms_median", "kill to replacement's exec ms"),
                                ("event_ms_median", "kill to event ms (xllm-tui)"),
                                ("missed", "kills not followed by a restart within 10 s")], tools)
        elif kind == "tui-idle":
            _, ranks, seconds = key.split(":")
            L += table_section(f"TUI idle: xllm-tui's TUI in tmux (160x48) on {ranks} sleeping ranks, {seconds} s", res,
                               [("tui_cpu_pct", "TUI CPU % of a core"),
                                ("tmux_cpu_pct", "tmux server CPU %"),
                                ("tui_rss_mib", "TUI RSS MiB")], tools)
        elif kind == "tui-flood":
            _, ranks, lines, key_lines = key.split(":")
            L += table_section(f"The TUI under a flood: {ranks} ranks flooding (bench_tui_flood.py --live)", res,
                               [("follow_cpu_s_per_mline", "TUI CPU s per M lines followed"),
                                ("follow_indexed_cpu_s_per_mline", "same, until every line is numbered again"),
                                ("key_ms_median", "keypress to frame ms, median"),
                                ("key_ms_p95", "keypress to frame ms, p95"),
                                ("floor_ms_p95", "floor p95 ms"),
                                ("presses_missed", "presses not drawn within 5 s"),
                                ("tui_peak_rss_mib", "TUI peak RSS MiB")], tools,
                               intro=f"Follow: rank 0's log followed while every rank writes {int(lines):,} lines, "
                               "until its last line is on screen (the view skips a flood's middle and counts it once "
                               "the log is quiet: the next column goes on until then). "
                               f"Keys: j/k in the rank table while every rank writes {int(key_lines):,} lines; "
                               "keypress to the frame that shows the newly selected rank's log. Floor: a separate "
                               "process needing 5 ms of CPU, woken as often.")
        elif kind == "start":
            _, ranks = key.split(":")
            L += table_section(f"Start: launch to all {ranks} ranks' programs running", res,
                               [("start_s", "launch to all running s"),
                                ("first_s", "launch to the first running s")], tools)
        L.append("")
    L.append("## Targets of issue 9 (xllm-tui's medians above)")
    L.append("")
    L += targets(results)
    L.append("")
    return "\n".join(L)


def targets(results: dict) -> list[str]:
    rows = ["| target | xllm-tui here | met |", "|---|---|---|"]

    def xm(key_prefix: str, metric: str) -> tuple[str, float | None]:
        keys = [k for k in results if k.startswith(key_prefix) and "xllm-tui" in results[k]]
        if not keys:
            return "", None
        key = sorted(keys, key=lambda k: int(k.split(":")[1]))[-1]
        return key, med(results[key]["xllm-tui"].get(metric, []))

    def row(text: str, value: float | None, limit: float, unit: str, where: str = "") -> None:
        if value is None:
            rows.append(f"| {text} | not measured | - |")
        else:
            rows.append(f"| {text} | {fmt(value)} {unit}{where} | {'yes' if value <= limit else 'no'} |")

    k, v = xm("flood:", "cpu_s_per_mline")
    row("supervisor CPU per million lines, until idle: at most 0.017 s", v, 0.017, "s", f" ({k})")
    k, v = xm("flood:", "peak_rss_mib")
    row("supervisor peak memory during a flood: at most 30 MiB", v, 30, "MiB", f" ({k})")
    k, v = xm("flood:", "lag_s")
    row("last line until the rank's state reflects it: at most 1 s", v, 1.0, "s", f" ({k})")
    k, v = xm("idle:", "cpu_pct")
    row("idle, 16 ranks: supervisor at most 0.02 % of a core", v, 0.02, "%", f" ({k})")
    k, v = xm("crash:", "exec_ms_median")
    row("SIGKILL to the replacement's exec, zero backoff: at most 4 ms", v, 4.0, "ms")
    k, v = xm("crash:", "event_ms_median")
    row("SIGKILL to the event: within 5 ms", v, 5.0, "ms")
    keys = [k for k in results if k.startswith("start:")]
    if keys and "xllm-tui" in results[keys[-1]] and "floor" in results[keys[-1]]:
        x = med(results[keys[-1]]["xllm-tui"]["start_s"])
        f = med(results[keys[-1]]["floor"]["start_s"])
        rows.append(f"| start, `up` to all 16 ranks running: at most 1.2x the floor | {fmt(x)} s = "
                    f"{x / f:.2f}x the floor ({fmt(f)} s) | {'yes' if x <= 1.2 * f else 'no'} |")
    else:
        rows.append("| start, `up` to all 16 ranks running: at most 1.2x the floor | not measured | - |")
    k, v = xm("tui-idle:", "tui_cpu_pct")
    row("idle, 16 ranks: TUI at most 0.3 % of a core", v, 0.3, "%", f" ({k})")
    keys = [k for k in results if k.startswith("biglog:") and "xllm-tui" in results[k]]
    big = results[keys[-1]]["xllm-tui"] if keys else {}
    where = f" ({int(keys[-1].split(':')[1]) / 2**30:.3g} GiB)" if keys else ""
    row("big log, tail on screen: keep the 4 ms of bench_logs.py", med(big.get("tail_ms_median", [])), 4.0, "ms", where)
    row("big log, TUI memory growth: under 50 MB", med(big.get("rss_growth_mib", [])), 50 / 1.048576, "MiB", where)
    row("errors-only filter over the big log: at most twice grep", med(big.get("filter_vs_grep", [])), 2.0,
        "x grep", where)
    row("search near the start of the big log: at most twice grep", med(big.get("search_vs_grep", [])), 2.0,
        "x grep", where)
    mine = scale_medians(results).get("xllm-tui", {})
    if len(mine) >= 3:
        verdicts = [f"{label}: {linearity([(n, mine[n].get(k)) for n in sorted(mine)])[0]}"
                    for k, label, _ in SCALE_METRICS if k in ("cpu_pct", "rss_mib", "socket_ms_median", "frame_ms_median")]
        met = ("no" if any("superlinear" in v for v in verdicts) else
               "unclear" if any("no verdict" in v for v in verdicts) else "yes")
        rows.append(f"| {max(mine)} ranks: cost linear in ranks, TUI usable | " + "; ".join(verdicts)
                    + f"; frame p95 at {max(mine)}: {fmt(mine[max(mine)].get('frame_ms_p95'))} ms | {met} |")
    else:
        rows.append("| 128 ranks: cost linear in ranks, TUI usable | not measured | - |")
    k, v = xm("tui-flood:", "follow_cpu_s_per_mline")
    row("TUI following a flooding log: at most 0.1 s per million lines", v, 0.1, "s", f" ({k})")
    k, v = xm("tui-flood:", "key_ms_p95")
    row("keypress to frame during a 16-rank flood: p95 under 50 ms", v, 50.0, "ms", f" ({k})")
    k, v = xm("tui-flood:", "tui_peak_rss_mib")
    row("TUI peak memory under a flood: at most 100 MiB", v, 100.0, "MiB", f" ({k})")
    return rows


# ----------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts and one run: a smoke test")
    ap.add_argument("--only", help=f"comma-separated tools (default all: {','.join(TOOLS)})")
    ap.add_argument("--workloads", help=f"comma-separated workloads (default all: {','.join(WORKLOADS)})")
    ap.add_argument("--runs", type=int, help="interleaved runs per tool (default 3, --quick 1)")
    ap.add_argument("--flood", help="flood shapes RANKSxLINES, comma-separated (default 8x500000,16x250000; the issue's full one: 16x500000)")
    ap.add_argument("--flood-after", choices=["sleep", "exit"], default="sleep",
                    help="what a flooding rank does after its last line: stay alive (default) or exit 0")
    ap.add_argument("--flood-phase", choices=["serving", "startup"], default="serving",
                    help="when the ranks flood: once ready (default; their start-up lines come first) or during "
                         "start-up (no start-up line: every line is still searched for milestones)")
    ap.add_argument("--flood-timeout", type=float, help="seconds a tool may take to digest a flood (default 240)")
    ap.add_argument("--idle-seconds", type=float, help="default 60 (--quick 5)")
    ap.add_argument("--kills", type=int, help="default 10 (--quick 3)")
    ap.add_argument("--scale-ranks", help="scale: rank counts, comma-separated (default 1,8,16,64,128; --quick 1,4)")
    ap.add_argument("--scale-seconds", type=float, help="scale: idle window per rank count (default 20, --quick 3)")
    ap.add_argument("--scale-calls", type=int, help="scale: `status --json` calls (socket: twice as many; "
                    "default 20, --quick 5)")
    ap.add_argument("--scale-frames", type=int, help="scale: snapshots the TUI's frame time is taken on "
                    "(default 12, --quick 4)")
    ap.add_argument("--biglog-size", help="biglog: the log's size (default 1G, --quick 32M)")
    ap.add_argument("--biglog-repeats", type=int, help="biglog: selections of the rank (default 5, --quick 2)")
    ap.add_argument("--tui-flood-lines", type=int, help="tui-flood: lines per rank while the TUI follows rank 0 "
                    "(default 500000, --quick 20000; a keys run writes 3x, --quick 5x, so the flood outlasts the presses)")
    ap.add_argument("--out", default=str(BENCH / "RESULTS.md"), help="the report (default bench/RESULTS.md)")
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--from-json", metavar="JSON", help="measure nothing: write the report (and scale.svg) again "
                    "from the raw figures of an earlier --json")
    ap.add_argument("--cache", default=os.environ.get("XLLM_BENCH_CACHE", str(DEFAULT_CACHE)),
                    help="where the anchors are installed (default ~/.cache/xllm-tui-bench)")
    args = ap.parse_args()
    # a plain SIGTERM (or SIGINT, ignored in a background job) would skip the sessions' clean-up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())
        text = report(raw["results"], raw["meta"], [t for t in TOOLS if any(t in r for r in raw["results"].values())],
                      svg_path=Path(args.out).with_name("scale.svg"))
        Path(args.out).write_text(text)
        print(text)
        return 0
    tools = [t for t in TOOLS if t in (args.only.split(",") if args.only else TOOLS)]
    if args.only and set(args.only.split(",")) - set(TOOLS):
        ap.error(f"unknown tool in --only; known: {', '.join(TOOLS)}")
    workloads = args.workloads.split(",") if args.workloads else WORKLOADS
    if set(workloads) - set(WORKLOADS):
        ap.error(f"unknown workload; known: {', '.join(WORKLOADS)}")
    runs = args.runs or (1 if args.quick else 3)
    shapes = [tuple(int(x) for x in s.split("x")) for s in
              (args.flood or ("4x20000" if args.quick else "8x500000,16x250000")).split(",")]
    flood_timeout = args.flood_timeout or (60 if args.quick else 240)
    idle_s = args.idle_seconds or (5 if args.quick else 60)
    kills = args.kills or (3 if args.quick else 10)
    idle_ranks, crash_ranks, start_ranks = (4, 4, 4) if args.quick else (16, 4, 16)
    scale_ranks = [int(n) for n in (args.scale_ranks or ("1,4" if args.quick else "1,8,16,64,128")).split(",")]
    scale_s = args.scale_seconds or (3 if args.quick else 20)
    scale_calls = args.scale_calls or (5 if args.quick else 20)
    scale_frames = args.scale_frames or (4 if args.quick else 12)
    sys.path.insert(0, str(BENCH))
    from bench_logs import parse_size

    biglog_size = parse_size(args.biglog_size or ("32M" if args.quick else "1G"))
    biglog_repeats = args.biglog_repeats or (2 if args.quick else 5)
    flood_ranks = 4 if args.quick else 16
    tui_lines = args.tui_flood_lines or (20_000 if args.quick else 500_000)
    tui_key_lines = 5 * tui_lines if args.quick else 3 * tui_lines
    tui_presses = 8 if args.quick else 40

    cache = Cache(Path(args.cache))
    cache.ensure(tools)
    meta = {"command": "bench/run.sh " + " ".join(sys.argv[1:]), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "runs": runs, "versions": cache.versions(tools), "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Linux "
                       f"{os.uname().release}, Python {sys.version.split()[0]}"}
    meta["flood_after"] = args.flood_after
    meta["flood_phase"] = args.flood_phase
    began = time.monotonic()

    jobs = []  # (key, fn) per workload; each run takes every tool in a rotated order
    for w in workloads:
        if w == "flood":
            for ranks, lines in shapes:
                jobs.append((f"flood:{ranks}:{lines}", lambda t, r=ranks, n=lines: flood(cache, t, r, n, flood_timeout, args.flood_after,
                                                                            args.flood_phase)))
        elif w == "idle":
            jobs.append((f"idle:{idle_ranks}:{idle_s:g}", None))
        elif w == "crash":
            jobs.append((f"crash:{crash_ranks}:{kills}", lambda t: crash(cache, t, crash_ranks, kills)))
        elif w == "start":
            jobs.append((f"start:{start_ranks}", lambda t: start(cache, t, start_ranks)))
        elif w == "tui-idle" and "xllm-tui" in tools:
            jobs.append((f"tui-idle:{idle_ranks}:{idle_s:g}", lambda t: tui_idle(cache, idle_ranks, idle_s)))
        elif w == "tui-flood" and "xllm-tui" in tools:
            jobs.append((f"tui-flood:{flood_ranks}:{tui_lines}:{tui_key_lines}",
                         lambda t: tui_flood(cache, flood_ranks, tui_lines, tui_key_lines, tui_presses)))
        elif w == "scale":
            for n in scale_ranks:
                jobs.append((f"scale:{n}:{scale_s:g}",
                             lambda t, n=n: scale(cache, t, n, scale_s, scale_calls, scale_frames)))
        elif w == "biglog" and "xllm-tui" in tools:
            jobs.append((f"biglog:{biglog_size}", lambda t: biglog(cache, biglog_size, biglog_repeats)))
    results: dict[str, dict[str, dict[str, list]]] = {key: {} for key, _ in jobs}
    for run in range(runs):
        for key, fn in jobs:
            order = tools[run % len(tools):] + tools[:run % len(tools)]
            if fn is None:  # idle: every tool at once
                log(f"run {run + 1}/{runs} {key} {','.join(order)} together")
                together = idle_all(cache, order, idle_ranks, idle_s)
            for t in order:
                if key.startswith(("tui-idle", "tui-flood", "biglog")) and t != "xllm-tui":
                    continue
                if key.startswith("scale") and t not in SCALE_TOOLS:
                    continue
                if fn is None:
                    r = together.get(t, {"error": "not started"})
                else:
                    log(f"run {run + 1}/{runs} {key} {t}")
                    try:
                        r = fn(t)
                    except Exception as e:  # noqa: BLE001 - one tool failing must not lose the others' figures
                        r = {"error": f"{type(e).__name__}: {e}"}
                log(f"  {t} " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                                           if not isinstance(v, list)}))
                for k, v in r.items():
                    results[key].setdefault(t, {}).setdefault(k, []).append(v)
    meta["elapsed_min"] = (time.monotonic() - began) / 60
    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(results, meta, tools, svg_path=Path(args.out).with_name("scale.svg"))
    Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    log(f"wrote {args.out}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
