"""Running the tools: the simulated npu-smi round trip, fake tools on PATH, and every way a tool can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import psutil
import pytest

from xllm_tui.devices.npu_smi import parse_info
from xllm_tui.devices.probe import read_devices

SIM = [sys.executable, "-m", "xllm_tui.sim.npu_smi"]
TESTS = os.path.dirname(os.path.abspath(__file__))
NPU_FIXTURES = os.path.join(TESTS, "fixtures", "npu-smi")
NVIDIA_FIXTURES = os.path.join(TESTS, "fixtures", "nvidia-smi")


def sim_output(*args: str, **env: str) -> str:
    result = subprocess.run(SIM + list(args), capture_output=True, text=True, timeout=30, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def write_tool(directory, name: str, outputs: dict[str, str], exit_code: int = 0) -> str:
    """A fake tool: prints the file registered for its argument string."""
    path = directory / name
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import sys
            outputs = {outputs!r}
            key = " ".join(sys.argv[1:])
            if key.startswith("--query-gpu"):
                key = "--query-gpu"
            if key.startswith("--query-compute-apps"):
                key = "--query-compute-apps"
            if key not in outputs:
                print("unsupported: " + key, file=sys.stderr)
                sys.exit(2)
            with open(outputs[key], encoding="utf-8") as handle:
                sys.stdout.write(handle.read())
            sys.exit({exit_code})
            """
        )
    )
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def no_children_left():
    """The test ends every tool it ran (compared with the children that existed before it)."""

    def live_children() -> set[int]:
        pids = set()
        for child in psutil.Process().children(recursive=True):
            try:
                if child.status() != psutil.STATUS_ZOMBIE:
                    pids.add(child.pid)
            except psutil.NoSuchProcess:
                pass
        return pids

    before = live_children()
    yield
    leftover = live_children() - before
    assert leftover == set(), f"processes left behind: {leftover}"


# ------------------------------------------------------------------------------------- simulated npu-smi


def test_simulated_a3_has_the_real_layout():
    text = sim_output("info")
    with open(os.path.join(NPU_FIXTURES, "npu-smi_info__A3_Ascend910_16chip_all-busy_vllm_25.2.0__vllm-ascend-3002.txt"), encoding="utf-8") as handle:
        real = handle.read().splitlines()
    lines = text.splitlines()
    assert lines[:6] == real[:6]  # version, separators and both header rows, byte for byte
    assert [len(line) for line in lines] == [len(real[0])] * len(lines)  # every row 98 columns like the real table
    assert lines[9].startswith("| 0     Ascend910           | OK            | -           ")  # die 1: no power
    assert lines[10].startswith("| 1     1                   | 0000:9F:00.0  | ")


def test_simulated_a3_round_trip(no_children_left):
    report = read_devices(npu_smi=SIM, timeout=30)
    assert report.errors == []
    assert report.backend == "npu-smi"
    assert len(report.devices) == 16
    assert [(d.logic_id, d.card, d.chip, d.phy_id) for d in report.devices[:3]] == [(0, 0, 0, 0), (1, 0, 1, 1), (2, 1, 0, 2)]
    assert all(d.health == "OK" and d.name == "Ascend910" and d.hbm_total_mb == 65536 for d in report.devices)
    assert all(d.power_w is None for d in report.devices if d.chip == 1)
    assert all(d.power_w is not None for d in report.devices if d.chip == 0)
    assert report.links[0][1] == "SIO" and report.links[0][2] == "HCCS" and report.links[5][5] == "X"
    assert report.device(3).cpu_affinity == "0-47"
    assert report.device(15).cpu_affinity == "144-191"


def test_simulated_a2_round_trip():
    report = read_devices(npu_smi=SIM, timeout=30, env={"XLLM_SIM_NPU_KIND": "a2"})
    assert report.errors == []
    assert len(report.devices) == 8
    assert {(d.name, d.chip, d.phy_id, d.hbm_total_mb) for d in report.devices} == {("910B4", 0, None, 32768)}
    assert report.links[0][7] == "HCCS"
    assert [report.device(i).cpu_affinity for i in (0, 1, 2, 7)] == ["0-23", "0-23", "24-47", "72-95"]


def test_simulated_processes_live_pids_only_and_hbm_grows(tmp_path, no_children_left):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=30)
    procs = tmp_path / "procs.json"
    procs.write_text(
        json.dumps(
            [
                {"pid": os.getpid(), "logic_id": 3, "name": "xllm-rank-3-of-8", "memory_mb": 50000},
                {"pid": finished.pid, "logic_id": 2, "name": "gone", "memory_mb": 1000},
            ]
        )
    )
    idle = read_devices(npu_smi=SIM, timeout=30)
    busy = read_devices(npu_smi=SIM, timeout=30, env={"XLLM_SIM_NPU_PROCS": str(procs)})
    [process] = busy.device(3).processes
    assert (process.pid, process.name, process.memory_mb) == (os.getpid(), "xllm-rank-3-of-", 50000)  # 15 chars, as npu-smi
    assert busy.device(3).hbm_used_mb == idle.device(3).hbm_used_mb + 50000
    assert busy.device(3).aicore_pct > 0
    assert busy.device(2).processes == [] and busy.device(2).hbm_used_mb == idle.device(2).hbm_used_mb


def test_simulated_process_without_memory_ramps_up(tmp_path):
    procs = tmp_path / "procs.json"
    procs.write_text(json.dumps([{"pid": os.getppid(), "logic_id": 0, "name": "xllm"}]))
    report = parse_info(sim_output("info", XLLM_SIM_NPU_PROCS=str(procs)))
    [process] = report.device(0).processes
    assert 1024 <= process.memory_mb <= 58000


def test_simulated_broken_procs_file_means_no_processes(tmp_path):
    procs = tmp_path / "procs.json"
    procs.write_text("[{not json")
    report = parse_info(sim_output("info", XLLM_SIM_NPU_PROCS=str(procs)))
    assert len(report.devices) == 16 and all(d.processes == [] for d in report.devices)


def test_simulated_health_and_no_affinity():
    report = read_devices(npu_smi=SIM, timeout=30, env={"XLLM_SIM_NPU_HEALTH": "3=Warning,5=Critical", "XLLM_SIM_NPU_AFFINITY": "0"})
    assert [report.device(i).health for i in (2, 3, 5)] == ["OK", "Warning", "Critical"]
    assert report.links[0][1] == "SIO"
    assert all(d.cpu_affinity is None for d in report.devices)


def test_simulated_driver_failure():
    report = read_devices(npu_smi=SIM, timeout=30, env={"XLLM_SIM_NPU_FAIL": "dcmi"})
    assert report.devices == []
    assert report.errors == ["npu-smi info exited with code 255: dcmi module initialize failed. ret is -8005"]


def test_simulated_unknown_command_fails():
    result = subprocess.run(SIM + ["info", "-t", "board", "-i", "0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unsupported" in result.stderr


# --------------------------------------------------------------------------------------- tools and errors


def test_missing_binary():
    report = read_devices(npu_smi="/nonexistent/npu-smi")
    assert report.devices == []
    assert report.errors == ["/nonexistent/npu-smi not found (is the driver installed? give its path with --npu-smi/--nvidia-smi)"]


def test_garbage_output(no_children_left):
    report = read_devices(npu_smi=[sys.executable, "-c", "print('Segmentation fault of a sort')"], timeout=30)
    assert report.devices == []
    assert "no device table: Segmentation fault of a sort" in report.errors[0]


def test_timeout_kills_the_tool(no_children_left):
    report = read_devices(npu_smi=[sys.executable, "-c", "import signal; signal.pause()"], timeout=0.5)
    assert report.devices == []
    assert "did not answer within 0.5 s" in report.errors[0]


def test_no_tool_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    report = read_devices()
    assert report.backend is None and report.devices == []
    assert "neither npu-smi nor nvidia-smi is on PATH" in report.errors[0]


def test_npu_smi_found_on_path_first(tmp_path, monkeypatch, no_children_left):
    fixture = lambda name: os.path.join(NPU_FIXTURES, name)  # noqa: E731
    write_tool(
        tmp_path,
        "npu-smi",
        {
            "info": fixture("npu-smi_info__910B3_8npu_idle_24.1.rc1__ms-swift.txt"),
            "info -t topo": fixture("npu-smi_info_-t_topo__910B3_8npu_HCCS__ms-swift.txt"),
        },
    )
    write_tool(tmp_path, "nvidia-smi", {})
    monkeypatch.setenv("PATH", str(tmp_path))
    report = read_devices(timeout=30)
    assert report.backend == "npu-smi"
    assert len(report.devices) == 8 and report.device(2).cpu_affinity == "96-119"
    # `info -m` is unsupported by this fake: logic ids follow card order, and the report says so.
    assert len(report.errors) == 1
    assert "npu-smi info -m exited with code 2" in report.errors[0] and "card and chip order" in report.errors[0]


def test_nvidia_smi_when_no_npu_smi(tmp_path, monkeypatch, no_children_left):
    write_tool(
        tmp_path,
        "nvidia-smi",
        {
            "--query-gpu": os.path.join(NVIDIA_FIXTURES, "nvidia-smi_query-gpu_csv__index-memused-memtotal-util_4xRTX-PRO-6000-WS.csv"),
            "topo -m": os.path.join(NVIDIA_FIXTURES, "nvidia-smi_topo_-m__8GPU_NV12_10NIC_tabs__oyanghd.txt"),
        },
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    report = read_devices(timeout=30)
    assert report.backend == "nvidia-smi"
    assert [d.hbm_total_mb for d in report.devices] == [97887] * 4
    assert report.links[1][2] == "NV12"
    assert any("--query-compute-apps" in e for e in report.errors)


def test_nonzero_exit_of_info(tmp_path, no_children_left):
    tool = write_tool(tmp_path, "npu-smi", {"info": os.path.join(NPU_FIXTURES, "npu-smi_info__910B3_8npu_idle_24.1.rc1__ms-swift.txt")}, exit_code=3)
    report = read_devices(npu_smi=tool, timeout=30)
    assert report.devices == []
    assert report.errors[0].startswith("npu-smi info exited with code 3:")


def test_holders_and_health_changes_between_polls(tmp_path):
    from xllm_tui.devices.model import health_changes

    procs = tmp_path / "procs.json"
    procs.write_text(json.dumps([{"pid": os.getpid(), "logic_id": 4, "name": "stray", "memory_mb": 30000}]))
    before = read_devices(npu_smi=SIM, timeout=30, env={"XLLM_SIM_NPU_PROCS": str(procs)})
    assert [p.pid for p in before.holders(4)] == [os.getpid()]
    assert before.holders(4, exclude_pids={os.getpid()}) == []
    assert before.holders(99) == []
    after = read_devices(npu_smi=SIM, timeout=30, env={"XLLM_SIM_NPU_HEALTH": "4=Alarm"})
    assert health_changes(before, after) == [(4, "OK", "Alarm")]
    assert health_changes(None, after) == []
    gone = read_devices(npu_smi="/nonexistent/npu-smi")
    assert [c[0] for c in health_changes(after, gone)] == list(range(16))
