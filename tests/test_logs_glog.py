"""glog parsing, severities, failure causes, milestones and the start-up tracker on realistic xllm logs."""

from __future__ import annotations

from datetime import datetime

import pytest

from xllm_tui.logs.glog import (
    PHASES,
    StartupTracker,
    classify_failure,
    glog_message,
    milestone_of,
    parse_glog,
    severity_of,
)


def glog(sev: str, message: str, where: str = "llm_engine.cpp:210", thread: str = "12345") -> str:
    return f"{sev}20251129 15:20:01.123456 {thread} {where}] {message}"


def test_parse_full_date_form():
    line = parse_glog("I20251129 15:20:01.123456 12345 llm_engine.cpp:210] Loading model weights from /m/a.bin")
    assert line is not None
    assert line.severity == "I"
    assert line.time == datetime(2025, 11, 29, 15, 20, 1, 123456)
    assert (line.thread, line.file, line.line) == (12345, "llm_engine.cpp", 210)
    assert line.message == "Loading model weights from /m/a.bin"


def test_parse_short_date_form_padded_thread_and_crlf():
    line = parse_glog("E1129 15:20:01.000007   777 server.cpp:9] boom\r\n", year=2024)
    assert line is not None
    assert line.severity == "E" and line.time == datetime(2024, 11, 29, 15, 20, 1, 7)
    assert line.thread == 777 and line.message == "boom"


@pytest.mark.parametrize(
    "text",
    ["", "plain text", "X20251129 15:20:01.1 1 a.cc:1] x", "I20251399 15:20:01.123456 1 a.cc:1] bad month",
     "*** Check failure stack trace: ***"],
)
def test_non_glog_lines(text):
    assert parse_glog(text) is None


def test_severity_fast_path():
    assert severity_of(glog("I", "ok")) == "I"
    assert severity_of(glog("W", "careful")) == "W"
    assert severity_of(glog("E", "bad")) == "E"
    assert severity_of(glog("F", "dead")) == "F"
    assert severity_of(glog("E", "Check failed: a > 0")) == "F"
    assert severity_of("Check failed: x") == "F"
    assert severity_of("ERROR: unknown command line flag 'foo'") == "E"
    assert severity_of("INFO some python logger line") is None
    assert severity_of("") is None


def test_glog_message():
    assert glog_message(glog("I", "hello world")) == "hello world"
    assert glog_message("not glog") == "not glog"


FAILURES = [
    ("F", "Model path /models/missing does not exist.", "model_path_missing"),
    ("F", "Check failed: kv_cache_cap.cache_size_in_bytes > 0 (0 vs. 0) Available kv cache size must be "
          "greater than 0", "kv_cache_oom"),
    ("F", "Check failed: kv_cache_cap.n_blocks > 0 (0 vs. 0) no n_blocks for kv cache", "kv_cache_oom"),
    ("F", "no memory for kv cache", "kv_cache_oom"),
    ("F", "Failed, HCCL error :HCCL_E_TIMEOUT", "hccl_error"),
    ("F", "HCCL get root info failed.", "hccl_error"),
    ("F", "ACL set device id 3 failed.", "hccl_error"),
    ("F", "Failed to parse rank table file: /etc/hccl_8+8.json", "rank_table_error"),
    ("E", "Execute_model_async failed. Error code : 1008, [E1008]Reached timeout=60000ms", "execute_failed"),
    ("F", "Failed to execute model, result has no value", "execute_failed"),
    ("F", "Check failed: all_connected Not all worker connect to engine server. Miss rank is 5", "worker_missing"),
    ("E", "Failed to start server on port 18994", "port_in_use"),
    ("E", "Failed to start brpc server on port 18994", "port_in_use"),
    ("F", "Check failed: (world_size % dp_size) == 0 (1 vs. 0) Global world size must be divisible", "config_error"),  # dist_manager.cpp:119 (31b7cafd): a bad dp_size
    ("F", "something unexpected", "fatal"),
]


@pytest.mark.parametrize("sev,message,cause", FAILURES)
def test_classify_every_failure_cause(sev, message, cause):
    assert classify_failure(glog(sev, message)) == (cause, message)
    if message != "something unexpected":  # that one is fatal only because of its F severity
        assert classify_failure(message)[0] == cause  # the bare message works too
    else:
        assert classify_failure(message) is None


def test_classify_unknown_flag_and_non_failures():
    assert classify_failure("ERROR: unknown command line flag 'enable_graph'") == (
        "unknown_flag", "ERROR: unknown command line flag 'enable_graph'")
    assert classify_failure(glog("I", "Brpc Server started on port 1")) is None
    assert classify_failure(glog("W", "Worker#1 try connect to engine server error, try again.")) is None


RANK0 = [
    glog("I", "set worker role to local worker"),
    glog("I", "Master init options: model=/m, devices=npu:0"),
    glog("I", "Creating engine with devices: npu:0"),
    glog("I", "Multi-node serving world_size = 4, each_node_ranks = 1, dp_size = 1"),
    glog("I", "Collective server started on address 127.0.0.1:19888"),
    glog("I", "RemoteWorker Hello connected, server_address: 127.0.0.1:40001, global_rank_: 1"),
    glog("I", "RemoteWorker Hello connected, server_address: 127.0.0.1:40002, global_rank_: 2"),
    glog("I", "RemoteWorker Hello connected, server_address: 127.0.0.1:40003, global_rank_: 3"),
    glog("I", "Initializing model from: /models/GLM"),
    glog("I", "Loading model weights from /models/GLM/model-00001-of-00003.safetensors"),
    glog("I", "Loading model weights from /models/GLM/model-00002-of-00003.safetensors"),
    glog("I", "Loading model weights from /models/GLM/model-00003-of-00003.safetensors"),
    glog("I", "Weight loading completed, restored ATen threads=12"),  # rank 0's own worker
    glog("I", "Init_model_async succeed."),
    glog("I", "worker #0: available memory: 60 GB, total memory: 64 GB"),
    glog("I", "kv cache capacity: bytes: 1000, blocks: 10, block_size: 128"),
    glog("I", "Initializing k cache with shape: [10, 128, 8, 128]"),
    glog("I", "Brpc Server started on port 18994, idle_timeout_s: -1, num_threads: 32"),
]

WORKER = [
    glog("I", "set worker role to remote worker"),
    glog("I", "Multi-node serving world_size = 4, each_node_ranks = 1"),
    glog("I", "Create worker server with device: 1"),
    glog("I", "DistributeWorker started on address 127.0.0.1:40001"),
    glog("W", "Worker#1 try connect to engine server error, try again. Error message: refused"),
    glog("W", "Worker#1 try connect to engine server error, try again. Error message: refused"),
    glog("I", "Worker#1 connect to 127.0.0.1:19888 success."),
    glog("I", "Temporarily setting ATen threads to 1 during weight loading, tp_world_size=4, prev_threads=12"),
    glog("I", "Loading model weights from /models/small/model.safetensors"),
    glog("I", "Weight loading completed, restored ATen threads=12"),
]


def test_milestones_come_in_phase_order_for_rank0():
    phases = [m.phase for m in map(milestone_of, RANK0) if m is not None]
    assert [PHASES.index(p) for p in phases] == sorted(PHASES.index(p) for p in phases)
    assert set(phases) == set(PHASES) - {"worker_connect_retry", "worker_connected"}
    registered = [m.rank for m in map(milestone_of, RANK0) if m and m.phase == "worker_registered"]
    assert registered == [1, 2, 3]
    weights = [m.detail for m in map(milestone_of, RANK0) if m and m.phase == "weights"]
    assert weights[0] == "/models/GLM/model-00001-of-00003.safetensors"


def test_serving_matches_without_case_and_new_versions():
    assert milestone_of(glog("I", "Brpc Server Started on port 1, idle_timeout_s: 0, num_threads: 4")).phase == "serving"
    assert milestone_of("INFO:     Application startup complete.").phase == "serving"
    assert milestone_of(glog("I", "nothing to see")) is None


def test_tracker_rank0_sequence_is_incremental():
    tracker = StartupTracker(is_master=True, expected_weights=3)
    assert tracker.describe() == "starting"
    tracker.feed_lines(RANK0[:8])
    assert tracker.phase == "worker_registered" and tracker.progress == (3, 3)
    tracker.feed_lines(RANK0[8:11])  # fed only the new lines
    assert tracker.phase == "weights" and tracker.progress == (2, 3)
    assert tracker.describe() == "loading weights 2/3"
    assert not tracker.ready
    tracker.feed_lines(RANK0[11:])
    state = tracker.state()
    assert state.ready and state.phase == "serving" and state.failure is None
    assert tracker.describe() == "serving"


def test_tracker_worker_is_ready_once_model_is_initialised():
    tracker = StartupTracker(is_master=False)
    tracker.feed_lines(WORKER[:6])
    assert tracker.phase == "worker_connect_retry" and tracker.progress == (2, None)
    assert tracker.describe() == "waiting for rank 0 2"
    tracker.feed_lines(WORKER[6:9])
    assert tracker.connected and tracker.phase == "weights" and tracker.progress == (1, None)  # no total known
    assert not tracker.ready and tracker.describe() == "loading weights 1"
    tracker.feed_lines(WORKER[9:])
    assert tracker.ready and tracker.phase == "model_loaded" and tracker.describe() == "model ready"


def test_tracker_reads_the_total_from_shard_names():
    tracker = StartupTracker()
    tracker.feed_lines(RANK0[9:11])
    assert tracker.progress == (2, 3)
    assert StartupTracker(expected_weights=5).progress is None  # no phase yet


def test_tracker_keeps_the_first_failure():
    tracker = StartupTracker()
    tracker.feed_lines(RANK0[:3])
    tracker.feed(glog("E", "Execute_model_async failed. Error code : 1008"))
    tracker.feed(glog("F", "Failed to execute model, result has no value"))
    assert tracker.failure == ("execute_failed", "Execute_model_async failed. Error code : 1008")
    assert tracker.describe().startswith("execute_failed:")
    assert not tracker.ready


def test_tracker_custom_ready_pattern():
    tracker = StartupTracker(ready_pattern="server is UP")
    tracker.feed(glog("I", "server is up on 8000"))
    assert tracker.ready and tracker.phase == "serving"


def weight_line(path: str) -> str:
    return glog("I", f"Loading model weights from {path}")


CONNECTED = glog("I", "Worker#3 connect to 127.0.0.1:19888 success.")
LOADED = glog("I", "Weight loading completed, restored ATen threads=12")


def test_draft_weights_are_counted_apart_from_the_main_model():
    # The 9/8 of the past: 8 main shards, then the draft model's one file.
    tracker = StartupTracker(is_master=False)
    tracker.feed(CONNECTED)
    tracker.feed_lines(weight_line(f"/models/GLM/model-0000{i}-of-00008.safetensors") for i in range(1, 9))
    assert tracker.describe() == "loading weights 8/8" and tracker.progress == (8, 8)
    tracker.feed(LOADED)
    assert tracker.ready  # nothing says a draft model follows
    tracker.feed(weight_line("/models/GLM-mtp/model-00001-of-00001.safetensors"))
    assert tracker.phase == "weights" and not tracker.ready  # the draft model is loading now
    assert tracker.describe() == "loading weights 8/8, draft 1/1" and tracker.progress == (9, 9)
    weights = tracker.weights
    assert (weights.main_loaded, weights.main_total, weights.draft_loaded, weights.draft_total) == (8, 8, 1, 1)
    tracker.feed(LOADED)
    assert tracker.ready and tracker.models_loaded == 2


def test_expected_totals_and_paths_for_both_models():
    tracker = StartupTracker(is_master=False, expected_weights=2, expected_draft_weights=1,
                             model_path="/models/GLM/", draft_model_path="/models/GLM/mtp")
    tracker.feed(CONNECTED)
    tracker.feed(weight_line("/models/GLM/a.safetensors"))
    assert tracker.describe() == "loading weights 1/2, draft 0/1" and tracker.progress == (1, 3)
    tracker.feed(weight_line("/models/GLM/b.safetensors"))
    tracker.feed(LOADED)
    assert not tracker.ready  # the draft model was announced: one model is not enough
    tracker.feed(weight_line("/models/GLM/mtp/model.safetensors"))  # inside the main dir: the draft's
    assert tracker.describe() == "loading weights 2/2, draft 1/1"
    tracker.feed(LOADED)
    assert tracker.ready


def test_rank0_tells_the_models_apart_by_its_engine_lines():
    lines = [glog("I", "Multi-node serving world_size = 2, each_node_ranks = 1"),
             glog("I", "Initializing model from: /data/main"),
             weight_line("/data/main/model-00001-of-00002.safetensors"),
             weight_line("/data/main/model-00002-of-00002.safetensors"),
             LOADED, glog("I", "Init_model_async succeed.")]
    tracker = StartupTracker(is_master=True)
    tracker.feed_lines(lines)
    assert tracker.phase == "model_ready" and tracker.describe() == "models initialised 1/2"
    assert not tracker.all_models_initialised
    tracker.feed_lines([glog("I", "Init_model_async succeed."), glog("I", "Initializing model from: /data/draft"),
                        weight_line("/data/draft/model.safetensors")])
    assert tracker.phase == "weights" and tracker.describe() == "loading weights 2/2, draft 1"
    tracker.feed_lines([LOADED, glog("I", "Init_model_async succeed.")])
    assert tracker.describe() == "models initialised 1/2" and not tracker.all_models_initialised
    tracker.feed(glog("I", "Init_model_async succeed."))
    assert tracker.all_models_initialised and not tracker.ready


def test_a_weight_directory_no_known_path_names_is_still_the_main_model():
    # --model through a symlink: the loader prints the resolved path.
    tracker = StartupTracker(is_master=False, model_path="/models/link", expected_weights=2)
    tracker.feed_lines([CONNECTED, weight_line("/mnt/real/m1.safetensors"), weight_line("/mnt/real/m2.safetensors")])
    assert tracker.weights.main_loaded == 2 and not tracker.weights.has_draft
    assert tracker.describe() == "loading weights 2/2"


def test_worker_readiness_needs_the_connection_and_its_own_evidence():
    unconnected = StartupTracker(is_master=False)
    unconnected.feed(LOADED)
    assert not unconnected.ready
    # "Init_model_async succeed." is rank 0's line: in a worker's log it proves nothing about that worker.
    worker = StartupTracker(is_master=False)
    worker.feed_lines([CONNECTED, glog("I", "Init_model_async succeed.")])
    assert not worker.ready
    # A kv cache allocation follows model initialisation (the simulator's workers, rank 0's own worker).
    worker.feed(glog("I", "Initializing k cache with shape: [758, 128, 8, 128]"))
    assert worker.ready and worker.describe() == "model ready"
    # A worker log from v0.7.x has neither: rank 0's tracker decides (all_models_initialised).
    old = StartupTracker(is_master=False)
    old.feed_lines([CONNECTED, weight_line("/m/model-00001-of-00001.safetensors")])
    assert old.connected and not old.ready
