"""The devices of this machine (npu-smi, or nvidia-smi) with the ranks that run on them.

The supervisor reads the devices itself and puts the reading in its snapshot ("devices", the
`xllm-tui devices --json` layout); the pane renders that. Only when a supervisor has no reading does the TUI
run the tool itself: read_device_report() is slow (seconds) and is called from a thread worker.
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


def report_json(report: Any) -> dict[str, Any]:
    """A DeviceReport in the snapshot's "devices" layout."""
    import dataclasses

    return {
        "backend": report.backend,
        "devices": [dataclasses.asdict(d) for d in report.devices],
        "errors": list(report.errors),
    }


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
    _shown_key: tuple | None = None
    def compose(self) -> ComposeResult:
        yield Static(Text("reading devices ...", style="dim"), id="devices-note")
        yield DataTable(id="devices-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#devices-table", DataTable)
        for label in ("npu", "name", "health", "temp", "power", "aicore", "hbm", "ranks", "processes", "cpu affinity"):
            table.add_column(label, key=label)

    def show_unavailable(self, message: str) -> None:
        self.query_one("#devices-note", Static).update(Text(message, style="dim"))

    def show(self, devices: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
        """devices: the snapshot's "devices" (the `xllm-tui devices --json` layout)."""
        key = (devices.get("polled_at"), tuple((r.get("rank"), r.get("pid"), r.get("device")) for r in ranks))
        if key[0] is not None and key == self._shown_key:
            return  # the same reading: no repaint
        self._shown_key = key
        variables = self.app.theme_variables
        warning = variables.get("warning", "")
        items = devices.get("devices") or []
        note = Text()
        if devices.get("backend"):
            note.append(f"{devices['backend']}: {len(items)} device(s) on this machine", style="dim")
        for error in devices.get("errors") or []:
            note.append(("\n" if len(note) else "") + str(error), style=warning)
        for issue in devices.get("binding") or []:
            note.append(("\n" if len(note) else "") + str(issue.get("message") or issue), style=warning)
        if not len(note):
            note.append("no devices", style="dim")
        self.query_one("#devices-note", Static).update(note)
        table = self.query_one("#devices-table", DataTable)
        table.clear()
        by_device: dict[int, list[int]] = {}
        for rank in ranks:
            if rank.get("device") is not None:
                by_device.setdefault(int(rank["device"]), []).append(int(rank["rank"]))
        for device in items:
            logic_id = device.get("logic_id")
            health = device.get("health") or "-"
            colour = variables.get(HEALTH_VARIABLE.get(health, ""), "")
            hbm = "-"
            used, total = device.get("hbm_used_mb"), device.get("hbm_total_mb")
            if total:
                hbm = f"{used or 0}/{total} MB ({100 * (used or 0) / total:.0f}%)"
            on_device = by_device.get(logic_id, []) if logic_id is not None else []
            table.add_row(
                str(logic_id if logic_id is not None else "-"),
                device.get("name") or "-",
                Text(health, style=f"bold {colour}" if colour else "bold"),
                "-" if device.get("temp_c") is None else f"{device['temp_c']:.0f}C",
                "-" if device.get("power_w") is None else f"{device['power_w']:.0f}W",
                "-" if device.get("aicore_pct") is None else f"{device['aicore_pct']:.0f}%",
                hbm,
                fmt.rank_list(on_device) or "-",
                " ".join(str(p.get("pid")) for p in device.get("processes") or []) or "-",
                device.get("cpu_affinity") or "-",
            )
