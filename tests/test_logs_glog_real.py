"""classify_failure on real-format failure lines, one per message, per xllm release.

Each line is what glog 0.6 writes for the statement at the cited file:line of jd-opensource/xllm at that
release (LOG(FATAL) << ..., CHECK_xx(a, b) << ... -> "Check failed: a op b (x vs. y) ..."), or what gflags
and brpc print. Prefix: severity, yyyymmdd, time, thread id, basename:line.
"""

from __future__ import annotations

import pytest

from xllm_tui.logs.glog import classify_failure, parse_glog

# (release, cause, line)
REAL_LINES = [
    # 31b7cafd (the launch guide's commit)
    ("31b7cafd", "model_path_missing",
     "F20251223 10:00:01.000001 4242 xllm.cpp:103] Model path /export/home/models/GLM-4.5-w8a8/ does not exist."),
    ("31b7cafd", "model_config_invalid",
     "F20251223 10:00:01.000001 4242 xllm.cpp:66] Please check config.json file in model path: \"/m\", it should "
     "contain model_type key."),
    ("31b7cafd", "model_config_invalid",
     "F20251223 10:00:01.000001 4242 xllm.cpp:71] Please check config.json or model_index.json file, one of them "
     "should exist in the model path: \"/m\""),
    ("31b7cafd", "weights_missing",
     "F20251223 10:00:05.000001 4242 hf_model_loader.cpp:53] Check failed: !model_weights_files_.empty() Failed to "
     "find model weights files in /m"),
    ("31b7cafd", "weights_missing",
     "F20251223 10:00:05.000001 4242 state_dict.cpp:91] Failed to open weight file: /m/model-00003-of-00008.safetensors"),
    ("31b7cafd", "kv_cache_oom",
     "F20251223 10:01:00.000001 4242 llm_engine.cpp:242] Check failed: kv_cache_cap.cache_size_in_bytes > 0 (0 vs. 0) "
     "Available kv cache size must be greater than 0"),
    ("31b7cafd", "kv_cache_oom",
     "F20251223 10:01:00.000001 4242 llm_engine.cpp:277] Check failed: kv_cache_cap.n_blocks > 0 (0 vs. 0) no n_blocks "
     "for kv cache"),
    ("31b7cafd", "kv_cache_oom",
     "F20251223 10:01:00.000001 4242 llm_engine.cpp:287] Check failed: kv_cache_cap.n_pages > 0 (0 vs. 0) no n_pages "
     "for kv cache"),
    ("31b7cafd", "kv_cache_oom",
     "F20251223 10:01:00.000001 4242 llm_engine.cpp:299] Check failed: kv_cache_cap.n_blocks > 0 (0 vs. 0) no memory "
     "for kv cache"),
    ("31b7cafd", "kv_cache_oom",
     "E20251223 10:01:00.000001 4242 llm_engine.cpp:215] Failed to estimate kv cache capacity for worker: 3"),
    ("31b7cafd", "hccl_error",
     "F20251223 10:00:03.000001 4242 npu_process_group.cpp:28] Failed, HCCL error :EI0006: Getting socket times out."),
    ("31b7cafd", "hccl_error",
     "F20251223 10:00:02.000001 4242 collective_service.cpp:34] Check failed: error == ACL_SUCCESS (507033 vs. 0) ACL "
     "set device id 3 failed. Error : 507033"),
    ("31b7cafd", "hccl_error",
     "F20251223 10:00:02.000001 4242 collective_service.cpp:37] Check failed: status == HCCL_SUCCESS (7 vs. 0) HCCL get "
     "root info failed."),
    ("31b7cafd", "rank_table_error",
     "E20251223 10:00:02.000001 4242 mapping_npu.cpp:97] Failed to parse rank table file: hccl_8+8.json"),
    ("31b7cafd", "execute_failed",
     "E20251223 11:00:00.000001 4242 comm_channel.cpp:531] Execute_model_async failed. Error code : 1008, error "
     "message : [E1008]Reached timeout=60000ms @11.87.49.111:36023"),
    ("31b7cafd", "execute_failed",
     "F20251223 11:00:00.000001 4242 llm_engine.cpp:750] Failed to execute model, result has no value"),
    ("31b7cafd", "execute_failed",
     "F20251223 11:00:00.000001 4242 llm_engine.cpp:796] Failed to get last step results, result has no value"),
    ("31b7cafd", "worker_missing",
     "F20251223 10:00:30.000001 4242 dist_manager.cpp:184] Not all worker connect to engine server. Miss rank is 5"),
    ("31b7cafd", "worker_connect_failed",
     "E20251223 10:02:00.000001 4242 worker_server.cpp:298] Worker#5 connect to 11.87.49.110:10015 failed. Error "
     "message: [E112]Not connected to 11.87.49.110:10015 yet"),
    ("31b7cafd", "port_in_use",
     "E20251223 10:05:00.000001 4242 server.cpp:1181] Fail to listen 0.0.0.0:18994"),
    ("31b7cafd", "port_in_use",
     "E20251223 10:05:00.000001 4242 xllm_server.cpp:56] Failed to start server on port 18994"),
    ("31b7cafd", "port_in_use",
     "E20251223 10:05:00.000001 4242 xllm.cpp:273] Failed to start brpc server on port 18994"),
    ("31b7cafd", "config_error",
     "F20251223 10:00:01.000001 4242 dist_manager.cpp:39] master_node_addr is empty."),
    ("31b7cafd", "etcd_error",
     "F20251223 10:00:01.000001 4242 etcd_client.cpp:30] etcd connect to etcd server failed: 10.0.0.9:2379"),
    ("31b7cafd", "unknown_flag", "ERROR: unknown command line flag 'enable_graph'"),
    ("31b7cafd", "bad_flag", "ERROR: illegal value 'eight' specified for int32 flag 'nnodes'"),
    ("31b7cafd", "bad_flag", "ERROR: failed validation of new value '-1' for flag 'max_concurrent_requests'"),
    # v0.7.2 (a release branch: the same texts at other lines, llm_engine.cpp under core/runtime/)
    ("v0.7.2", "model_path_missing", "F20251225 10:00:01.000001 77 xllm.cpp:102] Model path /m does not exist."),
    ("v0.7.2", "kv_cache_oom",
     "F20251225 10:01:00.000001 77 llm_engine.cpp:307] Check failed: kv_cache_cap.n_blocks > 0 (0 vs. 0) no memory "
     "for kv cache"),
    ("v0.7.2", "worker_missing",
     "F20251225 10:00:30.000001 77 dist_manager.cpp:172] Not all worker connect to engine server. Miss rank is 1"),
    # v0.8.0
    ("v0.8.0", "port_in_use", "E20260128 10:05:00.000001 77 xllm.cpp:273] Failed to start brpc server on port 18994"),
    ("v0.8.0", "execute_failed", "F20260128 11:00:00.000001 77 llm_engine.cpp:799] Failed to execute model, result has no value"),
    # v0.9.1: the HCCL macro moved into npu_process_group.h and lost the error string
    ("v0.9.1", "hccl_error", "F20260414 10:00:03.000001 77 npu_process_group.h:69] Failed, HCCL error."),
    ("v0.9.1", "model_config_invalid",
     "F20260414 10:00:01.000001 77 model_config_utils.cpp:42] Please check config.json file in model path: \"/m\", it "
     "should contain model_type key."),
    ("v0.9.1", "kv_cache_oom",
     "F20260414 10:01:00.000001 77 llm_engine.cpp:430] Check failed: kv_cache_cap.cache_size_in_bytes > 0 (0 vs. 0) "
     "Available kv cache size must be greater than 0"),
    # v0.10.0
    ("v0.10.0", "model_path_missing", "F20260630 10:00:01.000001 77 xllm.cpp:341] Model path /m does not exist."),
    ("v0.10.0", "hccl_error", "F20260630 10:00:03.000001 77 npu_process_group.h:71] Failed, HCCL error."),
    ("v0.10.0", "rank_table_error",
     "F20260630 10:00:01.000001 77 npu_rank_table_env.cpp:39] Check failed: std::filesystem::exists(rank_table_path, "
     "ec) && !ec rank_tablefile does not exist: hccl_8+8.json"),
    ("v0.10.0", "model_config_invalid",
     "F20260630 10:00:01.000001 77 xllm.cpp:257] Model is not supported currently, model type: foo"),
    ("v0.10.0", "worker_connect_failed",
     "E20260630 10:02:00.000001 77 worker_server.cpp:447] Worker#5 connect to 127.0.0.1:10015 failed. Error message: x"),
    ("v0.10.0", "port_in_use", "E20260630 10:05:00.000001 77 xllm_server.cpp:152] Failed to start server on port 18994"),
]


@pytest.mark.parametrize("release,cause,line", REAL_LINES, ids=[f"{r}-{c}-{i}" for i, (r, c, _) in enumerate(REAL_LINES)])
def test_every_real_failure_line_is_classified(release, cause, line):
    found = classify_failure(line)
    assert found is not None and found[0] == cause, (release, line, found)
    if line[1:9].isdigit():
        assert parse_glog(line) is not None  # the line really is glog's format
        assert found[1] == line.split("] ", 1)[1]


def test_ordinary_lines_are_not_failures():
    assert classify_failure("I20251223 10:00:00.000001 1 worker_server.cpp:287] Worker#1 connect to 127.0.0.1:1 success.") is None
    assert classify_failure("W20251223 10:00:00.000001 1 worker_server.cpp:282] Worker#1 try connect to engine server "
                            "error, try again. Error message: [E111]Fail to connect") is None


# (release, phase, detail, line): start-up milestones as each release writes them.
REAL_MILESTONES = [
    ("31b7cafd", "collective_server", "11.87.49.110:10015",
     "I20251223 10:00:02.000001 4242 xllm_server.cpp:212] Collective server started on address 11.87.49.110:10015, "
     "idle_timeout_sec: -1, num_threads: 32"),
    ("31b7cafd", "init", "DistributeWorker started on address 11.87.49.111:40001",
     "I20251223 10:00:02.000001 4242 xllm_server.cpp:145] DistributeWorker started on address 11.87.49.111:40001, "
     "idle_timeout_sec: -1, num_threads: 32"),
    ("v0.10.0", "init", "DistributeWorker server started on address 11.87.49.111:40001",
     "I20260630 10:00:02.000001 77 xllm_server.cpp:295] DistributeWorker server started on address "
     "11.87.49.111:40001, idle_timeout_sec: -1, num_threads: 32"),
    ("31b7cafd", "kv_cache", None,
     "I20251223 10:01:00.000001 4242 llm_engine.cpp:293] kv cache capacity: 12.34 GB, blocks: 1234, slot_size: 4096, "
     "n_layers: 46"),
    ("31b7cafd", "kv_cache", None,
     "I20251223 10:01:00.000001 4242 llm_engine.cpp:220] worker #3: available memory: 40.12 GB, total memory: "
     "64.00 GB. Using max_memory_utilization: 0.86, max_cache_size: 0.00 B"),
    ("31b7cafd", "serving", None,
     "I20251223 10:02:00.000001 4242 xllm_server.cpp:59] Brpc Server started on port 18994, idle_timeout_s: -1, "
     "num_threads: 32"),
    ("v0.10.0", "serving", None, "I20260630 10:02:00.000001 77 xllm_server.cpp:170]      Application startup complete."),
]


@pytest.mark.parametrize("release,phase,detail,line", REAL_MILESTONES,
                         ids=[f"{r}-{p}-{i}" for i, (r, p, _, _) in enumerate(REAL_MILESTONES)])
def test_real_milestone_lines(release, phase, detail, line):
    from xllm_tui.logs.glog import milestone_of

    found = milestone_of(line)
    assert found is not None and found.phase == phase, (release, line, found)
    if detail is not None:
        assert found.detail == detail
