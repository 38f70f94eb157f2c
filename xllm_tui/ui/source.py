"""Where the TUI gets its data: a small protocol and two implementations.

The UI only talks to a `DeploymentSource`. `SupervisorSource` speaks to a live supervisor over its unix
socket (every call is async, so nothing blocks the event loop; slow local work runs in threads).
`StaticSource` replays a frozen snapshot (a dict or a JSON file) for snapshot tests and screenshots:
its clock is the snapshot's own "time", so uptimes and ages never change between runs.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from xllm_tui.protocol import Snapshot, plan_restart


REQUEST_TIMEOUT_S = 5.0


class SourceUnavailable(Exception):
    """The supervisor cannot be reached (not running, socket gone, connection dropped)."""


class ActionFailed(Exception):
    """The supervisor refused a request."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@runtime_checkable
class DeploymentSource(Protocol):
    """What the TUI needs from a deployment."""

    description: str  # shown in the status bar, e.g. the socket path
    can_start_supervisor: bool

    async def snapshot(self) -> dict[str, Any]: ...

    def events(self, since: int | None = None) -> AsyncIterator[dict[str, Any]]: ...

    async def action(self, op: str, **args: Any) -> dict[str, Any]: ...

    async def process_info(self, rank: dict[str, Any]) -> dict[str, Any] | None: ...

    async def start_supervisor(self) -> None: ...

    async def close(self) -> None: ...

    def now(self) -> float: ...


class StaticSource:
    """A frozen deployment: one snapshot, its events, and a clock stopped at the snapshot's time.

    Actions are recorded in `self.actions` (op, args) and answered like a supervisor would, without
    changing the snapshot, so tests can assert what the UI asked for.
    """

    can_start_supervisor = False
    frozen = True  # the app loads it synchronously at start and renders times in UTC

    def __init__(self, data: dict[str, Any] | str | os.PathLike[str], *, process_info: dict[int, dict] | None = None):
        if not isinstance(data, dict):
            data = json.loads(Path(data).read_text(encoding="utf-8"))
        self.data: dict[str, Any] = copy.deepcopy(data)
        self.actions: list[tuple[str, dict[str, Any]]] = []
        # Optional argv/env of the running processes, keyed by rank (a live source reads /proc).
        self._process_info = process_info or {int(k): v for k, v in self.data.get("process_info", {}).items()}
        self.available = True
        self.description = f"static snapshot of {self.data.get('profile', {}).get('name', '?')}"

    async def snapshot(self) -> dict[str, Any]:
        if not self.available:
            raise SourceUnavailable("supervisor socket is gone")
        return copy.deepcopy(self.data)

    async def events(self, since: int | None = None) -> AsyncIterator[dict[str, Any]]:
        if not self.available:
            raise SourceUnavailable("supervisor socket is gone")
        for event in self.data.get("events", []):
            if since is None or event.get("seq", 0) > since:
                yield event
        # A frozen deployment has no live events: wait until cancelled.
        await asyncio.Event().wait()

    async def action(self, op: str, **args: Any) -> dict[str, Any]:
        if not self.available:
            raise SourceUnavailable("supervisor socket is gone")
        self.actions.append((op, args))
        if op == "toggle":
            return {"group": args.get("group"), "enabled": args.get("on")}
        if op == "shutdown":
            return {"stopping": True}
        if op == "reload":
            pending = [r["rank"] for r in self.data.get("ranks", []) if r.get("pid")]
            return {"reloaded": True, "warnings": [], "relaunch_pending": pending}
        ranks = args.get("ranks")
        snap = Snapshot.from_dict(self.data)
        if ranks == "all":
            ranks = [r.rank for r in snap.ranks]
        elif ranks == "failed":
            ranks = snap.failed_ranks
        ranks = list(ranks or [])
        if op in ("start", "restart") and ranks:
            plan = plan_restart({r.rank: r.state for r in snap.ranks}, ranks, scope=snap.group.scope,
                                only=bool(args.get("only")), op=op)
            return {"accepted": list(plan.ranks), "world": plan.world, "explanation": plan.explanation}
        return {"accepted": ranks}

    async def process_info(self, rank: dict[str, Any]) -> dict[str, Any] | None:
        return self._process_info.get(int(rank["rank"]))

    async def start_supervisor(self) -> None:
        self.available = True

    async def close(self) -> None:
        return None

    def now(self) -> float:
        return float(self.data.get("time", 0.0))


class SupervisorSource:
    """A live supervisor reached through its unix socket (xllm_tui.client)."""

    def __init__(self, run_dir: str, *, profile_path: str | None = None, simulate: bool = False, port_offset: int = 0):
        from xllm_tui import client

        self._client_module = client
        self.run_dir = run_dir
        self.profile_path = profile_path
        self.simulate = simulate
        self.port_offset = port_offset
        self.socket = client.socket_path(run_dir)
        self.description = self.socket
        self._requests: Any = None  # one connection for requests, another one per subscription
        self._lock = asyncio.Lock()
        self.frozen = False

    @property
    def can_start_supervisor(self) -> bool:
        """A successor can be started: a profile is known and no (frozen) supervisor holds the run dir."""
        return self.profile_path is not None and self._client_module.unresponsive_pid(self.run_dir) is None

    def _unavailable_errors(self) -> tuple[type[BaseException], ...]:
        return (self._client_module.SupervisorUnavailable, OSError, ConnectionError, EOFError, asyncio.IncompleteReadError)

    async def _request_client(self) -> Any:
        if self._requests is None:
            # A hung supervisor must show as unreachable within seconds, not leave the view stale.
            client = self._client_module.AsyncSupervisorClient(self.socket, timeout=REQUEST_TIMEOUT_S)
            await client.connect()
            self._requests = client
        return self._requests

    async def _drop(self) -> None:
        client, self._requests = self._requests, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # closing a dead connection may fail in many ways; it is gone either way
                pass

    async def _call(self, op: str, **args: Any) -> dict[str, Any]:
        async with self._lock:  # one request at a time on the shared connection
            try:
                client = await self._request_client()
                if op == "snapshot":
                    return await client.snapshot()
                return await client.request(op, **args)
            except self._client_module.SupervisorError as error:
                raise ActionFailed(getattr(error, "code", "error"), getattr(error, "message", str(error))) from error
            except self._unavailable_errors() as error:
                await self._drop()
                raise SourceUnavailable(str(error) or type(error).__name__) from error

    async def snapshot(self) -> dict[str, Any]:
        return await self._call("snapshot")

    async def events(self, since: int | None = None) -> AsyncIterator[dict[str, Any]]:
        client = self._client_module.AsyncSupervisorClient(self.socket)
        try:
            try:
                await client.connect()
                async for event in client.subscribe(since=since):
                    yield event
            except self._unavailable_errors() as error:
                raise SourceUnavailable(str(error) or type(error).__name__) from error
            # The supervisor closed the stream: it is going away.
            raise SourceUnavailable("the supervisor closed the event stream")
        finally:
            try:
                await client.close()
            except Exception:
                pass

    async def action(self, op: str, **args: Any) -> dict[str, Any]:
        return await self._call(op, **args)

    async def process_info(self, rank: dict[str, Any]) -> dict[str, Any] | None:
        pid = rank.get("pid")
        if not pid:
            return None
        return await asyncio.to_thread(_read_process, int(pid))

    async def start_supervisor(self) -> None:
        if self.profile_path is None:
            raise SourceUnavailable("no profile to start a supervisor for")
        await self._drop()
        await asyncio.to_thread(
            self._client_module.ensure_supervisor,
            self.profile_path,
            simulate=self.simulate,
            run_dir=self.run_dir,
            port_offset=self.port_offset,
        )

    async def close(self) -> None:
        await self._drop()

    def now(self) -> float:
        return time.time()


def _read_process(pid: int) -> dict[str, Any] | None:
    """argv and environment of a running rank (same user), or None when it is gone or not readable."""
    import psutil

    try:
        process = psutil.Process(pid)
        return {"argv": process.cmdline(), "env": process.environ()}
    except (psutil.Error, OSError):
        return None
