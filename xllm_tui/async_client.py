"""The supervisor's asyncio client, for the TUI: request/response on one connection, subscriptions on their own.

Apart from client.py so that the CLI, which only needs the blocking client, never imports asyncio.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from xllm_tui.client import MAX_REPLY, SupervisorError, SupervisorUnavailable, _check_reply, _unavailable_for_socket
from xllm_tui.supervisor.state import ShortSocketPath


class AsyncSupervisorClient:
    """asyncio client for the TUI: request/response on one connection, subscriptions on their own."""

    def __init__(self, socket_path: str, timeout: float = 10.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not os.path.exists(self.socket_path):
            raise SupervisorUnavailable(_unavailable_for_socket(self.socket_path))
        try:
            with ShortSocketPath(self.socket_path) as address:
                return await asyncio.wait_for(asyncio.open_unix_connection(address, limit=MAX_REPLY), self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise SupervisorUnavailable(_unavailable_for_socket(self.socket_path, str(e) or e.__class__.__name__)) from None

    async def connect(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await self._open()

    async def _read_message(self, reader: asyncio.StreamReader, timeout: float | None) -> dict:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except asyncio.TimeoutError:  # before OSError, its base class: connected, but nobody answers
            raise SupervisorUnavailable(
                _unavailable_for_socket(self.socket_path, f"no answer within {timeout:g}s")) from None
        except (OSError, ValueError) as e:
            raise SupervisorUnavailable(f"connection to {self.socket_path} lost: {e}") from None
        if not line:
            raise SupervisorUnavailable(f"the supervisor at {self.socket_path} closed the connection")
        try:
            return json.loads(line)
        except ValueError as e:
            raise SupervisorError("bad_reply", f"not JSON: {e}") from None

    async def request(self, op: str, **args: Any) -> dict:
        async with self._lock:
            await self.connect()
            assert self._reader is not None and self._writer is not None
            req_id = next(self._ids)
            try:
                self._writer.write((json.dumps({"id": req_id, "op": op, **args}) + "\n").encode())
                await self._writer.drain()
                while True:
                    reply = await self._read_message(self._reader, self.timeout)
                    if "event" not in reply:
                        return _check_reply(reply)
            except (SupervisorUnavailable, asyncio.TimeoutError, OSError) as e:
                await self._drop()
                if isinstance(e, SupervisorUnavailable):
                    raise
                raise SupervisorUnavailable(f"the supervisor at {self.socket_path} did not answer {op}: "
                                            f"{e or e.__class__.__name__}") from None

    async def snapshot(self) -> dict:
        return await self.request("snapshot")

    async def subscribe(self, since: int | None = None) -> AsyncIterator[dict]:
        """Yield events (backlog after `since`, then live) on a connection of its own; ends when the
        supervisor goes away (raises SupervisorUnavailable then)."""
        reader, writer = await self._open()
        try:
            args: dict[str, Any] = {} if since is None else {"since": since}
            writer.write((json.dumps({"id": "subscribe", "op": "subscribe", **args}) + "\n").encode())
            await writer.drain()
            _check_reply(await self._read_message(reader, self.timeout))
            while True:
                message = await self._read_message(reader, None)
                if "event" in message:
                    yield message["event"]
                elif message.get("ok") is False:
                    _check_reply(message)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:  # noqa: BLE001
                pass

    async def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except Exception:  # noqa: BLE001
                pass
        self._reader = self._writer = None

    async def close(self) -> None:
        await self._drop()

    async def __aenter__(self) -> AsyncSupervisorClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
