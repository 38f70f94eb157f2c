"""The deployment's state as Prometheus text (exposition format 0.0.4), from the supervisor's snapshot.

`render(snapshot)` is pure: the snapshot dict of docs/protocol.md in, text out. `MetricsExporter` is what the
supervisor holds for the profile's `metrics:` key: `update(snapshot)` renders and, with `textfile`, rewrites
the file atomically (temp file in the same directory, fsync, rename: node_exporter's textfile collector never
reads half a file, and the temp name does not end in .prom); with `listen`, a small HTTP server in its own
thread answers GET /metrics on a loopback port or a unix socket with the last rendered text. `close()` writes
a last text with xllm_tui_up 0 (so an alert can tell "supervisor stopped" from "stale") and stops the server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from xllm_tui.spec import MetricsSettings

RANK_STATES = ("stopped", "starting", "loading", "ready", "degraded", "stopping", "exited", "failed", "crash-looping")
GROUP_STATES = ("stopped", "starting", "loading", "ready", "degraded", "stopping", "failed", "crash-looping")
HEALTH_WORDS = ("OK", "Warning", "Alarm", "Critical", "UNKNOWN")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if value != value:  # NaN
        return "NaN"
    return repr(round(float(value), 3))


class _Text:
    """Families in order, each with HELP and TYPE once, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, object], float | int | bool | None]]) -> None:
        rows = [(labels, value) for labels, value in samples if value is not None]
        # A counter is written under its sample name (foo_total), as the official client writes format 0.0.4.
        sample_name = name + "_total" if kind == "counter" else name
        self.lines.append(f"# HELP {sample_name} {help_text}")
        self.lines.append(f"# TYPE {sample_name} {kind}")
        for labels, value in rows:
            label_text = ",".join(f'{key}="{_escape(v)}"' for key, v in labels.items())
            self.lines.append(f"{sample_name}{{{label_text}}} {_number(value)}" if label_text
                              else f"{sample_name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(snapshot: dict | Any, *, now: float | None = None, supervisor_up: bool = True) -> str:
    """Prometheus text for one snapshot (the dict, or a typed protocol Snapshot). Every sample carries
    profile="<name>" (several deployments may write into one textfile directory). `now` defaults to the
    snapshot's own time."""
    if not isinstance(snapshot, dict):
        snapshot = snapshot.to_dict()
    now = float(snapshot.get("time") or time.time()) if now is None else now
    profile = (snapshot.get("profile") or {}).get("name") or ""
    simulate = bool((snapshot.get("profile") or {}).get("simulate"))
    base = {"profile": profile}
    group = snapshot.get("group") or {}
    ranks = snapshot.get("ranks") or []
    sup = snapshot.get("supervisor") or {}
    out = _Text()
    out.family("xllm_tui_up", "gauge", "1 while the supervisor runs (0 in the last text it wrote when it stopped)",
               [({**base, "simulate": "true" if simulate else "false"}, supervisor_up)])
    out.family("xllm_tui_supervisor_start_time_seconds", "gauge", "When the supervisor started (Unix time)",
               [(base, sup.get("started_at"))])
    out.family("xllm_tui_snapshot_time_seconds", "gauge", "When this text was rendered from the supervisor's state",
               [(base, now)])
    state = group.get("state")
    out.family("xllm_tui_group_state", "gauge", "1 for the group's current state, 0 for the others",
               [({**base, "state": s}, s == state) for s in GROUP_STATES])
    since = group.get("since")
    out.family("xllm_tui_group_state_seconds", "gauge", "Seconds the group has been in its current state",
               [(base, max(0.0, now - since) if since else None)])
    out.family("xllm_tui_group_ready_seconds", "gauge", "Seconds since the group became ready; 0 while not ready",
               [(base, max(0.0, now - since) if state == "ready" and since else 0)])
    out.family("xllm_tui_group_restarts", "counter", "Automatic group restarts by the supervisor in this run",
               [(base, int(group.get("restarts") or 0))])
    pending = group.get("next_restart_at")
    out.family("xllm_tui_group_restart_pending", "gauge", "1 while an automatic group restart is scheduled",
               [(base, pending is not None)])
    counts = {s: 0 for s in RANK_STATES}
    for r in ranks:
        counts[r.get("state")] = counts.get(r.get("state"), 0) + 1
    out.family("xllm_tui_ranks", "gauge", "Number of ranks in each state",
               [({**base, "state": s}, n) for s, n in counts.items()])

    def rank_labels(r: dict) -> dict[str, object]:
        return {**base, "rank": r.get("rank"), "machine": r.get("machine"), "device": r.get("device")}

    out.family("xllm_tui_rank_state", "gauge", "1 for each rank's current state (one sample per rank)",
               [({**rank_labels(r), "state": r.get("state")}, 1) for r in ranks])
    out.family("xllm_tui_rank_ready", "gauge", "1 while the rank is ready", [(rank_labels(r), r.get("state") == "ready")
                                                                            for r in ranks])
    out.family("xllm_tui_rank_restarts", "counter", "Restarts of the rank in this run",
               [(rank_labels(r), int(r.get("restarts") or 0)) for r in ranks])
    out.family("xllm_tui_rank_uptime_seconds", "gauge", "Seconds since the rank's process started (absent while it "
               "has none)", [(rank_labels(r), r.get("uptime_s")) for r in ranks])
    out.family("xllm_tui_rank_cpu_percent", "gauge", "CPU use of the rank's process (100 = one core)",
               [(rank_labels(r), r.get("cpu_pct")) for r in ranks])
    out.family("xllm_tui_rank_resident_memory_bytes", "gauge", "Resident memory of the rank's process",
               [(rank_labels(r), r.get("rss_bytes")) for r in ranks])
    out.family("xllm_tui_rank_generation", "gauge", "Launches of the rank in this run directory",
               [(rank_labels(r), r.get("generation")) for r in ranks])

    devices = snapshot.get("devices") or {}
    listed = devices.get("devices") or []
    out.family("xllm_tui_devices_readable", "gauge", "1 when the supervisor's last device reading listed devices",
               [({**base, "backend": devices.get("backend") or ""}, bool(listed))] if devices else [])
    out.family("xllm_tui_devices_polled_time_seconds", "gauge", "When the devices were last read (Unix time)",
               [(base, devices.get("polled_at"))])
    health_counts: dict[str, int] = {}
    for d in listed:
        health_counts[d.get("health") or "UNKNOWN"] = health_counts.get(d.get("health") or "UNKNOWN", 0) + 1
    words = list(HEALTH_WORDS) + sorted(set(health_counts) - set(HEALTH_WORDS))
    out.family("xllm_tui_devices", "gauge", "Number of devices (NPUs) by health",
               [({**base, "health": w}, health_counts.get(w, 0)) for w in words] if listed else [])

    def device_labels(d: dict) -> dict[str, object]:
        return {**base, "device": d.get("logic_id"), "name": d.get("name") or ""}

    out.family("xllm_tui_device_healthy", "gauge", "1 when the device's health is OK",
               [(device_labels(d), d.get("health") == "OK") for d in listed])
    out.family("xllm_tui_device_health", "gauge", "1 for each device's current health word",
               [({**device_labels(d), "health": d.get("health") or "UNKNOWN"}, 1) for d in listed])
    out.family("xllm_tui_device_temperature_celsius", "gauge", "Device temperature",
               [(device_labels(d), d.get("temp_c")) for d in listed])
    out.family("xllm_tui_device_hbm_used_bytes", "gauge", "Device memory (HBM) in use",
               [(device_labels(d), None if d.get("hbm_used_mb") is None else int(d["hbm_used_mb"]) * 2**20)
                for d in listed])
    out.family("xllm_tui_device_hbm_total_bytes", "gauge", "Device memory (HBM) in all",
               [(device_labels(d), None if d.get("hbm_total_mb") is None else int(d["hbm_total_mb"]) * 2**20)
                for d in listed])
    return out.text()


def write_textfile(path: str, text: str) -> None:
    """Replace `path` with `text` atomically (readers see the old file or the new one, never a mix)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


class MetricsExporter:
    """The supervisor's handle on `metrics:`: update(snapshot) on its interval, close() at shutdown."""

    def __init__(self, settings: MetricsSettings) -> None:
        self.settings = settings
        self.text = "# no snapshot yet\n"
        self.last_snapshot: dict | None = None
        self.server: Any = None  # a socketserver.BaseServer while serving
        self._thread: threading.Thread | None = None
        self.address: str | None = None  # "127.0.0.1:9464" or "unix:/path" once serving

    def start(self) -> None:
        """Start serving `listen` (if set). Raises OSError if the port or socket path cannot be taken."""
        listen = self.settings.listen
        if not listen:
            return
        from xllm_tui import metrics_http  # http.server and what it pulls in, only where metrics are served
        if listen.startswith("unix:"):
            path = listen[5:]
            if os.path.exists(path) and _unix_socket_stale(path):
                os.unlink(path)  # left by a supervisor that died; a live one answers and keeps it
            server = metrics_http.UnixServer(path, metrics_http.Handler)
            os.chmod(path, 0o660)
            self.address = listen
        else:
            host, _, port = listen.rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server_class = type("_Server", (metrics_http.TCPServer,), {"address_family": family})
            server = server_class((host, int(port)), metrics_http.Handler)
            self.address = f"{host}:{server.server_address[1]}"
        server.exporter = self  # type: ignore[attr-defined]
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True,
                                        name="metrics server")
        self._thread.start()

    def update(self, snapshot: dict) -> str:
        """Render, and rewrite the textfile if configured. Blocking file I/O: call it from a worker thread."""
        text = render(snapshot)
        self.text = text
        self.last_snapshot = snapshot
        if self.settings.textfile:
            write_textfile(self.settings.textfile, text)
        return text

    async def run(self, snapshot: Callable[[], dict], on_error: Callable[[OSError], None] | None = None) -> None:
        """The supervisor's metrics task: snapshot() on the caller's event loop (it reads live state), the
        rendering and the file write in a worker thread, every settings.interval_s, until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.update, snapshot())
            except OSError as e:  # a full disk or a missing collector directory must not end the task
                if on_error is not None:
                    on_error(e)
            await asyncio.sleep(self.settings.interval_s)

    def close(self) -> None:
        if self.last_snapshot is not None:
            self.text = render(self.last_snapshot, now=time.time(), supervisor_up=False)
            if self.settings.textfile:
                try:
                    write_textfile(self.settings.textfile, self.text)
                except OSError:
                    pass
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            if self.settings.listen and self.settings.listen.startswith("unix:"):
                try:
                    os.unlink(self.settings.listen[5:])
                except OSError:
                    pass
            self.server = None


def _unix_socket_stale(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return True
    return False
