"""`xllm-tui devices`: what the operator sees, the JSON scripts read, and the exit codes."""

from __future__ import annotations

import json
import os
import sys
import textwrap

from xllm_tui.cli import main

NPU_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "npu-smi")


def fake_npu_smi(directory) -> str:
    """An npu-smi printing the ms-swift 910B3 machine (whose NPU 0 is near cores 144-167)."""
    outputs = {
        "info": os.path.join(NPU_FIXTURES, "npu-smi_info__910B3_8npu_idle_24.1.rc1__ms-swift.txt"),
        "info -m": os.path.join(NPU_FIXTURES, "npu-smi_info_-m__910B4_Atlas800IA2_8npu__wang-junjian.txt"),
        "info -t topo": os.path.join(NPU_FIXTURES, "npu-smi_info_-t_topo__910B3_8npu_HCCS__ms-swift.txt"),
    }
    path = directory / "npu-smi"
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import sys
            with open({outputs!r}[" ".join(sys.argv[1:])], encoding="utf-8") as handle:
                sys.stdout.write(handle.read())
            """
        )
    )
    path.chmod(0o755)
    return str(path)


def test_simulated_table_and_topology(capsys):
    assert main(["devices", "--simulate"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "npu-smi 25.2.0: 16 devices"
    assert lines[1].split() == ["NPU", "CARD/CHIP", "NAME", "HEALTH", "TEMP", "POWER", "AICORE", "HBM", "PROCESSES"]
    row1 = lines[3].split()
    assert row1[:4] == ["1", "0/1", "Ascend910", "OK"] and row1[5] == "-"  # die 1: no power
    assert "/65536 MB" in lines[3] and "5%" in lines[3]
    assert "Topology (links between NPUs, CPU affinity):" in out
    topo_row = next(line for line in lines if line.startswith("0    X"))
    assert topo_row.split()[:3] == ["0", "X", "SIO"] and topo_row.endswith("0-47")


def test_json_has_the_documented_layout(capsys):
    assert main(["devices", "--simulate", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["backend", "devices", "links", "errors"]
    assert len(data["devices"]) == 16
    assert data["devices"][1]["power_w"] is None
    assert data["links"]["0"]["1"] == "SIO"
    assert data["errors"] == []


def test_devices_unavailable_exit_1(capsys):
    assert main(["devices", "--npu-smi", "/nonexistent/npu-smi"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "devices unavailable:" in captured.err and "/nonexistent/npu-smi not found" in captured.err
    assert main(["devices", "--npu-smi", "/nonexistent/npu-smi", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["devices"] == [] and "not found" in data["errors"][0]


def test_profile_ranks_on_devices_binding_ok(capsys, repo_root):
    profile = os.path.join(repo_root, "profiles", "a3-8card.yaml")
    assert main(["devices", profile, "--simulate"]) == 0
    out = capsys.readouterr().out
    assert "profile a3-8card" in out
    device3 = next(line for line in out.splitlines() if line.startswith("3 "))
    assert " r3 " in device3
    assert "rank 3: NPU 3, cores 36-47, affinity 0-47" in out
    assert "ok: every bound rank's cores are within its NPU's CPU affinity" in out


def test_profile_binding_mismatch_on_a_real_topology(capsys, repo_root, tmp_path):
    profile = os.path.join(repo_root, "profiles", "a3-8card.yaml")
    tool = fake_npu_smi(tmp_path)
    assert main(["devices", profile, "--simulate", "--npu-smi", tool]) == 0
    out = capsys.readouterr().out
    assert "warning: rank 0 runs on cores 0-11, all outside NPU 0's CPU affinity 144-167" in out
    assert main(["devices", profile, "--simulate", "--npu-smi", tool, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ranks"][2] == {"rank": 2, "device": 2, "cores": "24-35", "machine": "11.87.49.110"}
    binding = {issue["rank"]: issue for issue in data["binding"]}
    assert binding[2]["affinity"] == "96-119" and binding[2]["outside"] == "24-35"
    assert data["devices"][2]["cpu_affinity"] == "96-119"


def test_bad_profile_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["devices", str(bad), "--simulate"]) == 2
    assert "xllm-tui devices:" in capsys.readouterr().err


def test_profile_with_devices_unavailable_exit_1(capsys, repo_root):
    profile = os.path.join(repo_root, "profiles", "a3-8card.yaml")
    assert main(["devices", profile, "--simulate", "--npu-smi", "/nonexistent/npu-smi"]) == 1
    assert "devices unavailable:" in capsys.readouterr().err


def test_unknown_machine_exit_2(capsys, repo_root):
    profile = os.path.join(repo_root, "profiles", "a3-16card-2node.yaml")
    assert main(["devices", profile, "--simulate", "--machine", "10.9.9.9"]) == 2
    assert "no machine '10.9.9.9'" in capsys.readouterr().err
    assert main(["devices", profile, "--simulate", "--machine", "11.87.49.111"]) == 0
    out = capsys.readouterr().out
    assert "machine 11.87.49.111" in out and "rank 8: NPU 0, cores 0-11" in out
