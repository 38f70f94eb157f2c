"""The Devices tab: HBM bar, ranks and foreign processes per NPU, the link matrix with CPU affinity."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Static

from xllm_tui.devices.npu_smi import build_report
from xllm_tui.ui.widgets.devices_pane import DevicesPane, hbm_cell, link_short, processes_cell

from conftest import REPO

FIXTURES = f"{REPO}/tests/fixtures/npu-smi"


def _read(name: str) -> str:
    with open(f"{FIXTURES}/{name}") as f:
        return f.read()


def test_hbm_cell_is_a_bar_with_the_numbers():
    colours = {"ready": "green", "degraded": "yellow", "failed": "red"}
    cell = hbm_cell(61609, 65536, colours)
    assert cell.plain == "█████████░ 61609/65536 MB 94%"
    assert hbm_cell(None, None, colours).plain == "-"
    assert hbm_cell(0, 65536, colours).plain.startswith("░" * 10)


def test_processes_cell_marks_what_is_not_a_rank():
    cell = processes_cell([{"pid": 10, "name": "xllm"}, {"pid": 77, "name": "python"}], {10}, "orange")
    assert cell.plain == "10(xllm) 77(python)"
    styles = [str(span.style) for span in cell.spans]
    assert styles == ["bold orange"]  # only the stray holder stands out
    assert processes_cell([], set(), "orange").plain == "-"


def test_link_labels_are_short_but_nvlink_counts_stay():
    assert link_short("HCCS") == "HC" and link_short("SIO") == "SI" and link_short("NV12") == "NV12"


class PaneApp(App):
    def compose(self) -> ComposeResult:
        yield DevicesPane()


async def test_pane_shows_devices_ranks_and_topology_from_a_real_sample():
    report = build_report(
        _read("npu-smi_info__910B4_Atlas800IA2_8npu_mindie-processes_24.1.rc2__wang-junjian.txt"),
        None,
        _read("npu-smi_info_-t_topo__910B3_8npu_HCCS__ms-swift.txt"),
    )
    devices = report.to_dict()
    ranks = [{"rank": 0, "device": 0, "pid": None}, {"rank": 1, "device": 1, "pid": None}]
    app = PaneApp()
    async with app.run_test(size=(140, 50)) as pilot:
        pane = app.query_one(DevicesPane)
        pane.show(devices, ranks)
        await pilot.pause()
        table = pane.query_one("#devices-table", DataTable)
        assert table.row_count == 8
        first = [str(c) for c in table.get_row_at(0)]
        assert first[0] == "0" and first[7] == "0"  # rank 0 on NPU 0
        assert "MB" in first[6] and "%" in first[6]
        topology = pane.query_one("#topology-table", DataTable)
        assert topology.row_count == 8
        row2 = [str(c) for c in topology.get_row_at(2)]
        assert row2[0] == "2" and row2[3] == "X" and row2[1] == "HC" and row2[-1] == "96-119"
        legend = str(pane.query_one("#topology-note", Static).render())
        assert "HC=HCCS" in legend
