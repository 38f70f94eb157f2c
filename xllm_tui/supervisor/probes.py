"""Evidence of a rank's health: its log file (read incrementally), start-up milestones, rank 0's /health.

The supervisor is not in a rank's data path: it reads the rank's log FILE from a remembered offset, like
any other reader. The milestone parsing prefers xllm_tui.logs.glog (StartupTracker, classify_failure)
and falls back to the small private version below when that module is not importable.
"""

from __future__ import annotations

import asyncio
import os
import re

# glog prefix: I20251129 15:20:01.123456 12345 file.cpp:210] message  (date may be MMDD or YYYYMMDD)
_GLOG = re.compile(r"^([IWEF])(\d{4}|\d{8})\s+\d\d:\d\d:\d\d(?:\.\d+)?\s+\d+\s+([^\]]+)\]\s?(.*)$")

# (cause, pattern) in priority order; the message text of xllm-facts.md "Failure messages worth classifying".
_FAILURES: list[tuple[str, re.Pattern[str]]] = [
    ("model_path_missing", re.compile(r"Model path .* does not exist", re.I)),
    ("kv_cache_oom", re.compile(r"Available kv cache size must be greater than 0|no n_blocks for kv cache|"
                                r"no memory for kv cache|out of memory", re.I)),
    ("rank_table_error", re.compile(r"Failed to parse rank table file", re.I)),
    ("hccl_error", re.compile(r"HCCL error|HCCL get root info failed|ACL set device id \d+ failed", re.I)),
    ("execute_failed", re.compile(r"Execute_model_async failed|Failed to execute model", re.I)),
    ("worker_missing", re.compile(r"Not all worker connect to engine server", re.I)),
    ("port_in_use", re.compile(r"Failed to start (?:brpc )?server on port", re.I)),
    ("unknown_flag", re.compile(r"unknown command line flag", re.I)),
    ("fatal", re.compile(r"Check failed:", re.I)),
]


def split_glog(line: str) -> tuple[str | None, str]:
    """(severity letter or None, message) of one log line."""
    m = _GLOG.match(line)
    if not m:
        return None, line
    return m.group(1), m.group(4)


def _fallback_classify(message: str) -> tuple[str, str] | None:
    severity, text = split_glog(message)
    for cause, pattern in _FAILURES:
        if pattern.search(text):
            return cause, text.strip()
    if severity == "F":
        return "fatal", text.strip()
    return None


try:  # the shared implementation, when it has landed
    from xllm_tui.logs.glog import classify_failure as _shared_classify  # type: ignore
except Exception:  # pragma: no cover - depends on the parallel work
    _shared_classify = None


def classify_failure(message: str) -> tuple[str, str] | None:
    if _shared_classify is not None:
        try:
            result = _shared_classify(message)
        except Exception:
            result = None
        if result:
            return tuple(result)  # type: ignore[return-value]
    return _fallback_classify(message)


def classify_lines(lines: list[str]) -> tuple[str, str] | None:
    """The most telling failure among a rank's last lines: the first classified one, else None."""
    for line in lines:
        found = classify_failure(line)
        if found:
            return found
    return None


# ---------------------------------------------------------------------------------------- milestones


try:
    from xllm_tui.logs.glog import StartupTracker as _SharedTracker  # type: ignore
except Exception:  # pragma: no cover - depends on the parallel work
    _SharedTracker = None

_PHASE_TEXT = {
    "role": "starting up",
    "init": "initialising engine",
    "world": "joining the world",
    "worker_connect_retry": "connecting to rank 0",
    "worker_connected": "connected to rank 0",
    "collective_server": "waiting for workers to register",
    "worker_registered": "workers registering",
    "model_init": "initialising model",
    "weights": "loading weights",
    "model_ready": "model initialised",
    "kv_cache": "allocating kv cache",
    "serving": "serving",
}


_SHARD = re.compile(r"(\S*/)?[^/\s]*-\d+-of-(\d+)\.\w+\s*$")


class Milestones:
    """Start-up progress of one rank from its log lines (xllm-facts.md "Log format and milestones").

    A thin view over xllm_tui.logs.glog.StartupTracker: phase ("starting" before the first milestone),
    progress as [done, total] (total 0 when unknown), ready, the first classified failure, the last line.
    """

    def __init__(self, role: str, ready_pattern: str = "Brpc Server started", expected_weights: int | None = None):
        self.role = role
        self.last_line = ""
        self._tracker = _SharedTracker(is_master=role == "master", expected_weights=expected_weights,
                                       ready_pattern=ready_pattern) if _SharedTracker else None
        self._fallback_ready = re.compile(re.escape(ready_pattern), re.I)
        self._ready = False
        self._failure: tuple[str, str] | None = None
        self._shards: dict[str, int] = {}  # weight directory -> number of shard files

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if not line.strip():
            return
        self.last_line = line
        m = _SHARD.search(line)
        if m and "Loading model weights" in line:
            self._shards[m.group(1) or ""] = int(m.group(2))
        if self._tracker is not None:
            self._tracker.feed(line)
            return
        if self._failure is None:
            self._failure = classify_failure(line)
        if self.role == "master" and self._fallback_ready.search(line):
            self._ready = True

    @property
    def phase(self) -> str:
        if self._tracker is not None:
            return self._tracker.phase or "starting"
        return "serving" if self._ready else "starting"

    @property
    def progress(self) -> list[int] | None:
        if self._tracker is None:
            return None
        p = self._tracker.progress
        if not p:
            return None
        done, total = int(p[0]), int(p[1] or 0)
        if self.phase == "weights" and self._shards:
            # xllm prints no total, but sharded weight files are named model-00003-of-00048.safetensors;
            # the main and the draft model each have their own directory and count.
            total = max(total, sum(self._shards.values()))
        return [done, total if total >= done else 0]

    @property
    def ready(self) -> bool:
        if self._tracker is None:
            return self._ready
        if self._tracker.ready:
            return True
        # A worker prints no Init_model_async line of its own; its kv cache allocation comes after the
        # model is initialised, and it is connected by then (registration precedes model loading).
        return self.role == "worker" and self.phase in ("model_ready", "kv_cache")

    @property
    def failure(self) -> tuple[str, str] | None:
        return self._tracker.failure if self._tracker is not None else self._failure

    def describe(self) -> str:
        phase = self.phase
        text = _PHASE_TEXT.get(phase, phase if phase != "starting" else "started, no milestone yet")
        progress = self.progress
        if progress:
            done, total = progress
            text += f" {done}/{total}" if total else f" ({done})"
        return text


class LogReader:
    """Reads a growing log file from a remembered offset; splits whole lines; notices truncation."""

    def __init__(self, path: str, start_at_end: bool = False, max_backlog: int = 16 << 20):
        self.path = path
        self.offset = 0
        self._partial = b""
        self.inode: int | None = None
        self.last_growth: float | None = None
        if start_at_end:
            try:
                self.offset = os.path.getsize(path)
            except OSError:
                pass
        else:
            try:
                size = os.path.getsize(path)
                self.offset = max(0, size - max_backlog)
            except OSError:
                pass

    def read_new(self, max_bytes: int = 4 << 20) -> list[str]:
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if self.inode is not None and st.st_ino != self.inode:
            self.offset, self._partial = 0, b""  # replaced (rotated) file
        self.inode = st.st_ino
        if st.st_size < self.offset:
            self.offset, self._partial = 0, b""  # truncated
        if st.st_size == self.offset:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(max_bytes)
        except OSError:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [line.decode("utf-8", errors="replace") for line in lines]


def tail_lines(path: str, n: int = 40, max_bytes: int = 256 << 10) -> list[str]:
    """The last n lines of a file (reads at most max_bytes from the end)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:]


# ----------------------------------------------------------------------------------------------- http


async def http_health(host: str, port: int, timeout: float = 2.0) -> tuple[bool, str]:
    """GET /health on rank 0's port: (ok, detail). Only ever called with a loopback or the machine's own host."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        return False, f"cannot connect to {host}:{port}: {e.__class__.__name__}"
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(4096), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        return False, f"/health on {host}:{port}: {e.__class__.__name__}"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    if len(parts) >= 2 and parts[1] == "200":
        return True, f"/health OK on port {port}"
    return False, f"/health on port {port} answered {status_line or 'nothing'}"
