"""npu-smi and nvidia-smi output as it reaches people: copied from tickets and logs, re-indented, tabs
expanded into spaces, leading whitespace lost, CRLF line ends. Every form reads as the original does."""

from __future__ import annotations

import glob
import os

import pytest

from xllm_tui.devices import npu_smi, nvidia_smi

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _variants(text: str) -> dict[str, str]:
    lines = text.splitlines()
    return {
        "tabs expanded": text.expandtabs(8),
        "tabs expanded to 4": text.expandtabs(4),
        "leading whitespace lost": "\n".join(line.lstrip() for line in lines) + "\n",
        "indented by 4": "\n".join("    " + line if line else line for line in lines) + "\n",
        "quoted with a tab": "\n".join("\t" + line for line in lines) + "\n",
        "CRLF": "\r\n".join(lines) + "\r\n",
    }


def _files(tool: str, pattern: str) -> list[str]:
    return sorted(glob.glob(os.path.join(FIXTURES, tool, pattern)))


def _assert_every_copy_reads_as_the_original(path: str, read) -> object:
    """read(text) -> what the parser makes of it; returns the original's."""
    text = open(path, encoding="utf-8").read()
    original = read(text)
    for name, variant in _variants(text).items():
        assert read(variant) == original, name
    return original


@pytest.mark.parametrize("path", _files("npu-smi", "npu-smi_info_-t_topo__*.txt"), ids=os.path.basename)
def test_npu_topology_survives_copying(path):
    _assert_every_copy_reads_as_the_original(path, npu_smi.parse_topo)


@pytest.mark.parametrize("path", _files("nvidia-smi", "nvidia-smi_topo_*.txt"), ids=os.path.basename)
def test_nvidia_topology_survives_copying(path):
    _assert_every_copy_reads_as_the_original(path, nvidia_smi.parse_topo)


@pytest.mark.parametrize("path", _files("npu-smi", "npu-smi_info__*.txt"), ids=os.path.basename)
def test_npu_info_survives_copying(path):
    def devices_and_processes(text: str) -> tuple:
        parsed = npu_smi.parse_info(text)
        return parsed.devices, getattr(parsed, "processes", None)

    _assert_every_copy_reads_as_the_original(path, devices_and_processes)


def test_devices_notes_follow_the_table_on_their_own_lines(tmp_path):
    # stdout and stderr into one pipe, as a terminal or `2>&1 | less` has them.
    import subprocess
    import sys

    fake = tmp_path / "npu-smi"
    info = os.path.join(FIXTURES, "npu-smi", "npu-smi_info__910B3_8npu_idle_24.1.rc1__ms-swift.txt")
    fake.write_text(f'#!/bin/sh\nif [ "$2" = "-t" ] || [ "$2" = "-m" ]; then echo broken; exit 3; fi\ncat "{info}"\n')
    fake.chmod(0o755)
    result = subprocess.run([sys.executable, "-m", "xllm_tui", "devices", "--npu-smi", str(fake)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    lines = result.stdout.splitlines()
    assert "Topology: not available" in lines
    assert lines.index("Topology: not available") < min(i for i, line in enumerate(lines) if line.startswith("note: "))
    assert all(line.startswith("note: ") for line in lines[lines.index("Topology: not available") + 1:])


@pytest.mark.parametrize("path", _files("nvidia-smi", "nvidia-smi_query-gpu_csv__*.csv"), ids=os.path.basename)
def test_nvidia_query_csv_survives_copying(path):
    assert _assert_every_copy_reads_as_the_original(path, lambda text: nvidia_smi.parse_query_gpu(text).devices)


@pytest.mark.parametrize("path", _files("npu-smi", "npu-smi_info_-m__*.txt"), ids=os.path.basename)
def test_npu_chip_map_survives_copying(path):
    assert _assert_every_copy_reads_as_the_original(path, npu_smi.parse_chip_map)
