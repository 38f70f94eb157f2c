"""nvidia-smi parsing against real public output (tests/fixtures/nvidia-smi/, sources in SOURCES.md there)."""

from __future__ import annotations

import json
import os

import pytest

from xllm_tui.devices.npu_smi import NpuSmiParseError
from xllm_tui.devices.nvidia_smi import (
    QUERY_FIELDS,
    build_report,
    parse_compute_apps,
    parse_query_gpu,
    parse_topo,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "nvidia-smi")
CSV_MEMORY = "nvidia-smi_query-gpu_csv__index-memused-memtotal-util_4xRTX-PRO-6000-WS.csv"
CSV_POWER = "nvidia-smi_query-gpu_csv__index-name-temp-power-powerlimit-ecc_2xRTX-PRO-6000-Server.csv"
TOPO = "nvidia-smi_topo_-m__8GPU_NV12_10NIC_tabs__oyanghd.txt"


def fixture(name: str) -> str:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


def test_csv_with_units_memory_and_utilization():
    report = parse_query_gpu(fixture(CSV_MEMORY))
    assert report.backend == "nvidia-smi" and report.errors == []
    assert [d.logic_id for d in report.devices] == [0, 1, 2, 3]
    assert [(d.hbm_used_mb, d.hbm_total_mb) for d in report.devices] == [(10, 97887), (10, 97887), (2, 97887), (2, 97887)]
    assert report.devices[0].aicore_pct == 0
    # Fields not asked for stay null.
    assert (report.devices[0].name, report.devices[0].power_w, report.devices[0].health) == (None, None, None)


def test_csv_name_temperature_power():
    report = parse_query_gpu(fixture(CSV_POWER))
    assert len(report.devices) == 2
    gpu0, gpu1 = report.devices
    assert gpu0.name == "NVIDIA RTX PRO 6000 Blackwell Server Edition"
    assert (gpu0.temp_c, gpu0.power_w) == (25, 30.39)
    assert gpu1.power_w == 28.54
    assert (gpu0.card, gpu0.chip, gpu0.hbm_used_mb) == (None, None, None)


def test_csv_without_header_or_units_and_not_available_values():
    text = "0, NVIDIA H100 80GB HBM3, 00000000:18:00.0, 31, [N/A], 0, 1, 81559\n1, NVIDIA H100 80GB HBM3, 00000000:2A:00.0, [N/A], 70.12, 100, 40000, 81559\n"
    report = parse_query_gpu(text, QUERY_FIELDS)
    assert report.errors == []
    gpu0, gpu1 = report.devices
    assert (gpu0.bus_id, gpu0.temp_c, gpu0.power_w, gpu0.hbm_used_mb, gpu0.hbm_total_mb) == ("00000000:18:00.0", 31, None, 1, 81559)
    assert (gpu1.temp_c, gpu1.power_w, gpu1.aicore_pct) == (None, 70.12, 100)


def test_csv_header_with_not_supported():
    report = parse_query_gpu("index, power.draw [W], memory.used [MiB]\n0, [Not Supported], 512 MiB\n")
    assert (report.devices[0].power_w, report.devices[0].hbm_used_mb) == (None, 512)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "printed nothing"),
        ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n", "NVIDIA-SMI has failed"),
        ("index, memory.used [MiB], memory.total [MiB]\n0, 10 MiB\n", "2 values for 3 fields"),
        ("index, name\nzero, GPU\n", "is not a number"),
    ],
)
def test_unreadable_csv_gives_no_devices(text, expected):
    report = parse_query_gpu(text)
    assert report.devices == []
    assert expected in report.errors[0]


def test_topo_nv12_links_affinity_numa_and_nics():
    topology = parse_topo(fixture(TOPO))
    assert topology.key_kind == "gpu"
    assert sorted(topology.links) == list(range(8))
    assert topology.links[0] == {0: "X", 1: "NV12", 2: "NV12", 3: "NV12", 4: "NV12", 5: "NV12", 6: "NV12", 7: "NV12"}
    assert topology.cpu_affinity[0] == "48-63,176-191"
    assert topology.cpu_affinity[2] == "16-31,144-159"
    assert topology.cpu_affinity[7] == "80-95,208-223"
    assert topology.numa_affinity[4] == "7"
    assert topology.nic_links[0]["NIC0"] == "PXB" and topology.nic_links[0]["NIC2"] == "SYS"
    assert topology.nic_names["NIC9"] == "mlx5_9"


def test_topo_garbage_raises_a_clear_error():
    with pytest.raises(NpuSmiParseError, match="no topology matrix"):
        parse_topo("Failed to initialize NVML: Driver/library version mismatch\n")


def test_compute_apps_are_matched_by_bus_id():
    query = "index, pci.bus_id, memory.used [MiB], memory.total [MiB]\n0, 00000000:18:00.0, 1 MiB, 81559 MiB\n1, 00000000:2A:00.0, 40000 MiB, 81559 MiB\n"
    apps = "pid, process_name, used_gpu_memory [MiB], gpu_bus_id\n4242, /usr/bin/python3, 39990 MiB, 00000000:2A:00.0\n"
    assert parse_compute_apps(apps)[0][1].pid == 4242
    report = build_report(query, None, apps)
    assert report.devices[0].processes == []
    [process] = report.devices[1].processes
    assert (process.pid, process.name, process.memory_mb) == (4242, "/usr/bin/python3", 39990)


def test_report_keeps_links_only_between_listed_gpus():
    report = build_report(fixture(CSV_MEMORY), fixture(TOPO))
    assert report.errors == []
    assert sorted(report.links) == [0, 1, 2, 3]
    assert report.links[3] == {0: "NV12", 1: "NV12", 2: "NV12", 3: "X"}
    assert report.device(1).cpu_affinity == "48-63,176-191"
    data = json.loads(report.to_json())
    assert data["backend"] == "nvidia-smi"
    assert data["links"]["0"]["1"] == "NV12"
    assert "NIC0" not in data["links"]["0"]
