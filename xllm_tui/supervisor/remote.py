"""The link from machine 0's supervisor to another machine's supervisor: one long-lived `ssh ... xllm-tui
remote-attach` per machine, carrying the socket's JSON-lines protocol (docs/protocol.md, "Over ssh").

The first line machine 0 sends is the attach request (the profile's files, --simulate, the port offset, the
machine); remote-attach starts or finds that machine's supervisor and answers `{"attached": {...}}`; from then on
every line is a request or reply of the ordinary protocol, plus one subscription's events. A lost connection is a
state of the link (`unreachable`), never a failure of the ranks behind it; the link reconnects with backoff and
resubscribes from the last event it saw. Nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import os
import shlex
import signal
import time
from typing import Any, Awaitable, Callable

import yaml

from xllm_tui.protocol import PROTOCOL, RequestError
from xllm_tui.spec import Machine, Profile, SshTarget

log = logging.getLogger("xllm_tui.supervisor.remote")

SSH_CONFIG_ENV = "XLLM_TUI_SSH_CONFIG"  # an ssh client config file passed as `ssh -F` (tests use a private one)
REMOTE_TIMEOUT_ENV = "XLLM_TUI_REMOTE_TIMEOUT"  # seconds machine 0 waits for one answer from another machine
FORWARDED_ENV_PREFIXES = ("XLLM_SIM_",)  # machine 0's environment a remote supervisor gets (simulator knobs)
ATTACH_TIMEOUT_S = 60.0  # ssh connect + starting the remote supervisor
REQUEST_TIMEOUT_S = 30.0  # the default of REMOTE_TIMEOUT_ENV
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0
POLL_INTERVAL_S = 1.0  # how often the remote ranks' stats and states are refreshed between events
MAX_LINE = 1 << 24


class RemoteUnavailable(Exception):
    """The machine cannot be reached now (ssh failed or the connection dropped)."""


def request_timeout(env: dict[str, str]) -> float:
    try:
        value = float(env.get(REMOTE_TIMEOUT_ENV) or REQUEST_TIMEOUT_S)
    except ValueError:
        return REQUEST_TIMEOUT_S
    return value if value > 0 else REQUEST_TIMEOUT_S


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def ssh_target(profile: Profile, index: int, *, simulate: bool) -> SshTarget:
    """How to reach machine `index`. Under --simulate the cluster's address is replaced by the machine's
    loopback address (127.0.0.<index+1>, as for its ranks) and the cluster's user/port/identity are dropped:
    a simulated run never contacts a real machine. A profile whose ssh host is already loopback is kept."""
    machine = profile.machines[index]
    target = machine.ssh or SshTarget(host=machine.host)
    if not simulate or is_loopback(target.host):
        return target
    return SshTarget(host=f"127.0.0.{index + 1}", command=target.command)


def ssh_argv(target: SshTarget, remote_words: list[str], *, config: str | None = None) -> list[str]:
    """`ssh` with BatchMode (never a password prompt), keep-alives (a dead peer is noticed in ~15 s), no tty.
    The remote command is one string for the remote shell, every word quoted."""
    argv = ["ssh"]
    if config:
        argv += ["-F", config]
    argv += ["-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
             "-o", "ConnectTimeout=10"]
    if target.user:
        argv += ["-l", target.user]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.identity:
        argv += ["-i", os.path.expanduser(target.identity), "-o", "IdentitiesOnly=yes"]
    argv += ["--", target.host, " ".join(shlex.quote(w) for w in remote_words)]
    return argv


def profile_bundle(profile: Profile) -> dict:
    """The profile's own files (the file, every file it extends, relative `source:` scripts) relative to their
    common directory: what the other machine needs instead of a copy of the profile. When the profile leaves
    working_dir to default to its directory, machine 0's working directory is written in, so relative paths
    (binary, logs, rank table) mean the same directory on every machine, as in the launch guide."""
    from xllm_tui.launch import working_dir_of

    main = os.path.abspath(profile.source_path)
    chain = [main]
    while True:
        try:
            with open(chain[-1], encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            break
        base = data.get("extends") if isinstance(data, dict) else None
        if not isinstance(base, str):
            break
        path = os.path.normpath(os.path.join(os.path.dirname(chain[-1]), os.path.expanduser(base)))
        if path in chain or not os.path.isfile(path):
            break
        chain.append(path)
    extra = [s for s in profile.source_scripts if os.path.isfile(s)
             and any(os.path.dirname(s).startswith(os.path.dirname(c)) for c in chain)]
    root = os.path.commonpath([os.path.dirname(p) for p in chain + extra])
    files = {}
    for path in chain + extra:
        with open(path, encoding="utf-8") as f:
            files[os.path.relpath(path, root)] = f.read()
    main_rel = os.path.relpath(main, root)
    if profile.working_dir is None:
        files[main_rel] = files[main_rel].rstrip("\n") + \
            f"\n# added by machine 0's xllm-tui: its working directory\nworking_dir: {json.dumps(working_dir_of(profile))}\n"
    return {"main": main_rel, "files": files, "name": profile.name}


def attach_request(profile: Profile, machine: Machine, *, simulate: bool, port_offset: int,
                   env: dict[str, str]) -> dict:
    return {"attach": {
        "protocol": PROTOCOL,
        "profile": profile_bundle(profile),
        "machine": machine.host,
        "simulate": simulate,
        "port_offset": port_offset,
        "env": {k: v for k, v in env.items() if k.startswith(FORWARDED_ENV_PREFIXES)},
    }}


class RemoteLink:
    """One machine's connection: state (connecting, connected, unreachable), the last snapshot of its ranks, the
    last event seq seen, and requests with replies matched by id."""

    def __init__(self, machine: Machine, index: int, argv: list[str], attach: dict, *,
                 on_event: Callable[[RemoteLink, dict], None], on_change: Callable[[RemoteLink], None],
                 on_connected: Callable[[RemoteLink], Awaitable[None]], timeout: float = REQUEST_TIMEOUT_S):
        self.machine = machine
        self.timeout = timeout  # for one request; a machine that does not answer in time is dropped
        self.index = index
        self.label = machine.name or machine.host
        self.argv = argv
        self.attach = attach
        self.on_event = on_event
        self.on_change = on_change
        self.on_connected = on_connected
        self.state = "connecting"
        self.since = time.time()
        self.reason = "connecting over ssh"
        self.ever_connected = False
        self.attached: dict = {}
        self.ranks: dict[int, dict] = {}  # rank -> RankStatus dict from its supervisor
        self.group: dict = {}
        self.disks: list[dict] = []  # its supervisor's disk watch (disk_watch.py): a disk filling there
        self.last_seq: int | None = None
        self.clock_skew_s: float | None = None  # our clock minus its clock, from the last snapshot's round trip
        self.connects = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[Any, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._settled = asyncio.Event()  # the first attempt ended (connected or not)
        self.closing = False
        self.stderr_tail = ""
        self.dropped = ""  # why this side ended the connection (a request unanswered)
        self.journaled_state = ""  # the coordinator's bookkeeping: which state it last journaled

    # ------------------------------------------------------------------------------------ state

    def _set(self, state: str, reason: str) -> None:
        if state != self.state or reason != self.reason:
            if state != self.state:
                self.since = time.time()
            self.state, self.reason = state, reason
            if state != "connecting":
                self._settled.set()
            self.on_change(self)

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def status(self) -> dict:
        return {"name": self.label, "host": self.machine.host, "index": self.index, "state": self.state,
                "since": round(self.since, 3), "reason": self.reason, "ranks": sorted(self.ranks),
                "supervisor_pid": self.attached.get("pid"), "run_dir": self.attached.get("run_dir"),
                "last_seq": self.last_seq, "connects": self.connects,
                "ssh_pid": self.proc.pid if self.proc is not None and self.proc.returncode is None else None,
                "clock_skew_s": None if self.clock_skew_s is None else round(self.clock_skew_s, 3),
                "ssh": self.argv[:-1], "disks": self.disks}

    async def wait_settled(self, timeout: float) -> bool:
        """Until the first connection attempt has ended; whether the machine is connected now."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)
        return self.connected

    # -------------------------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Connect, serve, and after a loss reconnect with backoff, until close()."""
        delay = BACKOFF_INITIAL_S
        while not self.closing:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure of a link is that machine being unreachable
                detail = f"{e.__class__.__name__}: {e}" if not isinstance(e, RemoteUnavailable) else str(e)
                if not self.closing:
                    log.warning("machine %s: %s", self.label, detail)
                    self._lost(detail)
            finally:
                await self._end_process()
            if self.closing:
                return
            if time.monotonic() - started > 60:
                delay = BACKOFF_INITIAL_S  # it had been up a while: this is a fresh loss
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _lost(self, detail: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RemoteUnavailable(f"machine {self.label}: {detail}"))
        self._pending.clear()
        self._set("unreachable", f"{self.unreachable_text(time.time())}: {detail}")

    def unreachable_text(self, now: float | None = None) -> str:
        """`machine unreachable since 14:02:11` (the time the connection was lost, not the last retry)."""
        at = self.since if self.state == "unreachable" or now is None else now
        return f"machine unreachable since {time.strftime('%H:%M:%S', time.localtime(at))}"

    async def _session(self) -> None:
        self.stderr_tail = ""
        self.dropped = ""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=MAX_LINE)
        stderr_task = asyncio.ensure_future(self._read_stderr(self.proc.stderr))
        try:
            self._writer = self.proc.stdin
            await self._write(self.attach)
            first = await asyncio.wait_for(self._readline(), ATTACH_TIMEOUT_S)
            if "attached" not in first:
                error = first.get("error") or {}
                raise RemoteUnavailable(f"remote-attach refused: {error.get('message') or first}")
            self.attached = first["attached"]
            reader = asyncio.ensure_future(self._read_loop())
            try:
                await self._write({"id": "subscribe", "op": "subscribe", "since": self.last_seq})
                await self.refresh()
                self.connects += 1
                self.ever_connected = True
                self._set("connected", f"connected over ssh; supervisor pid {self.attached.get('pid')}")
                await self.on_connected(self)
                while True:
                    done, _ = await asyncio.wait({reader}, timeout=POLL_INTERVAL_S)
                    if done:
                        reader.result()  # raises what ended it
                        raise RemoteUnavailable("the connection closed")
                    await self.refresh()
            finally:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
        except asyncio.TimeoutError:
            raise RemoteUnavailable(f"no answer over ssh within {ATTACH_TIMEOUT_S:g}s") from None
        except (ConnectionError, BrokenPipeError, asyncio.IncompleteReadError) as e:
            raise RemoteUnavailable(f"connection lost ({e.__class__.__name__})") from None
        finally:
            self._writer = None
            stderr_task.cancel()

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while True:
                line = await stream.readline()
                if not line:
                    return
                text = line.decode(errors="replace").strip()
                if text:
                    log.info("machine %s ssh: %s", self.label, text)
                    self.stderr_tail = text[-300:]

    async def _readline(self) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            rc = await self.proc.wait()
            if self.dropped:
                raise RemoteUnavailable(self.dropped)
            why = f"ssh was killed by signal {-rc}" if rc < 0 else f"ssh exited with status {rc}"
            why += f": {self.stderr_tail}" if self.stderr_tail else ""
            raise RemoteUnavailable(why)
        return json.loads(line)

    async def _read_loop(self) -> None:
        while True:
            msg = await self._readline()
            if "event" in msg:
                event = msg["event"]
                self.last_seq = max(self.last_seq or 0, int(event.get("seq") or 0))
                self.on_event(self, event)
                continue
            fut = self._pending.pop(msg.get("id"), None)
            if msg.get("id") == "subscribe":
                result = msg.get("result") or {}
                if self.last_seq is None and isinstance(result.get("seq"), int):
                    self.last_seq = result["seq"]
                continue
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def _write(self, message: dict) -> None:
        if self._writer is None:
            raise RemoteUnavailable(f"machine {self.label} is not connected")
        self._writer.write((json.dumps(message) + "\n").encode())
        await asyncio.wait_for(self._writer.drain(), self.timeout)

    def drop(self, why: str) -> None:
        """End a connection that no longer answers (ssh may keep a dead peer for a while): the session ends with
        `why`, the machine is unreachable, and it reconnects with backoff."""
        proc = self.proc
        if proc is None or proc.returncode is not None or self.dropped:
            return
        self.dropped = why
        log.warning("machine %s: %s; dropping the connection", self.label, why)
        self._lost(why)  # at once: nothing else is sent over it, and everyone sees the machine unreachable
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # ssh leads its own session (start_new_session)

    async def request(self, op: str, timeout: float | None = None, **args: Any) -> dict:
        """One request to that machine's supervisor: its result, RequestError for an error reply,
        RemoteUnavailable when the machine cannot be reached or does not answer within the timeout (the
        connection is then dropped: an answer that never comes must not hold anything up twice)."""
        timeout = timeout or self.timeout
        if self._writer is None or self.dropped:
            raise RemoteUnavailable(f"machine {self.label}: {self.reason}")
        req_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            await self._write({"id": req_id, "op": op, **args})
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.drop(f"no reply to {op} within {timeout:g}s")
            raise RemoteUnavailable(f"machine {self.label}: no reply to {op} within {timeout:g}s") from None
        except (ConnectionError, BrokenPipeError) as e:
            raise RemoteUnavailable(f"machine {self.label}: connection lost ({e.__class__.__name__})") from None
        finally:
            self._pending.pop(req_id, None)
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise RequestError(error.get("code", "remote"), f"machine {self.label}: {error.get('message')}")
        return reply.get("result") or {}

    async def refresh(self) -> None:
        asked = time.time()
        snap = await self.request("snapshot", events=0)
        answered = time.time()
        if isinstance(snap.get("time"), (int, float)):
            # Its clock against ours at the middle of the round trip (a replayed event's ts would mislead).
            self.clock_skew_s = (asked + answered) / 2 - snap["time"]
        self.ranks = {int(r["rank"]): r for r in snap.get("ranks") or []}
        self.group = snap.get("group") or {}
        self.disks = (snap.get("supervisor") or {}).get("disks") or []
        self.on_change(self)

    # ---------------------------------------------------------------------------------- ending

    async def close(self) -> None:
        self.closing = True
        await self._end_process()

    async def _end_process(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        if proc.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 3.0)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # ssh leads its own session (start_new_session)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 3.0)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def check_machine(profile: Profile, index: int, *, simulate: bool, env: dict[str, str],
                  timeout: float = ATTACH_TIMEOUT_S) -> dict:
    """`validate --remote` for one machine: reach it over ssh (BatchMode), have xllm-tui there load the profile as
    that machine would (paths, scripts, devices and binding where it runs), nothing started. Returns
    {"machine", "reachable", "version", "diagnostics": [{"severity", "text"}], "notes", "error"}."""
    import subprocess

    machine = profile.machines[index]
    target = ssh_target(profile, index, simulate=simulate)
    argv = ssh_argv(target, [*target.command, "remote-attach"], config=env.get(SSH_CONFIG_ENV) or None)
    request = {"check": attach_request(profile, machine, simulate=simulate, port_offset=0, env=env)["attach"]}
    out = {"machine": machine.name or machine.host, "ssh": " ".join(argv[:-1]), "reachable": False, "version": None,
           "diagnostics": [], "notes": [], "error": None}
    try:
        done = subprocess.run(argv, input=json.dumps(request) + "\n", capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        out["error"] = f"no answer over ssh within {timeout:g}s"
        return out
    except OSError as e:
        out["error"] = f"cannot run ssh: {e}"
        return out
    reply = None
    for line in done.stdout.splitlines():
        with contextlib.suppress(ValueError):
            reply = json.loads(line)
    if not isinstance(reply, dict) or "checked" not in reply:
        error = (reply or {}).get("error", {}).get("message") if isinstance(reply, dict) else None
        stderr = done.stderr.strip().splitlines()
        out["error"] = error or (f"ssh exited with status {done.returncode}" + (f": {stderr[-1]}" if stderr else ""))
        out["reachable"] = isinstance(reply, dict)
        return out
    out.update(reachable=True, **{k: v for k, v in reply["checked"].items() if k in ("version", "diagnostics", "notes")})
    return out

