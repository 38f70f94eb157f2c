"""The per-release flag tables against facts read from xllm's source (file:line in docs/reference/xllm-flags.md)."""

from __future__ import annotations

import subprocess
import sys

from xllm_tui import xllm_flags
from xllm_tui.sim.flags import helpxml, parse_gflags


def test_the_guide_commit_has_its_own_defaults():
    # 31b7cafd global_flags.cpp: these differ from v0.7.2's (a release branch the commit is not on).
    pinned = xllm_flags.xllm_flags("31b7cafd")
    assert pinned["max_memory_utilization"][:2] == ("double", "0.90000000000000002")
    assert pinned["max_tokens_per_batch"][:2] == ("int32", "20480")
    assert pinned["enable_schedule_overlap"][:2] == ("bool", "true")
    assert pinned["max_concurrent_requests"][:2] == ("int32", "0")
    assert pinned["backend"][:2] == ("string", "")
    assert pinned["max_seq_len_for_graph_mode"][:2] == ("int32", "0")
    assert pinned["micro_batch_num"][:2] == ("int32", "1")
    v072 = xllm_flags.xllm_flags("v0.7.2")
    assert v072["max_memory_utilization"][1] == "0.80000000000000004"
    assert v072["max_tokens_per_batch"][1] == "10240" and v072["enable_schedule_overlap"][1] == "false"


def test_flags_arrive_in_the_release_that_defines_them():
    for name in ("enable_graph_mode_decode_no_padding", "enable_prefill_piecewise_graph", "max_tokens_for_graph_mode"):
        assert xllm_flags.introduced_in(name) == "v0.9.0", name
    assert xllm_flags.introduced_in("enable_graph") == "v0.8.0"
    assert xllm_flags.introduced_in("device_id") == "v0.10.0"
    assert xllm_flags.introduced_in("config_json_file") == "v0.10.0"
    assert xllm_flags.xllm_flags("v0.10.0")["device_id"][:2] == ("int32", "-1")
    assert "enable_graph" not in xllm_flags.xllm_flags("31b7cafd")
    assert "enable_acl_graph" not in xllm_flags.xllm_flags("v0.8.0")


def test_unknown_flags_are_explained_with_the_release_that_has_them():
    assert xllm_flags.explain_unknown("enable_graph", "v0.7.2") == "enable_graph: this is v0.8.0's name for enable_acl_graph"
    assert xllm_flags.explain_unknown("enable_acl_graph", "0.9") == "enable_acl_graph: renamed enable_graph in v0.8.0"
    assert "v0.9.0 to v0.10.0" in xllm_flags.explain_unknown("enable_prefill_piecewise_graph", "v0.8.0")
    assert xllm_flags.explain_unknown("no_such_flag", "v0.8.0") == ""


def test_releases_resolve_from_the_spellings_people_use():
    assert xllm_flags.resolve_release(None) == "31b7cafd"
    assert xllm_flags.resolve_release("0.8") == "v0.8.0"
    assert xllm_flags.resolve_release("v0.7.0-169") == "31b7cafd"
    assert xllm_flags.resolve_release("31b7cafd60ef") == "31b7cafd"
    assert xllm_flags.resolve_release("v0.6.0") is None


def test_glog_and_brpc_flags_are_accepted_like_the_real_binary():
    parsed = parse_gflags(["--model=/m", "--log_prefix=false", "--graceful_quit_on_sigterm", "--logfile_mode=0644",
                           "--idle_timeout_second=5"])
    assert parsed.errors == []
    assert parsed["log_prefix"] is False and parsed["graceful_quit_on_sigterm"] is True


def test_brpc_validators_reject_like_gflags():
    # global_flags.cpp: BRPC_VALIDATE_GFLAG(max_concurrent_requests, brpc::NonNegativeInteger)
    parsed = parse_gflags(["--max_concurrent_requests=-1"])
    assert parsed.errors == ["ERROR: failed validation of new value '-1' for flag 'max_concurrent_requests'"]


def test_helpxml_prints_doubles_with_17_digits_and_each_flag_in_its_file():
    text = helpxml("xllm", "31b7cafd")
    assert ("<name>max_memory_utilization</name>" in text
            and "<default>0.90000000000000002</default><current>0.90000000000000002</current><type>double</type>" in text)
    assert "<file>xllm/core/common/global_flags.cpp</file><name>port</name>" in text
    newest = helpxml("xllm", "v0.10.0")
    assert "<file>xllm/core/framework/config/" in newest and "<name>device_id</name>" in newest


def test_simulated_release_is_chosen_by_environment():
    sim = [sys.executable, "-m", "xllm_tui.sim.xllm", "--model=/m", "--enable_graph=true"]
    result = subprocess.run(sim, capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "XLLM_SIM_XLLM_VERSION": "v0.7.2"})
    assert result.returncode == 1 and "ERROR: unknown command line flag 'enable_graph'" in result.stderr
