"""Parse `nvidia-smi` output into the same device model as npu-smi (backend "nvidia-smi").

- `nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]`: one CSV row per GPU; values may carry
  units ("30.39 W", "97887 MiB", "0 %") and "[N/A]" for what the GPU does not report (-> None).
- `nvidia-smi --query-compute-apps=pid,process_name,used_gpu_memory,gpu_bus_id --format=csv`: processes.
- `nvidia-smi topo -m`: a tab-separated matrix (GPUx, NICx, CPU Affinity, NUMA Affinity), then legends.
GPU index is the logic id; memory.used/total (MiB) fill hbm_used_mb/hbm_total_mb; utilization.gpu fills aicore_pct.
nvidia-smi has no health word: health stays None.
"""

from __future__ import annotations

import csv
import io
import re

from xllm_tui.devices.model import Device, DeviceProcess, DeviceReport, Topology, unavailable
from xllm_tui.devices.npu_smi import NpuSmiParseError, parse_matrix, topology_from_matrix

BACKEND = "nvidia-smi"

# What probe.py asks for; kept in this order so `noheader` output can be read too.
QUERY_FIELDS = (
    "index",
    "name",
    "pci.bus_id",
    "temperature.gpu",
    "power.draw",
    "utilization.gpu",
    "memory.used",
    "memory.total",
)
APPS_FIELDS = ("pid", "process_name", "used_gpu_memory", "gpu_bus_id")

_KNOWN_FIELDS = set(QUERY_FIELDS) | set(APPS_FIELDS) | {
    "power.limit",
    "uuid",
    "gpu_name",
    "gpu_uuid",
    "used_memory",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
}
_VALUE_WITH_UNIT = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(?:MiB|MB|GiB|W|%|C|MHz)?$")
_NOT_AVAILABLE = re.compile(r"^\[?(N/A|Not Supported|Unknown Error|Insufficient Permissions|GPU requires reset)\]?$", re.I)


def _field_name(header: str) -> str:
    """'memory.used [MiB]' -> 'memory.used'."""
    return re.sub(r"\s*\[.*\]\s*$", "", header.strip()).strip().lower()


def _value(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if not text or _NOT_AVAILABLE.match(text):
        return None
    return text


def _number(text: str | None) -> int | float | None:
    text = _value(text)
    if text is None:
        return None
    match = _VALUE_WITH_UNIT.match(text)
    if not match:
        return None
    number = match.group(1)
    return float(number) if "." in number else int(number)


def _int(text: str | None) -> int | None:
    value = _number(text)
    return int(value) if value is not None else None


def _rows(text: str, default_fields: tuple[str, ...], tool: str) -> list[dict[str, str]]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]  # copied output: indent added or lost
    if not lines:
        raise NpuSmiParseError(f"{tool} printed nothing")
    table = list(csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True))
    header = [_field_name(cell) for cell in table[0]]
    if any(name in _KNOWN_FIELDS for name in header):
        fields, body = header, table[1:]
    else:
        fields, body = list(default_fields), table
    rows = []
    for number, cells in enumerate(body, start=2 if body is not table else 1):
        if len(cells) != len(fields):
            raise NpuSmiParseError(
                f"{tool}: line {number} has {len(cells)} values for {len(fields)} fields "
                f"(truncated, or not CSV?): {','.join(cells)[:120]!r}"
            )
        rows.append(dict(zip(fields, cells)))
    return rows


def parse_query_gpu(text: str, fields: tuple[str, ...] = QUERY_FIELDS) -> DeviceReport:
    """Parse `nvidia-smi --query-gpu=... --format=csv`. Never raises; unreadable text gives no devices."""
    tool = "nvidia-smi --query-gpu"
    try:
        rows = _rows(text, fields, tool)
    except NpuSmiParseError as exc:
        return unavailable(BACKEND, str(exc))
    devices = []
    for order, row in enumerate(rows):
        index = _int(row.get("index"))
        if "index" in row and index is None:
            return unavailable(BACKEND, f"{tool}: GPU index {row.get('index')!r} on row {order + 1} is not a number")
        devices.append(
            Device(
                logic_id=index if index is not None else order,
                card=None,
                chip=None,
                name=_value(row.get("name")),
                power_w=_number(row.get("power.draw")),
                temp_c=_number(row.get("temperature.gpu")),
                aicore_pct=_number(row.get("utilization.gpu")),
                hbm_used_mb=_int(row.get("memory.used")),
                hbm_total_mb=_int(row.get("memory.total")),
                bus_id=_value(row.get("pci.bus_id")),
            )
        )
    if not devices:
        return unavailable(BACKEND, f"{tool} listed no GPU")
    return DeviceReport(backend=BACKEND, devices=sorted(devices, key=lambda d: d.logic_id))


def parse_compute_apps(text: str, fields: tuple[str, ...] = APPS_FIELDS) -> list[tuple[str | None, DeviceProcess]]:
    """Parse `nvidia-smi --query-compute-apps=...`: (gpu bus id, process) pairs. Raises NpuSmiParseError."""
    if not text.strip() or "No running" in text:
        return []
    result = []
    for row in _rows(text, fields, "nvidia-smi --query-compute-apps"):
        pid = _int(row.get("pid"))
        if pid is None:
            continue
        name = _value(row.get("process_name") or row.get("name"))
        memory = _int(row.get("used_gpu_memory") or row.get("used_memory"))
        result.append((_value(row.get("gpu_bus_id")), DeviceProcess(pid=pid, name=name, memory_mb=memory)))
    return result


def parse_topo(text: str) -> Topology:
    """Parse `nvidia-smi topo -m` (keys are GPU indexes). Raises NpuSmiParseError without a matrix."""
    return topology_from_matrix(parse_matrix(text, "nvidia-smi topo -m"))


def _same_bus(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    # nvidia-smi prints 8-digit domains in some places and 4-digit in others.
    return a.lower().split(":", 1)[-1] == b.lower().split(":", 1)[-1]


def build_report(query_text: str, topo_text: str | None = None, apps_text: str | None = None) -> DeviceReport:
    report = parse_query_gpu(query_text)
    if not report.devices:
        return report
    if apps_text is not None:
        try:
            for bus_id, process in parse_compute_apps(apps_text):
                owner = next((d for d in report.devices if _same_bus(d.bus_id, bus_id)), None)
                if owner is None:
                    report.errors.append(f"nvidia-smi lists process {process.pid} on bus {bus_id}, not a listed GPU")
                else:
                    owner.processes.append(process)
        except NpuSmiParseError as exc:
            report.errors.append(f"{exc}; no process list")
    if topo_text is not None:
        try:
            topology = parse_topo(topo_text)
        except NpuSmiParseError as exc:
            report.errors.append(f"{exc}; no topology")
        else:
            known = {d.logic_id for d in report.devices}
            report.links = {
                row: {col: label for col, label in sorted(cells.items()) if col in known}
                for row, cells in sorted(topology.links.items())
                if row in known
            }
            for device in report.devices:
                device.cpu_affinity = topology.cpu_affinity.get(device.logic_id)
    return report
