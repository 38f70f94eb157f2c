"""The device model: NPUs (or GPUs), their processes and the link topology. Pure data, no I/O, no Textual.

A value the tool did not print is None (JSON null), never a guessed number. The JSON layout produced by
DeviceReport.to_dict()/to_json() is documented in docs/devices.md and only ever grows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DeviceProcess:
    pid: int
    name: str | None  # npu-smi truncates to 15 characters and may print nothing
    memory_mb: int | None


@dataclass
class Device:
    logic_id: int | None  # the number `--devices=npu:N` uses (nvidia: the GPU index)
    card: int | None  # npu-smi "NPU" column
    chip: int | None  # chip index on the card (A3: die 0 or 1)
    phy_id: int | None = None  # A3 "Phy-ID"; None where the tool does not print one
    name: str | None = None
    health: str | None = None  # OK, Warning, Alarm, Critical, UNKNOWN (npu-smi's words)
    power_w: float | None = None
    temp_c: float | None = None
    aicore_pct: float | None = None  # nvidia: utilization.gpu
    hbm_used_mb: int | None = None  # device memory: HBM, or Memory-Usage where there is no HBM (310P)
    hbm_total_mb: int | None = None
    bus_id: str | None = None
    cpu_affinity: str | None = None  # e.g. "96-119", from the topology
    processes: list[DeviceProcess] = field(default_factory=list)

    @property
    def hbm_pct(self) -> float | None:
        if self.hbm_used_mb is None or not self.hbm_total_mb:
            return None
        return 100.0 * self.hbm_used_mb / self.hbm_total_mb


@dataclass
class Topology:
    """Link labels between devices (keyed by logic id, "X" on the diagonal) and each device's CPU affinity."""

    links: dict[int, dict[int, str]] = field(default_factory=dict)
    cpu_affinity: dict[int, str] = field(default_factory=dict)
    # What the row/column numbers are: "logic_id" once mapped; "npu" (npu-smi NPUx headers), "phy_id"
    # (A3 Phy-IDx headers) or "gpu" straight from a parser.
    key_kind: str = "logic_id"
    numa_affinity: dict[int, str] = field(default_factory=dict)  # nvidia-smi only
    nic_links: dict[int, dict[str, str]] = field(default_factory=dict)  # device -> {"NIC0": "PXB"}
    nic_names: dict[str, str] = field(default_factory=dict)  # "NIC0" -> "mlx5_0" (nvidia NIC Legend)


@dataclass
class DeviceReport:
    backend: str | None  # "npu-smi", "nvidia-smi", or None when no tool could be read
    devices: list[Device] = field(default_factory=list)
    links: dict[int, dict[int, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    version: str | None = None  # the tool's version line, when printed (not part of the JSON)

    @property
    def available(self) -> bool:
        return bool(self.devices)

    @property
    def topology(self) -> Topology:
        return Topology(
            links=self.links,
            cpu_affinity={d.logic_id: d.cpu_affinity for d in self.devices if d.logic_id is not None and d.cpu_affinity},
        )

    def device(self, logic_id: int) -> Device | None:
        return next((d for d in self.devices if d.logic_id == logic_id), None)

    def holders(self, logic_id: int, exclude_pids: set[int] | frozenset[int] = frozenset()) -> list[DeviceProcess]:
        """Processes on a device other than `exclude_pids`: before launching a rank, a stray from an earlier
        run holding its NPU shows up here."""
        device = self.device(logic_id)
        return [p for p in device.processes if p.pid not in exclude_pids] if device else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "devices": [
                {
                    "logic_id": d.logic_id,
                    "card": d.card,
                    "chip": d.chip,
                    "phy_id": d.phy_id,
                    "name": d.name,
                    "health": d.health,
                    "power_w": d.power_w,
                    "temp_c": d.temp_c,
                    "aicore_pct": d.aicore_pct,
                    "hbm_used_mb": d.hbm_used_mb,
                    "hbm_total_mb": d.hbm_total_mb,
                    "bus_id": d.bus_id,
                    "cpu_affinity": d.cpu_affinity,
                    "processes": [{"pid": p.pid, "name": p.name, "memory_mb": p.memory_mb} for p in d.processes],
                }
                for d in self.devices
            ],
            "links": {str(a): {str(b): label for b, label in row.items()} for a, row in self.links.items()},
            "errors": list(self.errors),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceReport:
        """The inverse of to_dict (the supervisor serves reports as JSON; clients rebuild them)."""
        devices = []
        for d in data.get("devices") or []:
            devices.append(
                Device(
                    logic_id=d.get("logic_id"),
                    card=d.get("card"),
                    chip=d.get("chip"),
                    phy_id=d.get("phy_id"),
                    name=d.get("name"),
                    health=d.get("health"),
                    power_w=d.get("power_w"),
                    temp_c=d.get("temp_c"),
                    aicore_pct=d.get("aicore_pct"),
                    hbm_used_mb=d.get("hbm_used_mb"),
                    hbm_total_mb=d.get("hbm_total_mb"),
                    bus_id=d.get("bus_id"),
                    cpu_affinity=d.get("cpu_affinity"),
                    processes=[
                        DeviceProcess(pid=p.get("pid"), name=p.get("name"), memory_mb=p.get("memory_mb"))
                        for p in d.get("processes") or []
                    ],
                )
            )
        links = {int(a): {int(b): str(label) for b, label in row.items()} for a, row in (data.get("links") or {}).items()}
        return cls(backend=data.get("backend"), devices=devices, links=links, errors=list(data.get("errors") or []))


def health_changes(previous: DeviceReport | None, current: DeviceReport) -> list[tuple[int, str | None, str | None]]:
    """(logic id, old health, new health) for every device whose health word changed between two reports.
    A device that appears or disappears counts as a change from/to None."""
    if previous is None:
        return []
    old = {d.logic_id: d.health for d in previous.devices if d.logic_id is not None}
    new = {d.logic_id: d.health for d in current.devices if d.logic_id is not None}
    return [(i, old.get(i), new.get(i)) for i in sorted(set(old) | set(new)) if old.get(i) != new.get(i)]


def unavailable(backend: str | None, message: str) -> DeviceReport:
    """A report that says the devices could not be read, and why."""
    return DeviceReport(backend=backend, devices=[], links={}, errors=[message])
