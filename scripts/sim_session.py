"""A private simulated deployment for the screenshot script and the demo recorder.

    with SimSession(env={"XLLM_SIM_FAIL": "hccl_error", "XLLM_SIM_FAIL_RANKS": "3"}) as sim:
        sim.wait(lambda snap: snap["group"]["state"] == "ready", "the group to be ready")
        sim.request("toggle", group="determinism", on=True)

It starts xllm-tui's real supervisor with the simulator (client.ensure_supervisor) on a run directory under
a temp directory and on free ports (--port-offset), so it never touches the user's deployments. On exit,
even after an error, it asks the supervisor to shut down with its ranks, waits for every process it saw
(the supervisor and each rank pid) to be gone, kills by pid what is left, and says so if any survived.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from xllm_tui import client  # noqa: E402

PROFILE = REPO / "profiles" / "a3-8card.yaml"
# Ports the a3-8card profile uses before the offset: rank 0's registration port and base_port + rank.
PROFILE_PORTS = [10015, *range(18994, 19010)]


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_offset() -> int:
    """An offset that moves every profile port onto free loopback ports (below the ephemeral range)."""
    for _ in range(200):
        offset = random.randrange(1000, 40000 - max(PROFILE_PORTS), 100)
        if all(_port_free(p + offset) for p in PROFILE_PORTS):
            return offset
    raise RuntimeError("no free block of ports for the simulated deployment")


class SimSession:
    """A simulated deployment of `profile` (a real supervisor and simulated ranks), ended on exit.

    env: XLLM_SIM_* variables for the ranks (the supervisor passes its environment to them).
    backoff_s: the group restart backoff; a profile extending `profile` sets it, so a restart countdown
    lasts long enough to be shown (the profile's own is 5 s).
    """

    def __init__(self, profile: Path = PROFILE, *, env: dict[str, str] | None = None, time_scale: float = 0.05,
                 backoff_s: float | None = None):
        self.source_profile = Path(profile).resolve()
        self.env = {"XLLM_SIM_TIME_SCALE": str(time_scale), **(env or {})}
        self.backoff_s = backoff_s
        self.seen_pids: set[int] = set()
        self.supervisor_pid: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> SimSession:
        self._tmp = tempfile.TemporaryDirectory(prefix="xllm-tui-sim-")
        self.root = Path(self._tmp.name)
        self.run_dir = str(self.root / "run")
        self.profile_path = str(self.source_profile)
        if self.backoff_s is not None:
            name = self.source_profile.stem
            override = self.root / f"{name}.yaml"
            override.write_text(
                f"# {name} with a longer restart backoff, so the countdown can be shown\n"
                f"extends: {self.source_profile}\nname: {name}\n"
                f"restart:\n  backoff: {{initial: {self.backoff_s:g}s, max: 2m, factor: 2}}\n",
                encoding="utf-8",
            )
            self.profile_path = str(override)
        self.port_offset = free_port_offset()
        self._saved_env = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # inherited by the detached supervisor, and by its ranks
        try:
            # client.start_detached: the supervisor runs in its own session, as `xllm-tui up` starts it.
            argv = client.supervise_argv(self.profile_path, simulate=True, run_dir=self.run_dir,
                                         port_offset=self.port_offset)
            self.seen_pids.add(client.start_detached(argv, self.run_dir))
            deadline = time.monotonic() + 60
            while True:
                try:
                    self.supervisor_pid = int(self.request("hello")["pid"])
                    break
                except (OSError, ValueError):
                    if time.monotonic() > deadline:
                        log = Path(self.run_dir, "supervisor.log")
                        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
                        raise RuntimeError(f"the supervisor did not answer within 60 s:\n{tail}") from None
                    time.sleep(0.1)
            self.seen_pids.add(self.supervisor_pid)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.shutdown()
        finally:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._tmp.cleanup()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the ranks and the supervisor; afterwards no process this session saw is alive."""
        import psutil

        try:
            self.snapshot()  # note the pids of ranks launched since the last look
            self.request("shutdown", stop_ranks=True)
        except (OSError, ValueError, RuntimeError):
            pass  # already gone: check the pids below all the same
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive():
            time.sleep(0.1)
        # A rank launched after the last snapshot is not in seen_pids: it still holds its log open in our run dir.
        self.seen_pids.update(self._holding_our_files())
        while time.monotonic() < deadline and self._alive():
            time.sleep(0.1)
        left = self._alive()
        for pid in left:  # ours by pid: a supervisor or rank of this session that did not stop in time
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            psutil.wait_procs([p for p in (self._process(pid) for pid in left) if p], timeout=10)
            print(f"sim_session: killed processes that outlived the shutdown: {left}", file=sys.stderr)
        still = self._alive()
        if still:
            raise RuntimeError(f"processes of the simulated deployment are still alive: {still}")

    def _holding_our_files(self) -> set[int]:
        """Pids of this user's processes with a file open under this session's temp directory."""
        import psutil

        root = str(self.root) + os.sep
        found = set()
        for process in psutil.process_iter(["uids"]):
            try:
                if process.info["uids"] and process.info["uids"].real != os.getuid():
                    continue
                if any(f.path.startswith(root) for f in process.open_files()):
                    found.add(process.pid)
            except psutil.Error:
                continue
        found.discard(os.getpid())
        return found

    def _process(self, pid: int):
        import psutil

        try:
            return psutil.Process(pid)
        except psutil.Error:
            return None

    def _alive(self) -> list[int]:
        import psutil

        alive = []
        for pid in sorted(self.seen_pids):
            process = self._process(pid)
            try:
                if process is not None and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.Error:
                pass
        return alive

    # -- talking to it ------------------------------------------------------------------------------
    def request(self, op: str, **args: Any) -> dict[str, Any]:
        """One request on a fresh connection (docs/protocol.md: JSON lines over the unix socket)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(client.socket_path(self.run_dir))
            conn.sendall(json.dumps({"id": 1, "op": op, "who": "scripts/sim_session.py", **args}).encode() + b"\n")
            buffer = b""
            while not buffer.endswith(b"\n"):
                chunk = conn.recv(1 << 20)
                if not chunk:
                    raise ConnectionError(f"the supervisor closed the connection during {op}")
                buffer += chunk
        reply = json.loads(buffer)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise RuntimeError(f"{op} refused: {error.get('code')}: {error.get('message')}")
        return reply["result"]

    def snapshot(self, events: int = 1000) -> dict[str, Any]:
        snap = self.request("snapshot", events=events)
        self.seen_pids.update(int(r["pid"]) for r in snap.get("ranks") or [] if r.get("pid"))
        return snap

    def wait(self, condition: Callable[[dict[str, Any]], bool], what: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        snap: dict[str, Any] = {}
        while time.monotonic() < deadline:
            snap = self.snapshot()
            if condition(snap):
                return snap
            time.sleep(0.1)
        states = [(r["rank"], r["state"], r.get("reason")) for r in snap.get("ranks") or []]
        raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; group {snap.get('group')}; ranks {states}")

    def kill_rank(self, rank: int, sig: int = signal.SIGKILL) -> int:
        """Kill a rank's process from outside, as an operator's `kill -9` would; returns its pid."""
        snap = self.snapshot()
        pid = next(int(r["pid"]) for r in snap["ranks"] if r["rank"] == rank and r.get("pid"))
        os.kill(pid, sig)
        return pid


def exit_on_termination() -> None:
    """SIGTERM/SIGHUP end the script like Ctrl-C, so `with SimSession()` still stops what it started."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def group_state(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda snap: (snap.get("group") or {}).get("state") == state


def all_ranks(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda snap: bool(snap.get("ranks")) and all(r["state"] == state for r in snap["ranks"])
