"""A simulated xllm rank: `python -m xllm_tui.sim.xllm --model=... --node_rank=3 ...`.

It takes the place of the xllm binary so the supervisor and the TUI run their real code paths
(processes, numactl, signals, sockets, files) on machines without NPUs. Faithful to
../shared/xllm-facts.md: gflags parsing and errors, glog lines through the start-up milestones of its
role, real TCP registration of every rank with rank 0 on master_node_addr, HTTP on rank 0's --port,
and xllm's failure and signal behaviour. What goes wrong, and how fast, is chosen with XLLM_SIM_*
environment variables (docs/simulator.md lists them all).

Safety rule of the project: it binds and connects to loopback addresses only (127.0.0.0/8, ::1,
localhost) and checks every address before any socket is made.
"""

from __future__ import annotations

import ctypes
import glob as _glob
import ipaddress
import json
import math
import os
import random
import resource
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from xllm_tui.sim.flags import XLLM_FLAGS, ParsedFlags, all_flags, helpxml, parse_gflags  # noqa: F401 (re-export)
from xllm_tui.sim.glog import GlogWriter

# Phases of a rank's start-up, in order. XLLM_SIM_FAIL / _HANG_AT / _SLOW name them.
PHASES = ("init", "engine", "connect", "model", "kv_cache", "server", "serving")

# Seconds each step takes at XLLM_SIM_TIME_SCALE=1 (about 25 s to ready with 8 weight files).
STEP_SECONDS = {
    "init": 1.0,  # after the role line
    "engine": 2.0,  # engine and worker server creation
    "retry": 3.0,  # xllm's fixed sleep between registration attempts
    "model": 1.0,  # model config before the first weight file
    "weight_file": 2.0,  # per weight file
    "kv_cache": 2.0,
    "server": 1.0,
}

# Where each milestone is logged from: glog's basename:line of the LOG statement in xllm 31b7cafd (the
# launch guide's commit). Imitating another release, use_release_lines() puts in that release's lines.
SRC = {
    "main": "xllm.cpp:103",
    "role": "xllm.cpp:136",
    "master": "master.cpp:54",
    "engine": "master.cpp:93",
    "draft": "master.cpp:143",
    "dist": "dist_manager.cpp:113",
    "worker_create": "worker_server.cpp:74",
    "worker_started": "xllm_server.cpp:145",
    "worker_address": "worker_server.cpp:95",
    "worker_sync": "worker_server.cpp:285",
    "worker_sync_ok": "worker_server.cpp:290",
    "worker_sync_failed": "worker_server.cpp:298",
    "collective": "xllm_server.cpp:212",
    "remote_worker": "remote_worker.cpp:53",
    "model_init": "llm_engine.cpp:139",
    "aten_threads": "worker_impl.cpp:959",  # v0.9.0
    "weights": "hf_model_loader.cpp:80",
    "init_model": "comm_channel.cpp:549",
    "kv_worker": "llm_engine.cpp:220",
    "kv_capacity": "llm_engine.cpp:293",
    "kv_alloc": "llm_engine.cpp:334",
    "brpc": "xllm_server.cpp:59",
    # failure lines ("@key" in FAILURES)
    "fail_model_path": "xllm.cpp:103",
    "fail_kv_size": "llm_engine.cpp:242",
    "fail_kv_blocks": "llm_engine.cpp:277",
    "fail_kv_memory": "llm_engine.cpp:299",
    "fail_root_info": "collective_service.cpp:37",
    "fail_set_device": "collective_service.cpp:34",
    "fail_rank_table": "mapping_npu.cpp:97",
    "fail_execute_async": "comm_channel.cpp:531",
    "fail_execute_none": "llm_engine.cpp:750",
    "fail_missing_worker": "dist_manager.cpp:184",
    "fail_world_size": "dist_manager.cpp:119",
    "fail_brpc_port": "xllm.cpp:273",
    "brpc_listen": "server.cpp:1181",
    "http_fail": "xllm_server.cpp:56",
    "quit": "server.cpp:2128",
    # The simulator's own lines (no xllm release prints them): named after no xllm source file.
    "env": "sim_xllm.cpp:1",
    "profiling": "sim_xllm.cpp:1",
    "sim": "sim_xllm.cpp:1",
}

# kind -> (default phase, [(severity, src, message template)], ending). Templates use str.format
# with model, rank, device, port, addr, tablefile. Ending "abort" = SIGABRT like glog's LOG(FATAL).
FAILURES: dict[str, tuple[str, list[tuple[str, str, str]], str]] = {
    "model_path_missing": ("init", [("F", "@fail_model_path", "Model path {model} does not exist.")], "abort"),
    "kv_cache_oom": ("kv_cache", [("F", "@fail_kv_size",
                                   "Check failed: kv_cache_cap.cache_size_in_bytes > 0 (0 vs. 0) "
                                   "Available kv cache size must be greater than 0")], "abort"),
    "kv_cache_blocks": ("kv_cache", [("F", "@fail_kv_blocks",
                                      "Check failed: kv_cache_cap.n_blocks > 0 (0 vs. 0) no n_blocks for kv cache")],
                        "abort"),
    "kv_cache_alloc": ("kv_cache", [("F", "@fail_kv_memory", "Check failed: kv_cache_cap.n_blocks > 0 (0 vs. 0) "
                                                                "no memory for kv cache")], "abort"),
    "hccl_error": ("connect", [("F", "npu_process_group.cpp:28", "Failed, HCCL error :HCCL_E_TIMEOUT")], "abort"),
    # CHECK_EQ(status, HCCL_SUCCESS) / CHECK_EQ(error, ACL_SUCCESS) in collective_service.cpp (rank 0).
    "hccl_root_info": ("connect", [("F", "@fail_root_info", "Check failed: status == HCCL_SUCCESS (7 vs. 0) "
                                                                      "HCCL get root info failed.")], "abort"),
    "acl_set_device": ("engine", [("F", "@fail_set_device", "Check failed: error == ACL_SUCCESS (507033 vs. "
                                                                     "0) ACL set device id {device} failed. Error : "
                                                                     "507033")], "abort"),
    "rank_table": ("engine", [("E", "@fail_rank_table", "Failed to parse rank table file: {tablefile}")], "exit1"),
    "execute_failed": ("serving", [
        ("E", "@fail_execute_async", "Execute_model_async failed. Error code : 1008, [E1008]Reached timeout=60000ms"),
        ("F", "@fail_execute_none", "Failed to execute model, result has no value")], "abort"),
    # LOG(FATAL) after CollectiveService::wait(); a real rank 0 waits for a missing worker instead, since
    # wait() returns only when every rank has registered: this injects the FATAL path all the same.
    "worker_missing": ("connect", [("F", "@fail_missing_worker",
                                    "Not all worker connect to engine server. Miss rank is {missing}")], "abort"),
    "check_failed": ("engine", [("F", "@fail_world_size",
                                 "Check failed: (world_size % dp_size) == 0 (1 vs. 0) Global world size must be "
                                 "divisible by dp size in multi-node serving mode.")], "abort"),
    "port_in_use": ("server", [("E", "server.cpp:1181", "Fail to listen 0.0.0.0:{port}"),
                               ("E", "@http_fail", "Failed to start server on port {port}"),
                               ("E", "@fail_brpc_port", "Failed to start brpc server on port {port}")], "exit255"),
    "segfault": ("model", [], "segv"),
    "exit": ("model", [], "exit1"),
}

MASTER_LOSS_MODES = ("sleep", "exit")


def use_release_lines(release: str) -> None:
    """SRC as `release` logs it (data/message_lines.json, from tools/extract_message_lines.py)."""
    import json
    from pathlib import Path

    table = json.loads((Path(__file__).parent.parent / "data" / "message_lines.json").read_text(encoding="utf-8"))
    lines = table.get(release, {})
    SRC.update(lines)
    if "worker_started" not in lines and "collective" in lines:
        SRC["worker_started"] = lines["collective"]  # v0.10.0: one generic "<name> server started" statement
_SIM_LAYERS = 46  # GLM-4.5's num_hidden_layers: the model the shipped profiles load


def readable_size(n: int) -> str:
    """xllm's readable_size (util/pretty_print.cpp): 1024-based, two decimals, B/KB/MB/GB/TB."""
    size, index = float(n), 0
    suffixes = ("B", "KB", "MB", "GB", "TB")
    while size >= 1024 and index < len(suffixes) - 1:
        size /= 1024
        index += 1
    return f"{size:.2f} {suffixes[index]}"


class UserError(Exception):
    """Bad input from the operator (an XLLM_SIM_* value): reported in one line, exit 2."""


class SafetyRefusal(Exception):
    """An address outside loopback: never bound, never connected."""


# ----------------------------------------------------------------------------------------------
# configuration from the environment
# ----------------------------------------------------------------------------------------------


def parse_rank_set(text: str, name: str) -> frozenset[int] | None:
    """'0,3,5-7' -> {0,3,5,6,7}; '' or 'all' -> None (= every rank)."""
    text = text.strip()
    if text in ("", "all", "*"):
        return None
    ranks: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                first, last = part.split("-", 1)
                ranks.update(range(int(first), int(last) + 1))
            else:
                ranks.add(int(part))
        except ValueError:
            raise UserError(f"{name}={text!r}: '{part}' is not a rank or range like 5-7; "
                            f"write e.g. {name}=0,3,5-7 or leave it empty for every rank") from None
    return frozenset(ranks)


def _float_env(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    text = env.get(name, "").strip()
    if text == "":
        return default
    if text.lower() in ("inf", "forever", "-1"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{name}={text!r} is not a number; use e.g. {name}={default}") from None
    if value < minimum or math.isnan(value):
        raise UserError(f"{name}={text!r} must be >= {minimum}")
    return value


def _int_env(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    text = env.get(name, "").strip()
    if text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{name}={text!r} is not a whole number; use e.g. {name}={default}") from None
    if value < minimum:
        raise UserError(f"{name}={text!r} must be >= {minimum}")
    return value


def _phase(text: str, name: str) -> str:
    if text not in PHASES:
        raise UserError(f"{name}: unknown phase {text!r}; phases are {', '.join(PHASES)}")
    return text


@dataclass
class SimConfig:
    time_scale: float = 1.0
    weight_files: int = 8
    draft_weight_files: int = 1
    fail_kind: str | None = None
    fail_phase: str | None = None
    fail_ranks: frozenset[int] | None = None
    fail_after: float = 5.0  # seconds (scaled) of serving before a serving-phase failure
    fail_message: str | None = None
    hang_at: str | None = None
    hang_ranks: frozenset[int] | None = None
    slow: dict[str, float] = field(default_factory=dict)
    slow_ranks: frozenset[int] | None = None
    ignore_sigterm: float = 0.0  # real seconds
    on_master_loss: str = "sleep"
    check_model_path: bool = False
    check_rank_table: bool = False
    xllm_version: str = "31b7cafd"  # the release whose flags and messages are imitated (xllm_flags.RELEASES)
    load_rps: float = 0.0
    core_file: bool = False
    # Rank 0's GET /health answers 503 after this many seconds (scaled) of serving, for this many seconds
    # (scaled) of failing; inf = never / for ever. Only /health breaks: the process and other routes live on.
    health_fail_after: float = math.inf
    health_recover_after: float = math.inf

    @classmethod
    def from_env(cls, env: dict[str, str]) -> SimConfig:
        cfg = cls()
        cfg.time_scale = _float_env(env, "XLLM_SIM_TIME_SCALE", 1.0)
        if math.isinf(cfg.time_scale):
            raise UserError("XLLM_SIM_TIME_SCALE must be a finite number like 1.0 or 0.01")
        cfg.weight_files = _int_env(env, "XLLM_SIM_WEIGHT_FILES", 8, 1)
        cfg.draft_weight_files = _int_env(env, "XLLM_SIM_DRAFT_WEIGHT_FILES", 1, 1)
        fail = env.get("XLLM_SIM_FAIL", "").strip()
        if fail:
            phase, sep, kind = fail.rpartition(":")
            if kind not in FAILURES:
                raise UserError(f"XLLM_SIM_FAIL={fail!r}: unknown kind {kind!r}; kinds are "
                                f"{', '.join(FAILURES)} (format: kind or phase:kind)")
            cfg.fail_kind = kind
            cfg.fail_phase = _phase(phase, "XLLM_SIM_FAIL") if sep else FAILURES[kind][0]
        cfg.fail_ranks = parse_rank_set(env.get("XLLM_SIM_FAIL_RANKS", ""), "XLLM_SIM_FAIL_RANKS")
        cfg.fail_after = _float_env(env, "XLLM_SIM_FAIL_AFTER", 5.0)
        cfg.fail_message = env.get("XLLM_SIM_FAIL_MESSAGE") or None
        hang = env.get("XLLM_SIM_HANG_AT", "").strip()
        cfg.hang_at = _phase(hang, "XLLM_SIM_HANG_AT") if hang else None
        cfg.hang_ranks = parse_rank_set(env.get("XLLM_SIM_HANG_RANKS", ""), "XLLM_SIM_HANG_RANKS")
        for item in filter(None, (p.strip() for p in env.get("XLLM_SIM_SLOW", "").split(","))):
            phase, sep, factor = item.partition(":")
            if not sep:
                raise UserError(f"XLLM_SIM_SLOW={item!r}: write phase:factor, e.g. model:10")
            try:
                cfg.slow[_phase(phase, "XLLM_SIM_SLOW")] = float(factor)
            except ValueError:
                raise UserError(f"XLLM_SIM_SLOW={item!r}: factor {factor!r} is not a number") from None
        cfg.slow_ranks = parse_rank_set(env.get("XLLM_SIM_SLOW_RANKS", ""), "XLLM_SIM_SLOW_RANKS")
        cfg.ignore_sigterm = _float_env(env, "XLLM_SIM_IGNORE_SIGTERM", 0.0)
        mode = env.get("XLLM_SIM_ON_MASTER_LOSS", "sleep").strip() or "sleep"
        if mode not in MASTER_LOSS_MODES:
            raise UserError(f"XLLM_SIM_ON_MASTER_LOSS={mode!r}: use 'sleep' (as xllm does) or 'exit'")
        cfg.on_master_loss = mode
        cfg.check_model_path = env.get("XLLM_SIM_CHECK_MODEL_PATH", "") in ("1", "true", "yes")
        cfg.check_rank_table = env.get("XLLM_SIM_CHECK_RANK_TABLE", "") in ("1", "true", "yes")
        from xllm_tui.xllm_flags import RELEASES, resolve_release

        wanted = env.get("XLLM_SIM_XLLM_VERSION", "").strip()
        version = resolve_release(wanted)
        if version is None:
            raise UserError(f"XLLM_SIM_XLLM_VERSION={wanted!r}: use one of {', '.join(RELEASES)}, any, "
                            "or 0.7 / 0.8 / 0.9 / 0.10 / main")
        cfg.xllm_version = version
        cfg.load_rps = _float_env(env, "XLLM_SIM_LOAD_RPS", 0.0)
        if math.isinf(cfg.load_rps):
            raise UserError("XLLM_SIM_LOAD_RPS must be a finite number of requests per second")
        cfg.core_file = env.get("XLLM_SIM_CORE_FILE", "") in ("1", "true", "yes")
        cfg.health_fail_after = _float_env(env, "XLLM_SIM_HEALTH_FAIL_AFTER", math.inf)
        cfg.health_recover_after = _float_env(env, "XLLM_SIM_HEALTH_RECOVER_AFTER", math.inf)
        return cfg

    def scaled(self, seconds: float) -> float:
        """Real seconds for a simulated delay; inf stays inf (inf * 0 would be nan at time scale 0)."""
        return seconds if math.isinf(seconds) else seconds * self.time_scale

    def health_failing(self, serving_for: float) -> bool:
        """Does rank 0's /health answer 503 after `serving_for` real seconds of serving?"""
        failing_for = serving_for - self.scaled(self.health_fail_after)
        return 0 <= failing_for < self.scaled(self.health_recover_after)


# ----------------------------------------------------------------------------------------------
# addresses
# ----------------------------------------------------------------------------------------------


def loopback_host(host: str) -> str:
    """The loopback address to use for `host`, or SafetyRefusal. Never resolves names (no DNS packet)."""
    text = host.strip().strip("[]")
    if text in ("", "localhost"):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise SafetyRefusal(f"'{host}' is a host name, not a loopback address") from None
    if not address.is_loopback:
        raise SafetyRefusal(f"{host} is not a loopback address")
    return str(address)


def split_host_port(addr: str) -> tuple[str, int]:
    """'127.0.0.1:19888' or '[::1]:19888' -> (host, port); ValueError when malformed."""
    host, sep, port_text = addr.rpartition(":")
    if not sep or not host:
        raise ValueError(f"'{addr}' is not host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} of '{addr}' is out of range")
    return host.strip("[]"), port


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _hang_up(sock: socket.socket) -> None:
    """Really end a connection: close() alone leaves the descriptor open while a makefile() reader holds
    it, so the peer would never see EOF."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------
# the rank
# ----------------------------------------------------------------------------------------------


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.time()
        self.requests_in = 0
        self.requests_ok = 0
        self.requests_fail = 0
        self.prompt_tokens = 0
        self.generated_tokens = 0

    def add(self, ok: bool, prompt: int, generated: int) -> None:
        with self.lock:
            self.requests_in += 1
            if ok:
                self.requests_ok += 1
            else:
                self.requests_fail += 1
            self.prompt_tokens += prompt
            self.generated_tokens += generated


class Rank:
    """One simulated xllm process: rank 0 (master, engine, HTTP) or a worker."""

    def __init__(self, flags: ParsedFlags, cfg: SimConfig, env: dict[str, str], log: GlogWriter):
        self.flags = flags
        self.cfg = cfg
        self.env = env
        self.log = log
        self.rank = int(flags["node_rank"])
        self.nnodes = int(flags["nnodes"])
        self.is_master = self.rank == 0
        self.model = str(flags["model"])
        self.model_id = str(flags["model_id"]) or os.path.basename(os.path.normpath(self.model)) or self.model
        self.devices = self._devices()
        self.device = self.devices[0]
        self.port = int(flags["port"])
        self.metrics = Metrics()
        self.hung = threading.Event()
        self.master_lost = threading.Event()
        self.serving = threading.Event()
        self.serving_since: float | None = None  # time.monotonic() when the Brpc server started
        self.lost_workers: set[int] = set()
        self.http: ThreadingHTTPServer | None = None
        self.collective: socket.socket | None = None
        self.worker_rpc: socket.socket | None = None
        self.profiling_socket_path: str | None = None
        self.profiling_socket: socket.socket | None = None
        self.sigterm_seen = False
        self.host = "127.0.0.1"
        self.master_host = "127.0.0.1"
        self.master_port = 19888
        self.master_addr = str(flags["master_node_addr"])
        # rank 0's registration state
        self.reg_lock = threading.Condition()
        self.registered: dict[int, tuple[socket.socket, str]] = {}
        self.registration_attempt: dict[int, int] = {}  # rank -> time stamp of its current connection
        self.commands_sent: list[str] = []  # every step broadcast so far, replayed to a rank that re-registers
        self.model_ready: set[int] = set()
        self.draft_ready: set[int] = set()
        self.kv_ready: set[int] = set()

    # -- helpers -------------------------------------------------------------------------------

    def _devices(self) -> list[int]:
        if "device_id" in self.flags.explicit and str(self.flags["device_id"]).strip():
            index = str(self.flags["device_id"]).strip().rpartition(":")[2]
            return [int(index)] if index.isdigit() else [0]
        devices = []
        for part in str(self.flags["devices"]).split(","):
            part = part.strip()
            kind, _, index = part.partition(":")
            try:
                devices.append(int(index))
            except ValueError:
                devices.append(0)
        return devices or [0]

    def targeted(self, ranks: frozenset[int] | None) -> bool:
        return ranks is None or self.rank in ranks

    def sleep(self, phase: str, seconds: float) -> None:
        factor = self.cfg.slow.get(phase, 1.0) if self.targeted(self.cfg.slow_ranks) else 1.0
        delay = seconds * self.cfg.time_scale * factor
        if delay > 0:
            time.sleep(delay)

    def enter(self, phase: str, fail: bool = True) -> None:
        """Start of a phase: hang or fail here when the operator asked for it."""
        if self.cfg.hang_at == phase and self.targeted(self.cfg.hang_ranks):
            self.hang()
        if fail and self.cfg.fail_phase == phase and phase != "serving" and self.targeted(self.cfg.fail_ranks):
            self.fail()

    def hang(self) -> None:
        """Stop making progress and stay silent; signals still act as usual."""
        self.log.muted = True
        self.hung.set()
        while True:
            time.sleep(3600)

    def fail(self, kind: str | None = None) -> None:
        kind = kind or self.cfg.fail_kind
        assert kind is not None
        _phase, lines, ending = FAILURES[kind]
        if kind == "hccl_error" and self.cfg.xllm_version in ("v0.9.0", "v0.9.1", "v0.10.0"):
            # From v0.9.0 the HCCLCHECK macro lives in npu_process_group.h and drops the error string.
            header_line = "71" if self.cfg.xllm_version == "v0.10.0" else "69"
            lines = [("F", f"npu_process_group.h:{header_line}", "Failed, HCCL error.")]
        values = {"model": self.model, "rank": self.rank, "device": self.device, "port": self.port,
                  "addr": self.master_addr, "tablefile": self.flags["rank_tablefile"] or "hccl.json",
                  "missing": max(self.nnodes - 1, 0)}
        for index, (severity, where, template) in enumerate(lines):
            where = SRC.get(where[1:], where) if where.startswith("@") else where  # the imitated release's line
            message = template.format(**values)
            if self.cfg.fail_message and kind == self.cfg.fail_kind and index == len(lines) - 1:
                message = self.cfg.fail_message
            self.log.log(severity, where, message)
        if ending == "abort":
            self.abort()
        elif ending == "exit255":
            self.exit_now(255)
        elif ending == "segv":
            self.segfault()
        else:
            self.exit_now(1)

    def fatal(self, where: str, message: str) -> None:
        self.log.log("F", where, message)
        self.abort()

    def abort(self) -> None:
        """What glog does after a FATAL line: print the stack trace header, then abort() -> SIGABRT."""
        self.log.raw("*** Check failure stack trace: ***")
        for frame, symbol in enumerate(("google::LogMessage::Fail()", "google::LogMessage::SendToLog()",
                                        "google::LogMessage::Flush()", "google::LogMessageFatal::~LogMessageFatal()",
                                        "xllm::LLMEngine::init()", "main", "__libc_start_main", "_start")):
            self.log.raw(f"    @     0x{0x55d0c0de0000 + frame * 0x1a3f:x}  {symbol}")
        self._write_core_file()
        self._no_core_dump()
        os.abort()

    def segfault(self) -> None:
        self.log.raw(f"*** SIGSEGV (@0x0) received by PID {os.getpid()} (TID 0x{threading.get_ident():x}) "
                     f"from PID 0; stack trace: ***")
        self._write_core_file()
        self._no_core_dump()
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
        os._exit(139)

    def _write_core_file(self) -> None:
        """With XLLM_SIM_CORE_FILE=1 leave a small core.<pid> in the working directory, as a real crash does."""
        if self.cfg.core_file:
            try:
                with open(f"core.{os.getpid()}", "wb") as handle:
                    handle.write(b"\x7fELF simulated core file of xllm rank %d\n" % self.rank)
            except OSError:
                pass

    @staticmethod
    def _no_core_dump() -> None:
        try:  # PYTHONFAULTHANDLER would print a Python traceback that no real rank prints
            import faulthandler

            faulthandler.disable()
        except Exception:
            pass
        # A simulated crash must not write a real multi-MB core of the Python interpreter.
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        except (ValueError, OSError):
            pass
        try:  # PR_SET_DUMPABLE = 4: also stops core_pattern pipes (apport, systemd-coredump)
            ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
        except Exception:
            pass

    def exit_now(self, code: int) -> None:
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)

    def exit_clean(self, code: int) -> None:
        """A clean exit: remove the dynamic profiling socket as the profiler does, then leave."""
        self._remove_profiling_socket()
        self.exit_now(code)

    # -- environment toggles ---------------------------------------------------------------------

    def report_environment(self) -> None:
        shown = [(k, self.env[k]) for k in ("LCCL_DETERMINISTIC", "HCCL_DETERMINISTIC", "ATB_MATMUL_SHUFFLE_K_ENABLE")
                 if k in self.env]
        on = self.env.get("LCCL_DETERMINISTIC", "") in ("1", "true") or \
            self.env.get("HCCL_DETERMINISTIC", "").lower() in ("1", "true")
        if on:
            self.log.info(SRC["env"], "Deterministic computing enabled ("
                          + ", ".join(f"{k}={v}" for k, v in shown) + ")")
        if self.env.get("PROFILING_MODE", "").lower() == "dynamic":
            self._create_profiling_socket()

    def _create_profiling_socket(self) -> None:
        home = self.env.get("HOME") or os.path.expanduser("~")
        path = os.path.join(home, f"dynamic_profiling_socket_{os.getpid()}")
        try:
            if len(path.encode()) < 108:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(path)
                sock.listen(1)
                self.profiling_socket = sock
            else:  # too long for a unix socket address: a plain file marks it the same way
                open(path, "w").close()
        except OSError as exc:
            self.log.warning(SRC["profiling"], f"Failed to create dynamic profiling socket {path}: {exc}")
            return
        self.profiling_socket_path = path
        self.log.info(SRC["profiling"], f"Dynamic profiling enabled (PROFILING_MODE=dynamic), "
                                        f"listening on {path}")

    def _remove_profiling_socket(self) -> None:
        if self.profiling_socket_path:
            try:
                os.unlink(self.profiling_socket_path)
            except OSError:
                pass
            self.profiling_socket_path = None

    # -- signals -----------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigterm(self, signum, _frame) -> None:
        if self.cfg.ignore_sigterm > 0:
            if not self.sigterm_seen:
                self.sigterm_seen = True
                if not math.isinf(self.cfg.ignore_sigterm):
                    timer = threading.Timer(self.cfg.ignore_sigterm, self._terminate, args=(signum,))
                    timer.daemon = True
                    timer.start()
            return
        self._terminate(signum)

    def _on_sigint(self, signum, _frame) -> None:
        self._terminate(signum)

    def _terminate(self, signum: int) -> None:
        if not self.is_master:
            # xllm's worker handler is `_exit(0)`: immediate, no cleanup, no log line.
            os._exit(0)
        # rank 0: brpc's quit handling stops the server and main returns 0.
        # xllm defines shutdown_handler ("Received signal ...") but never installs it: no such line.
        if self.serving.is_set():
            self.log.info(SRC["quit"], "Server[xllm::APIService] is going to quit")
        for closer in (self._close_http, self._close_collective):
            try:
                closer()
            except Exception:
                pass
        self.exit_clean(0)

    def _close_http(self) -> None:
        if self.http is not None:
            self.http.socket.close()

    def _close_collective(self) -> None:
        if self.collective is not None:
            self.collective.close()
        with self.reg_lock:
            for sock, _addr in self.registered.values():
                try:
                    sock.close()
                except OSError:
                    pass

    # -- start-up ----------------------------------------------------------------------------------

    def check_addresses(self) -> None:
        """Every address this rank would touch must be loopback. Checked before any socket exists."""
        try:
            self.host = loopback_host(str(self.flags["host"]))
        except SafetyRefusal as exc:
            self.refuse(f"--host={self.flags['host']}: {exc}")
        try:
            host, self.master_port = split_host_port(self.master_addr)
        except ValueError as exc:
            self.fatal(SRC["main"], f"Invalid master_node_addr {self.master_addr}: {exc}")
        try:
            self.master_host = loopback_host(host)
        except SafetyRefusal as exc:
            self.refuse(f"--master_node_addr={self.master_addr}: {exc}")

    def refuse(self, why: str) -> None:
        self.log.log("F", SRC["sim"], f"Refusing to use a non-loopback address ({why}). The xllm simulator only "
                                      "binds and connects to 127.0.0.0/8 and ::1; map the profile's addresses to "
                                      "loopback (xllm-tui --simulate does).")
        self.exit_now(2)

    def run(self) -> int:
        self.install_signal_handlers()
        self.check_addresses()
        self.enter("init")
        if self.cfg.check_model_path:
            if not os.path.exists(self.model):
                self.fatal(SRC["main"], f"Model path {self.model} does not exist.")
            draft = str(self.flags["draft_model"])
            if draft and not os.path.exists(draft):
                self.fatal(SRC["main"], f"Model path {draft} does not exist.")
        is_local = self.host == self.master_host
        self.log.info(SRC["role"], f"set worker role to {'local worker' if is_local else 'remote worker'}")
        self.report_environment()
        self.sleep("init", STEP_SECONDS["init"])

        self.enter("engine")
        self.log.info(SRC["master"], "Master init options: " + self._options_text())
        devices = ",".join(f"npu:{d}" for d in self.devices) if "device_id" in self.flags.explicit \
            else self.flags["devices"]
        self.log.info(SRC["engine"], f"Creating engine with devices: {devices}")
        if self.flags["draft_model"]:
            self.log.info(SRC["draft"], f"Using draft devices: {self.flags['draft_devices']}")
        if self.nnodes < 1:
            self.fatal(SRC["dist"], f"Check failed: options.nnodes() >= 1 ({self.nnodes} vs. 1) "
                                    "At least one node is required")
        if self.rank < 0:
            self.fatal(SRC["dist"], f"Check failed: options.node_rank() >= 0 ({self.rank} vs. 0) Node rank must >= 0.")
        each = len(self.devices)
        world = each * self.nnodes
        dp_size, ep_size = int(self.flags["dp_size"]), int(self.flags["ep_size"])
        self.log.info(SRC["dist"], f"Multi-node serving world_size = {world}, each_node_ranks = {each}, "
                                   f"current node rank = {self.rank}, nnodes = {self.nnodes}, dp_size = {dp_size}, "
                                   f"ep_size = {ep_size}, tp_size = {world // dp_size if dp_size > 0 else world}")
        if dp_size <= 0 or world % dp_size != 0:
            self.fatal(SRC["fail_world_size"], f"Check failed: (world_size % dp_size) == 0 ({world % dp_size if dp_size else world}"
                                    " vs. 0) Global world size must be divisible by dp size in multi-node serving "
                                    "mode.")
        if self.cfg.check_rank_table and self.flags["rank_tablefile"]:
            self._check_rank_table(str(self.flags["rank_tablefile"]))
        self.sleep("engine", STEP_SECONDS["engine"])

        # Failures of the connect phase happen after registration (HCCL set-up), see _worker_session.
        self.enter("connect", fail=False)
        if self.is_master:
            self.start_collective_server()
            worker = threading.Thread(target=self.worker_flow, name="local-worker", daemon=True)
            worker.start()
            self.master_flow()
        else:
            self.worker_flow()
        return 0

    def _check_rank_table(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as handle:
                table = json.load(handle)
            if not isinstance(table, dict) or "server_list" not in table:
                raise ValueError("no server_list")
        except (OSError, ValueError) as exc:
            # mapping_npu.cpp: an ERROR, then the rank exits 1 (no FATAL, no core)
            self.log.error("mapping_npu.cpp:97", f"Failed to parse rank table file: {path}")
            self.exit_now(1)

    def _kv_capacity_text(self, cache_bytes: int, blocks: int, slot_size: int) -> str:
        """LLMEngine::allocate_kv_cache's line as the imitated release writes it (llm_engine.cpp)."""
        text = f"kv cache capacity: {readable_size(cache_bytes)}, blocks: {blocks}, slot_size: {slot_size}"
        release = self.cfg.xllm_version
        if release in ("v0.10.0", "any"):
            return (text + ", index_slot_size: 0, scale_slot_size: 0, linear_slot_size: 0, linear_blocks: 0, "
                    f"reserved_linear_bytes: {readable_size(0)}, n_layers: {_SIM_LAYERS}, kv_cache_dtype: "
                    f"{self.flags.values.get('kv_cache_dtype', 'auto')}")
        if release in ("v0.9.0", "v0.9.1"):
            return text + f", n_layers: {_SIM_LAYERS}, kv_cache_dtype: {self.flags.values.get('kv_cache_dtype', 'auto')}"
        return text + f", n_layers: {_SIM_LAYERS}"

    def _options_text(self) -> str:
        f = self.flags
        as_int = lambda name: int(bool(f[name]))  # noqa: E731 (C++ prints bools as 0/1)
        graph = f["enable_graph"] if "enable_graph" in f.values else False
        graph = graph or f.values.get("enable_acl_graph", False)
        return (f"model_path: {self.model}, model_id: {self.model_id}, task_type: {f['task']}, "
                f"devices: {f['devices']}, draft_model_path: {f['draft_model']}, draft_devices: {f['draft_devices']}, "
                f"backend: {f['backend']}, block_size: {f['block_size']}, max_cache_size: {f['max_cache_size']}, "
                f"max_memory_utilization: {f['max_memory_utilization']}, "
                f"enable_prefix_cache: {as_int('enable_prefix_cache')}, "
                f"max_tokens_per_batch: {f['max_tokens_per_batch']}, max_seqs_per_batch: {f['max_seqs_per_batch']}, "
                f"num_speculative_tokens: {f['num_speculative_tokens']}, "
                f"communication_backend: {f['communication_backend']}, rank_tablefile: {f['rank_tablefile']}, "
                f"enable_chunked_prefill: {as_int('enable_chunked_prefill')}, "
                f"master_node_addr: {self.master_addr}, nnodes: {self.nnodes}, node_rank: {self.rank}, "
                f"dp_size: {f['dp_size']}, ep_size: {f['ep_size']}, "
                f"enable_schedule_overlap: {as_int('enable_schedule_overlap')}, enable_graph: {int(bool(graph))}, "
                f"tool_call_parser: {f['tool_call_parser']}, enable_shm: {as_int('enable_shm')}")

    # -- rank 0: registration ("collective") server -------------------------------------------------

    def start_collective_server(self) -> None:
        sock = socket.socket(_family(self.master_host), socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.set_inheritable(False)
        try:
            sock.bind((self.master_host, self.master_port))
            sock.listen(max(self.nnodes, 16))
        except OSError as exc:
            sock.close()
            self.log.error(SRC["brpc_listen"], f"Fail to listen {self.master_addr}: {exc.strerror}")
            self.fatal("collective_service.cpp:41", f"Failed to start collective server on address {self.master_addr}")
        self.collective = sock
        self.log.info(SRC["collective"], f"Collective server started on address {self.master_addr}, idle_timeout_sec: "
                                         f"{self.flags['rpc_idle_timeout_s']}, num_threads: {self.flags['num_threads']}")
        threading.Thread(target=self._accept_loop, name="collective-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _peer = self.collective.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_registration, args=(conn,), daemon=True).start()

    def _serve_registration(self, conn: socket.socket) -> None:
        """One rank's liveness channel: REGISTER, then MODEL_READY / KV_READY, until EOF.

        A worker that times out waiting for OK closes its connection and registers again with a later
        time stamp, but its abandoned REGISTER may still sit in the kernel and be read later, even
        after the newer one (threads race). So: an older attempt than the current one is refused, and a
        newer one replaces the old connection and is sent every step already broadcast, under the same
        lock as _broadcast, so no step is lost between "registered" and "broadcast".
        """
        conn.settimeout(None)
        reader = conn.makefile("r", encoding="utf-8", newline="\n")
        rank = None
        try:
            for line in reader:
                parts = line.split()
                if not parts:
                    continue
                if parts[0] == "REGISTER" and len(parts) >= 3 and rank is None:
                    candidate = int(parts[1])
                    attempt = int(parts[3]) if len(parts) >= 4 else 0
                    if not 0 <= candidate < self.nnodes:
                        conn.sendall(b"ERROR rank out of range\n")
                        return
                    with self.reg_lock:
                        if attempt < self.registration_attempt.get(candidate, -1):
                            stale = True
                        else:
                            stale = False
                            # OK and the replayed steps go out before the rank counts as registered:
                            # nothing may overtake them. A few bytes: sendall cannot block here.
                            conn.sendall(("OK\n" + "".join(self.commands_sent)).encode())
                            old = self.registered.get(candidate)
                            self.registered[candidate] = (conn, parts[2])
                            self.registration_attempt[candidate] = attempt
                            if not self.serving.is_set():  # once up, a group with a lost rank stays broken
                                self.lost_workers.discard(candidate)
                            self.reg_lock.notify_all()
                    if stale:
                        try:
                            conn.sendall(b"ERROR stale registration\n")
                        except OSError:
                            pass
                        return
                    rank = candidate
                    if old is not None and old[0] is not conn:
                        _hang_up(old[0])
                elif parts[0] in ("MODEL_READY", "DRAFT_READY") and rank is not None:
                    with self.reg_lock:
                        (self.model_ready if parts[0] == "MODEL_READY" else self.draft_ready).add(rank)
                        self.reg_lock.notify_all()
                elif parts[0] == "KV_READY" and rank is not None:
                    with self.reg_lock:
                        self.kv_ready.add(rank)
                        self.reg_lock.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            if rank is not None:
                with self.reg_lock:
                    current = self.registered.get(rank)
                    if current is not None and current[0] is conn:
                        self.lost_workers.add(rank)
                    self.reg_lock.notify_all()
            try:
                conn.close()
            except OSError:
                pass

    def _wait_for(self, condition) -> None:
        with self.reg_lock:
            while not condition():
                self.reg_lock.wait(timeout=1.0)  # no overall timeout: xllm waits forever

    def _broadcast(self, message: str) -> None:
        # Under reg_lock, like registration: a rank that (re-)registers gets the step either here or as
        # a replay, never neither. The messages are a few bytes, so sendall does not block.
        with self.reg_lock:
            self.commands_sent.append(message)
            for sock, _addr in self.registered.values():
                try:
                    sock.sendall(message.encode())
                except OSError:
                    pass

    def _report_model_ready(self, ready: set[int], everyone: set[int]) -> None:
        """One "Init_model_async succeed." per rank as its model is loaded; returns when all are."""
        reported: set[int] = set()
        with self.reg_lock:
            while True:
                for _rank in sorted(ready - reported):
                    self.log.info(SRC["init_model"], "Init_model_async succeed.")
                    reported.add(_rank)
                if everyone <= ready:
                    return
                self.reg_lock.wait(timeout=1.0)  # no overall timeout: xllm waits forever

    def master_flow(self) -> None:
        everyone = set(range(self.nnodes))
        if self.cfg.fail_kind == "worker_missing" and self.cfg.fail_phase == "connect" and \
                self.targeted(self.cfg.fail_ranks):
            self.sleep("connect", STEP_SECONDS["retry"])
            with self.reg_lock:
                missing = sorted(everyone - set(self.registered)) or [self.nnodes - 1]
            self.fatal(SRC["fail_missing_worker"], f"Not all worker connect to engine server. Miss rank is {missing[0]}")
        self._wait_for(lambda: everyone <= set(self.registered))
        with self.reg_lock:
            addresses = {r: addr for r, (_sock, addr) in self.registered.items()}
        for rank in sorted(everyone):
            self.log.info(SRC["remote_worker"], f"RemoteWorker Hello connected, server_address: {addresses[rank]}, "
                                                f"global_rank_: {rank}")
        # LLMEngine::init_model (llm_engine.cpp) logs the path, then asks every worker to load it; each
        # finished InitModel RPC logs "Init_model_async succeed." (remote_worker.cpp) on rank 0. With a
        # draft model the speculative engine does the same for the draft engine.
        self.enter("model", fail=False)  # rank 0 hangs before its engine's first model line
        self.log.info(SRC["model_init"], f"Initializing model from: {self.model}")
        self._broadcast("INIT_MODEL\n")
        self._report_model_ready(self.model_ready, everyone)
        draft = str(self.flags["draft_model"])
        if draft:
            self.log.info(SRC["model_init"], f"Initializing model from: {draft}")
            self._broadcast("INIT_DRAFT\n")
            self._report_model_ready(self.draft_ready, everyone)

        self.enter("kv_cache")
        total = 64 * 1024**3
        util = float(self.flags["max_memory_utilization"])
        weights = 38 * 1024**3 // max(len(self.devices) * self.nnodes // 8, 1)
        available = max(int(total * util) - weights, 0)
        max_cache = int(self.flags["max_cache_size"])
        for rank in sorted(everyone):
            self.log.info(SRC["kv_worker"], f"worker #{rank}: available memory: {readable_size(available)}, total "
                                            f"memory: {readable_size(total)}. Using max_memory_utilization: "
                                            f"{util:g}, max_cache_size: {readable_size(max_cache)}")
        block_size = int(self.flags["block_size"])
        slot_size = 2 * 2 * 8 * 128  # k+v, bf16, heads, head_dim (per layer, as xllm's slot_size)
        cache_bytes = available if int(self.flags["max_cache_size"]) <= 0 else min(available,
                                                                                  int(self.flags["max_cache_size"]))
        blocks = cache_bytes // (_SIM_LAYERS * block_size * slot_size)
        self.log.info(SRC["kv_capacity"], self._kv_capacity_text(cache_bytes, blocks, slot_size))
        # The engine (rank 0) logs the shapes, then asks every worker to allocate (llm_engine.cpp:334).
        self.log.info(SRC["kv_alloc"], f"Initializing k cache with shape: [{blocks}, {block_size}, 8, 128]")
        self.log.info(SRC["kv_alloc"], f"Initializing v cache with shape: [{blocks}, {block_size}, 8, 128]")
        self._broadcast(f"ALLOC_KV {blocks} {block_size}\n")
        self._wait_for(lambda: everyone <= self.kv_ready)
        self.sleep("kv_cache", STEP_SECONDS["kv_cache"])

        self.enter("server")
        self.sleep("server", STEP_SECONDS["server"])
        self.start_http()
        self.serving_since = time.monotonic()
        self.serving.set()
        self.log.info(SRC["brpc"], f"Brpc Server started on port {self.port}, idle_timeout_s: "
                                   f"{self.flags['rpc_idle_timeout_s']}, num_threads: {self.flags['num_threads']}")
        self.enter("serving")
        self.serve_forever()

    def serve_forever(self) -> None:
        if self.cfg.load_rps > 0:
            threading.Thread(target=self._background_load, daemon=True).start()
        failing = self.cfg.fail_phase == "serving" and self.targeted(self.cfg.fail_ranks)
        deadline = time.monotonic() + self.cfg.fail_after * self.cfg.time_scale if failing else math.inf
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.fail()
            time.sleep(min(remaining, 3600.0))

    def _background_load(self) -> None:
        interval = 1.0 / self.cfg.load_rps
        rng = random.Random(self.rank)
        while True:
            time.sleep(interval)
            if not self.hung.is_set():
                self.metrics.add(True, rng.randint(20, 400), rng.randint(16, 256))

    # -- workers (and rank 0's local worker) --------------------------------------------------------

    def worker_flow(self) -> None:
        self.log.info(SRC["worker_create"], f"Create worker server with device: {self.device}")
        rpc = socket.socket(_family(self.host), socket.SOCK_STREAM)
        rpc.set_inheritable(False)
        rpc.bind((self.host, 0))  # an ephemeral port: workers never bind --port
        rpc.listen(4)
        self.worker_rpc = rpc
        server_addr = f"{self.host}:{rpc.getsockname()[1]}"
        # v0.10.0 starts it through the generic create_server(): "<name> server started on address".
        started = "DistributeWorker server started" if self.cfg.xllm_version == "v0.10.0" else "DistributeWorker started"
        self.log.info(SRC["worker_started"], f"{started} on address {server_addr}, idle_timeout_sec: "
                                             f"{self.flags['rpc_idle_timeout_s']}, num_threads: {self.flags['num_threads']}")
        self.log.info(SRC["worker_address"], f"Worker {self.rank}: server address: {server_addr}")
        conn = self._register(server_addr)
        self._worker_session(conn)

    def _connect_error(self, exc: OSError | str) -> str:
        reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
        return (f"[E111]Fail to connect Socket{{id={random.randint(1, 9999)} addr={self.master_addr}}}: {reason} "
                f"[R1][E112]Not connected to {self.master_addr} yet")

    def _register(self, server_addr: str) -> socket.socket:
        max_tries = int(self.flags["max_reconnect_count"])
        tries = 0
        last_error = ""
        while tries < max_tries:
            sock = socket.socket(_family(self.master_host), socket.SOCK_STREAM)
            sock.set_inheritable(False)
            sock.settimeout(max(10.0 * self.cfg.time_scale, 1.0))
            try:
                sock.connect((self.master_host, self.master_port))
                # The attempt's time stamp lets rank 0 tell this connection from an abandoned earlier one,
                # also one of a previous process of this rank (a restarted worker starts counting anew).
                sock.sendall(f"REGISTER {self.rank} {server_addr} {time.time_ns()}\n".encode())
                reply = b""
                while not reply.endswith(b"\n"):  # byte by byte: what follows OK belongs to the session
                    chunk = sock.recv(1)
                    if not chunk:
                        raise ConnectionResetError(104, "Connection reset by peer")
                    reply += chunk
                if reply.strip() != b"OK":
                    raise ConnectionRefusedError(111, f"registration rejected: {reply.decode(errors='replace').strip()}")
                sock.settimeout(None)
                self.log.info(SRC["worker_sync_ok"], f"Worker#{self.rank} connect to {self.master_addr} success.")
                return sock
            except OSError as exc:
                sock.close()
                last_error = self._connect_error(exc)
                self.log.warning(SRC["worker_sync"], f"Worker#{self.rank} try connect to engine server error, "
                                                     f"try again. Error message: {last_error}")
                self.sleep("connect", STEP_SECONDS["retry"])
            tries += 1
        self.log.error(SRC["worker_sync_failed"], f"Worker#{self.rank} connect to {self.master_addr} failed. "
                                                  f"Error message: {last_error}")
        # WorkerServer ignores sync_master_node's result: the worker carries on, never registered, and waits
        # for an engine that will not call it.
        self.master_lost.set()
        while True:
            time.sleep(3600)

    def _worker_session(self, conn: socket.socket) -> None:
        reader = conn.makefile("r", encoding="utf-8", newline="\n")
        # HCCL communicator creation happens right after the sync with rank 0.
        if self.cfg.fail_phase == "connect" and self.cfg.fail_kind != "worker_missing" and \
                self.targeted(self.cfg.fail_ranks):
            self.fail()
        while True:
            try:
                line = reader.readline()
            except (OSError, ValueError):
                line = ""
            if not line:
                self.on_master_loss()
                return
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "INIT_MODEL":
                self.load_model()
                conn.sendall(b"MODEL_READY\n")
            elif parts[0] == "INIT_DRAFT":
                self.load_draft_model()
                conn.sendall(b"DRAFT_READY\n")
            elif parts[0] == "ALLOC_KV":
                blocks, block_size = int(parts[1]), int(parts[2])
                if not self.is_master:
                    self.enter("kv_cache")
                del blocks, block_size  # workers allocate silently; rank 0's engine logged the shapes
                conn.sendall(b"KV_READY\n")
                if not self.is_master:
                    self._worker_serving()

    def _worker_serving(self) -> None:
        """A worker is up: it may hang, or die after XLLM_SIM_FAIL_AFTER when the failure is for serving."""
        self.enter("server")  # workers start no server; the phase still applies to them
        if self.cfg.hang_at == "serving" and self.targeted(self.cfg.hang_ranks):
            threading.Thread(target=self.hang, daemon=True).start()
        if self.cfg.fail_phase == "serving" and self.targeted(self.cfg.fail_ranks):
            timer = threading.Timer(self.cfg.fail_after * self.cfg.time_scale, self.fail)
            timer.daemon = True
            timer.start()

    def on_master_loss(self) -> None:
        if self.is_master:
            return  # rank 0's own worker: the process is going away anyway
        self.master_lost.set()
        if self.cfg.on_master_loss == "exit":
            self.log.error(SRC["sim"], f"Worker#{self.rank} lost the connection to engine server {self.master_addr}, "
                                       "exiting (XLLM_SIM_ON_MASTER_LOSS=exit)")
            self.exit_clean(1)
        # Like real xllm workers: notice nothing, keep sleeping.
        while True:
            time.sleep(3600)

    def weight_files(self, path: str, default_count: int) -> list[str]:
        """The model's real *.safetensors files when the directory exists, otherwise invented names."""
        if os.path.isdir(path):
            found = sorted(_glob.glob(os.path.join(path, "*.safetensors")))
            if found:
                return found
        return [os.path.join(path, f"model-{i:05d}-of-{default_count:05d}.safetensors")
                for i in range(1, default_count + 1)]

    def load_model(self) -> None:
        """The worker's WorkerImpl::init_model for --model: its weight files, nothing else of its own."""
        self.enter("model", fail=False)  # a model-phase failure happens half-way through the weights
        failing = self.cfg.fail_phase == "model" and self.targeted(self.cfg.fail_ranks)
        self.sleep("model", STEP_SECONDS["model"])
        files = self.weight_files(self.model, self.cfg.weight_files)
        self._load_weights(files, fail_at=len(files) // 2 if failing else None)

    def load_draft_model(self) -> None:
        """The same for --draft_model (the speculative worker's draft WorkerImpl)."""
        self._load_weights(self.weight_files(str(self.flags["draft_model"]), self.cfg.draft_weight_files))

    def _load_weights(self, files: list[str], fail_at: int | None = None) -> None:
        # Newer xllm (worker_impl.cpp, WorkerImpl::init_model) brackets the loading with these two lines when
        # the tensor-parallel world has more than one rank; v0.7.x prints neither. "Weight loading
        # completed" is the only line a worker writes once its model is initialised.
        # The ATen threads pair arrives in v0.9.0 (worker_impl.cpp); "any" behaves like the newest.
        aten = self.cfg.xllm_version in ("v0.9.0", "v0.9.1", "v0.10.0", "any") and len(self.devices) * self.nnodes > 1
        threads = self._aten_threads()
        if aten:
            self.log.info(SRC["aten_threads"], f"Temporarily setting ATen threads to 1 during weight loading, "
                                               f"tp_world_size={len(self.devices) * self.nnodes}, "
                                               f"prev_threads={threads}")
        for index, path in enumerate(files):
            if index == fail_at:
                self.fail()
            self.log.info(SRC["weights"], f"Loading model weights from {path}")
            self.sleep("model", STEP_SECONDS["weight_file"])
        if aten:
            self.log.info(SRC["aten_threads"], f"Weight loading completed, restored ATen threads={threads}")

    def _aten_threads(self) -> int:
        """What torch::get_num_threads() would say: OMP_NUM_THREADS, else the CPUs this process may use."""
        try:
            return max(int(self.env.get("OMP_NUM_THREADS", "")), 1)
        except ValueError:
            try:
                return len(os.sched_getaffinity(0))
            except (AttributeError, OSError):
                return os.cpu_count() or 1

    # -- rank 0: HTTP ------------------------------------------------------------------------------

    def health_failing(self) -> bool:
        """XLLM_SIM_HEALTH_FAIL_AFTER / _RECOVER_AFTER: is /health broken right now?"""
        if self.serving_since is None or math.isinf(self.cfg.health_fail_after):
            return False
        return self.cfg.health_failing(time.monotonic() - self.serving_since)

    def start_http(self) -> None:
        rank = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            address_family = _family(self.host)

        try:
            self.http = Server((self.host, self.port), _make_handler(rank))
        except OSError:
            self.fail("port_in_use")
        self.http.socket.set_inheritable(False)
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.5}, name="brpc-http",
                         daemon=True).start()


# ----------------------------------------------------------------------------------------------
# HTTP handler
# ----------------------------------------------------------------------------------------------

_WORDS = ("This is a simulated reply from an xllm rank running without NPUs. The supervisor, the "
          "probes and the TUI see the same HTTP answers a real deployment gives.").split()


def _make_handler(rank: Rank):
    class Handler(BaseHTTPRequestHandler):
        server_version = "brpc"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # brpc does not log requests
            pass

        def _send(self, status: int, body: str | bytes, content_type: str = "text/plain") -> None:
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload), "application/json")

        def _stall_if_hung(self) -> None:
            while rank.hung.is_set():
                time.sleep(3600)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self._stall_if_hung()
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if path == "/health":
                if rank.health_failing():
                    # Invented text in brpc's error style ("[E<code>]message"); a real unhealthy xllm
                    # would come from its HealthReporter.
                    self._send(503, "[E503]Server is not healthy (simulated: XLLM_SIM_HEALTH_FAIL_AFTER)")
                else:
                    self._send(200, "OK")
            elif path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": rank.model_id, "object": "model",
                                                             "created": int(rank.metrics.started),
                                                             "owned_by": "xllm"}]})
            elif path == "/brpc_metrics":
                self._send(200, _prometheus(rank), "text/plain; version=0.0.4")
            elif path == "/vars":
                self._send(200, _vars(rank))
            elif path == "/flags":
                self._send(200, _flags_page(rank))
            elif path == "/status":
                self._send(200, _status_page(rank))
            elif path == "/":
                self._send(200, "health\nvars\nflags\nstatus\nbrpc_metrics\nv1/models\nv1/chat/completions\n"
                                "v1/completions\n")
            else:
                self._json(404, {"error": {"message": f"No route for {path}", "type": "NotFound", "code": 404}})

        def do_POST(self):  # noqa: N802
            self._stall_if_hung()
            path = self.path.split("?", 1)[0].rstrip("/")
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            if path not in ("/v1/chat/completions", "/v1/completions"):
                self._json(404, {"error": {"message": f"No route for {path}", "type": "NotFound", "code": 404}})
                return
            try:
                request = json.loads(raw or b"{}")
                if not isinstance(request, dict):
                    raise ValueError("the body must be a JSON object")
            except ValueError as exc:
                rank.metrics.add(False, 0, 0)
                self._json(400, {"error": {"message": f"Invalid request body: {exc}", "type": "BadRequest",
                                           "code": 400}})
                return
            if rank.cfg.fail_phase == "serving" and rank.targeted(rank.cfg.fail_ranks):
                rank.fail()
            with rank.reg_lock:
                lost = sorted(rank.lost_workers)
            if lost:
                rank.log.error("llm_engine.cpp:512", f"Execute_model_async failed. Error code : 1008, "
                                                     f"[E1008]Reached timeout, worker #{lost[0]} unreachable")
                rank.metrics.add(False, 0, 0)
                self._json(500, {"error": {"message": "Failed to execute model", "type": "InternalError",
                                           "code": 500}})
                return
            if path == "/v1/chat/completions":
                messages = request.get("messages") or []
                prompt_text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
            else:
                prompt_text = str(request.get("prompt", ""))
            prompt_tokens = max(len(prompt_text.split()), 1)
            try:
                max_tokens = int(request.get("max_tokens") or request.get("max_completion_tokens") or 16)
            except (TypeError, ValueError):
                max_tokens = 16
            words = [_WORDS[i % len(_WORDS)] for i in range(max(1, min(max_tokens, 256)))]
            text = " ".join(words)
            rank.metrics.add(True, prompt_tokens, len(words))
            created = int(time.time())
            ident = f"{'chatcmpl' if 'chat' in path else 'cmpl'}-{rank.metrics.requests_in}"
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                     "total_tokens": prompt_tokens + len(words)}
            if request.get("stream"):
                self._stream(path, ident, created, words, usage)
                return
            if path == "/v1/chat/completions":
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "finish_reason": "stop"}
                obj = "text_completion"
            self._json(200, {"id": ident, "object": obj, "created": created, "model": rank.model_id,
                             "choices": [choice], "usage": usage})

        def _stream(self, path, ident, created, words, usage) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            chat = path == "/v1/chat/completions"
            for index, word in enumerate(words):
                piece = word if index == 0 else " " + word
                choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                chunk = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                         "created": created, "model": rank.model_id, "choices": [choice]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            end = {"index": 0, "delta": {}, "finish_reason": "stop"} if chat else \
                {"index": 0, "text": "", "finish_reason": "stop"}
            final = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
                     "created": created, "model": rank.model_id, "choices": [end], "usage": usage}
            self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
            self.close_connection = True

    return Handler


def _prometheus(rank: Rank) -> str:
    m = rank.metrics
    with m.lock:
        counters = {
            "server_request_in_total": ("Total number of request that server received", m.requests_in),
            "server_request_total_ok": ("Total number of ok request that server processed", m.requests_ok),
            "server_request_total_fail": ("Total number of fail request that server processed", m.requests_fail),
            "num_processing_tokens_total_prompt": ("Total number of processing prompt tokens", m.prompt_tokens),
            "num_processing_tokens_total_generated": ("Total number of processing generated tokens",
                                                      m.generated_tokens),
        }
    lines = []
    for name, (help_text, value) in counters.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
    gauges = {
        "num_running_requests": 0,
        "num_waiting_requests": 0,
        "kv_cache_utilization_perc": 0.0,
        "process_uptime": round(time.time() - m.started, 3),
        "process_memory_resident": _rss_bytes(),
    }
    for name, value in gauges.items():
        lines += [f"# TYPE {name} gauge", f"{name} {value}"]
    return "\n".join(lines) + "\n"


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _vars(rank: Rank) -> str:
    m = rank.metrics
    return (f"process_uptime : {time.time() - m.started:.3f}\n"
            f"process_pid : {os.getpid()}\n"
            f"server_request_in_total : {m.requests_in}\n"
            f"server_request_total_ok : {m.requests_ok}\n"
            f"num_processing_tokens_total_generated : {m.generated_tokens}\n"
            f"xllm_node_rank : {rank.rank}\n"
            f"xllm_nnodes : {rank.nnodes}\n")


def _flags_page(rank: Rank) -> str:
    from xllm_tui.sim.flags import defined_in, format_value

    rows = ["Name | Value | Description | Defined At", "---------------------------------------"]
    for name in sorted(rank.flags.table):
        flag_type, default, meaning = rank.flags.table[name]
        value = format_value(flag_type, rank.flags.values[name])
        shown = value if value == default else f"{value} (default:{default})"
        rows.append(f"{name} | {shown} | {meaning} | {defined_in(name, rank.cfg.xllm_version) or '-'}")
    return "\n".join(rows) + "\n"


def _status_page(rank: Rank) -> str:
    m = rank.metrics
    return (f"version: xllm-sim\n"
            f"uptime: {time.time() - m.started:.0f}s\n"
            f"xllm::APIService\n"
            f"[/v1/chat/completions]\n  count: {m.requests_in}\n  ok: {m.requests_ok}\n  fail: {m.requests_fail}\n"
            f"model: {rank.model_id}\nnode_rank: {rank.rank}/{rank.nnodes}\nport: {rank.port}\n")


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------

_XLLM_HELP = """xllm: a high-performance LLM inference engine (simulated by xllm-tui).

Usage: xllm --model=<path> [--port=8010] [--devices=npu:0] [--nnodes=N --node_rank=R --master_node_addr=H:P] ...

Every flag: xllm --helpxml
"""


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ if env is None else env)
    try:
        cfg = SimConfig.from_env(env)
    except UserError as exc:
        sys.stderr.write(f"xllm simulator: {exc}\n")
        return 2
    # xllm looks for --help/-h itself before gflags runs.
    if any(arg in ("--help", "-h") for arg in argv):
        sys.stdout.write(_XLLM_HELP)
        return 0
    use_release_lines(cfg.xllm_version)
    flags = parse_gflags(argv, cfg.xllm_version)
    if flags.values.get("helpxml"):
        # gflags prints the XML to stdout and exits with status 1 (gflags_reporting.cc).
        sys.stdout.write(helpxml("xllm", cfg.xllm_version, flags.values))
        sys.stdout.flush()
        return 1
    if any(flags.values.get(name) for name in ("help", "helpfull", "helpshort", "helponf", "helppackage",
                                                 "helpon", "helpmatch")):
        # gflags' other reporting flags: a listing on stdout, exit status 1.
        for name in sorted(flags.table):
            flag_type, default, meaning = flags.table[name]
            sys.stdout.write(f"    --{name} ({meaning}) type: {flag_type} default: {default!r}\n")
        return 1
    if flags.values.get("version"):
        sys.stdout.write("xllm version 0.7.2 (simulated)\n")
        return 0
    if flags.errors:
        sys.stderr.write("\n".join(flags.errors) + "\n")
        sys.stderr.flush()
        return 1
    log = GlogWriter("xllm", minloglevel=int(flags["minloglevel"]), log_dir=str(flags["log_dir"]),
                     to_files=not flags["logtostderr"])
    if not flags["model"]:
        # run() checks std::filesystem::exists(FLAGS_model) first: "" does not exist (xllm.cpp:103).
        log.log("F", SRC["main"], "Model path  does not exist.")
        log.raw("*** Check failure stack trace: ***")
        Rank._no_core_dump()
        os.abort()
    rank = Rank(flags, cfg, env, log)
    return rank.run()


if __name__ == "__main__":
    raise SystemExit(main())
