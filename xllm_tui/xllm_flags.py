"""xllm's command-line flags as data, per xllm release: name, gflags type, default and a short meaning.

The single place that knows which flags an xllm binary accepts. The profile validator checks profiles
against the release a profile targets and the simulator parses its argv with the release it imitates.

The tables are data files (xllm_tui/data/flags/*.json) written by tools/extract_flags.py from the
DEFINE_<type>(...) lines of jd-opensource/xllm at each release (global_flags.cpp up to v0.9.1,
xllm/core/framework/config/*_config.cpp in v0.10.0), google/glog v0.6.0 (the vcpkg floor xllm names)
and apache/brpc 1.14.1 (xllm links its own brpc fork, which is not public in git; 1.14.1 is the
closest release). Each entry keeps its file and line; docs/reference/xllm-flags.md lists them.
gflags' own flags (gflags 2.2.2 src/gflags.cc, src/gflags_reporting.cc) are written out below.
Meanings are short descriptions written here, not xllm's help texts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# name -> (gflags type, default as gflags prints it, meaning)
FlagSpec = tuple[str, str, str]

_DATA = Path(__file__).parent / "data" / "flags"

# Releases in order. v0.7.1 and v0.7.2 are a release branch; the others are on main, in this order:
# v0.7.0 < 31b7cafd (the launch guide's pin, "v0.7.0-169") < v0.8.0 < v0.9.0 < v0.9.1 < v0.10.0.
RELEASES: tuple[str, ...] = ("v0.7.0", "v0.7.1", "v0.7.2", "31b7cafd", "v0.8.0", "v0.9.0", "v0.9.1", "v0.10.0")
MAIN_LINE: tuple[str, ...] = ("v0.7.0", "31b7cafd", "v0.8.0", "v0.9.0", "v0.9.1", "v0.10.0")
DEFAULT_RELEASE = "31b7cafd"  # the commit the launch guide checks out
_PINNED_COMMIT = "31b7cafd60ef290c38cbc2320715407a6449af2f"
RELEASE_ALIASES: dict[str, str] = {
    "0.7": "v0.7.2", "v0.7": "v0.7.2", "0.8": "v0.8.0", "v0.8": "v0.8.0", "0.9": "v0.9.1", "v0.9": "v0.9.1",
    "0.10": "v0.10.0", "v0.10": "v0.10.0", "main": "v0.10.0", "guide": DEFAULT_RELEASE, "pinned": DEFAULT_RELEASE,
    "v0.7.0-169": DEFAULT_RELEASE,
}
ANY_RELEASE = "any"  # the union of every release: accepts whatever some xllm accepts

# Renames and replacements read from the diffs between releases (old name, new name, release of the new name).
RENAMES: tuple[tuple[str, str, str], ...] = (
    ("store_master_server_entry", "store_master_server_address", "31b7cafd"),
    ("store_metadata_connstring", "store_metadata_server", "31b7cafd"),
    ("enable_acl_graph", "enable_graph", "v0.8.0"),
    ("enable_acl_graph_no_padding", "enable_graph_no_padding", "v0.8.0"),
    ("enable_graph_no_padding", "enable_graph_mode_decode_no_padding", "v0.9.0"),
    ("max_seq_len_for_graph_mode", "max_tokens_for_graph_mode", "v0.9.0"),
    ("murmur_hash3_seed", "xxh3_128bits_seed", "v0.9.0"),
    ("acl_graph_decode_batch_size_limit", "graph_decode_batch_size_limit", "v0.10.0"),
    ("prefetch_bacth_size", "prefetch_batch_size", "v0.10.0"),
    ("devices", "device_id", "v0.10.0"),  # --devices stays, deprecated, default "" from v0.10.0
)

# Our own one-line meanings (xllm's help texts are not copied).
_MEANINGS: dict[str, str] = {
    "host": "address the servers bind; empty = this machine's IP",
    "port": "HTTP/brpc port of the API server (node_rank 0 only)",
    "rpc_idle_timeout_s": "close idle connections after this many seconds; -1 = never",
    "rpc_channel_timeout_ms": "timeout of brpc channels in ms; -1 = none",
    "max_reconnect_count": "how many times a worker retries connecting to rank 0",
    "num_threads": "brpc server worker threads",
    "max_concurrent_requests": "requests served at once; more are rejected",
    "model": "path of the model directory (required)",
    "model_id": "model name served by the API; empty = last part of --model",
    "backend": "model family: llm or vlm",
    "task": "task: generate or embed",
    "devices": "devices of this process, e.g. npu:0",
    "draft_model": "path of the draft (MTP) model; empty = no speculative decoding",
    "draft_devices": "devices of the draft model",
    "enable_mla": "multi-head latent attention (set from the model type)",
    "enable_acl_graph": "ACL graph execution for decode",
    "max_seq_len_for_graph_mode": "longest sequence run in graph mode",
    "limit_image_per_prompt": "images per prompt for multimodal models",
    "num_request_handling_threads": "threads handling incoming requests",
    "num_response_handling_threads": "threads handling responses",
    "random_seed": "sampling seed; negative = random",
    "reasoning_parser": "parser of reasoning output",
    "block_size": "slots per kv cache block",
    "max_cache_size": "kv cache bytes; 0 = from available memory",
    "max_memory_utilization": "fraction of device memory for weights and kv cache",
    "max_tokens_per_batch": "tokens per batch",
    "max_seqs_per_batch": "sequences per batch",
    "enable_schedule_overlap": "overlap scheduling with execution",
    "prefill_scheduling_memory_usage_threshold": "memory threshold for prefill scheduling",
    "enable_chunked_prefill": "chunked prefill",
    "max_tokens_per_chunk_for_prefill": "tokens per prefill chunk; -1 = max_tokens_per_batch",
    "chunked_match_frequency": "prefix cache match frequency of chunks",
    "use_zero_evict": "zero-eviction scheduler",
    "max_decode_token_per_sequence": "decode tokens per sequence for zero eviction",
    "dp_size": "data parallel size",
    "ep_size": "expert parallel size",
    "communication_backend": "NPU collective backend: hccl or lccl",
    "enable_eplb": "expert parallel load balance",
    "redundant_experts_num": "redundant experts per device",
    "eplb_update_interval": "EPLB update interval",
    "eplb_update_threshold": "EPLB update threshold",
    "expert_parallel_degree": "expert parallel degree",
    "rank_tablefile": "HCCL rank table JSON for multi-machine runs",
    "enable_profile_step_time": "profile step time",
    "enable_profile_token_budget": "profile token budget",
    "enable_latency_aware_schedule": "latency aware scheduling",
    "profile_max_prompt_length": "longest prompt used for profiling",
    "enable_profile_kv_blocks": "allocate kv cache for profiling",
    "disable_ttft_profiling": "skip TTFT profiling",
    "enable_forward_interruption": "forward interruption",
    "max_global_ttft_ms": "global TTFT target in ms",
    "max_global_tpot_ms": "global TPOT target in ms",
    "enable_prefix_cache": "prefix cache of the block manager",
    "enable_cache_upload": "upload cache info to the routing service",
    "murmur_hash3_seed": "seed of the prefix hash",
    "master_node_addr": "rank 0's registration address host:port",
    "nnodes": "number of ranks (processes) in the world",
    "node_rank": "global rank of this process",
    "xservice_addr": "xllm-service address",
    "enable_disagg_pd": "disaggregated prefill and decode",
    "enable_pd_ooc": "online-offline co-location in PD mode",
    "disagg_pd_port": "port of the PD server",
    "instance_role": "DEFAULT, PREFILL or DECODE",
    "kv_cache_transfer_type": "kv cache transfer: LlmDataDist or HCCL",
    "kv_cache_transfer_mode": "kv cache transfer mode: PUSH or PULL",
    "transfer_listen_port": "kv cache transfer listen port",
    "enable_shm": "shared memory between engine and workers",
    "tool_call_parser": "tool-call parser, e.g. glm45, glm47, qwen3",
    "num_speculative_tokens": "speculative tokens per step (MTP)",
    "enable_atb_spec_kernel": "ATB speculative kernel",
    "enable_block_copy_kernel": "ATB block copy kernel",
    "etcd_addr": "etcd address for instance metadata",
    "enable_service_routing": "xllm service routing",
    "heart_beat_interval": "heart beat interval in seconds",
    "etcd_ttl": "etcd time to live",
    "priority_strategy": "request priority: FCFS, priority, deadline",
    "enable_online_preempt_offline": "online requests preempt offline ones",
    "host_blocks_factor": "host blocks = factor x device blocks",
    "enable_kvcache_store": "kv cache store",
    "store_protocol": "kv cache store protocol: tcp or rdma",
    "store_master_server_address": "kv cache store master address",
    "store_metadata_server": "kv cache store metadata service",
    "store_local_hostname": "kv cache store local host name",
    "prefetch_timeout": "kv cache store prefetch timeout",
    "prefetch_bacth_size": "kv cache store prefetch batch size",
    "layers_wise_copy_batchs": "layer-wise copy batches",
    "enable_multi_stream_parallel": "two-stream computation/communication overlap",
    "micro_batch_num": "micro batches for multi-stream parallel",
    "max_requests_per_batch": "requests per batch (DiT)",
    "enable_continuous_kvcache": "continuous kv cache",
    "phy_page_granularity_size": "physical page size of the continuous kv cache",
    "cache_size_per_token": "cache bytes per token; 0 = computed",
    "buffer_size_per_seq": "buffer bytes per sequence",
    "enable_beam_search_kernel": "beam search kernel",
    "enable_qwen3_reranker": "qwen3 reranker",
    "enable_graph": "graph execution for decode",
    "enable_graph_mode_decode_no_padding": "graph decode without padding",
    "enable_prefill_piecewise_graph": "piecewise graph for prefill",
    "max_tokens_for_graph_mode": "most tokens run in graph mode",
    "device_id": "device of this process, e.g. 0 or npu:0",
    "config_json_file": "JSON file whose values override flags",
    "log_dir": "write log files into this directory",
    "logtostderr": "log to stderr only, no log files",
    "alsologtostderr": "log to stderr as well as to files (xllm sets it)",
    "stderrthreshold": "copy messages at or above this level to stderr",
    "minloglevel": "drop messages below this level (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL)",
    "v": "verbose logging level",
    "vmodule": "per-module verbose levels",
    "logbuflevel": "buffer messages at or below this level",
    "logbufsecs": "buffer log messages for at most this many seconds",
    "stop_logging_if_full_disk": "stop writing log files when the disk is full",
    "max_log_size": "largest log file in MB",
    "colorlogtostderr": "colour stderr messages",
    "flagfile": "load flags from file",
    "fromenv": "set flags from the environment",
    "tryfromenv": "set flags from the environment if present",
    "undefok": "flag names that may be given although undefined",
    "help": "show help on all flags",
    "helpfull": "show help on all flags",
    "helpshort": "show help on the main module",
    "helpon": "show help on the named modules",
    "helpmatch": "show help on modules matching",
    "helppackage": "show help on the main package",
    "helpxml": "produce an xml version of help",
    "version": "show version and exit",
}


# gflags' own flags: the recursive/parsing ones and the reporting ones (--helpxml and friends).
_GFLAGS_FILE = "src/gflags.cc"
_GFLAGS_REPORTING_FILE = "src/gflags_reporting.cc"
GFLAGS_FLAGS: dict[str, FlagSpec] = {
    "flagfile": ("string", "", "load flags from file"),
    "fromenv": ("string", "", "set flags from the environment"),
    "tryfromenv": ("string", "", "set flags from the environment if present"),
    "undefok": ("string", "", "flag names that may be given although undefined"),
    "help": ("bool", "false", "show help on all flags"),
    "helpfull": ("bool", "false", "show help on all flags"),
    "helpshort": ("bool", "false", "show help on the main module"),
    "helpon": ("string", "", "show help on the named modules"),
    "helpmatch": ("string", "", "show help on modules matching"),
    "helppackage": ("bool", "false", "show help on the main package"),
    "helpxml": ("bool", "false", "produce an xml version of help"),
    "version": ("bool", "false", "show version and exit"),
}

# brpc built with glog (as xllm builds it) leaves glog's v/minloglevel/vmodule to glog (butil/logging.cc).
_BRPC_LEAVES_TO_GLOG = frozenset({"v", "minloglevel", "vmodule"})


@dataclass(frozen=True)
class FlagFact:
    """One DEFINE_<type>(...) read from a source tree."""

    name: str
    type: str
    default: str  # as gflags prints it: true/false, %.17g doubles, decimal integers
    file: str
    line: int
    validator: str = ""


def format_default(flag_type: str, value) -> str:
    """A default as gflags' FlagValue::ToString prints it; a computed default keeps its C++ expression."""
    if isinstance(value, dict):
        return str(value.get("expr", ""))
    if flag_type == "bool":
        return "true" if value else "false"
    if flag_type == "double":
        return "%.17g" % float(value)
    return str(value)


@lru_cache(maxsize=None)
def _load(file_name: str) -> tuple[dict, dict[str, FlagFact]]:
    doc = json.loads((_DATA / file_name).read_text(encoding="utf-8"))
    facts = {
        f["name"]: FlagFact(f["name"], f["type"], format_default(f["type"], f["default"]), f["file"], f["line"],
                            f.get("validator", ""))
        for f in doc["flags"]
    }
    doc = {k: v for k, v in doc.items() if k != "flags"}
    return doc, facts


def resolve_release(text: str | None) -> str | None:
    """The release id for a profile's or an environment's spelling of it (v0.8, 0.8, v0.8.0, main...)."""
    if text is None or str(text).strip() == "":
        return DEFAULT_RELEASE
    text = str(text).strip()
    if text == ANY_RELEASE:
        return ANY_RELEASE
    if text in RELEASES:
        return text
    if text in RELEASE_ALIASES:
        return RELEASE_ALIASES[text]
    if not text.startswith("v") and "v" + text in RELEASES:
        return "v" + text
    if len(text) >= 7 and _PINNED_COMMIT.startswith(text):  # an abbreviated hash of the guide's commit
        return DEFAULT_RELEASE
    return None


def release_info(release: str) -> dict:
    """repo, commit and date of a release's table."""
    return _load(f"xllm-{release}.json")[0]


def xllm_facts(release: str) -> dict[str, FlagFact]:
    """xllm's own flags at `release` (never the union; see all_flags for ANY_RELEASE)."""
    if release == ANY_RELEASE:
        merged: dict[str, FlagFact] = {}
        for rel in reversed(RELEASES):  # newest wins for a flag present in several
            for name, fact in xllm_facts(rel).items():
                merged.setdefault(name, fact)
        return merged
    return _load(f"xllm-{release}.json")[1]


def glog_facts() -> dict[str, FlagFact]:
    return _load("glog-v0.6.0.json")[1]


def brpc_facts() -> dict[str, FlagFact]:
    return {n: f for n, f in _load("brpc-1.14.1.json")[1].items() if n not in _BRPC_LEAVES_TO_GLOG}


def _spec(fact: FlagFact) -> FlagSpec:
    return (fact.type, fact.default, _MEANINGS.get(fact.name, ""))


def xllm_flags(release: str = DEFAULT_RELEASE) -> dict[str, FlagSpec]:
    """xllm's own flags of `release` as name -> (type, default, meaning)."""
    return {name: _spec(fact) for name, fact in xllm_facts(release).items()}


def all_flags(version: str = DEFAULT_RELEASE) -> dict[str, FlagSpec]:
    """Every flag an xllm binary of `version` accepts: xllm's, glog's, brpc's and gflags' own."""
    release = resolve_release(version) or DEFAULT_RELEASE
    table = {name: _spec(fact) for name, fact in brpc_facts().items()}
    table.update({name: _spec(fact) for name, fact in glog_facts().items()})
    table.update(GFLAGS_FLAGS)
    table.update(xllm_flags(release))
    return table


def defined_in(name: str, version: str = DEFAULT_RELEASE) -> str:
    """The file a flag is defined in, as --helpxml reports it."""
    if name in GFLAGS_FLAGS:
        return _GFLAGS_REPORTING_FILE if name.startswith(("help", "version")) else _GFLAGS_FILE
    release = resolve_release(version) or DEFAULT_RELEASE
    for facts in (xllm_facts(release), glog_facts(), brpc_facts()):
        if name in facts:
            return facts[name].file
    return ""


def validator_of(name: str, version: str = DEFAULT_RELEASE) -> str:
    release = resolve_release(version) or DEFAULT_RELEASE
    for facts in (xllm_facts(release), brpc_facts()):
        if name in facts:
            return facts[name].validator
    return ""


def releases_with(name: str) -> list[str]:
    """The releases (in RELEASES order) whose xllm defines `name`."""
    return [rel for rel in RELEASES if name in xllm_facts(rel)]


def introduced_in(name: str) -> str | None:
    """The first main-line release that defines `name` (v0.7.1/v0.7.2 only if nothing on main has it)."""
    for rel in MAIN_LINE:
        if name in xllm_facts(rel):
            return rel
    found = releases_with(name)
    return found[0] if found else None


def explain_unknown(name: str, release: str) -> str:
    """Why `name` is not a flag of `release`, naming the release(s) where it exists; "" if nothing is known."""
    release = resolve_release(release) or DEFAULT_RELEASE
    known = set(xllm_facts(release))
    if name in known:
        return ""
    for old, new, since in RENAMES:
        if name == new and old in known:
            return f"{name}: this is {since}'s name for {old}"
        if name == old and new in known:
            return f"{name}: renamed {new} in {since}"
    found = releases_with(name)
    if not found:
        return ""
    newer = [r for r in found if RELEASES.index(r) > RELEASES.index(release)]
    if newer:
        return f"{name}: a flag of {_span(found)}, not of {release}"
    return f"{name}: a flag of {_span(found)}, removed before {release}"


def _span(releases: list[str]) -> str:
    """"v0.9.0 to v0.10.0" for consecutive releases, else the list."""
    first, last = RELEASES.index(releases[0]), RELEASES.index(releases[-1])
    if len(releases) > 1 and list(RELEASES[first:last + 1]) == releases:
        return f"{releases[0]} to {releases[-1]}"
    return ", ".join(releases)


# ---- gflags' value rules (gflags.cc FlagValue::ParseFrom and ToString)

_TRUE = ("1", "t", "true", "y", "yes")
_FALSE = ("0", "f", "false", "n", "no")
_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_DOUBLE_RE = re.compile(r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf(inity)?|nan)$", re.I)


def parse_value(flag_type: str, text: str) -> bool | int | float | str | None:
    """The value of `text` for a flag of `flag_type`, or None when gflags would reject it."""
    if flag_type == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return None
    if flag_type == "string":
        return text
    if text == "":
        return None
    if flag_type in _INT_RANGES:
        body = text.lstrip(" ") if flag_type.startswith("u") else text
        if flag_type.startswith("u") and body.startswith("-"):
            return None
        try:
            # gflags: base 16 with a 0x prefix, otherwise base 10 (a leading 0 is not octal).
            number = int(body, 16) if re.match(r"^[+-]?0[xX]", body) else int(body, 10)
        except ValueError:
            return None
        if "_" in body:  # Python accepts 1_000, strtol does not
            return None
        low, high = _INT_RANGES[flag_type]
        return number if low <= number <= high else None
    if flag_type == "double":
        if not _DOUBLE_RE.match(text) and not re.match(r"^\s*[+-]?0[xX][0-9a-fA-F.]+([pP][+-]?\d+)?$", text):
            return None
        try:
            return float(text) if not re.match(r"^\s*[+-]?0[xX]", text) else float.fromhex(text.strip())
        except ValueError:
            return None
    raise ValueError(f"unknown flag type {flag_type!r}")


def format_value(flag_type: str, value: bool | int | float | str) -> str:
    """A value as gflags prints it (bool true/false, double with %.17g)."""
    if flag_type == "bool":
        return "true" if value else "false"
    if flag_type == "double":
        return "%.17g" % float(value)
    return str(value)


# Compatibility names: the pinned release's tables.
XLLM_FLAGS: dict[str, FlagSpec] = xllm_flags(DEFAULT_RELEASE)
GLOG_FLAGS: dict[str, FlagSpec] = {name: _spec(fact) for name, fact in glog_facts().items()}
BRPC_FLAGS: dict[str, FlagSpec] = {name: _spec(fact) for name, fact in brpc_facts().items()}
