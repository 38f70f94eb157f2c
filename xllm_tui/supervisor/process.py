"""Rank processes: spawn from a RankLaunch, notice exit via pidfd, stop the process group, identity.

A rank runs in its own session and process group (start_new_session), so it outlives the supervisor and
a signal to the group reaches numactl's exec'd binary and anything it forked. Its stdout and stderr are
one file descriptor opened here with O_APPEND: nobody reads a pipe on its behalf.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass

import psutil

from xllm_tui.spec import RankLaunch


def argv_hash(argv: list[str] | tuple[str, ...]) -> str:
    return hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]


def program_argv(argv: list[str] | tuple[str, ...]) -> list[str]:
    """The argv the rank shows once running: numactl execs the binary, so /proc/<pid>/cmdline loses the
    `numactl -C cores` prefix (the pid and its start time stay the same across exec)."""
    argv = list(argv)
    if not argv or os.path.basename(argv[0]) != "numactl":
        return argv
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        i += 1 if (argv[i].startswith("--") and "=" in argv[i]) else 2
    return argv[i:]


def env_hash(env: tuple[tuple[str, str], ...] | list) -> str:
    return hashlib.sha256("\0".join(f"{k}={v}" for k, v in env).encode()).hexdigest()[:16]


def read_cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]] if raw else []


@dataclass
class Identity:
    """What makes a pid this rank: a recycled pid has another create_time or argv."""

    pid: int
    create_time: float
    argv_hash: str

    def to_json(self) -> dict:
        return {"pid": self.pid, "create_time": self.create_time, "argv_hash": self.argv_hash}


def identity_of(pid: int) -> Identity | None:
    try:
        proc = psutil.Process(pid)
        create_time = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    cmdline = read_cmdline(pid)
    if cmdline is None:
        return None
    return Identity(pid, create_time, argv_hash(cmdline))


def matches(recorded: dict, pid: int) -> bool:
    """Is `pid` still the process recorded (pid, create_time, argv hash), alive and not a zombie?"""
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    current = identity_of(pid)
    if current is None:
        return False
    expected = {recorded.get("argv_hash"), recorded.get("launch_argv_hash")} - {None}
    return abs(current.create_time - float(recorded.get("create_time", -1))) < 0.05 and current.argv_hash in expected


MARKER_RUN_DIR = "XLLM_TUI_RUN_DIR"
MARKER_RANK = "XLLM_TUI_RANK"


def rank_marker(run_dir: str, rank: int) -> dict[str, str]:
    return {MARKER_RUN_DIR: run_dir, MARKER_RANK: str(rank)}


@dataclass
class MarkedProcess:
    pid: int
    rank: int
    create_time: float
    cmdline: list[str]


def find_marked(run_dir: str) -> list[MarkedProcess]:
    """Live processes whose environment says they are a rank of `run_dir` (group leaders only: a rank's own
    children inherit the marker). Blocking: reads every process's environment this user may read."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            if env.get(MARKER_RUN_DIR) != run_dir or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) != proc.pid:
                continue
            found.append(MarkedProcess(proc.pid, int(env.get(MARKER_RANK, "-1")), proc.create_time(),
                                       read_cmdline(proc.pid) or []))
        except (psutil.Error, OSError, ValueError):
            continue
    return sorted(found, key=lambda m: (m.rank, m.create_time))


def open_log(path: str) -> int:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


@dataclass
class ExitStatus:
    code: int | None  # exit code, when it exited normally
    signal: int | None  # signal number, when killed by one
    known: bool = True  # False for an adopted rank: not our child, its status cannot be read
    at: float = 0.0

    @property
    def clean(self) -> bool:
        return self.known and self.code == 0

    def describe(self) -> str:
        if not self.known:
            return "exited (status unknown: adopted, not a child of this supervisor)"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exited with code {self.code}"


class RankProcess:
    """One running rank: a child (spawned here) or an adopted process (spawned by an earlier supervisor)."""

    def __init__(self, pid: int, pgid: int, identity: Identity | None, popen: subprocess.Popen | None):
        self.pid = pid
        self.pgid = pgid
        self.identity = identity
        self.popen = popen
        self.adopted = popen is None
        self.exit: ExitStatus | None = None
        self._pidfd: int | None = None
        self._exited = asyncio.Event()

    @classmethod
    def spawn(cls, launch: RankLaunch, marker: dict[str, str] | None = None) -> RankProcess:
        """marker: variables added to the rank's environment that name its run dir and rank, so it can be
        recognised without any file (see find_marked)."""
        log_fd = open_log(launch.log_path)
        try:
            popen = subprocess.Popen(
                list(launch.argv),
                env={**dict(launch.env), **(marker or {})},
                cwd=launch.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(log_fd)
        # Identity: the start time from the kernel, the argv the program will show after numactl's exec.
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            create_time = time.time()
        identity = Identity(popen.pid, create_time, argv_hash(program_argv(launch.argv)))
        return cls(popen.pid, popen.pid, identity, popen)

    @classmethod
    def adopt(cls, pid: int, recorded: dict) -> RankProcess | None:
        if not matches(recorded, pid):
            return None
        try:
            pgid = os.getpgid(pid)
        except OSError:
            return None
        return cls(pid, pgid, Identity(pid, float(recorded["create_time"]), str(recorded["argv_hash"])), None)

    @classmethod
    def adopt_marked(cls, found: MarkedProcess) -> RankProcess | None:
        """A rank recognised by its marker alone (no record of it survived)."""
        try:
            pgid = os.getpgid(found.pid)
        except OSError:
            return None
        return cls(found.pid, pgid, Identity(found.pid, found.create_time, argv_hash(found.cmdline)), None)

    # -- exit watching ------------------------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop, on_exit) -> None:
        """Call on_exit(self) as soon as the process exits (pidfd readable), never by end-of-output."""
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            loop.call_soon(self._finish, on_exit)
            return
        loop.add_reader(self._pidfd, self._on_pidfd, loop, on_exit)

    def _on_pidfd(self, loop: asyncio.AbstractEventLoop, on_exit) -> None:
        if self.popen is not None and self.popen.poll() is None:
            return  # pidfd signalled but not yet reapable; it will signal again
        self._finish(on_exit, loop)

    def _finish(self, on_exit, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self.exit is not None:
            return
        if self._pidfd is not None:
            if loop is not None:
                loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        now = time.time()
        if self.popen is not None:
            self.popen.poll()
            rc = self.popen.returncode
            if rc is None:
                self.exit = ExitStatus(None, None, known=False, at=now)
            elif rc < 0:
                self.exit = ExitStatus(None, -rc, at=now)
            else:
                self.exit = ExitStatus(rc, None, at=now)
        else:
            self.exit = ExitStatus(None, None, known=False, at=now)
        self._exited.set()
        on_exit(self)

    def unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop watching without waiting (supervisor shutting down, ranks left running)."""
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    @property
    def alive(self) -> bool:
        return self.exit is None

    async def wait_exit(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # -- signals ------------------------------------------------------------------------------------

    def signal_group(self, sig: int) -> bool:
        """Signal the rank's whole process group; False when nothing was there to signal."""
        if self.pgid <= 1 or self.pgid == os.getpgid(0):
            return False  # never signal our own or init's group
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return False

    async def stop(self, grace: float) -> str:
        """SIGTERM to the group, `grace` seconds, then SIGKILL to the group. Returns how it ended."""
        if not self.alive:
            self.signal_group(signal.SIGKILL)  # stragglers the leader left behind
            return "already exited"
        self.signal_group(signal.SIGTERM)
        if await self.wait_exit(grace):
            self.signal_group(signal.SIGKILL)
            return "stopped by SIGTERM"
        self.signal_group(signal.SIGKILL)
        await self.wait_exit(10.0)
        return f"killed with SIGKILL after {grace:g}s grace"
