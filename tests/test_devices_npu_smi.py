"""npu-smi parsing against real public output (tests/fixtures/npu-smi/, sources in SOURCES.md there)."""

from __future__ import annotations

import json
import os

import pytest

from xllm_tui.devices.model import DeviceReport
from xllm_tui.devices.npu_smi import (
    NpuSmiParseError,
    apply_chip_map,
    build_report,
    parse_chip_map,
    parse_info,
    parse_topo,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "npu-smi")
A3_INFO = "npu-smi_info__A3_Ascend910_16chip_all-busy_vllm_25.2.0__vllm-ascend-3002.txt"
A2_INFO_PROCS = "npu-smi_info__910B4_Atlas800IA2_8npu_mindie-processes_24.1.rc2__wang-junjian.txt"
A2_INFO_IDLE = "npu-smi_info__910B3_8npu_idle_24.1.rc1__ms-swift.txt"
WIDE_INFO = "npu-smi_info__910B4_1npu_26.0.rc1_WIDE-format__triton-ascend-docs.txt"
OLD_310P_INFO = "npu-smi_info__310P3_1npu_OLD-104col-format_25.3.rc1__install-doc.txt"
MAP_910B = "npu-smi_info_-m__910B4_Atlas800IA2_8npu__wang-junjian.txt"
MAP_A3 = "npu-smi_info_-m__A3_Ascend910_PARTIAL-4rows_test-fixture__xllm.txt"
TOPO_HCCS = "npu-smi_info_-t_topo__910B3_8npu_HCCS__ms-swift.txt"
TOPO_PIX = "npu-smi_info_-t_topo__910B4-1_8npu-subset_PIX-PHB_test-fixture.txt"
TOPO_A3_SIO = "npu-smi_info_-t_topo__A3_Ascend910_9362_2chip-container_SIO_no-CPU-Affinity__sglang-30453.txt"
WARNING = "[WARNING]The driver package may not be completely installed, which may cause function abnormal. Please reinstall it."


def fixture(name: str) -> str:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


# ------------------------------------------------------------------------------------------- npu-smi info


def test_a3_sixteen_dies_with_phy_ids_power_hbm_and_processes():
    report = parse_info(fixture(A3_INFO))
    assert report.errors == []
    assert report.backend == "npu-smi"
    assert report.version == "25.2.0"
    assert len(report.devices) == 16
    assert [d.logic_id for d in report.devices] == list(range(16))
    assert [(d.card, d.chip) for d in report.devices[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [d.phy_id for d in report.devices] == list(range(16))
    die0, die1 = report.devices[0], report.devices[1]
    assert (die0.name, die0.health, die0.power_w, die0.temp_c, die0.aicore_pct) == ("Ascend910", "OK", 211.3, 43, 7)
    assert (die0.hbm_used_mb, die0.hbm_total_mb, die0.bus_id) == (61609, 65536, "0000:9D:00.0")
    # The second die of an A3 card prints "-" for power: None, never a number.
    assert die1.power_w is None
    assert (die1.hbm_used_mb, die1.hbm_total_mb, die1.temp_c) == (61625, 65536, 44)
    assert all(d.power_w is None for d in report.devices if d.chip == 1)
    assert report.devices[8].aicore_pct == 8
    assert report.devices[15].bus_id == "0000:83:00.0"
    # Processes: card 0 chip 0 holds eight 141 MB contexts with empty names; every other die one big process.
    assert [p.pid for p in die0.processes] == [935440, 936673, 930242, 934451, 931572, 941045, 942487, 929673]
    assert {p.memory_mb for p in die0.processes} == {141}
    assert all(p.name is None for p in die0.processes)
    assert [(p.pid, p.memory_mb) for p in die1.processes] == [(929405, 58780)]
    assert [(p.pid, p.memory_mb) for p in report.devices[2].processes] == [(929673, 58540)]
    assert [(p.pid, p.memory_mb) for p in report.devices[15].processes] == [(944268, 58782)]


def test_a2_eight_cards_with_named_processes():
    report = parse_info(fixture(A2_INFO_PROCS))
    assert report.errors == [] and report.version == "24.1.rc2"
    assert len(report.devices) == 8
    first, last = report.devices[0], report.devices[7]
    assert (first.card, first.chip, first.phy_id, first.name) == (0, 0, None, "910B4")
    assert (first.power_w, first.temp_c, first.hbm_used_mb, first.hbm_total_mb) == (99.1, 43, 30209, 32768)
    assert [(p.pid, p.name, p.memory_mb) for p in first.processes] == [(518867, "mindieservice_b", 27474)]
    assert [(p.pid, p.name) for p in last.processes] == [(518874, "mindieservice_b")]
    assert last.bus_id == "0000:42:00.0"


def test_a2_idle_without_process_table():
    report = parse_info(fixture(A2_INFO_IDLE))
    assert report.errors == []
    assert report.version == "24.1.rc1.b030"
    assert [d.name for d in report.devices] == ["910B3"] * 8
    assert (report.devices[0].power_w, report.devices[0].hbm_used_mb, report.devices[0].hbm_total_mb) == (101.8, 3318, 65536)
    assert report.devices[7].hbm_used_mb == 3315
    assert all(d.processes == [] for d in report.devices)


def test_wide_26x_layout():
    report = parse_info(fixture(WIDE_INFO))
    assert report.errors == []
    assert report.version == "26.0.rc1"
    [device] = report.devices
    assert (device.logic_id, device.card, device.chip, device.name) == (0, 0, 0, "910B4")
    assert (device.power_w, device.temp_c, device.aicore_pct) == (82.6, 32, 0)
    assert (device.hbm_used_mb, device.hbm_total_mb, device.bus_id) == (2871, 32768, "0000:C1:00.0")
    assert device.processes == []


def test_old_310p_layout_memory_usage_and_no_power():
    report = parse_info(fixture(OLD_310P_INFO))
    assert report.errors == []
    [device] = report.devices
    assert (device.card, device.chip, device.logic_id, device.phy_id) == (6, 0, 0, None)
    assert (device.name, device.health, device.power_w, device.temp_c) == ("310P3", "OK", None, 50)
    # 310P has no HBM column: its Memory-Usage is the device memory.
    assert (device.hbm_used_mb, device.hbm_total_mb) == (1839, 21525)
    assert device.bus_id == "0000:84:00.0"
    assert device.processes == []


def test_warning_trailer_is_kept_as_a_message():
    report = parse_info(fixture(A2_INFO_PROCS) + WARNING + "\n")
    assert len(report.devices) == 8
    assert report.errors == [f"npu-smi: {WARNING}"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "no device table: (no output)"),
        ("hello\nthis is not npu-smi\n", "no device table: hello / this is not npu-smi"),
        ("dcmi module initialize failed. ret is -8005\n", "dcmi module initialize failed. ret is -8005"),
        ("\x00\x01garbage|||\n+--+\n", "npu-smi info"),
    ],
)
def test_unreadable_output_gives_no_devices_and_a_message(text, expected):
    report = parse_info(text)
    assert report.devices == []
    assert len(report.errors) == 1
    assert expected in report.errors[0]


def test_truncated_mid_line_gives_no_devices():
    text = fixture(A3_INFO)
    cut = text[: text.index("61616/ 65536")]  # stops inside a chip row
    report = parse_info(cut)
    assert report.devices == []
    assert "truncated" in report.errors[0]


def test_truncated_between_the_two_rows_of_a_chip():
    lines = fixture(A3_INFO).splitlines()
    cut = "\n".join(lines[:13]) + "\n"  # ends after row 1 of card 1 chip 0
    assert lines[12].startswith("| 1     Ascend910")
    report = parse_info(cut)
    assert report.devices == []
    assert "truncated" in report.errors[0] and "no second row" in report.errors[0]


def test_truncated_process_row_gives_no_devices():
    text = fixture(A2_INFO_PROCS)
    cut = text[: text.index("518870") + 3]
    report = parse_info(cut)
    assert report.devices == [] and "truncated" in report.errors[0]


def test_header_only_table_is_not_devices():
    head = "\n".join(fixture(A3_INFO).splitlines()[:6]) + "\n"
    report = parse_info(head)
    assert report.devices == []
    assert "without devices" in report.errors[0]


# ---------------------------------------------------------------------------------------- npu-smi info -m


def test_chip_map_910b_four_columns_skips_mcu_rows():
    mapping = parse_chip_map(fixture(MAP_910B))
    assert sorted(mapping) == [(card, 0) for card in range(8)]
    assert mapping[(5, 0)].logic_id == 5
    assert mapping[(5, 0)].phy_id is None
    assert mapping[(5, 0)].name == "Ascend 910B4"


def test_chip_map_a3_five_columns_with_phy_id():
    mapping = parse_chip_map(fixture(MAP_A3))
    assert sorted(mapping) == [(0, 0), (0, 1), (1, 0)]
    assert (mapping[(0, 1)].logic_id, mapping[(0, 1)].phy_id, mapping[(0, 1)].name) == (1, 1, "Ascend910")
    assert mapping[(1, 0)].logic_id == 2


def test_chip_map_rejects_other_text():
    with pytest.raises(NpuSmiParseError, match="Chip Logic ID"):
        parse_chip_map("dcmi module initialize failed. ret is -8005\n")


def test_logic_ids_come_from_the_chip_map_not_the_card_order():
    report = parse_info(fixture(A2_INFO_PROCS))
    # Cards 0 and 1 swapped: logic id 0 is card 1 (as in a container that sees the cards in another order).
    rows = [(0, 0, 1), (1, 0, 0)] + [(card, 0, card) for card in range(2, 8)]
    swapped = "\t" + " ".join(f"{h:<30}" for h in ("NPU ID", "Chip ID", "Chip Logic ID", "Chip Name")) + "\n"
    swapped += "".join(f"\t{c:<30d} {chip:<30d} {logic:<30d} Ascend 910B4\n" for c, chip, logic in rows)
    apply_chip_map(report, parse_chip_map(swapped))
    assert [(d.logic_id, d.card) for d in report.devices[:3]] == [(0, 1), (1, 0), (2, 2)]
    assert report.errors == []


def test_partial_chip_map_says_which_chips_fall_back_to_order():
    report = build_report(fixture(A3_INFO), fixture(MAP_A3))
    assert [d.logic_id for d in report.devices] == list(range(16))
    assert len(report.errors) == 1
    assert "no logic id for NPU 1 chip 1" in report.errors[0]
    assert "follow card and chip order" in report.errors[0]


# ----------------------------------------------------------------------------------- npu-smi info -t topo


def test_topo_hccs_with_cpu_affinity():
    topology = parse_topo(fixture(TOPO_HCCS))
    assert topology.key_kind == "npu"
    assert sorted(topology.links) == list(range(8))
    assert topology.links[2][5] == "HCCS"
    assert topology.links[3][3] == "X"
    assert topology.cpu_affinity == {
        0: "144-167", 1: "144-167", 2: "96-119", 3: "96-119", 4: "0-23", 5: "0-23", 6: "48-71", 7: "48-71",
    }


def test_topo_subset_pix_phb_keys_are_card_ids():
    topology = parse_topo(fixture(TOPO_PIX))
    assert sorted(topology.links) == [1, 3, 5, 7, 8, 9, 10, 11]
    assert topology.links[1][3] == "PIX"
    assert topology.links[1][8] == "PHB"
    assert topology.links[10][11] == "PIX"
    assert set(topology.cpu_affinity.values()) == {"0-23"}


def test_topo_a3_phy_ids_sio_without_cpu_affinity():
    topology = parse_topo(fixture(TOPO_A3_SIO))
    assert topology.key_kind == "phy_id"
    assert topology.links == {12: {12: "X", 13: "SIO"}, 13: {12: "SIO", 13: "X"}}
    assert topology.cpu_affinity == {}


@pytest.mark.parametrize("label", ["X", "SYS", "PHB", "HCCS", "PXB", "PIX", "SIO", "HCCS_SW", "XLink", "XLink_SW", "NA", "UB"])
def test_topo_every_link_label(label):
    text = (
        "\t   NPU0       NPU1       CPU Affinity\n"
        f"NPU0       X          {label:<11}0-23\n"
        f"NPU1       {label:<11}X          24-47\n\nLegend:\n\n  X    = Self\n"
    )
    topology = parse_topo(text)
    assert topology.links[0][1] == label and topology.links[1][0] == label
    assert topology.cpu_affinity == {0: "0-23", 1: "24-47"}


def test_topo_with_nic_columns_keeps_devices_and_nics_apart():
    text = (
        "\t   NPU0       NPU1       NIC0        NIC1        CPU Affinity\n"
        "NPU0       X          HCCS       PIX        SYS        0-63,128-191\n"
        "NPU1       HCCS       X          SYS        PIX        0-63,128-191\n"
        "NIC0       PIX        SYS        X          SYS\n"
        "NIC1       SYS        PIX        SYS        X\n\n"
        "NIC0: enp1s0\nNIC1: enp2s0\n\nLegend:\n\n  X    = Self\n"
    )
    topology = parse_topo(text)
    assert topology.links == {0: {0: "X", 1: "HCCS"}, 1: {0: "HCCS", 1: "X"}}
    assert topology.nic_links[0] == {"NIC0": "PIX", "NIC1": "SYS"}
    assert topology.nic_names == {"NIC0": "enp1s0", "NIC1": "enp2s0"}
    assert topology.cpu_affinity[1] == "0-63,128-191"


def test_topo_rejects_garbage_and_truncation():
    with pytest.raises(NpuSmiParseError, match="no topology matrix"):
        parse_topo("dcmi module initialize failed. ret is -8005\n")
    lines = fixture(TOPO_HCCS).splitlines()
    with pytest.raises(NpuSmiParseError, match="fewer cells"):
        parse_topo("\n".join(lines[:3] + [lines[3][:40]]))
    with pytest.raises(NpuSmiParseError, match="no row for NPU4"):
        parse_topo("\n".join(lines[:5]))


# ------------------------------------------------------------------------------------------- combined


def test_report_combines_info_and_topology_by_card_id():
    report = build_report(fixture(A2_INFO_IDLE), None, fixture(TOPO_HCCS))
    assert report.errors == []
    assert report.links[2][5] == "HCCS"
    assert report.device(2).cpu_affinity == "96-119"
    assert report.device(0).cpu_affinity == "144-167"
    assert report.topology.cpu_affinity[7] == "48-71"


def test_a3_topology_phy_ids_map_to_logic_ids():
    report = build_report(fixture(A3_INFO), None, fixture(TOPO_A3_SIO))
    assert report.errors == []
    assert report.links == {12: {12: "X", 13: "SIO"}, 13: {12: "SIO", 13: "X"}}
    assert all(d.cpu_affinity is None for d in report.devices)


def test_topology_naming_unknown_cards_is_reported_not_invented():
    report = build_report(fixture(OLD_310P_INFO), None, fixture(TOPO_PIX))
    assert len(report.devices) == 1
    assert report.links == {}
    assert "NPU1, NPU3" in report.errors[0]


def test_unreadable_map_and_topology_keep_the_devices():
    report = build_report(fixture(A3_INFO), "garbage\n", "garbage\n")
    assert len(report.devices) == 16
    assert any("follow card and chip order" in e for e in report.errors)
    assert any("no topology" in e for e in report.errors)


def test_json_layout_is_the_documented_one():
    report = build_report(fixture(A2_INFO_PROCS), fixture(MAP_910B), fixture(TOPO_HCCS))
    data = json.loads(report.to_json())
    assert list(data) == ["backend", "devices", "links", "errors"]
    assert data["backend"] == "npu-smi"
    device = data["devices"][0]
    assert list(device) == [
        "logic_id", "card", "chip", "phy_id", "name", "health", "power_w", "temp_c", "aicore_pct",
        "hbm_used_mb", "hbm_total_mb", "bus_id", "cpu_affinity", "processes",
    ]
    assert device["phy_id"] is None  # missing values are null
    assert device["processes"] == [{"pid": 518867, "name": "mindieservice_b", "memory_mb": 27474}]
    assert data["links"]["2"]["5"] == "HCCS"
    assert data["devices"][2]["cpu_affinity"] == "96-119"
    assert data["errors"] == []
    assert DeviceReport.from_dict(data).to_dict() == data


def test_a3_json_power_of_second_die_is_null():
    data = json.loads(parse_info(fixture(A3_INFO)).to_json())
    assert data["devices"][1]["power_w"] is None
    assert data["devices"][1]["hbm_used_mb"] == 61625
    assert data["devices"][1]["processes"] == [{"pid": 929405, "name": None, "memory_mb": 58780}]


def test_950_layout_from_the_driver_printf_formats():
    # No captured 950 output is public; these rows follow npucli's NPU_SMI_V2 printf formats
    # (see FORMAT-REFERENCE in tests/fixtures/npu-smi/), including a bus id printed as NA.
    def row1(card, name, health, power, temp):
        return f"| {card:<7d}| {name:<17}| {health:<13} | {power:<11.1f} {temp:<17d} {0:<6d}/ {0:<13d} |"

    def row2(bus, util, hbm_used, hbm_total):
        return f"|{'':<8}|{'':<18}| {bus:<12} | {util:<11d} {0:<5d}/ {0:<10d} {hbm_used:<6d}/ {hbm_total:<13d} |"

    separator = "+========+==================+===============+=====================================================+"
    text = "\n".join(
        [
            "+" + "-" * 97 + "+",
            f"| npu-smi {'26.0.0':<40} Version: {'26.0.0':<37} |",
            "+--------+------------------+---------------+-----------------------------------------------------+",
            "| NPU ID | Name             | Health        | Power(W)    Temp(C)           Hugepages-Usage(page) |",
            "|        |                  | Bus-Id        | NPU Util(%) Memory-Usage(MB)  HBM-Usage(MB)         |",
            separator,
            row1(0, "Ascend950", "OK", 300.5, 41),
            row2("0000:01:00.0", 12, 100000, 131072),
            separator,
            row1(1, "Ascend950", "Warning", 280.0, 44),
            row2("NA", 0, 3000, 131072),
            separator,
            "+---------------------------+---------------+-----------------------------------------------------+",
            "| NPU ID                    | Process id    | Process name             | Process memory(MB)       |",
            "+===========================+===============+=====================================================+",
            f"| {0:<26d} | {4242:<13d} | {'xllm':<24} | {90000:<23d} |",
            "+===========================+===============+=====================================================+",
            "| No running processes found in NPU 1                                                             |",
            "+===========================+===============+=====================================================+",
        ]
    )
    report = parse_info(text + "\n")
    assert report.errors == [] and report.version == "26.0.0"
    first, second = report.devices
    assert (first.logic_id, first.card, first.chip, first.name, first.health) == (0, 0, 0, "Ascend950", "OK")
    assert (first.power_w, first.temp_c, first.aicore_pct, first.hbm_used_mb, first.hbm_total_mb) == (300.5, 41, 12, 100000, 131072)
    assert first.bus_id == "0000:01:00.0" and second.bus_id is None
    assert second.health == "Warning"
    assert [(p.pid, p.name, p.memory_mb) for p in first.processes] == [(4242, "xllm", 90000)]
    assert second.processes == []
