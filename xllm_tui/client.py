"""Talk to a supervisor over its unix socket (docs/protocol.md). No Textual; used by the CLI and the TUI.
The TUI's asyncio client is in async_client.py (AsyncSupervisorClient, also reachable here): the CLI never
imports asyncio, which with the ssl module it loads costs every `up` about 25 ms before the supervisor starts.

    run_dir = run_dir_for(profile, simulate=True)
    with SupervisorClient(socket_path(run_dir)) as client:
        snap = client.snapshot()
        client.request("restart", ranks="failed")
        for event in client.events(since=snap["events"][-1]["seq"]):
            ...
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from xllm_tui.spec import Profile
from xllm_tui.supervisor.state import LOG_NAME, SOCKET_NAME, STATE_NAME, ShortSocketPath

if TYPE_CHECKING:
    from xllm_tui.devices.model import DeviceReport

MAX_REPLY = 64 << 20  # a snapshot of many ranks with events is well below this


class SupervisorUnavailable(Exception):
    """No supervisor answers for this run directory (none started, it died, or the socket refuses)."""


class SupervisorError(Exception):
    """The supervisor answered with an error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def state_home() -> str:
    return os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")


def run_dir_for(profile: Profile, simulate: bool) -> str:
    """profile.run_dir, else $XDG_STATE_HOME/xllm-tui/<name>; a simulated run gets its own "-sim" directory,
    so it can never touch a real deployment's ranks."""
    if profile.run_dir:
        base = os.path.abspath(os.path.expanduser(profile.run_dir))
        return base.rstrip("/") + "-sim" if simulate else base
    name = profile.name + ("-sim" if simulate else "")
    return os.path.join(state_home(), "xllm-tui", name)


def snapshot_devices(snapshot: dict) -> DeviceReport | None:
    """The supervisor's last device reading in a snapshot as a DeviceReport (None before its first reading,
    or from a supervisor that serves none). Binding issues and the summary stay in snapshot["devices"]."""
    from xllm_tui.devices.model import DeviceReport

    devices = snapshot.get("devices")
    return DeviceReport.from_dict(devices) if isinstance(devices, dict) else None


def sim_npu_procs_path(run_dir: str) -> str:
    """Under --simulate: the file of live ranks the supervisor keeps for the simulated npu-smi
    (XLLM_SIM_NPU_PROCS), so another reader of the simulated npu-smi shows the same ranks on their NPUs."""
    from xllm_tui.supervisor.devices import SIM_PROCS_NAME

    return os.path.join(run_dir, SIM_PROCS_NAME)


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, SOCKET_NAME)


def unresponsive_pid(run_dir: str) -> int | None:
    """The pid of a supervisor that holds the run dir's lock (so it is alive) although its socket does not
    answer: frozen (SIGSTOP, a debugger) or overloaded. None when no supervisor holds the lock."""
    from xllm_tui.supervisor.state import is_locked, read_lock_pid

    if not is_locked(run_dir):
        return None
    return read_lock_pid(run_dir) or -1


def not_answering_message(profile_name: str, run_dir: str, pid: int, detail: str = "") -> str:
    state = ""
    try:
        import psutil

        status = psutil.Process(pid).status()
        state = {psutil.STATUS_STOPPED: "it is stopped (SIGSTOP or a debugger); `kill -CONT` resumes it",
                 psutil.STATUS_TRACING_STOP: "it is stopped by a debugger"}.get(status, f"its process is {status}")
    except Exception:  # noqa: BLE001 - the message is still useful without the process state
        pass
    who = f"pid {pid}" if pid > 0 else "a process"
    text = (f"the supervisor for profile {profile_name} ({who}, run dir {run_dir}) holds the run dir but does not "
            f"answer: it is frozen or overloaded{'; ' + state if state else ''}. Its ranks keep running. Look at "
            f"{os.path.join(run_dir, 'supervisor.log')}; to replace it, end it (`kill {pid if pid > 0 else 'PID'}`) "
            "and run `xllm-tui up` again: the successor adopts the running ranks")
    return text + (f" [{detail}]" if detail else "")


def unavailable_message(profile_name: str, run_dir: str, detail: str = "", simulate: bool = False,
                        profile_arg: str | None = None) -> str:
    """The one message for "nobody answers": names the profile, the run dir and how to start one, or says that
    the supervisor is alive but not answering."""
    pid = unresponsive_pid(run_dir)
    if pid is not None:
        return not_answering_message(profile_name, run_dir, pid, detail)
    flag = " --simulate" if simulate else ""
    text = (f"no supervisor is running for profile {profile_name} (run dir {run_dir}); "
            f"start one with `xllm-tui up {profile_arg or 'PROFILE'}{flag}`")
    return text + (f" [{detail}]" if detail else "")


def last_run_of(run_dir: str) -> dict:
    """What the run dir's last supervisor recorded about itself (state.json's "profile"), or {}."""
    try:
        with open(os.path.join(run_dir, STATE_NAME)) as f:
            profile = json.load(f).get("profile")
    except (OSError, ValueError, AttributeError):
        return {}
    return profile if isinstance(profile, dict) else {}


def _unavailable_for_socket(path: str, detail: str = "") -> str:
    """unavailable_message when only the socket path is known: the run dir's state names the profile."""
    run_dir = os.path.dirname(os.path.abspath(path))
    last = last_run_of(run_dir)
    return unavailable_message(str(last.get("name") or os.path.basename(run_dir)), run_dir, detail,
                               simulate=bool(last.get("simulate")), profile_arg=last.get("path"))


def _check_reply(reply: Any) -> dict:
    if not isinstance(reply, dict):
        raise SupervisorError("bad_reply", f"unexpected reply {reply!r}")
    if reply.get("ok"):
        result = reply.get("result")
        return result if isinstance(result, dict) else {"value": result}
    error = reply.get("error") or {}
    raise SupervisorError(str(error.get("code", "error")), str(error.get("message", "request failed")))


class SupervisorClient:
    """Blocking client: one connection; `events()` turns the connection into a subscription."""

    def __init__(self, socket_path: str, timeout: float = 5.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        if not os.path.exists(self.socket_path):
            raise SupervisorUnavailable(_unavailable_for_socket(self.socket_path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with ShortSocketPath(self.socket_path) as address:
                sock.connect(address)
        except OSError as e:
            sock.close()
            raise SupervisorUnavailable(_unavailable_for_socket(self.socket_path, e.strerror or str(e))) from None
        self._sock = sock
        return sock

    def _readline(self, timeout: float | None) -> dict:
        sock = self._connect()
        sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                raise
            except OSError as e:
                self.close()
                raise SupervisorUnavailable(_unavailable_for_socket(self.socket_path, f"connection lost: {e}")) from None
            if not chunk:
                self.close()
                raise SupervisorUnavailable(_unavailable_for_socket(self.socket_path, "the supervisor closed the connection"))
            self._buffer += chunk
            if len(self._buffer) > MAX_REPLY:
                self.close()
                raise SupervisorError("bad_reply", "reply too long")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError as e:
            raise SupervisorError("bad_reply", f"not JSON: {e}") from None

    def _send(self, message: dict) -> None:
        sock = self._connect()
        sock.settimeout(self.timeout)
        try:
            sock.sendall((json.dumps(message) + "\n").encode())
        except OSError as e:
            self.close()
            raise SupervisorUnavailable(_unavailable_for_socket(self.socket_path, f"connection lost: {e}")) from None

    def request(self, op: str, **args: Any) -> dict:
        req_id = next(self._ids)
        self._send({"id": req_id, "op": op, **args})
        while True:
            try:
                reply = self._readline(self.timeout)
            except TimeoutError:
                self.close()
                raise SupervisorUnavailable(f"the supervisor at {self.socket_path} did not answer {op} within "
                                            f"{self.timeout:g}s") from None
            if "event" in reply:
                continue
            return _check_reply(reply)

    def hello(self) -> dict:
        return self.request("hello")

    def snapshot(self) -> dict:
        return self.request("snapshot")

    def events(self, since: int | None = None, timeout: float | None = None) -> Iterator[dict]:
        """Subscribe on this connection and yield events as they arrive (backlog after `since` first).

        timeout: stop after this many seconds without an event (None = wait forever). Ends when the
        supervisor exits."""
        args: dict[str, Any] = {} if since is None else {"since": since}
        self.request("subscribe", **args)
        while True:
            try:
                message = self._readline(timeout)
            except TimeoutError:
                return
            except SupervisorUnavailable:
                return
            if "event" in message:
                yield message["event"]
            elif message.get("ok") is False:
                _check_reply(message)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buffer = b""

    def __enter__(self) -> SupervisorClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------------- start one


def supervisor_answers(run_dir: str, timeout: float = 2.0) -> dict | None:
    """The supervisor's hello, or None when nothing answers."""
    try:
        with SupervisorClient(socket_path(run_dir), timeout=timeout) as client:
            return client.hello()
    except (SupervisorUnavailable, SupervisorError, OSError):
        return None


def supervise_argv(profile_path: str, *, simulate: bool, run_dir: str, port_offset: int = 0,
                   machine: str | None = None, over_ssh: bool = False, member: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "xllm_tui", "supervise", os.path.abspath(profile_path), "--run-dir", run_dir]
    if simulate:
        argv.append("--simulate")
    if port_offset:
        argv += ["--port-offset", str(port_offset)]
    if machine:
        argv += ["--machine", machine]
    if over_ssh:
        argv.append("--over-ssh")
    if member:  # remote-attach: machine 0 decides when this machine's ranks launch
        argv += ["--member", "--no-launch"]
    return argv


def start_detached(argv: list[str], run_dir: str) -> int:
    """Start the supervisor in its own session, stdin /dev/null, output to supervisor.log; returns its pid.

    posix_spawn, not an intermediate interpreter (that cost a Python start, 40-90 ms, on every `up`). The
    supervisor is our child until we exit: a daemon thread reaps it, so a long-lived caller (the TUI) keeps no
    zombie. Inheritable descriptors beyond 2 are closed in it, as close_fds did: a pipe a caller of ours waits
    on must not stay open in a daemon."""
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    log = os.open(os.path.join(run_dir, LOG_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds() if fd > 2 and fd != log]
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsid=True, setsigmask=(),
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))  # Python ignores these; a child must not
    except OSError as e:
        raise SupervisorUnavailable(f"could not start the supervisor: {e}") from e
    finally:
        os.close(log)
    threading.Thread(target=_reap, args=(pid,), name=f"reap-supervisor-{pid}", daemon=True).start()
    return pid


def _inheritable_fds() -> list[int]:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    inheritable = []
    for fd in fds:
        try:
            if os.get_inheritable(fd):
                inheritable.append(fd)
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return inheritable


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ensure_supervisor(profile_path: str, *, simulate: bool, run_dir: str | None = None, port_offset: int = 0,
                      timeout: float = 30, machine: str | None = None, progress=None, over_ssh: bool = False,
                      member: bool = False) -> str:
    """Start a detached supervisor for the profile unless one answers; return its run dir once it answers.

    Raises SupervisorUnavailable (with the end of supervisor.log) when it does not come up in time.
    progress: optional callable invoked about every 0.5 s while waiting (e.g. to print a dot).
    """
    if run_dir is None:
        from xllm_tui.profile import load_profile_or_raise

        run_dir = run_dir_for(load_profile_or_raise(profile_path, simulate=simulate), simulate)
    run_dir = os.path.abspath(run_dir)
    if supervisor_answers(run_dir):
        return run_dir
    if simulate and not (port_offset and over_ssh):
        # A simulated run keeps the ports it was first given, and its machines stay reached over ssh: a client
        # that starts its successor (the TUI's "start a new supervisor") without --port-offset or --over-ssh
        # must find the running ranks where they are.
        last = last_run_of(run_dir)
        port_offset = port_offset or int(last.get("port_offset") or 0)
        over_ssh = over_ssh or bool(last.get("over_ssh"))
    log_path = os.path.join(run_dir, LOG_NAME)
    log_start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    pid = start_detached(supervise_argv(profile_path, simulate=simulate, run_dir=run_dir, port_offset=port_offset,
                                        machine=machine, over_ssh=over_ssh, member=member), run_dir)
    deadline = time.monotonic() + timeout
    next_tick = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        if supervisor_answers(run_dir, timeout=1.0):
            return run_dir
        if not pid_alive(pid):
            if supervisor_answers(run_dir, timeout=1.0):
                return run_dir
            raise SupervisorUnavailable(f"the supervisor exited during start-up:\n{_log_tail(log_path, log_start)}"
                                        + _no_room_note(run_dir))
        if progress is not None and time.monotonic() >= next_tick:
            progress()
            next_tick += 0.5
        time.sleep(0.1)
    raise SupervisorUnavailable(f"the supervisor (pid {pid}) did not answer within {timeout:g}s; "
                                f"see {log_path}:\n{_log_tail(log_path, log_start)}" + _no_room_note(run_dir))


def _no_room_note(run_dir: str) -> str:
    """A full disk kills a starting supervisor before it can log why (its log is on the same disk): say it."""
    from xllm_tui.supervisor.disk_watch import FULL_BYTES, free_bytes

    free = free_bytes(run_dir)
    if free is None or free >= FULL_BYTES:
        return ""
    return (f"\nno room left on the run directory's filesystem ({free} bytes free in {run_dir}): the supervisor "
            "cannot write its lock, state, events or log there. Free some space (old rank logs?) and try again.")


def _log_tail(path: str, start: int, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return "(no supervisor.log)"
    text = data.decode(errors="replace").strip()
    return text[-limit:] if text else "(supervisor.log is empty)"


def __getattr__(name: str):
    if name == "AsyncSupervisorClient":  # loaded on first use: see the module's docstring
        from xllm_tui.async_client import AsyncSupervisorClient

        return AsyncSupervisorClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
