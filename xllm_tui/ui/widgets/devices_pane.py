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


HBM_BAR_WIDTH = 10
# Short forms so a 16-NPU link matrix fits an 80-column terminal (the legend under it spells them out).
LINK_SHORT = {"HCCS": "HC", "HCCS_SW": "HS", "XLink": "XL", "XLink_SW": "XS", "SIO": "SI", "PIX": "PX",
              "PXB": "PB", "PHB": "PH", "SYS": "SY", "NA": "-", "X": "X", "NV": "NV"}


def hbm_cell(used: int | None, total: int | None, colours: dict[str, str]) -> Text:
    """A small bar with the numbers: '██████░░░░ 61609/65536 MB 94%' coloured by how full it is."""
    if not total:
        return Text("-")
    used = used or 0
    ratio = max(0.0, min(1.0, used / total))
    filled = round(ratio * HBM_BAR_WIDTH)
    colour = colours["failed"] if ratio >= 0.95 else colours["degraded"] if ratio >= 0.8 else colours["ready"]
    cell = Text()
    cell.append("█" * filled, style=colour)
    cell.append("░" * (HBM_BAR_WIDTH - filled), style="dim")
    cell.append(f" {used}/{total} MB {100 * ratio:.0f}%")
    return cell


def processes_cell(processes: list[dict[str, Any]], rank_pids: set[int], warning: str) -> Text:
    """pid(name) per process; one that is not a rank of this deployment (a stray holder) stands out."""
    cell = Text()
    for process in processes:
        pid = process.get("pid")
        name = process.get("name") or "?"
        label = f"{pid}({name})"
        if len(cell):
            cell.append(" ")
        cell.append(label, style="" if pid in rank_pids else f"bold {warning}")
    return cell if len(cell) else Text("-")


def link_short(label: str) -> str:
    if label.startswith("NV") and label[2:].isdigit():
        return label  # nvidia-smi: NV12 = 12 NVLinks
    return LINK_SHORT.get(label, label[:2])


class DevicesPane(Vertical):
    """A table of devices (health, temperature, power, AI core, an HBM bar, the ranks and processes on each,
    CPU affinity) and the link matrix between them with each device's CPU affinity."""

    _shown_key: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("reading devices ...", style="dim"), id="devices-note")
        yield DataTable(id="devices-table", cursor_type="row")
        yield Static("", id="topology-note")
        yield DataTable(id="topology-table", cursor_type="none")

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
        colours = {state: variables.get(f"xllm-state-{state}", "") for state in ("ready", "degraded", "failed")}
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
        rank_pids = {int(r["pid"]) for r in ranks if r.get("pid")}
        for device in items:
            logic_id = device.get("logic_id")
            health = device.get("health") or "-"
            colour = variables.get(HEALTH_VARIABLE.get(health, ""), "")
            on_device = by_device.get(logic_id, []) if logic_id is not None else []
            table.add_row(
                str(logic_id if logic_id is not None else "-"),
                device.get("name") or "-",
                Text(health, style=f"bold {colour}" if colour else "bold"),
                "-" if device.get("temp_c") is None else f"{device['temp_c']:.0f}C",
                "-" if device.get("power_w") is None else f"{device['power_w']:.0f}W",
                "-" if device.get("aicore_pct") is None else f"{device['aicore_pct']:.0f}%",
                hbm_cell(device.get("hbm_used_mb"), device.get("hbm_total_mb"), colours),
                fmt.rank_list(on_device) or "-",
                processes_cell(device.get("processes") or [], rank_pids, warning),
                device.get("cpu_affinity") or "-",
            )
        self._show_topology(devices, items)

    def _show_topology(self, devices: dict[str, Any], items: list[dict[str, Any]]) -> None:
        links: dict[str, dict[str, str]] = devices.get("links") or {}
        note = self.query_one("#topology-note", Static)
        table = self.query_one("#topology-table", DataTable)
        table.clear(columns=True)
        if not links:
            note.update(Text("no topology (npu-smi info -t topo gave none)", style="dim"))
            return
        ids = sorted(links, key=lambda k: int(k) if k.isdigit() else k)
        affinity = {str(d.get("logic_id")): d.get("cpu_affinity") for d in items}
        used = sorted({label for row in links.values() for label in row.values()})
        legend = "  ".join(f"{link_short(label)}={label}" for label in used if link_short(label) != label)
        note.update(Text(f"topology (links between devices){':  ' + legend if legend else ''}", style="dim"))
        table.add_column("", key="row")
        for column in ids:
            table.add_column(column, key=f"c{column}")
        table.add_column("cpu affinity", key="affinity")
        for row in ids:
            cells = [link_short(links[row].get(column, "")) or "" for column in ids]
            table.add_row(row, *cells, affinity.get(row) or "-")
