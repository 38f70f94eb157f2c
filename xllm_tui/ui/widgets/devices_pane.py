"""The devices of this machine (npu-smi, or nvidia-smi) with the ranks that run on them.

read_device_report() runs the tool (slow: seconds) and is called from a thread worker; the pane only
renders a finished DeviceReport.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from xllm_tui.ui.widgets import format as fmt

HEALTH_VARIABLE = {"OK": "xllm-state-ready", "Warning": "xllm-state-degraded", "Alarm": "xllm-state-failed",
                   "Critical": "xllm-state-failed"}


def read_device_report(simulate: bool, ranks: list[dict[str, Any]]) -> Any:
    """A DeviceReport; under simulate the simulated npu-smi, told which rank pids sit on which device."""
    from xllm_tui.devices.probe import read_devices

    if not simulate:
        return read_devices(timeout=10)
    processes = [{"pid": r["pid"], "logic_id": r["device"], "name": "xllm"} for r in ranks
                 if r.get("pid") and r.get("device") is not None]
    handle, path = tempfile.mkstemp(prefix="xllm-tui-npu-procs-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(processes, out)
        return read_devices(npu_smi=[sys.executable, "-m", "xllm_tui.sim.npu_smi"], timeout=10,
                            env={"XLLM_SIM_NPU_PROCS": path})
    finally:
        os.unlink(path)


class DevicesPane(Vertical):
    def compose(self) -> ComposeResult:
        yield Static(Text("reading devices ...", style="dim"), id="devices-note")
        yield DataTable(id="devices-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#devices-table", DataTable)
        for label in ("npu", "name", "health", "temp", "power", "aicore", "hbm", "ranks", "processes", "cpu affinity"):
            table.add_column(label, key=label)

    def show_unavailable(self, message: str) -> None:
        self.query_one("#devices-note", Static).update(Text(message, style="dim"))

    def show(self, report: Any, ranks: list[dict[str, Any]]) -> None:
        variables = self.app.theme_variables
        note = Text()
        if report.backend:
            note.append(f"{report.backend}: {len(report.devices)} device(s) on this machine", style="dim")
        for error in report.errors:
            note.append(("\n" if len(note) else "") + error, style=variables.get("warning", ""))
        self.query_one("#devices-note", Static).update(note)
        table = self.query_one("#devices-table", DataTable)
        table.clear()
        by_device: dict[int, list[int]] = {}
        for rank in ranks:
            if rank.get("device") is not None:
                by_device.setdefault(int(rank["device"]), []).append(int(rank["rank"]))
        for device in report.devices:
            health = device.health or "-"
            colour = variables.get(HEALTH_VARIABLE.get(health, ""), "")
            hbm = "-"
            if device.hbm_total_mb:
                hbm = f"{device.hbm_used_mb or 0}/{device.hbm_total_mb} MB ({device.hbm_pct or 0:.0f}%)"
            on_device = by_device.get(device.logic_id, []) if device.logic_id is not None else []
            table.add_row(
                str(device.logic_id if device.logic_id is not None else "-"),
                device.name or "-",
                Text(health, style=f"bold {colour}" if colour else "bold"),
                "-" if device.temp_c is None else f"{device.temp_c:.0f}C",
                "-" if device.power_w is None else f"{device.power_w:.0f}W",
                "-" if device.aicore_pct is None else f"{device.aicore_pct:.0f}%",
                hbm,
                fmt.rank_list(on_device) or "-",
                " ".join(str(p.pid) for p in device.processes) or "-",
                device.cpu_affinity or "-",
            )
