"""Bad profiles: each one must be refused (or warned about) with its message, file, line and key path."""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass

import pytest

from xllm_tui.profile import ProfileError, load_profile, load_profile_or_raise, load_profile_text

# Seven lines; the cases below append from line 8 on.
HEAD = """\
binary: /opt/xllm/bin/xllm
model: /models/glm
master_node_addr: 10.0.0.1:10015
base_port: 18994
machines:
  - host: 10.0.0.1
    devices: 0-3
"""


@dataclass
class Case:
    id: str
    text: str
    severity: str
    key: str
    line: int | None
    message: str
    column: int | None = None


def head_without(key: str) -> str:
    return "".join(line + "\n" for line in HEAD.splitlines() if not line.startswith(key))


CASES = [
    Case("unknown top-level key", HEAD + "flgas:\n  nnodes: 4\n", "error", "flgas", 8,
         "unknown key 'flgas' (did you mean 'flags'?)", column=1),
    Case("flag value of the wrong type", HEAD + "flags:\n  max_tokens_per_batch: abc\n", "error",
         "flags.max_tokens_per_batch", 9, "expected an integer, got 'abc'", column=25),
    Case("boolean flag that is not a boolean", HEAD + "flags:\n  enable_prefix_cache: maybe\n", "error",
         "flags.enable_prefix_cache", 9, "expected a boolean (true or false), got 'maybe'"),
    Case("double flag that is not a number", HEAD + "flags:\n  max_memory_utilization: high\n", "error",
         "flags.max_memory_utilization", 9, "expected a number, got 'high'"),
    Case("derived flag node_rank", HEAD + "flags:\n  node_rank: 3\n", "error", "flags.node_rank", 9,
         "'node_rank' is set by the launch for every rank"),
    Case("derived flag port", HEAD + "flags:\n  max_seqs_per_batch: 8\n  port: 9000\n", "error", "flags.port", 10,
         "it is base_port + the rank's index on its machine"),
    Case("nnodes contradicting the machines", HEAD + "flags:\n  nnodes: 16\n", "error", "flags.nnodes", 9,
         "nnodes is 16 but the machines run 4 rank(s)", column=11),
    Case("flag name that is not an identifier", HEAD + "flags:\n  max-tokens-per-batch: 3\n", "error",
         "flags.max-tokens-per-batch", 9, "not a valid gflags name (letters, digits and underscores only; "
         "did you mean 'max_tokens_per_batch'?)"),
    Case("flag written with dashes", HEAD + "flags:\n  --enable_shm: true\n", "error", "flags.--enable_shm", 9,
         "write the flag name without dashes: 'enable_shm'"),
    Case("unknown flag is a warning with the closest name", HEAD + "flags:\n  max_token_per_batch: 5\n", "warning",
         "flags.max_token_per_batch", 9, "unknown xllm flag 'max_token_per_batch' (did you mean "
         "'max_tokens_per_batch'?); gflags rejects unknown flags at start-up"),
    Case("unknown placeholder in a flag", HEAD + "flags:\n  draft_devices: 'npu:{dev}'\n", "error",
         "flags.draft_devices", 9, "unknown placeholder {dev} in 'npu:{dev}' (did you mean 'device'?)"),
    Case("draft model pinned to one NPU for every rank", HEAD + "draft_model: /m/mtp\nflags:\n  draft_devices: npu:0\n",
         "warning", "flags.draft_devices", 10, "every rank would run its draft model on npu:0"),
    Case("derived flag devices", HEAD + "flags:\n  devices: npu:0\n", "error", "flags.devices", 9,
         "it is 'npu:<device>' from each machine's 'devices'"),
    Case("derived flag master_node_addr", HEAD + "flags:\n  master_node_addr: 10.0.0.1:1\n", "error",
         "flags.master_node_addr", 9, "set the top-level key 'master_node_addr'"),
    # device_id arrives in v0.10.0 (xllm/core/framework/config/*), not on the guide's commit.
    Case("device_id on the guide's release", HEAD + "flags:\n  device_id: '0'\n", "warning",
         "flags.device_id", 9, "this is v0.10.0's name for devices; xllm 31b7cafd rejects it"),
    Case("device_id next to the derived --devices", HEAD + "xllm_release: v0.10.0\nflags:\n  device_id: 0\n",
         "warning", "flags.device_id", 10, "device_id (v0.10.0) replaces --devices"),
    Case("a flag of a newer release is an error once the release is named",
         HEAD + "xllm_release: '0.7'\nflags:\n  enable_graph: true\n", "error", "flags.enable_graph", 10,
         "this is v0.8.0's name for enable_acl_graph; xllm v0.7.2 rejects it"),
    Case("a flag removed before the named release", HEAD + "xllm_release: v0.9.0\nflags:\n  xservice_addr: x\n",
         "error", "flags.xservice_addr", 10, "a flag of v0.7.0 to 31b7cafd, removed before v0.9.0"),
    Case("an unknown release", HEAD + "xllm_release: v0.7.9\n", "error", "xllm_release", 8,
         "unknown xllm release 'v0.7.9'"),
    Case("enable_graph next to enable_acl_graph",
         HEAD + "flags:\n  enable_acl_graph: true\n  enable_graph: true\n", "warning", "flags.enable_graph", 10,
         "both enable_graph (xllm v0.8 and later) and enable_acl_graph (v0.7) are set"),
    Case("device listed twice", HEAD.replace("devices: 0-3", "devices: [0, 1, 1]"), "error",
         "machines[0].devices[2]", 7, "device 1 is listed twice on machine 10.0.0.1 (first at line 7)", column=21),
    Case("unparseable device range", HEAD.replace("devices: 0-3", "devices: 0-x"), "error", "machines[0].devices",
         7, "cannot read '0-x' in device list '0-x'"),
    Case("machine listed twice", HEAD + "  - host: 10.0.0.1\n    devices: 4-7\n", "error", "machines[1].host", 8,
         "machine 10.0.0.1 is listed twice (also machines[0])"),
    Case("unknown machine key", HEAD + "    devcie_ips: [10.1.0.1]\n", "error", "machines[0].devcie_ips", 8,
         "unknown key 'devcie_ips' (did you mean 'device_ips'?)", column=5),
    Case("master port duplicates a rank port", HEAD.replace("10.0.0.1:10015", "10.0.0.1:18995"), "error",
         "master_node_addr", 3, "duplicate port 18995: it is also the --port of local rank 1 on 10.0.0.1"),
    Case("master_node_addr without a port", HEAD.replace("10.0.0.1:10015", "10.0.0.1"), "error",
         "master_node_addr", 3, "'10.0.0.1' is not host:port, e.g. 11.87.49.110:10015", column=19),
    Case("master_node_addr port out of range", HEAD.replace("10.0.0.1:10015", "10.0.0.1:70000"), "error",
         "master_node_addr", 3, "port 70000 in '10.0.0.1:70000' is out of range 1-65535"),
    Case("master host not one of the machines", HEAD.replace("10.0.0.1:10015", "10.0.0.9:10015"), "warning",
         "master_node_addr", 3, "host 10.0.0.9 is not one of the machines (10.0.0.1)"),
    Case("malformed machine address", HEAD.replace("host: 10.0.0.1", "host: 10.0.0.300"), "error",
         "machines[0].host", 6, "'10.0.0.300' is not an IPv4/IPv6 address or a hostname", column=11),
    Case("base_port out of range", HEAD.replace("base_port: 18994", "base_port: 70000"), "error", "base_port", 4,
         "70000 is out of range (1-65535)"),
    Case("ports run past 65535", HEAD.replace("base_port: 18994", "base_port: 65534"), "error", "base_port", 4,
         "base_port 65534 + 4 ranks runs past port 65535"),
    Case("base_port of the wrong type", HEAD.replace("base_port: 18994", "base_port: '18994a'"), "error",
         "base_port", 4, "expected an integer, got '18994a'"),
    Case("device_ips count differs from devices", HEAD + "    device_ips: [10.1.0.1, 10.1.0.2]\n", "error",
         "machines[0].device_ips", 8, "2 device_ips for 4 devices"),
    Case("device_ips entry not an address", HEAD + "    device_ips: [10.1.0.1, 10.1.0.2, npu2, 10.1.0.4]\n",
         "error", "machines[0].device_ips[2]", 8, "'npu2' is not an IP address"),
    Case("overlapping explicit core lists", HEAD + "    cores: ['0-11', '10-21', '24-35', '36-47']\n", "error",
         "machines[0].cores[1]", 8, "cores 10-21 of device 1 overlap cores 0-11 of device 0 on 10.0.0.1"),
    Case("unparseable explicit core list", HEAD + "    cores: ['0-11', '12-x', '24-35', '36-47']\n", "error",
         "machines[0].cores[1]", 8, "cannot read '12-x' in core list '12-x'"),
    Case("backwards core range", HEAD + "    cores: ['0-11', '23-12', '24-35', '36-47']\n", "error",
         "machines[0].cores[1]", 8, "range '23-12' in core list '23-12' runs backwards; write '12-23'"),
    Case("core list count differs from devices", HEAD + "    cores: ['0-11']\n", "error", "machines[0].cores", 8,
         "1 core lists for 4 devices"),
    Case("core count of zero", HEAD + "cores: {rule: per_device, count: 0}\n", "error", "cores.count", 8,
         "0 is out of range (>= 1)"),
    Case("unknown core rule", HEAD + "cores:\n  rule: per_socket\n", "error", "cores.rule", 9,
         "'per_socket' is not one of per_device, per_rank, topology, none"),
    Case("env value that is a list", HEAD + "env:\n  OMP_NUM_THREADS: [12]\n", "error", "env.OMP_NUM_THREADS", 9,
         "an environment value must be a single value (string or number), got a list"),
    Case("env value missing", HEAD + "env:\n  HCCL_EXEC_TIMEOUT:\n", "error", "env.HCCL_EXEC_TIMEOUT", 9,
         "no value; write '' for an empty value"),
    Case("env name invalid", HEAD + "env:\n  1HCCL: x\n", "error", "env.1HCCL", 9,
         "'1HCCL' is not a valid environment variable name"),
    Case("toggle defined twice",
         HEAD + "toggles:\n  determinism:\n    env: {LCCL_DETERMINISTIC: 1}\n  determinism:\n    env: {A: 1}\n",
         "error", "toggles.determinism", 11, "duplicate key 'determinism' (first defined at line 9)", column=3),
    Case("toggle variable also in the base env",
         HEAD + "env:\n  HCCL_DETERMINISTIC: 'false'\ntoggles:\n  determinism:\n    env:\n      HCCL_DETERMINISTIC: true\n",
         "warning", "toggles.determinism.env.HCCL_DETERMINISTIC", 13,
         "HCCL_DETERMINISTIC is also in the base env ('false'); when 'determinism' is on, its value 'true' wins"),
    Case("unknown toggle key", HEAD + "toggles:\n  profiling:\n    enabeld: true\n    env: {PROFILING_MODE: dynamic}\n",
         "error", "toggles.profiling.enabeld", 10, "unknown key 'enabeld' (did you mean 'enabled'?)"),
    Case("pre-launch run as a shell string",
         HEAD + "pre_launch:\n  - name: init\n    run: python -c 'import torch_npu'\n", "error", "pre_launch[0].run",
         10, "run must be a list of arguments, never a shell string"),
    Case("pre-launch removal of /", HEAD + "pre_launch:\n  - name: clean\n    remove: [core.*, /]\n", "error",
         "pre_launch[0].remove", 10, "refusing to remove '/'"),
    Case("pre-launch step with nothing to do", HEAD + "pre_launch:\n  - name: nothing\n", "error", "pre_launch[0]",
         9, "a step needs 'remove' (globs to delete) and/or 'run' (an argv list)"),
    Case("bad duration", HEAD + "stop:\n  grace: 15 parsecs\n", "error", "stop.grace", 9,
         "expected a duration such as 15, '15s', '2m' or '1h30m', got '15 parsecs'"),
    Case("bad restart mode", HEAD + "restart:\n  mode: always\n", "error", "restart.mode", 9,
         "'always' is not one of manual, on-failure"),
    Case("backoff initial above max", HEAD + "restart:\n  backoff: {initial: 5m, max: 1m}\n", "error",
         "restart.backoff", 9, "initial delay 300s is longer than max 60s"),
    Case("one log file for every rank", HEAD + "logs:\n  file: xllm.log\n", "error", "logs.file", 9,
         "every rank would write the same file 'xllm.log'; include {rank}"),
    Case("placeholder in the log directory", HEAD + "logs:\n  dir: logs/{host}\n", "error", "logs.dir", 9,
         "one directory for all ranks: put {rank} and the like in logs.file", column=8),
    Case("two YAML documents in one profile", HEAD + "---\nflags: {}\n", "error", "", 8,
         "invalid YAML: expected a single document in the stream, but found another document"),
    Case("YAML syntax error", HEAD + "flags:\n  max_seqs_per_batch: [1, 2\n", "error", "", 10,
         "invalid YAML: expected ',' or ']', but got '<stream end>'"),
    Case("tab indentation", HEAD + "env:\n\tFOO: 1\n", "error", "", 9, "invalid YAML: found character '\\t'"),
    Case("top level is a list", "- binary: x\n- model: y\n", "error", "", 1,
         "the top level of a profile must be a mapping of settings (key: value), got a list"),
    Case("empty profile", "# nothing yet\n", "error", "", 1, "the profile is empty"),
    Case("missing required key", head_without("master_node_addr"), "error", "master_node_addr", 1,
         "missing required key 'master_node_addr' (e.g. master_node_addr: 11.87.49.110:10015)"),
    Case("machines empty", head_without("  - host").replace("    devices: 0-3\n", "").replace("machines:", "machines: []"),
         "error", "machines", 5, "no machines; add at least one"),
    Case("machines not a list", HEAD.split("machines:")[0] + "machines: 10.0.0.1\n", "error", "machines", 5,
         "expected a list of machines, got '10.0.0.1'"),
    Case("name unusable as a directory", HEAD + "name: a3/8card\n", "error", "name", 8,
         "'a3/8card' may only hold letters, digits"),
    Case("rank table without device_ips",
         HEAD + "  - host: 10.0.0.2\n    devices: 0-3\nrank_tablefile: hccl.json\n", "error", "machines[0].device_ips",
         6, "machine 10.0.0.1 has no device_ips; the HCCL rank table needs each NPU's address"),
    Case("scope rank in a multi-rank world", HEAD + "restart:\n  scope: rank\n", "warning", "restart.scope", 9,
         "the ranks of one xllm world fail together"),
    # the devices: key (which tool reads the NPUs)
    Case("devices key given NPU ids", HEAD + "devices: 0-7\n", "error", "devices", 8,
         "(the NPU ids a machine runs go under its own 'devices' in machines)", column=10),
    Case("unknown device backend", HEAD + "devices:\n  backend: npu\n", "error", "devices.backend", 9,
         "'npu' is not one of auto, npu-smi, nvidia-smi (did you mean 'npu-smi'?)", column=12),
    Case("unknown key under devices", HEAD + "devices:\n  npu-smi: /usr/local/sbin/npu-smi\n", "error",
         "devices.npu-smi", 9, "unknown key 'npu-smi' (did you mean 'npu_smi'?)"),
    Case("zero poll interval", HEAD + "devices:\n  poll_interval: 0s\n", "error", "devices.poll_interval", 9,
         "must be longer than 0 (e.g. 10s)"),
    Case("device timeout not a duration", HEAD + "devices:\n  timeout: soon\n", "error", "devices.timeout", 9,
         "expected a duration such as 15, '15s', '2m' or '1h30m', got 'soon'"),
    Case("npu-smi path missing here", HEAD + "devices:\n  npu_smi: /nonexistent/sbin/npu-smi\n", "warning",
         "devices.npu_smi", 9, "npu-smi /nonexistent/sbin/npu-smi not found on this machine: devices cannot be read here"),
    Case("npu-smi path with the nvidia backend", HEAD + "devices:\n  backend: nvidia-smi\n  npu_smi: npu-smi\n",
         "warning", "devices.npu_smi", 10, "ignored with backend 'nvidia-smi'"),
    Case("first with the topology rule", HEAD + "cores: {rule: topology, count: 6, first: 4}\n", "warning",
         "cores.first", 8, "ignored with rule 'topology'"),
]


def _find(result, case: Case):
    return [d for d in result.diagnostics if d.severity == case.severity and d.key_path == case.key
            and case.message in d.message]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_profile_is_reported_with_message_and_location(case: Case, tmp_path):
    path = str(tmp_path / "bad.yaml")
    result = load_profile_text(case.text, path, simulate=True)
    matches = _find(result, case)
    assert matches, f"expected {case.severity} {case.key!r} {case.message!r}; got:\n" + "\n".join(map(str, result.diagnostics))
    found = matches[0]
    assert found.file == path
    assert found.line == case.line, str(found)
    if case.column is not None:
        assert found.column == case.column, str(found)
    if case.severity == "error":
        assert result.profile is None and not result.ok
    else:
        assert result.ok and result.profile is not None, "\n".join(map(str, result.diagnostics))


def test_there_are_at_least_25_distinct_bad_profiles():
    assert len({c.text for c in CASES}) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_diagnostic_renders_like_a_linter(tmp_path):
    path = str(tmp_path / "x.yaml")
    result = load_profile_text(HEAD + "flags:\n  max_tokens_per_batch: abc\n", path)
    text = [str(d) for d in result.errors]
    assert f"{path}:9:25: error: flags.max_tokens_per_batch: expected an integer, got 'abc'" in text


def test_missing_binary_and_model_are_errors_unless_simulated(tmp_path):
    path = str(tmp_path / "p.yaml")
    real = load_profile_text(HEAD, path)
    assert not real.ok
    binary = [d for d in real.errors if d.key_path == "binary"]
    model = [d for d in real.errors if d.key_path == "model"]
    assert binary and binary[0].line == 1 and binary[0].column == 9
    assert "xllm binary /opt/xllm/bin/xllm not found" in binary[0].message
    assert model and model[0].line == 2 and "model directory /models/glm not found" in model[0].message

    simulated = load_profile_text(HEAD, path, simulate=True)
    assert simulated.ok and not simulated.errors
    assert {d.key_path for d in simulated.warnings} >= {"binary", "model"}
    assert all("fine under --simulate" in d.message for d in simulated.warnings)


def test_binary_that_is_not_executable(tmp_path):
    binary = tmp_path / "xllm"
    binary.write_text("not a program")
    (tmp_path / "model").mkdir()
    text = HEAD.replace("/opt/xllm/bin/xllm", str(binary)).replace("/models/glm", str(tmp_path / "model"))
    result = load_profile_text(text, str(tmp_path / "p.yaml"))
    assert [d.message for d in result.errors] == [f"{binary} is not an executable file"]
    binary.chmod(0o755)
    assert load_profile_text(text, str(tmp_path / "p.yaml")).diagnostics == []


def test_error_in_a_base_profile_names_the_base_file(tmp_path):
    base = tmp_path / "base" / "common.yaml"
    base.parent.mkdir()
    base.write_text("env:\n  A: 1\nflgas:\n  v: 1\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base/common.yaml\n" + HEAD)
    result = load_profile(str(child), simulate=True)
    [error] = result.errors
    assert error.file == os.path.join(str(tmp_path), "base", "common.yaml")
    assert (error.line, error.column, error.key_path) == (3, 1, "flgas")
    assert error.message == "unknown key 'flgas' (did you mean 'flags'?)"


def test_override_in_child_is_located_in_the_child(tmp_path):
    (tmp_path / "base.yaml").write_text(HEAD + "flags:\n  max_tokens_per_batch: 5000\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nflags:\n  max_tokens_per_batch: lots\n")
    [error] = load_profile(str(child), simulate=True).errors
    assert (error.file, error.line, error.key_path) == (str(child), 3, "flags.max_tokens_per_batch")


def test_extends_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n" + HEAD)
    (tmp_path / "b.yaml").write_text("# b\nextends: a.yaml\n")
    result = load_profile(str(tmp_path / "a.yaml"), simulate=True)
    [error] = result.errors
    assert error.file == str(tmp_path / "b.yaml") and error.line == 2 and error.key_path == "extends"
    assert error.message.startswith("extends cycle: a.yaml -> b.yaml -> a.yaml")


def test_extends_missing_base(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(HEAD + "extends: nowhere.yaml\n")
    [error] = load_profile(str(path), simulate=True).errors
    assert (error.line, error.column, error.key_path) == (8, 10, "extends")
    assert "base profile 'nowhere.yaml' not found" in error.message


def test_unreadable_inputs_never_raise(tmp_path):
    missing = load_profile(str(tmp_path / "none.yaml"))
    assert not missing.ok and missing.errors[0].message == "profile file not found"
    assert load_profile(str(tmp_path)).errors[0].message == "is a directory, not a profile file"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert "not a UTF-8 text file" in load_profile(str(binary)).errors[0].message
    recursive = tmp_path / "loop.yaml"
    recursive.write_text("a: &x [*x]\n")
    assert not load_profile(str(recursive)).ok


def test_load_profile_or_raise_carries_the_diagnostics(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + "flags:\n  nnodes: 2\n")
    with pytest.raises(ProfileError) as caught:
        load_profile_or_raise(str(path), simulate=True)
    assert any(d.key_path == "flags.nnodes" and d.line == 9 for d in caught.value.errors)
    assert f"{path}:9:11: error: flags.nnodes: nnodes is 2" in str(caught.value)


def test_several_errors_are_all_reported_in_line_order(tmp_path):
    text = textwrap.dedent(
        """\
        binary: /opt/xllm
        modle: /models/x
        master_node_addr: nowhere
        base_port: 0
        machines:
          - host: 10.0.0.1
            devices: [0, 0]
        """
    )
    result = load_profile_text(text, str(tmp_path / "p.yaml"), simulate=True)
    located = [(d.line, d.key_path) for d in result.errors]
    assert located == sorted(located)
    assert (2, "modle") in located and (1, "model") in located
    assert (3, "master_node_addr") in located and (4, "base_port") in located
    assert (7, "machines[0].devices[1]") in located


def test_a_broken_machine_entry_does_not_cascade_into_other_complaints(tmp_path):
    result = load_profile_text(HEAD.replace("devices: 0-3", "devices: [0, 1, 1]"), str(tmp_path / "p.yaml"), simulate=True)
    assert [d.key_path for d in result.errors] == ["machines[0].devices[2]"]
    assert [d.key_path for d in result.warnings if "--simulate" not in d.message] == []


def test_yaml_anchors_and_merge_keys_work(tmp_path):
    text = HEAD + "toggles:\n  a: &common\n    env: {X: 1}\n  b:\n    <<: *common\n    description: like a\n"
    result = load_profile_text(text, str(tmp_path / "p.yaml"), simulate=True)
    assert result.ok, "\n".join(map(str, result.diagnostics))
    assert [(t.name, t.env, t.description) for t in result.profile.toggles] == [
        ("a", (("X", "1"),), ""), ("b", (("X", "1"),), "like a")
    ]


def test_braces_that_are_not_placeholders_are_kept(tmp_path):
    text = HEAD + "flags:\n  config_json_file: '{\"a\": 1}'\n  vmodule: 'x={rank}'\n"
    result = load_profile_text(text, str(tmp_path / "p.yaml"), simulate=True)
    assert result.ok, "\n".join(map(str, result.diagnostics))
    assert dict(result.profile.flags) == {"config_json_file": '{"a": 1}', "vmodule": "x={rank}"}


def test_positions_stay_right_after_a_broken_machine(tmp_path):
    text = HEAD.replace("host: 10.0.0.1", "host: 'bad host'") + (
        "  - host: 10.0.0.2\n    devices: 0-1\n  - host: 10.0.0.2\n    devices: 2-3\n"
    )
    result = load_profile_text(text, str(tmp_path / "p.yaml"), simulate=True)
    located = {(d.key_path, d.line) for d in result.errors}
    assert ("machines[0].host", 6) in located
    assert ("machines[2].host", 10) in located
