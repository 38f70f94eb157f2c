"""Valid profiles: the two shipped ones reproduce the launch guide, and the format's features work."""

from __future__ import annotations

import json
import os

import pytest

from xllm_tui.cli import main
from xllm_tui.cores import cores_for_rank
from xllm_tui.profile import load_profile, load_profile_or_raise, load_profile_text, parse_duration, split_host_port
from xllm_tui.spec import CoreRule, DeviceSettings
from guide import GUIDE_ENV
from model_dirs import make_model_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A3_8 = os.path.join(REPO, "profiles", "a3-8card.yaml")
A3_16 = os.path.join(REPO, "profiles", "a3-16card-2node.yaml")



def test_a3_8card_loads_without_errors_under_simulate():
    result = load_profile(A3_8, simulate=True)
    assert result.ok and not result.errors, "\n".join(map(str, result.diagnostics))
    # The only complaints on a machine without the cluster's files are the missing paths.
    assert {d.key_path for d in result.warnings} == {"binary", "model", "draft_model", "source[1]", "source[2]"}


def test_a3_8card_without_simulate_fails_only_on_paths_missing_here():
    result = load_profile(A3_8)
    assert result.profile is None
    assert {d.key_path for d in result.errors} == {"binary", "model", "draft_model", "source[1]", "source[2]"}
    assert not result.warnings


def test_a3_8card_is_the_guides_single_machine_launch():
    profile = load_profile_or_raise(A3_8, simulate=True)
    assert profile.name == "a3-8card"
    assert profile.binary == "./myxllm/xllm/build/xllm/core/server/xllm"
    assert profile.model == "/export/home/models/GLM-4.5-w8a8/"
    assert profile.draft_model == "/export/home/models/GLM-4.5-MTP/"
    assert profile.model_id == "glmmoe"
    assert profile.master_node_addr == "11.87.49.110:10015"
    assert profile.base_port == 18994
    assert [(m.host, m.devices) for m in profile.machines] == [("11.87.49.110", tuple(range(8)))]
    assert profile.nnodes == 8
    assert profile.core_rule == CoreRule(kind="per_device", count=12, first=0)
    assert [cores_for_rank(profile.core_rule, d, d) for d in range(8)] == [f"{i*12}-{i*12+11}" for i in range(8)]
    assert (profile.log_dir, profile.log_file) == ("logs", "node_{local_rank}.log")
    # Every flag after --node_rank, in the guide's order and with its values.
    assert profile.flags == (
        ("max_memory_utilization", 0.86),
        ("max_tokens_per_batch", 5000),
        ("max_seqs_per_batch", 256),
        ("communication_backend", "hccl"),
        ("enable_schedule_overlap", True),
        ("enable_prefix_cache", True),
        ("enable_chunked_prefill", True),
        ("enable_acl_graph", True),
        ("draft_model", "/export/home/models/GLM-4.5-MTP/"),
        ("draft_devices", "npu:{device}"),
        ("num_speculative_tokens", 1),
    )
    assert profile.rank_tablefile is None


def test_shipped_environment_is_the_guides():
    profile = load_profile_or_raise(A3_8, simulate=True)
    assert dict(profile.env) == GUIDE_ENV
    assert dict(profile.path_prepend) == {
        "LD_LIBRARY_PATH": (  # final order: the guide's second export (libtorch_npu) ends up first
            "/usr/local/libtorch_npu/lib",
            "/usr/local/Ascend/ascend-toolkit/latest/opp/vendors/xllm/op_api/lib/",
        ),
        "LD_PRELOAD": ("/usr/lib64/libjemalloc.so.2",),
    }
    assert profile.source_scripts == (
        os.path.join(REPO, "profiles", "base", "python-paths.sh"),
        "/usr/local/Ascend/ascend-toolkit/set_env.sh",
        "/usr/local/Ascend/nnal/atb/set_env.sh",
    )
    determinism, profiling = profile.toggle("determinism"), profile.toggle("profiling")
    assert determinism is not None and not determinism.enabled
    assert determinism.env == (("LCCL_DETERMINISTIC", "1"), ("HCCL_DETERMINISTIC", "true"), ("ATB_MATMUL_SHUFFLE_K_ENABLE", "0"))
    assert profiling is not None and not profiling.enabled
    assert profiling.env == (("PROFILING_MODE", "dynamic"),)
    assert profiling.remove == ("~/dynamic_profiling_socket_*",)
    clear, init = profile.pre_launch
    assert clear.remove == ("/root/atb/log/", "/root/ascend/log/", "core.*") and clear.when == "always"
    assert init.when == "after_reboot" and init.run[:2] == ("python", "-c") and "set_device(i)" in init.run[2]


def test_a3_16card_2node_is_the_guides_two_machine_launch():
    result = load_profile(A3_16, simulate=True)
    assert result.ok, "\n".join(map(str, result.diagnostics))
    profile = result.profile
    assert profile.nnodes == 16
    first, second = profile.machines
    assert (first.host, second.host) == ("11.87.49.110", "11.87.49.111")
    assert first.devices == second.devices == tuple(range(8))
    assert first.device_ips == tuple(f"11.86.23.{210 + i}" for i in range(8))
    assert second.device_ips == tuple(f"11.87.63.{202 + i}" for i in range(8))
    assert profile.draft_model is None
    assert profile.rank_tablefile == "hccl_8+8.json"
    assert profile.master_node_addr == "11.87.49.110:10015"
    assert dict(profile.env)["HCCL_IF_BASE_PORT"] == "2864"
    assert profile.restart.scope == "group"
    flags = dict(profile.flags)
    assert flags["max_tokens_per_batch"] == 20000
    for name in ("enable_prefix_cache", "enable_chunked_prefill", "enable_schedule_overlap", "enable_acl_graph"):
        assert flags[name] is False
    assert profile.flags[-1] == ("rank_tablefile", "hccl_8+8.json")
    assert not {"draft_model", "draft_devices", "num_speculative_tokens"} & set(flags)


def test_extends_merges_and_null_removes(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "binary: xllm\nmodel: /m\nmaster_node_addr: 127.0.0.1:9000\nbase_port: 9100\n"
        "machines: [{host: 127.0.0.1, devices: 0-1}]\n"
        "env: {A: '1', B: '2'}\nflags: {max_seqs_per_batch: 8, enable_shm: true}\n"
    )
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nenv: {B: '3', C: x, A: null}\nflags: {max_seqs_per_batch: 16, block_size: 64}\n")
    profile = load_profile_or_raise(str(child), simulate=True)
    assert profile.env == (("B", "3"), ("C", "x"))
    assert profile.flags == (("max_seqs_per_batch", 16), ("enable_shm", True), ("block_size", 64))
    assert profile.name == "child"
    assert profile.source_path == str(child)


def test_env_values_are_kept_as_written(tmp_path):
    text = (
        "binary: xllm\nmodel: /m\nmaster_node_addr: 127.0.0.1:9000\nbase_port: 9100\n"
        "machines: [{host: localhost, devices: [3]}]\n"
        "env:\n  A: 0.960\n  B: on\n  C: '$HOME/x'\n  D: 007\n  E: ''\n"
    )
    profile = load_profile_text(text, str(tmp_path / "p.yaml"), simulate=True).profile
    assert profile is not None
    assert profile.env == (("A", "0.960"), ("B", "on"), ("C", "$HOME/x"), ("D", "007"), ("E", ""))


def test_defaults_and_explicit_cores(tmp_path):
    text = (
        "binary: xllm\nmodel: /m\nmaster_node_addr: '[::1]:9000'\nbase_port: 9100\n"
        "machines:\n  - host: '::1'\n    devices: [4, 5]\n    cores: ['0-3', '8,9']\n    name: left\n"
        "cores: none\nrestart: {mode: manual, backoff: {initial: 500ms, max: 1m30s}}\nstop: {grace: 3}\n"
    )
    result = load_profile_text(text, str(tmp_path / "p.yaml"), simulate=True)
    profile = result.profile
    assert profile is not None, "\n".join(map(str, result.diagnostics))
    assert profile.machines[0].cores == ("0-3", "8-9")
    assert profile.machines[0].name == "left"
    assert profile.core_rule.kind == "none"
    assert profile.restart.mode == "manual" and profile.restart.scope == "group"
    assert (profile.restart.backoff_initial_s, profile.restart.backoff_max_s) == (0.5, 90.0)
    assert profile.stop_grace_s == 3.0
    assert profile.log_file == "node_{rank}.log" and profile.working_dir is None


@pytest.mark.parametrize("value, seconds", [(15, 15.0), (1.5, 1.5), ("15s", 15.0), ("2m", 120.0), ("1h30m", 5400.0), ("250ms", 0.25), ("7", 7.0)])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "fast", "-1s", -2, True, "2 weeks", "1m-5s"])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_split_host_port():
    assert split_host_port("11.87.49.110:10015") == ("11.87.49.110", 10015)
    assert split_host_port("[fe80::1]:80") == ("fe80::1", 80)
    assert split_host_port("node-0.cluster:1") == ("node-0.cluster", 1)
    for bad in ("11.87.49.110", "::1:80", "host:0", ":80", "host:http", "bad_host!:80"):
        with pytest.raises(ValueError):
            split_host_port(bad)


# ---- the validate command


def test_validate_simulated_shipped_profile_exits_1_with_path_warnings(capsys):
    assert main(["validate", A3_8, "--simulate"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{A3_8}: profile 'a3-8card' (8 ranks on 1 machine): 0 errors, 5 warnings"
    assert any(line.startswith(f"{A3_8}:8:14: warning: draft_model: draft model directory") for line in out)


def test_validate_clean_profile_exits_0(tmp_path, capsys):
    binary = tmp_path / "xllm"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    path = tmp_path / "ok.yaml"
    model = make_model_dir(tmp_path / "model")
    path.write_text(
        f"binary: {binary}\nmodel: {model}\nmaster_node_addr: 127.0.0.1:9000\nbase_port: 9100\n"
        "machines: [{host: 127.0.0.1, devices: 0-1}]\n"
    )
    assert main(["validate", str(path), "--no-devices"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{path}: profile 'ok' (2 ranks on 1 machine): 0 errors, 0 warnings"
    # Without a device tool the binding check is only a note: the exit status stays 0.
    assert main(["validate", str(path), "--npu-smi", str(tmp_path / "no-npu-smi")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{path}: profile 'ok' (2 ranks on 1 machine): 0 errors, 0 warnings"
    # The stand-in binary prints no --helpxml: a note too (binary_flags.py), never a warning.
    assert out[:-1] == [f"{path}: note: flags not checked against the binary: {binary} printed no flag list on "
                        "--helpxml (exit status 0)",
                        f"{path}: note: devices not read: {tmp_path / 'no-npu-smi'} not found or not executable; "
                        "binding not checked"]


def test_validate_errors_exit_2_and_json(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("binary: x\nmodel: /m\nmaster_node_addr: 127.0.0.1:9000\nbase_port: 9100\nmachines: []\nflgas: {}\n")
    assert main(["validate", str(path), "--simulate"]) == 2
    out = capsys.readouterr().out
    assert f"{path}:6:1: error: flgas: unknown key 'flgas' (did you mean 'flags'?)" in out
    assert out.rstrip().endswith("2 errors, 2 warnings; nothing can be launched until the errors are fixed")

    assert main(["validate", str(path), "--simulate", "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["exit"] == 2 and document["ok"] is False
    [entry] = document["results"]
    assert entry["profile"] is None and entry["errors"] == 2
    assert {"severity": "error", "file": str(path), "line": 6, "column": 1, "key": "flgas",
            "message": "unknown key 'flgas' (did you mean 'flags'?)"} in entry["diagnostics"]


def test_validate_json_of_a_shipped_profile(capsys):
    assert main(["validate", A3_16, "--simulate", "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    summary = document["results"][0]["profile"]
    assert summary["nnodes"] == 16 and [m["host"] for m in summary["machines"]] == ["11.87.49.110", "11.87.49.111"]
    assert summary["toggles"] == {"determinism": False, "profiling": False}


def test_validate_several_files_and_missing_file(tmp_path, capsys):
    missing = str(tmp_path / "nope.yaml")
    assert main(["validate", A3_8, missing, "--simulate"]) == 2
    out = capsys.readouterr().out
    assert f"{missing}: error: profile file not found" in out
    assert "profile 'a3-8card'" in out


def test_devices_key_and_topology_count(tmp_path):
    tool = tmp_path / "bin" / "npu-smi"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    path = tmp_path / "p.yaml"
    path.write_text(
        "binary: /bin/sh\nmodel: /\nmaster_node_addr: 127.0.0.1:9000\nbase_port: 9100\n"
        "machines: [{host: 127.0.0.1, devices: 0-1}]\n"
        "cores: {rule: topology, count: 6}\n"
        "devices: {backend: npu-smi, npu_smi: bin/npu-smi, poll_interval: 2s, timeout: 500ms}\n"
    )
    result = load_profile(str(path))
    assert result.ok, [str(d) for d in result.diagnostics]
    assert result.diagnostics == []  # count is meaningful with topology: no "ignored" warning
    profile = result.profile
    assert profile.core_rule == CoreRule(kind="topology", count=6, first=0)
    assert profile.devices == DeviceSettings(backend="npu-smi", npu_smi=str(tool), nvidia_smi=None,
                                             poll_interval_s=2.0, timeout_s=0.5)
    # a default profile reads devices automatically every 10 s
    assert load_profile(A3_8, simulate=True).profile.devices == DeviceSettings()
    # later checks can point at a key's line, or at its nearest parent that is written
    assert result.locate("cores") == (str(path), 6, 8)
    assert result.locate("machines[0].cores[1]") == (str(path), 5, 12)  # the machine: no cores written
    assert result.diagnostic("warning", "devices.npu_smi", "x").line == 7
