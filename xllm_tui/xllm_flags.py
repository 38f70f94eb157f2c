"""xllm's command-line flags as data: name, gflags type, default and a short meaning.

The single place that knows which flags an xllm binary accepts. The profile validator checks profiles
against it and the simulator parses its argv with it.

Sources (facts, not code): xllm v0.7.x `xllm/core/common/global_flags.cpp` (jd-opensource/xllm) for
names, types and defaults, with the defaults of ../shared/xllm-facts.md where the two differ; glog's
own flags; gflags' `src/gflags.cc` and `src/gflags_reporting.cc`. Meanings are short descriptions written here.
"""

from __future__ import annotations

# name -> (gflags type, default as gflags prints it, meaning)
FlagSpec = tuple[str, str, str]

# The file a flag is "defined in", as --helpxml reports it (gflags sorts by file, then name).
_XLLM_FILE = "xllm/core/common/global_flags.cpp"
_GLOG_FILE = "src/logging.cc"
_GFLAGS_FILE = "src/gflags.cc"
_GFLAGS_REPORTING_FILE = "src/gflags_reporting.cc"

XLLM_FLAGS: dict[str, FlagSpec] = {
    # --- service ---
    "host": ("string", "", "address the servers bind; empty = this machine's IP"),
    "port": ("int32", "8010", "HTTP/brpc port of the API server (node_rank 0 only)"),
    "rpc_idle_timeout_s": ("int32", "-1", "close idle connections after this many seconds; -1 = never"),
    "rpc_channel_timeout_ms": ("int32", "-1", "timeout of brpc channels in ms; -1 = none"),
    "max_reconnect_count": ("int32", "40", "how many times a worker retries connecting to rank 0"),
    "num_threads": ("int32", "32", "brpc server worker threads"),
    "max_concurrent_requests": ("int32", "200", "requests served at once; more are rejected"),
    # --- model ---
    "model": ("string", "", "path of the model directory (required)"),
    "model_id": ("string", "", "model name served by the API; empty = last part of --model"),
    "backend": ("string", "llm", "model family: llm or vlm"),
    "task": ("string", "generate", "task: generate or embed"),
    "devices": ("string", "npu:0", "devices of this process, e.g. npu:0"),
    "draft_model": ("string", "", "path of the draft (MTP) model; empty = no speculative decoding"),
    "draft_devices": ("string", "npu:0", "devices of the draft model"),
    "enable_mla": ("bool", "false", "multi-head latent attention (set from the model type)"),
    "enable_acl_graph": ("bool", "false", "ACL graph execution for decode (renamed enable_graph in v0.8)"),
    "max_seq_len_for_graph_mode": ("int32", "20480", "longest sequence run in graph mode"),
    "limit_image_per_prompt": ("int32", "4", "images per prompt for multimodal models"),
    "num_request_handling_threads": ("int32", "4", "threads handling incoming requests"),
    "num_response_handling_threads": ("int32", "4", "threads handling responses"),
    "random_seed": ("int32", "-1", "sampling seed; negative = random"),
    "reasoning_parser": ("string", "", "parser of reasoning output"),
    # --- kv cache ---
    "block_size": ("int32", "128", "slots per kv cache block"),
    "max_cache_size": ("int64", "0", "kv cache bytes; 0 = from available memory"),
    "max_memory_utilization": ("double", "0.8", "fraction of device memory for weights and kv cache"),
    # --- scheduler ---
    "max_tokens_per_batch": ("int32", "10240", "tokens per batch"),
    "max_seqs_per_batch": ("int32", "1024", "sequences per batch"),
    "enable_schedule_overlap": ("bool", "false", "overlap scheduling with execution"),
    "prefill_scheduling_memory_usage_threshold": ("double", "0.95", "memory threshold for prefill scheduling"),
    "enable_chunked_prefill": ("bool", "true", "chunked prefill"),
    "max_tokens_per_chunk_for_prefill": ("int32", "-1", "tokens per prefill chunk; -1 = max_tokens_per_batch"),
    "chunked_match_frequency": ("int32", "2", "prefix cache match frequency of chunks"),
    "use_zero_evict": ("bool", "false", "zero-eviction scheduler"),
    "max_decode_token_per_sequence": ("int32", "256", "decode tokens per sequence for zero eviction"),
    # --- parallelism ---
    "dp_size": ("int32", "1", "data parallel size"),
    "ep_size": ("int32", "1", "expert parallel size"),
    "communication_backend": ("string", "hccl", "NPU collective backend: hccl or lccl"),
    "enable_eplb": ("bool", "false", "expert parallel load balance"),
    "redundant_experts_num": ("int32", "1", "redundant experts per device"),
    "eplb_update_interval": ("int64", "1000", "EPLB update interval"),
    "eplb_update_threshold": ("double", "0.8", "EPLB update threshold"),
    "expert_parallel_degree": ("int32", "0", "expert parallel degree"),
    "rank_tablefile": ("string", "", "HCCL rank table JSON for multi-machine runs"),
    # --- profiling of the scheduler ---
    "enable_profile_step_time": ("bool", "false", "profile step time"),
    "enable_profile_token_budget": ("bool", "false", "profile token budget"),
    "enable_latency_aware_schedule": ("bool", "false", "latency aware scheduling"),
    "profile_max_prompt_length": ("int32", "2048", "longest prompt used for profiling"),
    "enable_profile_kv_blocks": ("bool", "true", "allocate kv cache for profiling"),
    "disable_ttft_profiling": ("bool", "false", "skip TTFT profiling"),
    "enable_forward_interruption": ("bool", "false", "forward interruption"),
    "max_global_ttft_ms": ("int32", "2147483647", "global TTFT target in ms"),
    "max_global_tpot_ms": ("int32", "2147483647", "global TPOT target in ms"),
    # --- prefix cache ---
    "enable_prefix_cache": ("bool", "true", "prefix cache of the block manager"),
    "enable_cache_upload": ("bool", "false", "upload cache info to the routing service"),
    "murmur_hash3_seed": ("uint32", "1024", "seed of the prefix hash"),
    # --- multi-node ---
    "master_node_addr": ("string", "127.0.0.1:19888", "rank 0's registration address host:port"),
    "nnodes": ("int32", "1", "number of ranks (processes) in the world"),
    "node_rank": ("int32", "0", "global rank of this process"),
    # --- disaggregated prefill/decode ---
    "xservice_addr": ("string", "", "xllm-service address"),
    "enable_disagg_pd": ("bool", "false", "disaggregated prefill and decode"),
    "enable_pd_ooc": ("bool", "false", "online-offline co-location in PD mode"),
    "disagg_pd_port": ("int32", "7777", "port of the PD server"),
    "instance_role": ("string", "DEFAULT", "DEFAULT, PREFILL or DECODE"),
    "kv_cache_transfer_type": ("string", "LlmDataDist", "kv cache transfer: LlmDataDist or HCCL"),
    "kv_cache_transfer_mode": ("string", "PUSH", "kv cache transfer mode: PUSH or PULL"),
    "transfer_listen_port": ("int32", "26000", "kv cache transfer listen port"),
    "enable_shm": ("bool", "false", "shared memory between engine and workers"),
    # --- tools and speculative decoding ---
    "tool_call_parser": ("string", "", "tool-call parser, e.g. glm45, glm47, qwen3"),
    "num_speculative_tokens": ("int32", "0", "speculative tokens per step (MTP)"),
    "enable_atb_spec_kernel": ("bool", "false", "ATB speculative kernel"),
    "enable_block_copy_kernel": ("bool", "true", "ATB block copy kernel"),
    # --- service routing ---
    "etcd_addr": ("string", "", "etcd address for instance metadata"),
    "enable_service_routing": ("bool", "false", "xllm service routing"),
    "heart_beat_interval": ("double", "0.5", "heart beat interval in seconds"),
    "etcd_ttl": ("int32", "3", "etcd time to live"),
    "priority_strategy": ("string", "FCFS", "request priority: FCFS, priority, deadline"),
    "enable_online_preempt_offline": ("bool", "true", "online requests preempt offline ones"),
    # --- kv cache store ---
    "host_blocks_factor": ("double", "0", "host blocks = factor x device blocks"),
    "enable_kvcache_store": ("bool", "false", "kv cache store"),
    "store_protocol": ("string", "tcp", "kv cache store protocol: tcp or rdma"),
    "store_master_server_address": ("string", "", "kv cache store master address"),
    "store_metadata_server": ("string", "", "kv cache store metadata service"),
    "store_local_hostname": ("string", "", "kv cache store local host name"),
    "prefetch_timeout": ("uint32", "0", "kv cache store prefetch timeout"),
    "prefetch_bacth_size": ("uint32", "2", "kv cache store prefetch batch size"),
    "layers_wise_copy_batchs": ("uint32", "4", "layer-wise copy batches"),
    # --- misc ---
    "enable_multi_stream_parallel": ("bool", "false", "two-stream computation/communication overlap"),
    "micro_batch_num": ("int32", "2", "micro batches for multi-stream parallel"),
    "max_requests_per_batch": ("int32", "1", "requests per batch (DiT)"),
    "enable_continuous_kvcache": ("bool", "false", "continuous kv cache"),
    "phy_page_granularity_size": ("int64", "2097152", "physical page size of the continuous kv cache"),
    "cache_size_per_token": ("int64", "0", "cache bytes per token; 0 = computed"),
    "buffer_size_per_seq": ("int64", "0", "buffer bytes per sequence"),
    "enable_beam_search_kernel": ("bool", "false", "beam search kernel"),
    "enable_qwen3_reranker": ("bool", "false", "qwen3 reranker"),
    # --- newer xllm versions ---
    "enable_graph": ("bool", "false", "graph execution for decode (v0.8+, was enable_acl_graph)"),
    "enable_graph_mode_decode_no_padding": ("bool", "false", "graph decode without padding (v0.8+)"),
    "enable_prefill_piecewise_graph": ("bool", "false", "piecewise graph for prefill (v0.8+)"),
    "max_tokens_for_graph_mode": ("int32", "2048", "most tokens run in graph mode (v0.8+)"),
    "device_id": ("string", "", "device of this process, e.g. 0 or npu:0 (main branch; replaces --devices)"),
    "config_json_file": ("string", "", "JSON file whose values override flags (main branch)"),
}

GLOG_FLAGS: dict[str, FlagSpec] = {
    "log_dir": ("string", "", "write log files into this directory"),
    "logtostderr": ("bool", "false", "log to stderr only, no log files"),
    "alsologtostderr": ("bool", "false", "log to stderr as well as to files (xllm sets it)"),
    "stderrthreshold": ("int32", "2", "copy messages at or above this level to stderr"),
    "minloglevel": ("int32", "0", "drop messages below this level (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL)"),
    "v": ("int32", "0", "verbose logging level"),
    "vmodule": ("string", "", "per-module verbose levels"),
    "logbuflevel": ("int32", "0", "buffer messages at or below this level"),
    "logbufsecs": ("int32", "30", "buffer log messages for at most this many seconds"),
    "stop_logging_if_full_disk": ("bool", "false", "stop writing log files when the disk is full"),
    "max_log_size": ("uint32", "1800", "largest log file in MB"),
    "colorlogtostderr": ("bool", "false", "colour stderr messages"),
}

# gflags' own flags: the recursive/parsing ones and the reporting ones (--helpxml and friends).
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

# Flags a given xllm version does NOT know (version drift, see xllm-facts.md). "any" knows all.
_NEWER_ONLY = ("enable_graph", "enable_graph_mode_decode_no_padding", "enable_prefill_piecewise_graph",
               "max_tokens_for_graph_mode")
_MAIN_ONLY = ("device_id", "config_json_file")
UNKNOWN_IN_VERSION: dict[str, frozenset[str]] = {
    "any": frozenset(),
    "0.7": frozenset(_NEWER_ONLY + _MAIN_ONLY),
    "0.8": frozenset(("enable_acl_graph",) + _MAIN_ONLY),
    "main": frozenset(("enable_acl_graph",)),
}

# The source file a flag is defined in, as --helpxml reports it.
DEFINED_IN: dict[str, str] = {}
for _name in XLLM_FLAGS:
    DEFINED_IN[_name] = _XLLM_FILE
for _name in GLOG_FLAGS:
    DEFINED_IN[_name] = _GLOG_FILE
for _name in GFLAGS_FLAGS:
    DEFINED_IN[_name] = _GFLAGS_REPORTING_FILE if _name.startswith(("help", "version")) else _GFLAGS_FILE


def all_flags(version: str = "any") -> dict[str, FlagSpec]:
    """Every flag an xllm binary of `version` accepts: xllm's, glog's and gflags' own."""
    unknown = UNKNOWN_IN_VERSION.get(version, frozenset())
    table = {n: s for n, s in XLLM_FLAGS.items() if n not in unknown}
    table.update(GLOG_FLAGS)
    table.update(GFLAGS_FLAGS)
    return table
