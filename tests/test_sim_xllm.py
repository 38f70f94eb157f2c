"""The simulated xllm rank, run for real: processes, numactl, sockets, signals, files."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import psutil
import pytest

from conftest import free_port, free_port_block, wait_until
from xllm_tui.sim.flags import XLLM_FLAGS, parse_gflags
from xllm_tui.sim.xllm import FAILURES, SimConfig, UserError, loopback_host

SIM = [sys.executable, "-m", "xllm_tui.sim.xllm"]
NUMACTL = "/usr/bin/numactl"
GLOG_LINE = re.compile(r"^[IWEF]\d{8} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+\.cpp:\d+\] ")
FAST = {"XLLM_SIM_TIME_SCALE": "0.01", "XLLM_SIM_WEIGHT_FILES": "3"}


class Ranks:
    """Starts simulated ranks in their own sessions and guarantees they are all gone afterwards."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen, psutil.Process]] = []

    def start(self, args: list[str], env: dict[str, str] | None = None, log_name: str = "rank.log",
              core: int | None = None) -> tuple[subprocess.Popen, str]:
        log_path = str(self.tmp_path / log_name)
        full_env = dict(os.environ, **FAST)
        full_env.update(env or {})
        prefix = [NUMACTL, "-C", str(core)] if core is not None else []
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(prefix + SIM + args, stdout=log, stderr=log, env=full_env,
                                    cwd=str(self.tmp_path), start_new_session=True)
        self.started.append((proc, psutil.Process(proc.pid)))
        return proc, log_path

    def cleanup(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc, _ in self.started:
            proc.wait(timeout=10)
        leftovers = [p.pid for _, p in self.started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert leftovers == [], f"simulated ranks left running: {leftovers}"


@pytest.fixture
def ranks(tmp_path):
    launcher = Ranks(tmp_path)
    try:
        yield launcher
    finally:
        launcher.cleanup()


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def wait_for_line(path: str, text: str, timeout: float = 20.0) -> str:
    try:
        return wait_until(lambda: text in read(path) and read(path), timeout=timeout, what=f"{text!r} in {path}")
    except AssertionError as exc:
        tail = "\n".join(read(path).splitlines()[-12:])
        raise AssertionError(f"{exc}\nlast lines of {path}:\n{tail}") from None


def rank_args(rank: int, nnodes: int, master: str, port: int, model: str = "/models/GLM-4.5-w8a8", **extra) -> list:
    args = [f"--model={model}", "--model_id", "glmmoe", "--host=127.0.0.1", f"--port={port}",
            f"--devices=npu:{rank}", f"--master_node_addr={master}", f"--nnodes={nnodes}", f"--node_rank={rank}",
            "--max_memory_utilization=0.86", "--enable_schedule_overlap=true", "--noenable_prefix_cache"]
    args += [f"--{k}={v}" for k, v in extra.items()]
    return args


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def http_post(port: int, path: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} missing from /brpc_metrics:\n{text}"
    return float(match.group(1))


def distinct_port(*taken: int) -> int:
    """A free port that is none of `taken` (two free_port() calls may return the same one)."""
    return wait_until(lambda: (lambda p: p if p not in taken else 0)(free_port()), timeout=5, what="a free port")


def single_rank(ranks: Ranks, env: dict | None = None, log_name: str = "rank0.log", **extra):
    port = free_port()
    master = f"127.0.0.1:{distinct_port(port, port + 1)}"
    proc, log = ranks.start(rank_args(0, 1, master, port, **extra), env=env, log_name=log_name)
    return proc, log, port


# ------------------------------------------------------------------------------------------------
# eight ranks for real
# ------------------------------------------------------------------------------------------------


def test_eight_ranks_pinned_with_numactl_register_load_and_serve(ranks):
    cores = sorted(os.sched_getaffinity(0))
    base = free_port_block(8)
    master = f"127.0.0.1:{distinct_port(*range(base, base + 8))}"
    model = "/export/home/models/GLM-4.5-w8a8"
    procs, logs = {}, {}
    # Workers first: they must retry while rank 0 is absent.
    for rank in range(1, 8):
        procs[rank], logs[rank] = ranks.start(rank_args(rank, 8, master, base + rank, model),
                                              log_name=f"node_{rank}.log", core=cores[rank % len(cores)])
    wait_for_line(logs[1], "Worker#1 try connect to engine server error, try again. Error message: ")
    procs[0], logs[0] = ranks.start(rank_args(0, 8, master, base, model), log_name="node_0.log",
                                    core=cores[0])
    wait_for_line(logs[0], f"Brpc Server started on port {base}, idle_timeout_s: -1, num_threads: 32", timeout=40)

    master_log = read(logs[0])
    for rank in range(8):
        assert re.search(rf"RemoteWorker Hello connected, server_address: 127\.0\.0\.1:\d+, global_rank_: {rank}$",
                         master_log, re.M), f"rank {rank} never registered"
    milestones = ["set worker role to local worker", "Master init options: ", "Creating engine with devices: npu:0",
                  "Multi-node serving world_size = 8, each_node_ranks = 1", f"Collective server started on address "
                  f"{master}", "RemoteWorker Hello connected", f"Initializing model from: {model}",
                  "Loading model weights from", "Init_model_async succeed.", "worker #7: available memory: ",
                  "kv cache capacity: ", "Initializing k cache with shape: ", "Brpc Server started on port"]
    positions = [master_log.index(text) for text in milestones]
    assert positions == sorted(positions), "rank 0's milestones are out of order"

    for rank in range(8):
        text = read(logs[rank])
        lines = text.splitlines()
        assert lines and all(GLOG_LINE.match(line) for line in lines), f"non-glog line in node_{rank}.log"
        assert text.count(f"Loading model weights from {model}/") == 3
        # The engine on rank 0 logs the kv cache shapes (llm_engine.cpp:334, 31b7cafd); workers allocate silently.
        assert ("Initializing k cache with shape: [" in text) == (rank == 0)
        assert re.search(rf"Worker {rank}: server address: 127\.0\.0\.1:\d+$", text, re.M)
        # numactl really pinned the process to the core it was given.
        assert psutil.Process(procs[rank].pid).cpu_affinity() == [cores[rank % len(cores)]]
        if rank:
            assert "Brpc Server started" not in text  # only rank 0 serves
            assert f"Worker#{rank} connect to {master} success." in text
            assert f"Create worker server with device: {rank}" in text
            listening = {c.laddr.port for c in psutil.Process(procs[rank].pid).net_connections("tcp")
                         if c.status == psutil.CONN_LISTEN}
            assert base + rank not in listening and len(listening) == 1  # only its ephemeral worker port
    worker_log = read(logs[1])
    assert worker_log.index("try connect to engine server error") < worker_log.index("connect to 127.0.0.1")

    assert http_get(base, "/health") == (200, "OK")
    status, models = http_get(base, "/v1/models")
    assert status == 200 and [m["id"] for m in json.loads(models)["data"]] == ["glmmoe"]
    _, before = http_get(base, "/brpc_metrics")
    status, reply = http_post(base, "/v1/chat/completions",
                              {"model": "glmmoe", "messages": [{"role": "user", "content": "hello there"}],
                               "max_tokens": 7})
    assert status == 200 and reply["object"] == "chat.completion" and reply["model"] == "glmmoe"
    assert reply["choices"][0]["message"]["role"] == "assistant" and reply["choices"][0]["message"]["content"]
    assert reply["usage"]["completion_tokens"] == 7
    _, after = http_get(base, "/brpc_metrics")
    assert metric(after, "server_request_in_total") == metric(before, "server_request_in_total") + 1
    assert metric(after, "num_processing_tokens_total_generated") >= metric(before,
                                                                           "num_processing_tokens_total_generated") + 7
    assert metric(after, "process_uptime") > metric(before, "process_uptime")
    for page in ("/vars", "/flags", "/status"):
        status, body = http_get(base, page)
        assert status == 200 and body.strip()
    # 31b7cafd's global_flags.cpp: max_memory_utilization defaults to 0.9 (v0.7.2's 0.8 was assumed before).
    assert "max_memory_utilization | 0.85999999999999999 (default:0.90000000000000002)" in http_get(base, "/flags")[1]

    # A worker turns SIGTERM into an immediate exit(0).
    procs[3].send_signal(signal.SIGTERM)
    assert procs[3].wait(timeout=5) == 0
    # Rank 0 quits gracefully on SIGTERM.
    procs[0].send_signal(signal.SIGTERM)
    assert procs[0].wait(timeout=10) == 0
    assert "Server[xllm::APIService] is going to quit" in read(logs[0])
    # Like real xllm workers, the others do not notice rank 0 is gone: they keep sleeping.
    wait_until(lambda: all(psutil.Process(procs[r].pid).status() == psutil.STATUS_SLEEPING for r in (1, 2)),
               timeout=5, what="workers asleep")
    time.sleep(0.3)
    assert all(procs[r].poll() is None for r in (1, 2, 4, 5, 6, 7))


# ------------------------------------------------------------------------------------------------
# flags: gflags' behaviour
# ------------------------------------------------------------------------------------------------


def test_unknown_flag_is_rejected_like_gflags(ranks):
    result = subprocess.run(SIM + ["--model=/m", "--enable_graphs=true"], capture_output=True, text=True,
                            timeout=30, env=dict(os.environ, **FAST))
    assert result.returncode == 1
    assert result.stderr == "ERROR: unknown command line flag 'enable_graphs'\n"


def test_bad_values_and_gflags_syntax():
    parsed = parse_gflags(["--model", "/m", "--port=19000", "--enable_prefix_cache=false", "--noenable_chunked_prefill",
                           "--enable_acl_graph", "--max-seqs-per-batch=256", "-nnodes", "8", "--max_memory_utilization",
                           "0.86", "--port=0x4a38"])
    assert parsed.errors == []
    assert parsed["model"] == "/m" and parsed["port"] == 0x4A38 and parsed["nnodes"] == 8
    assert parsed["enable_prefix_cache"] is False and parsed["enable_chunked_prefill"] is False
    assert parsed["enable_acl_graph"] is True and parsed["max_seqs_per_batch"] == 256
    assert parsed["max_memory_utilization"] == 0.86 and parsed["devices"] == "npu:0"
    bad = parse_gflags(["--port=abc", "--enable_shm=maybe", "--noport", "--nnodes=99999999999", "--zzz"])
    assert bad.errors == [
        "ERROR: illegal value 'maybe' specified for bool flag 'enable_shm'",
        "ERROR: illegal value '99999999999' specified for int32 flag 'nnodes'",
        "ERROR: boolean value (noport) specified for int32 command line flag",
        "ERROR: illegal value 'abc' specified for int32 flag 'port'",
        "ERROR: unknown command line flag 'zzz'",
    ]
    missing = parse_gflags(["--model"])
    assert missing.errors[0].startswith("ERROR: flag '--model' is missing its argument")
    # Version drift: a v0.7 binary does not know --enable_graph, a v0.8 one not --enable_acl_graph.
    assert parse_gflags(["--enable_graph=true"], "0.7").errors == ["ERROR: unknown command line flag 'enable_graph'"]
    assert parse_gflags(["--enable_acl_graph"], "0.8").errors == [
        "ERROR: unknown command line flag 'enable_acl_graph'"]


def test_bad_flag_value_exits_1_with_gflags_message():
    result = subprocess.run(SIM + ["--model=/m", "--nnodes=eight"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == "ERROR: illegal value 'eight' specified for int32 flag 'nnodes'\n"


def test_helpxml_lists_every_flag_with_type_and_default():
    result = subprocess.run(SIM + ["--helpxml"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1  # gflags' HandleCommandLineHelpFlags exits with 1 after --helpxml
    root = ET.fromstring(result.stdout)
    assert root.tag == "AllFlags"
    flags = {f.findtext("name"): (f.findtext("type"), f.findtext("default"), f.findtext("file"))
             for f in root.iter("flag")}
    for name, (flag_type, default, _meaning) in XLLM_FLAGS.items():
        assert flags[name][:2] == (flag_type, default), name
    assert flags["port"] == ("int32", "8010", "xllm/core/common/global_flags.cpp")
    assert flags["master_node_addr"][1] == "127.0.0.1:19888" and flags["max_reconnect_count"][1] == "40"
    assert {"log_dir", "logtostderr", "minloglevel", "v"} <= set(flags)


def test_a_missing_model_flag_is_the_fatal_model_path_check():
    # xllm.cpp:103 (31b7cafd) checks exists(FLAGS_model) before anything: "" does not exist -> LOG(FATAL).
    result = subprocess.run(SIM + ["--port=8010"], capture_output=True, text=True, timeout=30)
    assert result.returncode == -signal.SIGABRT
    assert "xllm.cpp:103] Model path  does not exist." in result.stderr


# ------------------------------------------------------------------------------------------------
# failures
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,message", [
    ("model_path_missing", "] Model path /models/GLM-4.5-w8a8 does not exist."),
    ("kv_cache_oom", "] Check failed: kv_cache_cap.cache_size_in_bytes > 0 (0 vs. 0) Available kv cache size must be "
                     "greater than 0"),
    ("hccl_error", "] Failed, HCCL error :"),
    ("check_failed", "] Check failed: (world_size % dp_size) == 0"),
])
def test_fatal_failures_abort_with_their_message(ranks, kind, message):
    proc, log, _port = single_rank(ranks, env={"XLLM_SIM_FAIL": kind})
    assert proc.wait(timeout=30) == -signal.SIGABRT
    text = read(log)
    fatal = [line for line in text.splitlines() if line.startswith("F")]
    assert len(fatal) == 1 and message in fatal[0]
    assert "*** Check failure stack trace: ***" in text
    assert "Brpc Server started" not in text
    assert FAILURES[kind][0] in ("init", "engine", "connect", "kv_cache")


def test_failure_only_on_listed_ranks_and_at_the_given_phase(ranks):
    env = {"XLLM_SIM_FAIL": "model:kv_cache_alloc", "XLLM_SIM_FAIL_RANKS": "1"}
    ok, ok_log, _ = single_rank(ranks, env=env, log_name="ok.log")
    wait_for_line(ok_log, "Brpc Server started")
    assert ok.poll() is None
    port = free_port()
    master = f"127.0.0.1:{distinct_port(port, port + 1)}"
    rank0, log0 = ranks.start(rank_args(0, 2, master, port), env=env, log_name="r0.log")
    rank1, log1 = ranks.start(rank_args(1, 2, master, port + 1), env=env, log_name="r1.log")
    assert rank1.wait(timeout=30) == -signal.SIGABRT
    text = read(log1)
    assert "llm_engine.cpp:299] Check failed: kv_cache_cap.n_blocks > 0 (0 vs. 0) no memory for kv cache" in text
    # A model-phase failure happens part-way through the weights.
    assert 0 < text.count("Loading model weights from") < 3
    assert rank0.poll() is None  # xllm has no fault tolerance: rank 0 just waits


def test_check_model_path_fails_like_xllm(ranks, tmp_path):
    proc, log, _ = single_rank(ranks, env={"XLLM_SIM_CHECK_MODEL_PATH": "1"}, model=str(tmp_path / "nope"))
    assert proc.wait(timeout=30) == -signal.SIGABRT
    assert f"] Model path {tmp_path / 'nope'} does not exist." in read(log)
    # An existing model directory: its real *.safetensors files are the ones "loaded".
    model = tmp_path / "GLM"
    model.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        (model / name).write_bytes(b"")
    proc, log, _ = single_rank(ranks, env={"XLLM_SIM_CHECK_MODEL_PATH": "1"}, log_name="ok.log", model=str(model))
    text = wait_for_line(log, "Brpc Server started")
    assert text.count("Loading model weights from") == 2
    assert f"Loading model weights from {model}/model-00002-of-00002.safetensors" in text


def test_port_in_use_fails_for_real(ranks):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        master = f"127.0.0.1:{free_port()}"
        proc, log = ranks.start(rank_args(0, 1, master, port), log_name="busy.log")
        assert proc.wait(timeout=30) == 255
    text = read(log)
    assert f"Failed to start brpc server on port {port}" in text
    assert "Brpc Server started" not in text


def test_hang_stops_progress_and_output(ranks):
    proc, log, _ = single_rank(ranks, env={"XLLM_SIM_HANG_AT": "model"})
    wait_for_line(log, "RemoteWorker Hello connected")
    size = len(read(log))
    time.sleep(0.5)  # at this time scale the whole start-up takes about 0.1 s
    assert proc.poll() is None
    assert len(read(log)) == size and "Initializing model from" not in read(log)
    proc.send_signal(signal.SIGTERM)  # a hung rank 0 still quits on SIGTERM
    assert proc.wait(timeout=10) == 0


def test_worker_carries_on_after_max_reconnect_count(ranks):
    # worker_server.cpp:298 logs the ERROR, but WorkerServer ignores sync_master_node's result: the
    # process stays, unregistered, doing nothing (31b7cafd).
    master = f"127.0.0.1:{free_port()}"
    proc, log = ranks.start(rank_args(2, 3, master, free_port(), max_reconnect_count=3), log_name="w.log")
    wait_for_line(log, f"Worker#2 connect to {master} failed. Error message: ", timeout=30)
    assert proc.poll() is None
    text = read(log)
    assert text.count("Worker#2 try connect to engine server error, try again.") == 3
    assert f"Worker#2 connect to {master} failed. Error message: " in text


# ------------------------------------------------------------------------------------------------
# signals and rank 0 loss
# ------------------------------------------------------------------------------------------------


def test_ignore_sigterm_for_a_while(ranks):
    proc, log, _ = single_rank(ranks, env={"XLLM_SIM_IGNORE_SIGTERM": "forever"})
    wait_for_line(log, "Brpc Server started")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None  # still there: a supervisor has to escalate
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    proc, log, _ = single_rank(ranks, env={"XLLM_SIM_IGNORE_SIGTERM": "0.4"}, log_name="late.log")
    wait_for_line(log, "Brpc Server started")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - sent >= 0.35


def test_worker_exits_when_rank0_is_lost_if_asked(ranks):
    port = free_port()
    master = f"127.0.0.1:{distinct_port(port, port + 1)}"
    env = {"XLLM_SIM_ON_MASTER_LOSS": "exit"}
    rank0, log0 = ranks.start(rank_args(0, 2, master, port), env=env, log_name="r0.log")
    rank1, log1 = ranks.start(rank_args(1, 2, master, port + 1), env=env, log_name="r1.log")
    wait_for_line(log0, "Brpc Server started")
    rank0.kill()
    assert rank0.wait(timeout=10) == -signal.SIGKILL
    assert rank1.wait(timeout=10) == 1
    assert f"Worker#1 lost the connection to engine server {master}" in read(log1)


# ------------------------------------------------------------------------------------------------
# toggles and files
# ------------------------------------------------------------------------------------------------


def test_dynamic_profiling_socket_and_determinism_line(ranks):
    home = os.environ["HOME"]
    env = {"PROFILING_MODE": "dynamic", "LCCL_DETERMINISTIC": "1", "HCCL_DETERMINISTIC": "true",
           "ATB_MATMUL_SHUFFLE_K_ENABLE": "0"}
    proc, log, _ = single_rank(ranks, env=env)
    text = wait_for_line(log, "Brpc Server started")
    assert ("Deterministic computing enabled (LCCL_DETERMINISTIC=1, HCCL_DETERMINISTIC=true, "
            "ATB_MATMUL_SHUFFLE_K_ENABLE=0)") in text
    path = os.path.join(home, f"dynamic_profiling_socket_{proc.pid}")
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not os.path.exists(path)

    plain, plain_log, _ = single_rank(ranks, log_name="plain.log")
    assert "Deterministic" not in wait_for_line(plain_log, "Brpc Server started")
    assert not any(name.startswith("dynamic_profiling_socket_") for name in os.listdir(home))


def test_log_dir_gets_a_glog_file(ranks, tmp_path):
    log_dir = tmp_path / "glog"
    log_dir.mkdir()
    proc, log, _ = single_rank(ranks, log_dir=str(log_dir))
    wait_for_line(log, "Brpc Server started")
    info = (log_dir / "xllm.INFO").read_text()
    assert info.startswith("Log file created at: ") and "Brpc Server started on port" in info


# ------------------------------------------------------------------------------------------------
# safety and configuration errors
# ------------------------------------------------------------------------------------------------

_NO_SOCKETS = """
import runpy, socket, sys
class Forbidden(socket.socket):
    def __init__(self, *a, **k):
        sys.stderr.write("SOCKET CREATED\\n"); sys.stderr.flush(); import os; os._exit(99)
socket.socket = Forbidden
socket.create_connection = lambda *a, **k: Forbidden()
socket.getaddrinfo = lambda *a, **k: Forbidden()
sys.argv = ["xllm"] + sys.argv[1:]
runpy.run_module("xllm_tui.sim.xllm", run_name="__main__")
"""


@pytest.mark.parametrize("flag,shown", [
    ("--host=11.87.49.110", "11.87.49.110 is not a loopback address"),
    ("--master_node_addr=11.87.49.110:10015", "11.87.49.110 is not a loopback address"),
    ("--master_node_addr=node0.cluster:10015", "'node0.cluster' is a host name"),
])
def test_non_loopback_addresses_are_refused_before_any_socket(flag, shown):
    result = subprocess.run([sys.executable, "-c", _NO_SOCKETS, "--model=/m", "--nnodes=2", "--node_rank=1", flag],
                            capture_output=True, text=True, timeout=30, env=dict(os.environ, **FAST))
    assert "SOCKET CREATED" not in result.stderr
    assert result.returncode == 2
    assert "Refusing to use a non-loopback address" in result.stderr and shown in result.stderr
    assert result.stderr.startswith("F")


def test_loopback_mapping_rules():
    assert loopback_host("") == "127.0.0.1" and loopback_host("localhost") == "127.0.0.1"
    assert loopback_host("127.0.0.5") == "127.0.0.5" and loopback_host("[::1]") == "::1"


def test_bad_simulator_settings_are_clear_errors():
    with pytest.raises(UserError, match="XLLM_SIM_FAIL='boom'"):
        SimConfig.from_env({"XLLM_SIM_FAIL": "boom"})
    with pytest.raises(UserError, match="unknown phase 'loading'"):
        SimConfig.from_env({"XLLM_SIM_HANG_AT": "loading"})
    cfg = SimConfig.from_env({"XLLM_SIM_FAIL": "hccl_error", "XLLM_SIM_FAIL_RANKS": "0,3,5-7",
                              "XLLM_SIM_SLOW": "model:10,kv_cache:2", "XLLM_SIM_IGNORE_SIGTERM": "inf"})
    assert (cfg.fail_phase, cfg.fail_kind) == ("connect", "hccl_error")
    assert cfg.fail_ranks == {0, 3, 5, 6, 7} and cfg.slow == {"model": 10.0, "kv_cache": 2.0}
    assert cfg.ignore_sigterm == float("inf")
    result = subprocess.run(SIM + ["--model=/m"], capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, XLLM_SIM_TIME_SCALE="fast"))
    assert result.returncode == 2 and "XLLM_SIM_TIME_SCALE='fast' is not a number" in result.stderr


# ------------------------------------------------------------------------------------------------
# serving: streaming, failures while up
# ------------------------------------------------------------------------------------------------


def test_streaming_chat_completion(ranks):
    proc, log, port = single_rank(ranks)
    wait_for_line(log, "Brpc Server started")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
                                     data=json.dumps({"messages": [{"role": "user", "content": "hi"}],
                                                      "max_tokens": 3, "stream": True}).encode())
    with urllib.request.urlopen(request, timeout=10) as reply:
        events = [line[6:] for line in reply.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).split() == ["This", "is", "a"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    status, body = http_post(port, "/v1/chat/completions", {"messages": "not a list"})
    assert status == 200  # tolerated like xllm: no content, still a completion
    assert http_get(port, "/nowhere")[0] == 404


def test_a_rank_dying_while_serving_breaks_the_group(ranks):
    port = free_port()
    master = f"127.0.0.1:{distinct_port(port, port + 1)}"
    env = {"XLLM_SIM_FAIL": "serving:hccl_error", "XLLM_SIM_FAIL_RANKS": "1", "XLLM_SIM_FAIL_AFTER": "20"}
    rank0, log0 = ranks.start(rank_args(0, 2, master, port), env=env, log_name="r0.log")
    rank1, log1 = ranks.start(rank_args(1, 2, master, port + 1), env=env, log_name="r1.log")
    wait_for_line(log0, "Brpc Server started")
    assert rank1.wait(timeout=30) == -signal.SIGABRT
    assert "] Failed, HCCL error :" in read(log1)
    # Rank 0 notices the closed connection a moment after the process is gone.
    wait_until(lambda: http_post(port, "/v1/chat/completions",
                                 {"messages": [{"role": "user", "content": "hi"}]})[0] == 500,
               timeout=10, what="a completion failing with 500")
    assert "Execute_model_async failed. Error code : 1008" in read(log0)
    assert http_get(port, "/health") == (200, "OK") and rank0.poll() is None
    _, metrics = http_get(port, "/brpc_metrics")
    assert metric(metrics, "server_request_total_fail") >= 1


def test_execute_failure_on_rank0_at_first_request(ranks):
    proc, log, port = single_rank(ranks, env={"XLLM_SIM_FAIL": "execute_failed", "XLLM_SIM_FAIL_AFTER": "inf"})
    wait_for_line(log, "Brpc Server started")
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        http_post(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert proc.wait(timeout=10) == -signal.SIGABRT
    text = read(log)
    assert text.index("Execute_model_async failed.") < text.index("] Failed to execute model, result has no value")


def test_slow_phase_only_slows_that_phase(ranks):
    # x1000 at scale 0.01: every step of the model phase takes 10 s or more, the others stay quick.
    proc, log, _ = single_rank(ranks, env={"XLLM_SIM_SLOW": "model:1000"})
    text = wait_for_line(log, "Initializing model from:")
    assert "RemoteWorker Hello connected" in text  # the phases before were not slowed
    time.sleep(0.5)  # far longer than the whole start-up takes at this scale
    text = read(log)
    assert "Loading model weights from" not in text and "Init_model_async succeed." not in text
    assert proc.poll() is None


# ------------------------------------------------------------------------------------------------
# registration protocol: races a loaded machine produces (bench/stress_sim.py --freeze-master)
# ------------------------------------------------------------------------------------------------


class FakeRank:
    """A hand-driven rank on rank 0's registration port: REGISTER, then read the steps it is sent."""

    def __init__(self, master_port: int, rank: int, attempt: int):
        self.sock = socket.create_connection(("127.0.0.1", master_port), timeout=10)
        self.sock.sendall(f"REGISTER {rank} 127.0.0.1:{40000 + rank} {attempt}\n".encode())
        self.reader = self.sock.makefile("r", encoding="utf-8", newline="\n")

    def expect(self, text: str) -> None:
        line = self.reader.readline().strip()
        assert line == text, f"expected {text!r} from rank 0, got {line!r}"

    def send(self, data: str) -> None:
        self.sock.sendall(data.encode())

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def start_rank0_for_fakes(ranks: Ranks, nnodes: int) -> tuple[str, int, int]:
    port = free_port()
    master_port = distinct_port(port)
    _, log = ranks.start(rank_args(0, nnodes, f"127.0.0.1:{master_port}", port), log_name="node_0.log")
    wait_for_line(log, "Collective server started on address")
    return log, port, master_port


def test_an_abandoned_registration_read_late_does_not_replace_the_live_one(ranks):
    # Rank 1 timed out waiting for OK on its first connection and registered again (attempt 1); rank 0
    # reads the abandoned attempt 0 only afterwards. Before the fix it replaced the live connection and
    # INIT_MODEL went to the dead one: rank 1 never loaded, the group never came up.
    log, port, master_port = start_rank0_for_fakes(ranks, nnodes=3)
    live = FakeRank(master_port, 1, attempt=1)
    live.expect("OK")
    abandoned = FakeRank(master_port, 1, attempt=0)
    abandoned.expect("ERROR stale registration")
    abandoned.close()
    other = FakeRank(master_port, 2, attempt=0)
    other.expect("OK")
    live.expect("INIT_MODEL")
    other.expect("INIT_MODEL")
    live.send("MODEL_READY\n")
    other.send("MODEL_READY\nKV_READY\n")  # two messages in one segment: rank 0 frames by line
    step = live.reader.readline().split()
    assert step[:1] == ["ALLOC_KV"] and int(step[1]) > 0
    live.send("KV_READY\n")
    wait_for_line(log, f"Brpc Server started on port {port}")
    live.close()
    other.close()


def test_a_rank_registering_again_gets_the_steps_already_broadcast(ranks):
    # Rank 1's first connection was registered and got INIT_MODEL, but rank 1 had given up on it (OK came
    # too late); its new connection must still get INIT_MODEL, or rank 0 waits for it for ever.
    log, port, master_port = start_rank0_for_fakes(ranks, nnodes=2)
    first = FakeRank(master_port, 1, attempt=0)
    first.expect("OK")
    first.expect("INIT_MODEL")  # rank 0's own worker registered too: the model step went out
    first.close()
    again = FakeRank(master_port, 1, attempt=1)
    again.expect("OK")
    again.expect("INIT_MODEL")
    again.send("MODEL_READY\n")
    assert again.reader.readline().startswith("ALLOC_KV ")
    again.send("KV_READY\n")
    wait_for_line(log, f"Brpc Server started on port {port}")
    assert read(log).count("RemoteWorker Hello connected") == 2
    again.close()


@pytest.mark.parametrize("version", ["any", "0.7"])
def test_a_worker_reads_several_steps_from_one_segment(ranks, version):
    # A stand-in rank 0 sends OK, INIT_MODEL and ALLOC_KV in one write: the worker must act on each.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(20)
        master = f"127.0.0.1:{server.getsockname()[1]}"
        proc, log = ranks.start(rank_args(1, 2, master, free_port(), draft_model="/models/GLM-mtp"),
                                env={"XLLM_SIM_XLLM_VERSION": version}, log_name="node_1.log")
        conn, _ = server.accept()
        with conn:
            conn.settimeout(20)
            reader = conn.makefile("r", encoding="utf-8", newline="\n")
            assert reader.readline().split()[:2] == ["REGISTER", "1"]
            conn.sendall(b"OK\nINIT_MODEL\nINIT_DRAFT\nALLOC_KV 1000 128\n")
            assert reader.readline() == "MODEL_READY\n"
            assert reader.readline() == "DRAFT_READY\n"
            assert reader.readline() == "KV_READY\n"
            text = read(log)
            assert text.count("Loading model weights from /models/GLM-4.5-w8a8/") == 3
            assert text.count("Loading model weights from /models/GLM-mtp/") == 1
            assert "Initializing k cache with shape:" not in text  # rank 0's engine logs it, not a worker
            # What a real worker logs for its models (worker_impl.cpp): no "Initializing model from:"
            # (that is rank 0's engine), one ATen bracket per model when the world has several ranks.
            assert "Initializing model from:" not in text
            if version == "0.7":  # v0.7.x's WorkerImpl::init_model logs nothing of its own
                assert "ATen threads" not in text
                reader.close()
                return
            assert text.count("Temporarily setting ATen threads to 1 during weight loading, tp_world_size=2") == 2
            lines = text.splitlines()
            done = [i for i, line in enumerate(lines) if "Weight loading completed, restored ATen threads=" in line]
            weights = [i for i, line in enumerate(lines) if "Loading model weights from" in line]
            assert len(done) == 2 and weights[2] < done[0] < weights[3] < done[1]
            reader.close()
        assert proc.poll() is None


def test_startup_tracker_reads_a_simulated_group_with_a_draft_model(ranks):
    from xllm_tui.logs.glog import StartupTracker

    port = free_port()
    master = f"127.0.0.1:{distinct_port(port)}"
    draft = {"draft_model": "/models/GLM-mtp", "num_speculative_tokens": 1}
    _, worker_log = ranks.start(rank_args(1, 2, master, distinct_port(port), **draft), log_name="node_1.log")
    _, master_log = ranks.start(rank_args(0, 2, master, port, **draft), log_name="node_0.log")
    wait_for_line(master_log, f"Brpc Server started on port {port}")
    worker = StartupTracker(is_master=False)
    worker.feed_lines(read(worker_log).splitlines())
    # A 31b7cafd worker logs neither ATen brackets (v0.9.0+) nor kv cache lines (rank 0's engine does):
    # it is ready by its connection plus rank 0's Init_model_async lines, as the supervisor combines them.
    assert worker.connected and not worker.ready and worker.failure is None
    assert worker.weights.describe() == "3/3, draft 1/1"
    rank0 = StartupTracker(is_master=True)
    rank0.feed_lines(read(master_log).splitlines())
    assert rank0.ready and rank0.all_models_initialised and rank0.describe() == "serving"
    assert rank0.models_initialised == 4  # one per rank and model
    assert rank0.weights.describe() == "3/3, draft 1/1"  # rank 0's own worker


def test_a_restarted_worker_registers_again_before_the_group_is_up(ranks):
    # Rank 1 retried a few times before rank 0 came, then its process was replaced: the new process
    # (counting its tries anew) must not be taken for a stale registration of the old one.
    port = free_port()
    master = f"127.0.0.1:{distinct_port(port)}"
    first, first_log = ranks.start(rank_args(1, 3, master, distinct_port(port)), log_name="node_1.log")
    wait_until(lambda: read(first_log).count("try connect to engine server error") >= 2, timeout=20,
               what="rank 1 retrying")
    _, master_log = ranks.start(rank_args(0, 3, master, port), log_name="node_0.log")
    wait_for_line(first_log, "Worker#1 connect to")
    first.kill()
    first.wait(timeout=10)
    _, again_log = ranks.start(rank_args(1, 3, master, distinct_port(port)), log_name="node_1b.log")
    wait_for_line(again_log, "Worker#1 connect to")
    ranks.start(rank_args(2, 3, master, distinct_port(port)), log_name="node_2.log")
    wait_for_line(master_log, f"Brpc Server started on port {port}")
    assert read(again_log).count("Loading model weights from") == 3  # the new process loaded the model


# ------------------------------------------------------------------------------------------------
# /health alone breaking (XLLM_SIM_HEALTH_FAIL_AFTER / _RECOVER_AFTER)
# ------------------------------------------------------------------------------------------------


def test_health_failure_window_is_scaled_serving_time():
    cfg = SimConfig.from_env({"XLLM_SIM_TIME_SCALE": "0.01", "XLLM_SIM_HEALTH_FAIL_AFTER": "50",
                              "XLLM_SIM_HEALTH_RECOVER_AFTER": "100"})
    # 50 s and 100 s scaled: fails from 0.5 s of serving, answers OK again from 1.5 s.
    assert [cfg.health_failing(t) for t in (0.0, 0.49, 0.5, 1.49, 1.5, 60.0)] == \
        [False, False, True, True, False, False]
    for_ever = SimConfig.from_env({"XLLM_SIM_TIME_SCALE": "0", "XLLM_SIM_HEALTH_FAIL_AFTER": "5"})
    assert for_ever.health_failing(0.0) and for_ever.health_failing(1e6)  # no recover: failing for ever
    assert not SimConfig.from_env({}).health_failing(1e6)  # unset: /health never fails
    with pytest.raises(UserError, match="XLLM_SIM_HEALTH_FAIL_AFTER='soon' is not a number"):
        SimConfig.from_env({"XLLM_SIM_HEALTH_FAIL_AFTER": "soon"})


def test_health_answers_503_while_the_rank_and_its_other_routes_live_on(ranks):
    # 1 s of good health, 2 s of 503, then OK again (scale 0.01).
    env = {"XLLM_SIM_HEALTH_FAIL_AFTER": "100", "XLLM_SIM_HEALTH_RECOVER_AFTER": "200"}
    proc, log, port = single_rank(ranks, env=env)
    wait_for_line(log, "Brpc Server started")
    seen: list[int] = []

    def health_status(wanted: int) -> bool:
        status, body = http_get(port, "/health")
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == 503:
            assert body.startswith("[E503]") and "not healthy" in body
        return status == wanted

    wait_until(lambda: health_status(503), timeout=20, interval=0.05, what="/health answering 503")
    # Only /health is broken: the process lives and serves everything else.
    assert proc.poll() is None
    assert http_get(port, "/v1/models")[0] == 200
    status, reply = http_post(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and reply["choices"][0]["finish_reason"] == "stop"
    wait_until(lambda: health_status(200), timeout=20, interval=0.05, what="/health answering OK again")
    assert seen[-2:] == [503, 200] and set(seen) == {200, 503}, seen
    assert proc.poll() is None
    assert "not healthy" not in read(log)  # brpc does not log a failing health check


@pytest.mark.parametrize("release,text", [("31b7cafd", "npu_process_group.cpp:28] Failed, HCCL error :HCCL_E_TIMEOUT"),
                                          ("v0.9.1", "npu_process_group.h:69] Failed, HCCL error.")])
def test_hccl_failure_is_written_as_the_imitated_release_writes_it(ranks, release, text):
    env = {"XLLM_SIM_FAIL": "engine:hccl_error", "XLLM_SIM_XLLM_VERSION": release}
    proc, log, _ = single_rank(ranks, env=env, log_name=f"{release}.log")
    assert proc.wait(timeout=30) == -signal.SIGABRT
    assert text in read(log)


@pytest.mark.parametrize("release,kv_line,worker_line", [
    ("31b7cafd", re.compile(r"kv cache capacity: \d+\.\d\d [KMGT]?B, blocks: \d+, slot_size: \d+, n_layers: 46$", re.M),
     "DistributeWorker started on address 127.0.0.1:"),
    ("v0.9.1", re.compile(r"kv cache capacity: .*, n_layers: 46, kv_cache_dtype: auto$", re.M),
     "DistributeWorker started on address 127.0.0.1:"),
    ("v0.10.0", re.compile(r"kv cache capacity: .*, scale_slot_size: 0, .*, n_layers: 46, kv_cache_dtype: auto$", re.M),
     "DistributeWorker server started on address 127.0.0.1:"),
])
def test_start_up_lines_follow_the_imitated_release(ranks, release, kv_line, worker_line):
    proc, log, port = single_rank(ranks, env={"XLLM_SIM_XLLM_VERSION": release}, log_name=f"{release}.log")
    wait_for_line(log, f"Brpc Server started on port {port}")
    text = read(log)
    assert kv_line.search(text) and worker_line in text
    assert re.search(r"worker #0: available memory: \d+\.\d\d GB, total memory: 64\.00 GB\. Using "
                     r"max_memory_utilization: 0\.86, max_cache_size: 0\.00 B$", text, re.M)


def test_log_lines_carry_the_imitated_releases_file_and_line(ranks):
    # xllm.cpp:136 logs the role at 31b7cafd, xllm.cpp:367 at v0.10.0 (data/message_lines.json).
    for release, where in (("31b7cafd", "xllm.cpp:136]"), ("v0.10.0", "xllm.cpp:367]")):
        proc, log, port = single_rank(ranks, env={"XLLM_SIM_XLLM_VERSION": release}, log_name=f"{release}.log")
        wait_for_line(log, f"Brpc Server started on port {port}")
        assert f"{where} set worker role to local worker" in read(log)


@pytest.mark.parametrize("release,where", [("31b7cafd", "llm_engine.cpp:299]"), ("v0.10.0", "llm_engine.cpp:486]")])
def test_failure_lines_carry_the_imitated_releases_file_and_line(ranks, release, where):
    env = {"XLLM_SIM_FAIL": "kv_cache_alloc", "XLLM_SIM_XLLM_VERSION": release}
    proc, log, _ = single_rank(ranks, env=env, log_name=f"{release}.log")
    assert proc.wait(timeout=30) == -signal.SIGABRT
    assert f"{where} Check failed: kv_cache_cap.n_blocks > 0 (0 vs. 0) no memory for kv cache" in read(log)
