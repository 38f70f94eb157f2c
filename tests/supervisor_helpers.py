"""A simulated deployment under a real supervisor, for tests (the supervisor's own and the TUI's).

    def test_x(sim_deployment):
        dep = sim_deployment(ranks=4)              # writes a profile to tmp_path (free loopback ports)
        dep.start()                                # `xllm-tui supervise --simulate` as a child process
        snap = dep.wait_group("ready")
        ...                                        # teardown: shutdown, then every tagged process is killed
                                                   # and the test FAILS if one was left behind

Every process started for a deployment (supervisor, ranks, anything they fork) carries a unique tag in its
environment (XLLM_TUI_TEST_TAG); teardown finds them by that tag in /proc/<pid>/environ, so nothing else on
the machine is ever touched, and leftovers are found even after a supervisor was SIGKILLed.

Import the fixture in a test module with:  from supervisor_helpers import sim_deployment  # noqa: F401
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import psutil
import pytest
import yaml

from conftest import REPO, free_port, free_port_block, wait_until
from xllm_tui.client import SupervisorClient, SupervisorUnavailable, socket_path

TAG_VAR = "XLLM_TUI_TEST_TAG"


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries TAG_VAR=tag."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def process_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    env = {}
    for item in items:
        name, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            env[name] = value
    return env


def read_cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [p.decode(errors="replace") for p in f.read().split(b"\0")[:-1]]


class SimDeployment:
    """One simulated deployment in a tmp dir: its profile, run dir, supervisor and CLI."""

    def __init__(self, tmp_path, ranks: int = 4, *, name: str | None = None, env: dict | None = None,
                 restart: dict | None = None, stop_grace: str = "2s", toggles: dict | None = None,
                 pre_launch: list | None = None, readiness: dict | None = None, weight_files: int = 3,
                 time_scale: float = 0.01, extra: dict | None = None):
        self.tmp_path = tmp_path
        self.tag = uuid.uuid4().hex
        self.name = name or f"simtest{ranks}"
        self.ranks = ranks
        self.base_port = free_port_block(ranks)
        self.master_port = free_port()
        while self.base_port <= self.master_port < self.base_port + ranks:
            self.master_port = free_port()
        self.workdir = tmp_path / "deploy"
        self.workdir.mkdir(exist_ok=True)
        profile: dict[str, Any] = {
            "name": self.name,
            "binary": "/opt/xllm/bin/xllm",  # missing on purpose: --simulate swaps in the simulator
            "model": "/models/sim-model",
            "master_node_addr": f"127.0.0.1:{self.master_port}",
            "base_port": self.base_port,
            "machines": [{"host": "127.0.0.1", "devices": f"0-{ranks - 1}" if ranks > 1 else [0]}],
            "cores": {"rule": "per_device", "count": 1, "first": 0},
            "env": {
                "XLLM_SIM_TIME_SCALE": str(time_scale),
                "XLLM_SIM_WEIGHT_FILES": str(weight_files),
                TAG_VAR: self.tag,
                **(env or {}),
            },
            "restart": restart or {"mode": "on-failure", "scope": "group",
                                   "backoff": {"initial": "0.3s", "max": "1s", "factor": 2},
                                   "max_restarts": 3, "window": "10m"},
            "stop": {"grace": stop_grace},
            "readiness": readiness or {"probe_interval": "1s"},
        }
        if toggles is not None:
            profile["toggles"] = toggles
        if pre_launch is not None:
            profile["pre_launch"] = pre_launch
        profile.update(extra or {})
        self.profile_data = profile
        self.profile_path = str(self.workdir / f"{self.name}.yaml")
        self.write_profile()
        state_home = os.environ.get("XDG_STATE_HOME") or str(tmp_path / "xdg-state")
        self.run_dir = os.path.join(state_home, "xllm-tui", f"{self.name}-sim")
        self.supervisors: list[subprocess.Popen] = []
        self.seen_pids: set[int] = set()

    # -- files ------------------------------------------------------------------------------------

    def write_profile(self) -> None:
        with open(self.profile_path, "w") as f:
            yaml.safe_dump(self.profile_data, f, sort_keys=False)

    @property
    def socket(self) -> str:
        return socket_path(self.run_dir)

    def log_path(self, rank: int) -> str:
        return os.path.join(self.run_dir, "logs", f"node_{rank}.log")

    def events_file(self) -> list[dict]:
        from xllm_tui.supervisor.state import iter_events

        return list(iter_events(os.path.join(self.run_dir, "events.jsonl")))

    def device_events(self) -> list[dict]:
        """The journal's `device` events (stray holders, health changes, HBM left behind, binding)."""
        return [e for e in self.events_file() if e.get("kind") == "device"]

    @property
    def sim_procs_path(self) -> str:
        """The file of live ranks the supervisor keeps for the simulated npu-smi (XLLM_SIM_NPU_PROCS)."""
        from xllm_tui.client import sim_npu_procs_path

        return sim_npu_procs_path(self.run_dir)

    # -- processes --------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[TAG_VAR] = self.tag
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def start(self, *extra_args: str, wait: bool = True) -> subprocess.Popen:
        """The supervisor as a child of the test (so it can be SIGKILLed and reaped)."""
        log = open(self.tmp_path / f"supervisor-{len(self.supervisors)}.out", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "xllm_tui", "supervise", self.profile_path, "--simulate", "--run-dir",
             self.run_dir, *extra_args],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        self.supervisors.append(proc)
        if wait:
            wait_until(lambda: self.answers() or proc.poll() is not None, 30, what="supervisor socket")
            assert proc.poll() is None, f"supervisor exited with {proc.returncode}: {self.supervisor_output()}"
        return proc

    def supervisor_output(self) -> str:
        texts = []
        for i in range(len(self.supervisors)):
            path = self.tmp_path / f"supervisor-{i}.out"
            if path.exists():
                texts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(texts)

    def answers(self) -> dict | None:
        try:
            with SupervisorClient(self.socket, timeout=2.0) as client:
                return client.hello()
        except (SupervisorUnavailable, OSError):
            return None
        except Exception:  # noqa: BLE001
            return None

    def cli(self, *args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
        """Run `xllm-tui ARGS` as a user would (same XDG dirs, so the same run dir)."""
        done = subprocess.run([sys.executable, "-m", "xllm_tui", *args], env=self.env(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert done.returncode == 0, f"xllm-tui {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def client(self, timeout: float = 5.0) -> SupervisorClient:
        return SupervisorClient(self.socket, timeout=timeout)

    def request(self, op: str, **args: Any) -> dict:
        with self.client() as client:
            return client.request(op, **args)

    def snapshot(self) -> dict:
        with self.client() as client:
            snap = client.snapshot()
        self.seen_pids.update(r["pid"] for r in snap["ranks"] if r.get("pid"))
        return snap

    def wait_snapshot(self, predicate: Callable[[dict], bool], timeout: float = 60, what: str = "") -> dict:
        last: dict = {}

        def check():
            nonlocal last
            try:
                last = self.snapshot()
            except (SupervisorUnavailable, OSError):
                return None
            return last if predicate(last) else None

        try:
            return wait_until(check, timeout, 0.1, what)
        except AssertionError as e:
            summary = {"group": last.get("group"), "ranks": [(r["rank"], r["state"], r["reason"])
                                                             for r in last.get("ranks", [])]}
            raise AssertionError(f"{e}\nlast snapshot: {json.dumps(summary, indent=1)}\n"
                                 f"supervisor output:\n{self.supervisor_output()}") from None

    def wait_group(self, state: str, timeout: float = 60) -> dict:
        return self.wait_snapshot(lambda s: s["group"]["state"] == state, timeout, f"group {state}")

    def wait_event(self, predicate: Callable[[dict], bool], timeout: float = 30, what: str = "") -> dict:
        return wait_until(lambda: next((e for e in self.events_file() if predicate(e)), None), timeout, 0.1,
                          what or "event")

    def rank_pids(self, snap: dict | None = None) -> dict[int, int]:
        snap = snap or self.snapshot()
        return {r["rank"]: r["pid"] for r in snap["ranks"] if r["pid"]}

    def supervisor_pid(self) -> int | None:
        hello = self.answers()
        return hello["pid"] if hello else None

    def kill_supervisor(self, sig: int = signal.SIGKILL) -> None:
        pid = self.supervisor_pid()
        assert pid, "no supervisor answers"
        os.kill(pid, sig)
        wait_until(lambda: not process_alive(pid), 10, what=f"supervisor {pid} to die")
        for proc in self.supervisors:
            if proc.pid == pid:
                proc.wait(5)

    def leftovers(self) -> list[psutil.Process]:
        return tagged_processes(self.tag)

    def shutdown(self, timeout: float = 30) -> None:
        """Ask the supervisor to stop every rank and exit; wait for it."""
        pid = self.supervisor_pid()
        if pid is None:
            return
        try:
            self.request("shutdown", stop_ranks=True)
        except (SupervisorUnavailable, OSError):
            pass
        wait_until(lambda: not process_alive(pid), timeout, what="supervisor exit after shutdown")

    def teardown(self) -> list[str]:
        """Shut down, then kill and report anything left (by process group when we can)."""
        try:
            self.shutdown()
        except AssertionError:
            pass
        left = self.leftovers()
        report = []
        for proc in left:
            try:
                report.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
                os.killpg(os.getpgid(proc.pid), signal.SIGKILL) if os.getpgid(proc.pid) == proc.pid \
                    else proc.kill()
            except (OSError, psutil.Error):
                pass
        for proc in left:
            try:
                proc.wait(5)
            except psutil.Error:
                pass
        for proc in self.supervisors:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        return report


@pytest.fixture
def sim_deployment(tmp_path):
    """Factory: sim_deployment(ranks=4, **profile options) -> SimDeployment; everything is torn down after
    the test, and the test fails if any process it started was left running."""
    made: list[SimDeployment] = []

    def make(ranks: int = 4, **options: Any) -> SimDeployment:
        sub = tmp_path / f"dep{len(made)}"
        sub.mkdir()
        dep = SimDeployment(sub, ranks, **options)
        made.append(dep)
        return dep

    yield make
    leftovers = []
    for dep in made:
        leftovers += dep.teardown()
    assert not leftovers, "processes left running after the test (killed now):\n" + "\n".join(leftovers)
