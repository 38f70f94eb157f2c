"""Evidence of a rank's health: its log's start-up milestones, its weight files, rank 0's /health.

Log parsing is xllm_tui.logs.glog's (StartupTracker, classify_failure) and log reading is
xllm_tui.logs.intake's and .tail's (LogIntake, tail_lines); this module only adapts them to what the
supervisor reports: a phase name, progress as [done, total], a reason text, worker readiness.
"""

from __future__ import annotations

import asyncio
import os

from xllm_tui.logs.glog import StartupTracker, classify_failure


def classify_lines(lines: list[str]) -> tuple[str, str] | None:
    """The most telling failure among a rank's last lines: the first classified one, else None."""
    for line in lines:
        found = classify_failure(line)
        if found:
            return found
    return None


def count_weight_files(model_path: str | None, cwd: str = ".") -> int | None:
    """The number of *.safetensors files in a model directory (relative paths from the rank's cwd).

    None when there is no such directory or it holds none: the tracker then reads totals from sharded
    file names. Blocking (the directory may be on a network mount): call it off the event loop.
    """
    if not model_path:
        return None
    directory = os.path.join(cwd, os.path.expanduser(model_path))
    try:
        with os.scandir(directory) as entries:
            count = sum(1 for e in entries if e.name.endswith(".safetensors") and not e.is_dir())
    except OSError:
        return None
    return count or None


# The UI's words for the tracker's phases (xllm_tui.logs.glog.PHASES).
PHASE_TEXT = {
    "role": "starting up",
    "init": "initialising engine",
    "world": "joining the world",
    "worker_connect_retry": "connecting to rank 0",
    "worker_connected": "connected to rank 0",
    "collective_server": "waiting for workers to register",
    "worker_registered": "workers registering",
    "model_init": "initialising model",
    "weights": "loading weights",
    "model_loaded": "model loaded",
    "model_ready": "models initialised",
    "kv_cache": "allocating kv cache",
    "serving": "serving",
}


class Milestones:
    """Start-up progress of one rank from its log lines: a thin adapter over glog.StartupTracker.

    What it adds for the snapshot (docs/protocol.md): phase "starting" before the first milestone,
    progress as [done, total] with total 0 when unknown, the last line, and the reason text.
    model_path / draft_model_path are the rank's --model / --draft_model; expected_weights /
    expected_draft_weights the number of weight files in them, when known (count_weight_files).
    """

    def __init__(self, role: str, ready_pattern: str | None = None, *, model_path: str | None = None,
                 draft_model_path: str | None = None, expected_weights: int | None = None,
                 expected_draft_weights: int | None = None):
        self.role = role
        self.last_line = ""
        self.tracker = StartupTracker(is_master=role == "master", ready_pattern=ready_pattern,
                                      model_path=model_path, draft_model_path=draft_model_path,
                                      expected_weights=expected_weights,
                                      expected_draft_weights=expected_draft_weights)

    def set_expected_weights(self, main: int | None, draft: int | None) -> None:
        """Weight file counts found after the launch (they are counted off the event loop)."""
        self.tracker.expected_weights = main
        self.tracker.expected_draft_weights = draft

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if not line.strip():
            return
        self.last_line = line
        self.tracker.feed(line)

    @property
    def phase(self) -> str:
        return self.tracker.phase or "starting"

    @property
    def progress(self) -> list[int] | None:
        progress = self.tracker.progress
        if not progress:
            return None
        done, total = int(progress[0]), int(progress[1] or 0)
        return [done, total if total >= done else 0]

    @property
    def ready(self) -> bool:
        """Ready on this rank's own evidence (a worker of xllm v0.7.x has none: see worker_ready)."""
        return self.tracker.ready

    @property
    def connected(self) -> bool:
        return self.tracker.connected

    @property
    def all_models_initialised(self) -> bool:
        return self.tracker.all_models_initialised

    @property
    def failure(self) -> tuple[str, str] | None:
        return self.tracker.failure

    def describe(self) -> str:
        """e.g. "loading weights 8/8, draft 1/1", "models initialised 3/8", "connected to rank 0"."""
        phase = self.phase
        if phase == "starting":
            return "started, no milestone yet"
        if phase == "weights":
            return f"loading weights {self._weights_text()}"
        text = PHASE_TEXT.get(phase, phase.replace("_", " "))
        progress = self.progress
        if progress:
            done, total = progress
            text += f" {done}/{total}" if total else f" ({done})"
        return text


    def _weights_text(self) -> str:
        """"8/8, draft 1/1"; the draft's part only once its total is known or its first file is loaded
        (xllm loads it after the main model; "draft 0" with nothing to compare to reads like a fault)."""
        weights = self.tracker.weights
        if weights.has_draft and not weights.draft_loaded and not weights.draft_total:
            return (f"{weights.main_loaded}/{weights.main_total}" if weights.main_total
                    else f"{weights.main_loaded}")
        return weights.describe()


def worker_ready(worker: Milestones, rank0: Milestones | None) -> tuple[bool, str]:
    """(ready, why) for a worker: its own log says its models are initialised, or it is connected and
    rank 0 has counted every rank's models as initialised (a v0.7.x worker logs nothing once it is)."""
    if worker.ready:
        return True, "connected to rank 0, models initialised"
    if worker.connected and rank0 is not None and rank0.all_models_initialised:
        return True, "connected to rank 0; rank 0 reports every rank's models initialised"
    return False, ""


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
