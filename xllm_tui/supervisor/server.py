"""The supervisor's unix socket: JSON lines, one request per line, see docs/protocol.md.

Every input is untrusted: bad JSON, non-objects, unknown ops, bad arguments and over-long lines get an
error reply; nothing a client sends can raise out of a connection handler. Slow subscribers are dropped
rather than allowed to stall the supervisor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
from typing import Any, Protocol

from xllm_tui.protocol import PROTOCOL, RequestError
from xllm_tui.supervisor.state import EventJournal, ShortSocketPath

log = logging.getLogger("xllm_tui.supervisor.server")

MAX_LINE = 1 << 20  # a request line longer than this is refused
MAX_QUEUED_EVENTS = 10000


class Subscriber:
    """Events waiting to be written to one subscribed connection."""

    def __init__(self) -> None:
        self.queue: collections.deque = collections.deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.overflowed = False

    def push(self, event: dict) -> None:
        if self.closed:
            return
        if len(self.queue) >= MAX_QUEUED_EVENTS:
            self.overflowed = True
            self.closed = True
        else:
            self.queue.append(event)
        self.wakeup.set()

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()


class Operations(Protocol):
    """What the socket needs of a supervisor (the daemon implements it; a test may fake it)."""

    pid: int
    run_dir: str
    simulate: bool
    journal: EventJournal | None
    subscribers: set[Any]

    @property
    def profile(self) -> Any: ...

    def snapshot(self, events: int = 50) -> dict: ...

    def watched(self) -> None: ...

    def perform(self, op: str, spec: Any, who: str, only: bool = False) -> dict: ...

    def toggle_group(self, name: str, on: bool, who: str) -> dict: ...

    async def reload(self) -> dict: ...

    async def read_log(self, rank: int, *, generation: int, offset: int | None, lines: int | None,
                       max_bytes: int) -> dict: ...

    async def read_device_ips(self) -> dict: ...

    async def write_rank_table(self, table: dict) -> dict: ...

    def request_shutdown(self, stop_ranks: bool, who: str) -> None: ...


class SocketServer:
    def __init__(self, supervisor: Operations):
        self.supervisor = supervisor
        self.server: asyncio.AbstractServer | None = None
        self.path = ""
        self.connections: set[asyncio.Task] = set()

    async def start(self, path: str) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of a dead supervisor; we hold the lock, so nobody else owns it
        self.server = await asyncio.start_unix_server(self.handle, sock=self._bind(path), limit=MAX_LINE)

    async def rebind(self, path: str) -> None:
        """Listen at `path` again (its file was removed with the run directory); the clients connected stay."""
        old = self.server
        await self.start(path)
        if old is not None:
            old.close()  # stops listening only: asyncio leaves the connections it made open

    def forget_path(self) -> None:
        """The socket's path belongs to another supervisor now: never remove it."""
        self.path = ""

    @staticmethod
    def _bind(path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is created 0600: only this user may command ranks
        try:
            with ShortSocketPath(path) as address:
                sock.bind(address)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        return sock

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self.connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            self.server = None
            if self.path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task:
            self.connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a connection must never take the supervisor down
            log.exception("connection handler failed")
        finally:
            if task:
                self.connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, message: dict) -> None:
        writer.write((json.dumps(message, default=str) + "\n").encode())
        await asyncio.wait_for(writer.drain(), 10.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        discarding = False  # inside an over-long line: drop input up to its newline
        while True:
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError) as e:
                if not discarding:
                    await self._send(writer, error_reply(None, "line_too_long",
                                                         f"request line longer than {MAX_LINE} bytes"))
                # asyncio dropped the buffered part; when no newline was seen yet, the rest follows.
                discarding = "not found" in str(e)
                continue
            if not line:
                return
            if discarding:
                discarding = False
                continue
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError as e:
                await self._send(writer, error_reply(None, "bad_json", f"not JSON: {e}"))
                continue
            if not isinstance(request, dict):
                await self._send(writer, error_reply(None, "bad_request", "a request must be a JSON object"))
                continue
            req_id = request.get("id")
            op = request.get("op")
            if not isinstance(op, str):
                await self._send(writer, error_reply(req_id, "bad_request", 'a request needs "op" (a string)'))
                continue
            if op == "subscribe":
                since = request.get("since")
                if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
                    await self._send(writer, error_reply(req_id, "bad_request",
                                                         '"since" must be an event seq (integer)'))
                    continue
                await self._subscribe(writer, req_id, since)
                return
            try:
                result = await self.dispatch(op, request)
                reply = {"id": req_id, "ok": True, "result": result}
            except RequestError as e:
                reply = error_reply(req_id, e.code, e.message)
            except Exception as e:  # noqa: BLE001
                log.exception("op %s failed", op)
                reply = error_reply(req_id, "internal", f"{op} failed: {e.__class__.__name__}: {e}")
            await self._send(writer, reply)

    async def _subscribe(self, writer: asyncio.StreamWriter, req_id: Any, since: int | None) -> None:
        sup = self.supervisor
        subscriber = Subscriber()
        sup.subscribers.add(subscriber)
        try:
            backlog = sup.journal.since(since) if since is not None else []
            await self._send(writer, {"id": req_id, "ok": True, "result": {"subscribed": True,
                                                                           "seq": sup.journal.seq}})
            sent = since if since is not None else sup.journal.seq
            for event in backlog:
                await self._send(writer, {"event": event})
                sent = event["seq"]
            while True:
                while subscriber.queue:
                    event = subscriber.queue.popleft()
                    if event["seq"] <= sent:
                        continue
                    await self._send(writer, {"event": event})
                    sent = event["seq"]
                if subscriber.closed:
                    if subscriber.overflowed:
                        await self._send(writer, error_reply(req_id, "too_slow", "subscriber fell too far behind; "
                                                             "resubscribe with since"))
                    return
                subscriber.wakeup.clear()
                await subscriber.wakeup.wait()
        finally:
            sup.subscribers.discard(subscriber)

    async def dispatch(self, op: str, request: dict) -> dict:
        sup = self.supervisor
        who = request.get("who") if isinstance(request.get("who"), str) else "a client"
        if op == "hello":
            return {"protocol": PROTOCOL, "pid": sup.pid, "profile": sup.profile.name, "run_dir": sup.run_dir,
                    "simulate": sup.simulate}
        if op == "snapshot":
            events = request.get("events", 50)
            if not isinstance(events, int) or isinstance(events, bool) or events < 0:
                raise RequestError("bad_request", '"events" must be a non-negative integer')
            sup.watched()
            return sup.snapshot(events=min(events, 1000))
        if op in ("start", "stop", "restart"):
            if "ranks" not in request:
                raise RequestError("bad_request", f'{op} needs "ranks": a list of rank numbers, "failed" or "all"')
            only = request.get("only", False)
            if not isinstance(only, bool):
                raise RequestError("bad_request", '"only" must be true or false')
            return sup.perform(op, request["ranks"], who, only=only)
        if op == "toggle":
            name, on = request.get("group"), request.get("on")
            if not isinstance(name, str) or not isinstance(on, bool):
                raise RequestError("bad_request", 'toggle needs "group" (a name) and "on" (true or false)')
            return sup.toggle_group(name, on, who)
        if op == "reload":
            return await sup.reload()
        if op == "device_ips":  # machine 0 asks another machine while building the rank table
            return await sup.read_device_ips()
        if op == "write_ranktable":
            if not isinstance(request.get("table"), dict):
                raise RequestError("bad_request", 'write_ranktable needs "table" (the rank table object)')
            return await sup.write_rank_table(request["table"])
        if op == "log_read":
            rank, generation = request.get("rank"), request.get("generation", 0)
            offset, lines = request.get("offset"), request.get("lines")
            max_bytes = request.get("max_bytes", 1 << 20)
            ints = [rank, generation, max_bytes] + [x for x in (offset, lines) if x is not None]
            if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in ints) \
                    or (offset is None) == (lines is None):
                raise RequestError("bad_request", 'log_read needs "rank" and either "offset" (bytes) or "lines" (the '
                                   'last N), optional "generation" and "max_bytes" (non-negative integers)')
            return await sup.read_log(rank, generation=generation, offset=offset, lines=lines,
                                      max_bytes=min(max_bytes, 4 << 20))
        if op == "shutdown":
            stop_ranks = request.get("stop_ranks", True)
            if not isinstance(stop_ranks, bool):
                raise RequestError("bad_request", '"stop_ranks" must be true or false')
            sup.request_shutdown(stop_ranks, who)
            return {"stopping": True, "stop_ranks": stop_ranks}
        raise RequestError("unknown_op", f"unknown op {op!r}; known: hello, snapshot, subscribe, start, stop, "
                           "restart, toggle, reload, log_read, device_ips, write_ranktable, shutdown")


def error_reply(req_id: Any, code: str, message: str) -> dict:
    return {"id": req_id, "ok": False, "error": {"code": code, "message": message}}

