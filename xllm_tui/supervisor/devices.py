"""Devices as the supervisor sees them: helpers for its device poll (docs/supervisor.md, "Devices").

The supervisor reads npu-smi (or nvidia-smi) in a worker thread every `devices.poll_interval`, serves the
reading in the snapshot, checks each rank's binding against its NPU's CPU affinity, and turns what changed
into `device` events. This module holds the pieces that need no supervisor state. No Textual.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable

import psutil

from xllm_tui.devices.model import DeviceProcess, DeviceReport

SIM_PROCS_NAME = "sim-npu-procs.json"  # in the run dir, under --simulate: the ranks the simulated npu-smi shows
SIM_PROC_NAME = "xllm"  # what the simulated npu-smi calls a rank (the real one prints the process name)
SIM_ENV_PREFIX = "XLLM_SIM_NPU_"  # profile env variables passed to the simulated npu-smi
HBM_LEFT_PCT = 10.0  # HBM above this share of the total, with no process on the NPU, counts as left behind
HBM_LEFT_POLLS = 2  # ... for this many polls after the rank exited before it is an event


def write_sim_procs(path: str, entries: Iterable[dict]) -> None:
    """The simulated npu-smi's process file: tmp + rename, so it never reads half a file (no fsync: it is
    rewritten at every change and every poll)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(list(entries), handle)
    os.replace(tmp, path)


def process_family(pids: Iterable[int]) -> set[int]:
    """The pids and all their descendants (a rank's helper processes hold its NPU too). Blocking."""
    family = set(pids)
    if not family:
        return family
    # One pass over the process table for all ranks (Process.children scans it once per call).
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if ppid:
            children.setdefault(ppid, []).append(proc.pid)
    todo = list(family)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in family:
                family.add(child)
                todo.append(child)
    return family


def fill_process_names(report: DeviceReport) -> None:
    """npu-smi may print no process name: take it from psutil where the pid is visible here. Blocking."""
    for device in report.devices:
        for proc in device.processes:
            if proc.name:
                continue
            try:
                proc.name = psutil.Process(proc.pid).name()
            except (psutil.Error, ValueError):
                continue


def describe_holders(device: int, holders: list[DeviceProcess]) -> str:
    """'NPU 3 held by pid 1234 (python)' / 'NPU 3 held by pids 1234 (python), 1240 (name unknown)'."""
    parts = [f"{p.pid} ({p.name or 'name unknown'})" for p in holders]
    return f"NPU {device} held by pid{'s' if len(parts) > 1 else ''} {', '.join(parts)}"


def holders_json(holders: list[DeviceProcess]) -> list[dict]:
    return [{"pid": p.pid, "name": p.name, "memory_mb": p.memory_mb} for p in holders]


def summarize(report: DeviceReport) -> dict:
    """Health counts, the hottest device and HBM in total: the short summary `status` prints."""
    health = Counter(d.health or "unknown" for d in report.devices)
    with_temp = [d for d in report.devices if d.temp_c is not None and d.logic_id is not None]
    hottest = max(with_temp, key=lambda d: (d.temp_c, -d.logic_id)) if with_temp else None
    used = [d.hbm_used_mb for d in report.devices if d.hbm_used_mb is not None]
    total = [d.hbm_total_mb for d in report.devices if d.hbm_total_mb is not None]
    used_mb, total_mb = (sum(used), sum(total)) if used and total else (None, None)
    return {
        "count": len(report.devices),
        "health": dict(sorted(health.items())),
        "hottest": {"logic_id": hottest.logic_id, "temp_c": hottest.temp_c} if hottest else None,
        "hbm_used_mb": used_mb,
        "hbm_total_mb": total_mb,
        "hbm_pct": round(100.0 * used_mb / total_mb, 1) if used_mb is not None and total_mb else None,
    }
