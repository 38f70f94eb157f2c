"""A frozen eight-rank deployment for snapshot tests, screenshots and `xllm-tui --demo`-style previews.

Everything here is fixed data (times, pids, CPU, log lines), so two renders are identical.
Rank 3 failed first with an HCCL error; the supervisor is about to restart the group; determinism was
switched on after the ranks started, so the running ranks are marked "relaunch pending".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

NOW = 1764430800.0  # 2025-11-29 15:40:00 UTC
PROFILE = "a3-8card"


def _glog(severity: str, at: float, thread: int, where: str, message: str) -> str:
    t = time.gmtime(at)
    micros = int(round((at - int(at)) * 1_000_000))
    return f"{severity}{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros:06d} {thread} {where}] {message}"


def _rank_log(rank: int, pid: int, failed: bool, loading: bool) -> list[str]:
    start = NOW - 600 + rank * 0.05
    lines = [
        _glog("I", start + 0.1, pid, "xllm.cpp:88", f"Starting xllm rank {rank} of 8, devices npu:{rank}"),
        _glog("I", start + 0.4, pid, "options.cpp:51", "model=/data/models/Qwen3-32B max_memory_utilization=0.86"),
        _glog("I", start + 1.2, pid, "llm_engine.cpp:120", "Initializing HCCL communicator, world size 8"),
    ]
    for i in (12, 24, 36, 48):
        lines.append(_glog("I", start + 10 + i, pid, "llm_engine.cpp:210", f"Loading model weights {i}/48"))
        if loading and i == 36:
            break
    if not loading:
        lines.append(_glog("I", start + 70, pid, "llm_engine.cpp:260", "Allocated kv cache: 41.5 GB, 1328 blocks"))
    if rank == 5:
        lines.append(_glog("W", start + 80, pid, "worker.cpp:301", "slow collective: allreduce took 2130 ms"))
    if failed:
        lines.append(_glog("W", NOW - 31.5, pid, "hccl_comm.cpp:77", "HCCL heartbeat from rank 2 late by 4000 ms"))
        lines.append(_glog("E", NOW - 30.0, pid, "hccl_comm.cpp:140", "Failed, HCCL error : EI0006 socket timeout"))
        lines.append(_glog("F", NOW - 29.9, pid, "worker.cpp:412", "Check failed: status.ok() execute model failed"))
    elif not loading:
        lines.append(_glog("I", start + 90, pid, "master.cpp:66", "Brpc Server started on port %d" % (18994 + rank)))
        if rank in (2, 4):
            lines.append(_glog("E", NOW - 29.0, pid, "hccl_comm.cpp:150", "HCCL peer rank 3 disconnected"))
    return lines


def _argv(rank: int) -> list[str]:
    return [
        "numactl", "-C", f"{rank * 12}-{rank * 12 + 11}", "/opt/xllm/build/xllm/core/server/xllm",
        "--model=/data/models/Qwen3-32B", f"--devices=npu:{rank}", f"--port={18994 + rank}",
        "--master_node_addr=127.0.0.1:19888", "--nnodes=8", f"--node_rank={rank}",
        "--max_memory_utilization=0.86", "--enable_prefix_cache=true",
    ]


def _devices(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    devices = []
    for rank in ranks:
        n = rank["rank"]
        running = bool(rank["pid"])
        devices.append({
            "logic_id": n, "card": n, "chip": 0, "phy_id": n, "name": "Ascend910",
            "health": "Warning" if n == 3 else "OK",
            "power_w": 210.0 + n if running else 92.0, "temp_c": 47 + n % 3, "aicore_pct": 61 if running else 0,
            "hbm_used_mb": 58780 + 17 * n if running else 3100, "hbm_total_mb": 65536,
            "bus_id": f"0000:{0x9D + n:02X}:00.0", "cpu_affinity": f"{(n // 4) * 48}-{(n // 4) * 48 + 47}",
            "processes": [{"pid": rank["pid"], "name": "xllm", "memory_mb": 55680}] if running else [],
        })
    return {
        "backend": "npu-smi", "devices": devices, "links": {}, "errors": [],
        "polled_at": NOW - 4, "poll_interval_s": 10.0, "on_busy": "wait",
        "binding": [],
    }


def demo_snapshot(log_dir: str | Path) -> dict[str, Any]:
    """Write the demo ranks' logs under log_dir and return the snapshot (protocol v1) describing them."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    ranks = []
    for rank in range(8):
        pid = 51230 + rank * 7
        failed = rank == 3
        loading = rank == 7
        lines = _rank_log(rank, pid, failed, loading)
        log_path = log_dir / f"node_{rank}.log"
        log_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if failed:
            state, reason, phase, progress = "failed", "Failed, HCCL error : EI0006 socket timeout", None, None
        elif loading:
            state, reason, phase, progress = "loading", "loading weights 36/48", "weights", [36, 48]
        elif rank == 0:
            state, reason, phase, progress = "ready", "serving on port 18994 (/health OK)", "ready", None
        else:
            state, reason, phase, progress = "ready", "Brpc Server started", "ready", None
        ranks.append(
            {
                "rank": rank,
                "role": "master" if rank == 0 else "worker",
                "machine": "11.87.49.110",
                "host": "127.0.0.1",
                "device": rank,
                "cores": f"{rank * 12}-{rank * 12 + 11}",
                "port": 18994 + rank,
                "pid": None if failed else pid,
                "state": state,
                "reason": reason,
                "since": NOW - (30 if failed else 500),
                "phase": phase,
                "progress": progress,
                "started_at": None if failed else NOW - 600 + rank,
                "restarts": 1,
                "generation": 2,
                "last_exit": (
                    {"code": None, "signal": 6, "at": NOW - 29.8, "cause": "hccl_error", "collateral": False}
                    if failed
                    else {"code": None, "signal": 15, "at": NOW - 3700, "cause": "killed", "collateral": False}
                ),
                "cpu_pct": None if failed else [97.0, 88.5, 91.2, 0, 90.1, 87.7, 89.9, 140.3][rank],
                "rss_bytes": None if failed else (9_800_000_000 + rank * 123_456_789),
                "threads": None if failed else 35 + rank,
                "last_line": lines[-1],
                "log_path": str(log_path),
                "relaunch_pending": not failed,
                "argv": [] if failed else _argv(rank),
                "health": {"ok": True, "detail": "/health OK on port 18994", "at": NOW - 1} if rank == 0 else None,
                "binding": None,
            }
        )
    events = [
        {"seq": 1, "ts": NOW - 3900, "kind": "supervisor", "rank": None, "message": "supervisor started (pid 4242)"},
        {"seq": 2, "ts": NOW - 3899, "kind": "action", "rank": None, "message": "start all ranks (tui)"},
        {"seq": 3, "ts": NOW - 3700, "kind": "group", "rank": None, "from": "loading", "to": "ready", "reason": "rank 0 serving"},
        {"seq": 4, "ts": NOW - 620, "kind": "action", "rank": None, "message": "restart all ranks (cli)"},
        {"seq": 5, "ts": NOW - 510, "kind": "group", "rank": None, "from": "loading", "to": "ready", "reason": "rank 0 serving on port 18994"},
        {"seq": 6, "ts": NOW - 120, "kind": "toggle", "rank": None, "group": "determinism", "enabled": True, "message": "determinism on (next launch)"},
        {"seq": 7, "ts": NOW - 30, "kind": "state", "rank": 3, "from": "ready", "to": "failed", "reason": "Failed, HCCL error : EI0006 socket timeout", "cause": "hccl_error"},
        {"seq": 8, "ts": NOW - 29.9, "kind": "group", "rank": None, "from": "ready", "to": "degraded", "reason": "rank 3 failed first (hccl_error)"},
        {"seq": 9, "ts": NOW - 29.8, "kind": "group", "rank": None, "message": "group restart scheduled in 32s (restart 2 of 5)"},
    ]
    return {
        "protocol": 1,
        "time": NOW,
        "profile": {"name": PROFILE, "path": f"/srv/xllm/profiles/{PROFILE}.yaml", "simulate": True},
        "supervisor": {"pid": 4242, "started_at": NOW - 3900, "run_dir": f"/root/.local/state/xllm-tui/{PROFILE}-sim"},
        "group": {
            "state": "degraded",
            "reason": "rank 3 failed: hccl_error",
            "restarts": 1,
            "next_restart_at": NOW + 2,
            "first_failure": {"rank": 3, "cause": "hccl_error", "message": "Failed, HCCL error : EI0006 socket timeout", "at": NOW - 30.0},
        },
        "ranks": ranks,
        "toggles": [
            {"name": "determinism", "enabled": True, "env": {"LCCL_DETERMINISTIC": "1", "HCCL_DETERMINISTIC": "true", "ATB_MATMUL_SHUFFLE_K_ENABLE": "0"}, "remove": [], "description": "bitwise-reproducible outputs"},
            {"name": "profiling", "enabled": False, "env": {"PROFILING_MODE": "dynamic"}, "remove": ["~/dynamic_profiling_socket_*"], "description": "dynamic profiling socket"},
            {"name": "debug-logs", "enabled": False, "env": {"ASCEND_GLOBAL_LOG_LEVEL": "1", "GLOG_v": "2"}, "remove": [], "description": ""},
        ],
        "devices": _devices(ranks),
        "events": events,
        "process_info": {
            str(r["rank"]): {
                "argv": [
                    "numactl", "-C", r["cores"], "/opt/xllm/build/xllm/core/server/xllm",
                    "--model=/data/models/Qwen3-32B", f"--devices=npu:{r['device']}", f"--port={r['port']}",
                    "--master_node_addr=127.0.0.1:19888", "--nnodes=8", f"--node_rank={r['rank']}",
                    "--max_memory_utilization=0.86", "--enable_prefix_cache=true",
                ],
                "env": {"ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "HCCL_CONNECT_TIMEOUT": "7200", "OMP_NUM_THREADS": "12"},
            }
            for r in ranks
            if r["pid"]
        },
        "next_launch": {
            str(r["rank"]): {
                "argv": [
                    "numactl", "-C", r["cores"], "/opt/xllm/build/xllm/core/server/xllm",
                    "--model=/data/models/Qwen3-32B", f"--devices=npu:{r['device']}", f"--port={r['port']}",
                    "--master_node_addr=127.0.0.1:19888", "--nnodes=8", f"--node_rank={r['rank']}",
                    "--max_memory_utilization=0.86", "--enable_prefix_cache=true",
                ],
                "env": {
                    "ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "HCCL_CONNECT_TIMEOUT": "7200", "OMP_NUM_THREADS": "12",
                    "LCCL_DETERMINISTIC": "1", "HCCL_DETERMINISTIC": "true", "ATB_MATMUL_SHUFFLE_K_ENABLE": "0",
                },
            }
            for r in ranks
        },
    }
