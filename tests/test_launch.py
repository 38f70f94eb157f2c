"""Launch plans: the a3-8card plan must be the launch guide's command line, flag for flag."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import sys
from dataclasses import replace

import pytest

from xllm_tui import launch
from xllm_tui.envcapture import capture_sourced_env
from xllm_tui.launch import (
    LaunchError,
    build_simulate_mapping,
    flag_pairs,
    launch_diff,
    plan_launches,
    ranks_of,
)
from xllm_tui.spec import CoreRule, Machine, PreLaunchStep, Profile, Toggle

from conftest import REPO, wait_until
from guide import GUIDE_ENV

# ----------------------------------------------------------------------------------- the guide as data
# docs/reference/launch-guide.md, "Single machine, 8 ranks": the guide's loop body for rank i, with its
# shell variables filled in. Space-separated forms (`--model MODEL`) are normalised by guide_flags().
GUIDE_MODEL = "/export/home/models/GLM-4.5-w8a8/"
GUIDE_DRAFT = "/export/home/models/GLM-4.5-MTP/"
GUIDE_BINARY = "./myxllm/xllm/build/xllm/core/server/xllm"
GUIDE_COMMAND = (
    "numactl -C {first}-{last} " + GUIDE_BINARY + " "
    "--model " + GUIDE_MODEL + " "
    "--model_id glmmoe "
    "--host 11.87.49.110 "
    "--port {port} "
    '--devices="npu:{device}" '
    "--master_node_addr=11.87.49.110:10015 "
    "--nnodes=8 "
    "--node_rank={rank} "
    "--max_memory_utilization=0.86 "
    "--max_tokens_per_batch=5000 "
    "--max_seqs_per_batch=256 "
    "--communication_backend=hccl "
    "--enable_schedule_overlap=true "
    "--enable_prefix_cache=true "
    "--enable_chunked_prefill=true "
    "--enable_acl_graph=true "
    "--draft_model " + GUIDE_DRAFT + " "
    '--draft_devices="npu:{device}" '
    "--num_speculative_tokens 1"
)

GUIDE_PATH_VARS = ("PYTHON_INCLUDE_PATH", "PYTHON_LIB_PATH", "PYTORCH_INSTALL_PATH", "LIBTORCH_ROOT")
# The guide exports op_api/lib, then libtorch_npu/lib (each `export X=entry:$X`): the last one comes first.
GUIDE_LD_LIBRARY_PATH = "/usr/local/libtorch_npu/lib:/usr/local/Ascend/ascend-toolkit/latest/opp/vendors/xllm/op_api/lib/"
GUIDE_LD_PRELOAD = "/usr/lib64/libjemalloc.so.2"
GUIDE_DETERMINISM = {"LCCL_DETERMINISTIC": "1", "HCCL_DETERMINISTIC": "true", "ATB_MATMUL_SHUFFLE_K_ENABLE": "0"}


def guide_argv(rank: int) -> list[str]:
    return shlex.split(
        GUIDE_COMMAND.format(first=rank * 12, last=rank * 12 + 11, port=18994 + rank, device=rank, rank=rank)
    )


def guide_flags(words: list[str]) -> list[tuple[str, str]]:
    """(name, value) pairs from a command's words, accepting both --name=value and --name value."""
    pairs = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            name, sep, value = word[2:].partition("=")
            if not sep:
                value = words[i + 1]
                i += 1
            pairs.append((name, value))
        i += 1
    return pairs


def guide_profile(source_path: str = "/opt/profiles/a3-8card.yaml") -> Profile:
    """The guide's single-machine launch, built directly from the spec dataclasses."""
    return Profile(
        name="a3-8card",
        source_path=source_path,
        binary=GUIDE_BINARY,
        model=GUIDE_MODEL,
        model_id="glmmoe",
        draft_model=GUIDE_DRAFT,
        machines=(Machine(host="11.87.49.110", devices=tuple(range(8))),),
        master_node_addr="11.87.49.110:10015",
        base_port=18994,
        core_rule=CoreRule(kind="per_device", count=12, first=0),
        flags=(
            ("max_memory_utilization", 0.86),
            ("max_tokens_per_batch", 5000),
            ("max_seqs_per_batch", 256),
            ("communication_backend", "hccl"),
            ("enable_schedule_overlap", True),
            ("enable_prefix_cache", True),
            ("enable_chunked_prefill", True),
            ("enable_acl_graph", True),
            ("num_speculative_tokens", 1),
        ),
        env=(
            ("PYTHON_INCLUDE_PATH", "/usr/include/python3.11"),
            ("PYTHON_LIB_PATH", "/usr/include/python3.11"),
            ("PYTORCH_INSTALL_PATH", "/usr/local/lib/python3.11/site-packages/torch"),
            ("LIBTORCH_ROOT", "/usr/local/lib/python3.11/site-packages/torch"),
            *GUIDE_ENV.items(),
        ),
        path_prepend=(
            ("LD_LIBRARY_PATH", tuple(GUIDE_LD_LIBRARY_PATH.split(":"))),
            ("LD_PRELOAD", (GUIDE_LD_PRELOAD,)),
        ),
        source_scripts=("/usr/local/Ascend/ascend-toolkit/set_env.sh", "/usr/local/Ascend/nnal/atb/set_env.sh"),
        toggles=(
            Toggle(name="determinism", enabled=False, env=tuple(GUIDE_DETERMINISM.items())),
            Toggle(
                name="profiling",
                enabled=False,
                env=(("PROFILING_MODE", "dynamic"),),
                remove=("~/dynamic_profiling_socket_*",),
            ),
        ),
        pre_launch=(
            PreLaunchStep(name="clear logs", remove=("/root/atb/log/", "/root/ascend/log/", "core.*")),
            PreLaunchStep(
                name="initialise devices",
                run=("python", "-c", "import torch_npu; [torch_npu.npu.set_device(i) for i in range(16)]"),
                when="after_reboot",
            ),
        ),
    )


def two_node_profile(source_path: str = "/opt/profiles/a3-16card-2node.yaml") -> Profile:
    """The guide's two-machine 8+8 launch."""
    base = guide_profile(source_path)
    flags = dict(base.flags)
    flags.update(
        max_tokens_per_batch=20000,
        enable_prefix_cache=False,
        enable_chunked_prefill=False,
        enable_schedule_overlap=False,
        enable_acl_graph=False,
    )
    del flags["num_speculative_tokens"]
    return replace(
        base,
        name="a3-16card-2node",
        draft_model=None,
        machines=(
            Machine(host="11.87.49.110", devices=tuple(range(8)),
                    device_ips=tuple(f"11.86.23.{210 + d}" for d in range(8))),
            Machine(host="11.87.49.111", devices=tuple(range(8)),
                    device_ips=tuple(f"11.87.63.{202 + d}" for d in range(8))),
        ),
        flags=tuple(flags.items()),
        rank_tablefile="hccl_8+8.json",
    )


def shipped_profile(name: str) -> Profile:
    """The real YAML profile (missing binary/model paths are fine here: nothing is launched)."""
    from xllm_tui.profile import load_profile_or_raise

    return load_profile_or_raise(os.path.join(REPO, "profiles", name), simulate=True)


@pytest.fixture(params=["dataclass", "yaml"])
def eight_card(request) -> Profile:
    return guide_profile() if request.param == "dataclass" else shipped_profile("a3-8card.yaml")


@pytest.fixture(params=["dataclass", "yaml"])
def two_node(request) -> Profile:
    return two_node_profile() if request.param == "dataclass" else shipped_profile("a3-16card-2node.yaml")


BASE_ENV = {"PATH": os.environ["PATH"], "HOME": "/home/op", "LD_LIBRARY_PATH": "/opt/old/lib"}
CAPTURED_ENV = {"ASCEND_TOOLKIT_HOME": "/usr/local/Ascend/ascend-toolkit/latest", "LD_LIBRARY_PATH": "/ascend/lib:/opt/old/lib"}


# --------------------------------------------------------------------------------------- single machine


def test_eight_card_plan_is_the_guide_command_flag_for_flag(eight_card):
    plans = plan_launches(eight_card, base_env=BASE_ENV, captured_env={})
    assert [p.rank for p in plans] == list(range(8))
    for plan in plans:
        i = plan.rank
        expected = guide_argv(i)
        assert list(plan.argv[:4]) == expected[:4]  # numactl -C cores binary
        assert plan.argv[2] == f"{i * 12}-{i * 12 + 11}"
        assert all(arg.startswith("--") for arg in plan.argv[4:])
        assert flag_pairs(plan.argv) == guide_flags(expected), f"rank {i}"
        assert plan.spec.port == 18994 + i and plan.spec.device == i
        assert plan.role == ("master" if i == 0 else "worker")


def test_eight_card_environment_is_the_guide_exports(eight_card):
    # The shipped profile computes the PYTHON_*/torch paths in a sourced script, as the guide does in bash.
    captured, _ = capture_sourced_env(eight_card.source_scripts, BASE_ENV)
    plan = plan_launches(eight_card, base_env=BASE_ENV, captured_env=captured)[0]
    env = plan.env_dict()
    for name, value in GUIDE_ENV.items():
        assert env[name] == value, name
    assert env["PYTHON_INCLUDE_PATH"] and env["PYTHON_LIB_PATH"] == env["PYTHON_INCLUDE_PATH"]
    assert env.get("PYTORCH_INSTALL_PATH") == env.get("LIBTORCH_ROOT")
    assert env["LD_LIBRARY_PATH"] == GUIDE_LD_LIBRARY_PATH + ":/opt/old/lib"
    assert env["LD_PRELOAD"] == GUIDE_LD_PRELOAD  # nothing inherited: no dangling colon
    assert env["PATH"] == os.environ["PATH"] and env["HOME"] == "/home/op"
    extra = set(env) - set(BASE_ENV) - set(GUIDE_ENV) - {"LD_PRELOAD"}
    assert extra <= set(GUIDE_PATH_VARS), extra  # toggles are off: nothing else
    assert [name for name, _ in plan.env] == sorted(env)


def test_captured_script_environment_sits_under_the_prepends(eight_card):
    env = plan_launches(eight_card, base_env=BASE_ENV, captured_env=CAPTURED_ENV)[0].env_dict()
    assert env["ASCEND_TOOLKIT_HOME"] == "/usr/local/Ascend/ascend-toolkit/latest"
    # The guide sources set_env.sh after its exports: the script's entries come first.
    assert env["LD_LIBRARY_PATH"] == "/ascend/lib:" + GUIDE_LD_LIBRARY_PATH + ":/opt/old/lib"


def test_log_paths_and_working_directory():
    profile = guide_profile("/opt/profiles/a3-8card.yaml")
    plans = plan_launches(profile, base_env={})
    assert [p.log_path for p in plans] == [f"/opt/profiles/logs/node_{i}.log" for i in range(8)]
    assert {p.cwd for p in plans} == {"/opt/profiles"}
    moved = replace(profile, working_dir="/srv/xllm", log_dir="run-logs", log_file="rank-{rank}-npu{device}.log")
    plans = plan_launches(moved, base_env={})
    assert plans[3].cwd == "/srv/xllm" and plans[3].log_path == "/srv/xllm/run-logs/rank-3-npu3.log"
    assert plan_launches(profile, base_env={}, log_root="/state/run")[1].log_path == "/state/run/logs/node_1.log"


def test_toggles_add_their_environment_and_unset():
    profile = guide_profile()
    profile = replace(profile, toggles=profile.toggles + (
        Toggle(name="quiet", enabled=True, env=(("ASDOPS_LOG_LEVEL", "FATAL"),), unset=("ASDOPS_LOG_TO_STDOUT",)),
    ))
    env = plan_launches(profile, base_env={}, toggles={"determinism": True})[0].env_dict()
    for name, value in GUIDE_DETERMINISM.items():
        assert env[name] == value
    assert env["ASDOPS_LOG_LEVEL"] == "FATAL" and "ASDOPS_LOG_TO_STDOUT" not in env
    env = plan_launches(profile, base_env={}, toggles={"quiet": False})[0].env_dict()
    assert env["ASDOPS_LOG_LEVEL"] == "ERROR" and "LCCL_DETERMINISTIC" not in env
    with pytest.raises(LaunchError, match="no toggle group 'determinsm'.*determinism"):
        plan_launches(profile, base_env={}, toggles={"determinsm": True})


def test_flag_placeholders_and_booleans():
    profile = replace(guide_profile(), flags=(
        ("log_dir", "glog/{rank}-{local_rank}-{device}"),
        ("xservice_addr", "{host}:{port}"),
        ("enable_shm", False),
        ("config", '{"a": {"b": 1}}'),  # braces that are not placeholders stay
    ))
    argv = plan_launches(profile, base_env={})[5].argv
    pairs = dict(flag_pairs(argv))
    assert pairs["log_dir"] == "glog/5-5-5"
    assert pairs["xservice_addr"] == "11.87.49.110:18999"
    assert pairs["enable_shm"] == "false"
    assert pairs["config"] == '{"a": {"b": 1}}'


def test_a_profile_flag_cannot_repeat_a_generated_one():
    profile = replace(guide_profile(), flags=(("port", 9000),))
    with pytest.raises(LaunchError, match="flag 'port' is set by the launch plan"):
        plan_launches(profile, base_env={})


def test_core_rules_explicit_lists_and_no_binding():
    profile = guide_profile()
    per_rank = replace(profile, core_rule=CoreRule(kind="per_rank", count=4, first=96),
                       machines=(Machine(host="11.87.49.110", devices=(4, 5)),))
    assert [s.cores for s in ranks_of(per_rank)] == ["96-99", "100-103"]
    per_device = replace(per_rank, core_rule=CoreRule(kind="per_device", count=12))
    assert [s.cores for s in ranks_of(per_device)] == ["48-59", "60-71"]
    explicit = replace(profile, machines=(Machine(host="11.87.49.110", devices=(0, 1), cores=("0-5,48-53", "6-11")),))
    assert [p.argv[:3] for p in plan_launches(explicit, base_env={})] == [
        ("numactl", "-C", "0-5,48-53"), ("numactl", "-C", "6-11")]
    unbound = replace(profile, core_rule=CoreRule(kind="none"))
    plan = plan_launches(unbound, base_env={})[0]
    assert plan.argv[0] == GUIDE_BINARY and plan.spec.cores is None


def test_topology_rule_needs_topology():
    profile = replace(guide_profile(), core_rule=CoreRule(kind="topology"))
    with pytest.raises(LaunchError, match="core rule 'topology' needs the NPU topology"):
        plan_launches(profile, base_env={})
    topology = {d: f"{d * 24}-{d * 24 + 23}" for d in range(8)}
    assert plan_launches(profile, base_env={}, topology_cores=topology)[2].argv[:3] == ("numactl", "-C", "48-71")
    with pytest.raises(LaunchError, match="no CPU affinity for device 7"):
        plan_launches(profile, base_env={}, topology_cores={d: "0-1" for d in range(7)})


# ----------------------------------------------------------------------------------------- two machines


def test_two_node_plan_continues_ranks_on_the_second_machine(two_node):
    plans = plan_launches(two_node, base_env={})
    assert [p.rank for p in plans] == list(range(16))
    second = plan_launches(two_node, machine="11.87.49.111", base_env={})
    assert [p.rank for p in second] == list(range(8, 16))
    for local, plan in enumerate(second):
        flags = dict(flag_pairs(plan.argv))
        assert flags["node_rank"] == str(local + 8)
        assert flags["host"] == "11.87.49.111"
        assert flags["nnodes"] == "16"
        assert flags["port"] == str(18994 + local)
        assert flags["devices"] == f"npu:{local}"
        assert flags["master_node_addr"] == "11.87.49.110:10015"
        assert flags["rank_tablefile"] == "hccl_8+8.json"
        assert flags["max_tokens_per_batch"] == "20000"
        for name in ("enable_prefix_cache", "enable_chunked_prefill", "enable_schedule_overlap", "enable_acl_graph"):
            assert flags[name] == "false"
        assert "draft_model" not in flags and "draft_devices" not in flags
        assert plan.argv[:3] == ("numactl", "-C", f"{local * 12}-{local * 12 + 11}")
        assert plan.role == "worker"
        # The shipped profile names logs as the guide does on each machine (node_{local_rank}.log).
        name = local if "{local_rank}" in two_node.log_file else local + 8
        assert plan.log_path.endswith(f"logs/node_{name}.log")
    assert [p.rank for p in plan_launches(two_node, machine="11.87.49.110", base_env={})] == list(range(8))


def test_unknown_machine_is_a_clear_error(two_node):
    with pytest.raises(LaunchError, match=r"no machine '10.0.0.9'.*11.87.49.110.*11.87.49.111"):
        ranks_of(two_node, "10.0.0.9")


# ------------------------------------------------------------------------------------------- simulate

ADDRESS = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def non_loopback_addresses(texts) -> set[str]:
    found = set()
    for text in texts:
        for address in ADDRESS.findall(text):
            try:
                if not ipaddress.ip_address(address).is_loopback:
                    found.add(address)
            except ValueError:
                pass
    return found


def test_simulate_maps_every_address_to_loopback(two_node):
    two_node = replace(two_node, flags=two_node.flags + (("etcd_addr", "11.87.49.200:2379"),),
                       env=two_node.env + (("HCCL_IF_IP", "11.87.49.110"),))
    mapping = build_simulate_mapping(two_node, port_offset=1000)
    plans = plan_launches(two_node, simulate=mapping, base_env={"PATH": "/usr/bin"})
    assert len(plans) == 16
    texts = [arg for p in plans for arg in p.argv] + [v for p in plans for _, v in p.env]
    assert not non_loopback_addresses(texts)
    assert "11.87" not in " ".join(texts)
    flags0, flags8 = dict(flag_pairs(plans[0].argv)), dict(flag_pairs(plans[8].argv))
    assert flags0["host"] == "127.0.0.1" and flags8["host"] == "127.0.0.2"
    assert flags0["master_node_addr"] == flags8["master_node_addr"] == "127.0.0.1:11015"
    assert flags8["port"] == str(18994 + 1000)
    assert plans[0].env_dict()["HCCL_IF_IP"] == "127.0.0.1"
    # The specs say what really runs, so a probe built from them can only reach loopback.
    assert [(p.spec.machine.host, p.spec.port) for p in plans[7:9]] == [("127.0.0.1", 20001), ("127.0.0.2", 19994)]
    assert plans[8].spec.machine.name == "11.87.49.111"
    assert mapping.addresses["11.87.49.110"] == "127.0.0.1" and mapping.addresses["11.87.49.111"] == "127.0.0.2"
    assert mapping.addresses["11.87.49.200"].startswith("127.")
    described = mapping.describe()
    assert "11.87.49.110 -> 127.0.0.1" in described and "11.87.49.111 -> 127.0.0.2" in described


def test_simulate_swaps_the_binary_and_keeps_everything_else(eight_card):
    mapping = build_simulate_mapping(eight_card)
    real = plan_launches(eight_card, base_env={})
    simulated = plan_launches(eight_card, simulate=mapping, base_env={})
    for r, s in zip(real, simulated):
        binary_at = s.argv.index("-m") - 1
        assert s.argv[binary_at:binary_at + 3] == (sys.executable, "-m", "xllm_tui.sim.xllm")
        real_flags, sim_flags = dict(flag_pairs(r.argv)), dict(flag_pairs(s.argv))
        for name in ("host", "master_node_addr"):
            assert sim_flags.pop(name).startswith("127.0.0.1")
            real_flags.pop(name)
        assert sim_flags == real_flags  # model paths, ports, devices, tuning: unchanged
        assert s.log_path == r.log_path and s.cwd == r.cwd
        # Everything but a missing LD_PRELOAD stays as the profile says.
        assert {k: v for k, v in s.env if k != "LD_PRELOAD"} == {k: v for k, v in r.env if k != "LD_PRELOAD"}


def test_simulate_maps_cores_into_this_process_affinity(eight_card):
    allowed = sorted(os.sched_getaffinity(0))
    mapping = build_simulate_mapping(eight_card)
    plans = plan_launches(eight_card, simulate=mapping, base_env={})
    from xllm_tui.launch import parse_cores

    for plan in plans:
        if mapping.numactl:
            assert plan.argv[:2] == ("numactl", "-C")
            assert set(parse_cores(plan.argv[2])) <= set(allowed)
            expected = sorted({allowed[c % len(allowed)] for c in range(plan.rank * 12, plan.rank * 12 + 12)})
            assert list(parse_cores(plan.argv[2])) == expected
        original = f"{plan.rank * 12}-{plan.rank * 12 + 11}"
        assert mapping.cores[original] == launch.format_cores(
            sorted({allowed[c % len(allowed)] for c in parse_cores(original)}))
        if mapping.numactl:
            assert plan.spec.cores == mapping.cores[original] == plan.argv[2]
    assert any(line.startswith("cores 12-23 -> ") for line in mapping.describe())


def test_simulate_cores_with_a_narrow_affinity():
    mapping = build_simulate_mapping(guide_profile())
    mapping = replace(mapping, allowed_cores=(3, 5, 7), cores={})
    assert mapping.map_cores("0-11") == "3,5,7"
    assert mapping.map_cores("1") == "5"
    assert mapping.map_cores("4,8") == "5,7"


def test_simulate_withholds_missing_preloads_only(tmp_path):
    present = tmp_path / "libpresent.so"
    present.write_bytes(b"")
    profile = replace(guide_profile(), path_prepend=(
        ("LD_LIBRARY_PATH", ("/usr/local/libtorch_npu/lib",)),
        ("LD_PRELOAD", (GUIDE_LD_PRELOAD, str(present))),
    ))
    mapping = build_simulate_mapping(profile)
    env = plan_launches(profile, simulate=mapping, base_env={})[0].env_dict()
    if not os.path.exists(GUIDE_LD_PRELOAD):
        assert env["LD_PRELOAD"] == str(present)
        assert mapping.withheld_preload == (GUIDE_LD_PRELOAD,)
        assert f"LD_PRELOAD {GUIDE_LD_PRELOAD} withheld (not on this machine)" in mapping.describe()
    assert env["LD_LIBRARY_PATH"] == "/usr/local/libtorch_npu/lib"  # other paths stay, present or not
    real = plan_launches(profile, base_env={})[0].env_dict()
    assert real["LD_PRELOAD"] == f"{GUIDE_LD_PRELOAD}:{present}"  # withheld only when simulating
    only_missing = replace(profile, path_prepend=(("LD_PRELOAD", ("/nonexistent/libx.so",)),))
    env = plan_launches(only_missing, simulate=build_simulate_mapping(only_missing), base_env={})[0].env_dict()
    assert "LD_PRELOAD" not in env


def test_simulated_ports_stay_valid():
    mapping = build_simulate_mapping(guide_profile(), port_offset=60000)
    with pytest.raises(LaunchError, match="outside 1..65535"):
        plan_launches(guide_profile(), simulate=mapping, base_env={})


# ----------------------------------------------------------------------------------------------- diffs


def test_launch_diff_names_what_changed():
    profile = guide_profile()
    old = plan_launches(profile, base_env={"A": "1", "B": "2"})[0]
    new = plan_launches(replace(profile, flags=profile.flags + (("tool_call_parser", "glm47"),)),
                        base_env={"A": "1", "C": "3"}, toggles={"determinism": True})[0]
    diff = launch_diff(old, new)
    assert diff and diff.argv_changed
    assert diff.env_removed == {"B": "2"}
    assert diff.env_added["C"] == "3" and diff.env_added["LCCL_DETERMINISTIC"] == "1"
    lines = diff.describe()
    assert "+ arg --tool_call_parser=glm47" in lines and "- B=2" in lines and "+ HCCL_DETERMINISTIC=true" in lines
    same = launch_diff(old, plan_launches(profile, base_env={"A": "1", "B": "2"})[0])
    assert not same and same.describe() == []


# ---------------------------------------------------------------------------------------- env capture


def test_capture_sourced_env_returns_only_changes(tmp_path):
    first = tmp_path / "set env.sh"  # a space in the name: passed as an argument, never interpolated
    first.write_text(
        'export ASCEND_HOME=/usr/local/Ascend\n'
        'export LD_LIBRARY_PATH=/ascend/lib:$LD_LIBRARY_PATH\n'
        'export MULTI="line one\nline two"\n'
        'echo noise; echo more noise >&2\n'
        'export ARGS_SEEN="$#"\n'
    )
    second = tmp_path / "atb.sh"
    second.write_text('export ATB_HOME="$ASCEND_HOME/atb"\nexport KEEP=same\nfalse\n')
    base = {"PATH": os.environ["PATH"], "LD_LIBRARY_PATH": "/old", "KEEP": "same"}
    env, warnings = capture_sourced_env([str(first), str(second), str(tmp_path / "missing.sh")], base)
    assert env == {
        "ASCEND_HOME": "/usr/local/Ascend",
        "LD_LIBRARY_PATH": "/ascend/lib:/old",
        "MULTI": "line one\nline two",
        "ARGS_SEEN": "0",
        "ATB_HOME": "/usr/local/Ascend/atb",
    }
    assert any("missing.sh not found" in w for w in warnings)
    assert any("atb.sh ended with status 1" in w for w in warnings)


def test_capture_sourced_env_never_runs_an_injected_name(tmp_path):
    home = tmp_path / "h"
    marker = tmp_path / "h-pwned"
    evil = tmp_path / 'x.sh; touch "$HOME-pwned"; $(touch "$HOME-pwned")'
    evil.write_text("export OK=1\n")
    env, warnings = capture_sourced_env([str(evil)], {"PATH": os.environ["PATH"], "HOME": str(home)})
    assert env == {"OK": "1"} and warnings == []
    assert not marker.exists()


def test_capture_sourced_env_is_bounded_in_time(tmp_path):
    import psutil

    pid_file = tmp_path / "sleep.pid"
    slow = tmp_path / "slow.sh"
    slow.write_text(f"sleep 30 &\necho $! > {shlex.quote(str(pid_file))}\nwait\n")
    env, warnings = capture_sourced_env([str(slow)], {"PATH": os.environ["PATH"]}, timeout=0.5)
    assert env == {}
    assert any("did not finish within 0.5 s" in w for w in warnings)
    # The sleep the script started is ended with it (its process group), not left behind.
    sleep_pid = int(pid_file.read_text())

    def gone() -> bool:
        try:
            return psutil.Process(sleep_pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(gone, timeout=10, what="the script's background sleep to end")


def test_capture_with_nothing_to_source():
    assert capture_sourced_env([], {}) == ({}, [])
    env, warnings = capture_sourced_env(["/nonexistent/set_env.sh"], {})
    assert env == {} and warnings == ["environment script /nonexistent/set_env.sh not found on this machine: its variables are not set"]


# ------------------------------------------------------------------------------------ a real simulated run


def test_simulated_two_machine_plan_really_runs_on_loopback(tmp_path):
    """One rank per machine: rank 1 on 127.0.0.2 registers with rank 0 on 127.0.0.1, which then serves HTTP."""
    import signal
    import subprocess
    import urllib.request

    import psutil

    from conftest import free_port_block

    profile = replace(
        two_node_profile(str(tmp_path / "profile.yaml")),
        machines=(Machine(host="11.87.49.110", devices=(0,)), Machine(host="11.87.49.111", devices=(0,))),
        rank_tablefile=None,
    )
    base = free_port_block(1)
    mapping = build_simulate_mapping(profile, port_offset=base - profile.base_port)
    plans = plan_launches(profile, simulate=mapping, base_env=dict(os.environ, XLLM_SIM_TIME_SCALE="0.01"))
    assert [dict(flag_pairs(p.argv))["host"] for p in plans] == ["127.0.0.1", "127.0.0.2"]
    os.makedirs(os.path.dirname(plans[0].log_path))
    processes = []
    try:
        for plan in plans:
            with open(plan.log_path, "ab") as log:
                processes.append(subprocess.Popen(plan.argv, env=plan.env_dict(), cwd=plan.cwd, stdout=log,
                                                  stderr=log, stdin=subprocess.DEVNULL, start_new_session=True))

        def healthy():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{base}/health", timeout=1).read()
            except OSError:
                return None

        assert wait_until(healthy, timeout=60, what="rank 0's /health").strip() == b"OK"
        master_log = open(plans[0].log_path).read()
        assert "global_rank_: 1" in master_log and f"Brpc Server started on port {base}" in master_log
    finally:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)
    assert not any(psutil.pid_exists(p.pid) and psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE
                   for p in processes)


def test_guide_log_names_collide_only_when_machines_share_a_host():
    two_node = shipped_profile("a3-16card-2node.yaml")
    assert two_node.log_file == "node_{local_rank}.log"
    one_machine = plan_launches(two_node, machine="11.87.49.111", base_env={})
    assert [os.path.basename(p.log_path) for p in one_machine] == [f"node_{i}.log" for i in range(8)]
    assert len({os.path.dirname(p.log_path) for p in one_machine}) == 1  # no machine directory needed
    # Planned for every machine, each on its own host: the guide's names, on each machine's disk.
    assert [os.path.basename(p.log_path) for p in plan_launches(two_node, base_env={})][8] == "node_0.log"
    # Both machines on this host (--simulate): each machine's logs in a directory of its own.
    from xllm_tui.launch import build_simulate_mapping

    every = plan_launches(two_node, base_env={}, simulate=build_simulate_mapping(two_node))
    paths = [p.log_path for p in every]
    assert len(set(paths)) == 16
    assert paths[8].endswith("logs/11.87.49.111/node_0.log") and paths[0].endswith("logs/11.87.49.110/node_0.log")
