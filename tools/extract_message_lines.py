"""Write xllm_tui/data/message_lines.json: for each start-up message the simulator prints, the basename:line
glog shows for it in each xllm release (the line where the LOG statement starts). Facts only.

    python3 tools/extract_message_lines.py GIT_DIR OUT.json REV...
"""

from __future__ import annotations

import json
import subprocess
import sys

# simulator SRC key -> (a fixed string of the message in the source, the file it is logged from)
MESSAGES = {
    "main": ("\" does not exist.\"", "xllm.cpp"),
    "role": ("set worker role to ", "xllm.cpp"),
    "master": ("Master init options: ", "master.cpp"),
    "engine": ("Creating engine with devices: ", "master.cpp"),
    "draft": ("Using draft devices: ", "master.cpp"),
    "dist": ("Multi-node serving world_size = ", "dist_manager.cpp"),
    "worker_create": ("Create worker server with device: ", "worker_server.cpp"),
    "worker_started": ("DistributeWorker started on address ", "xllm_server.cpp"),
    "worker_address": (": server address: ", "worker_server.cpp"),
    "worker_sync": (" try connect to engine server error, try again.", "worker_server.cpp"),
    "worker_sync_ok": (" success.\"", "worker_server.cpp"),
    "worker_sync_failed": (" failed.\"", "worker_server.cpp"),
    "collective": (" server started on address ", "xllm_server.cpp"),
    "remote_worker": ("RemoteWorker Hello connected, server_address: ", "remote_worker.cpp"),
    "model_init": ("Initializing model from: ", "llm_engine.cpp"),
    "aten_threads": ("Temporarily setting ATen threads to 1", "worker_impl.cpp"),
    "weights": ("Loading model weights from ", "hf_model_loader.cpp"),
    "init_model": ("Init_model_async succeed.", "comm_channel.cpp"),
    "kv_worker": ("<< \"worker #\"", "llm_engine.cpp"),
    "kv_capacity": ("\"kv cache capacity: \"", "llm_engine.cpp"),
    "kv_alloc": ("Initializing k cache with shape: [", "llm_engine.cpp"),
    "brpc": ("Brpc Server started on port ", "xllm_server.cpp"),
    "http_fail": ("Failed to start server on port ", "xllm_server.cpp"),
    # failure lines (the simulator's XLLM_SIM_FAIL kinds)
    "fail_model_path": ("\" does not exist.\"", "xllm.cpp"),
    "fail_kv_size": ("Available kv cache size must be greater than 0", "llm_engine.cpp"),
    "fail_kv_blocks": ("no n_blocks for kv cache", "llm_engine.cpp"),
    "fail_kv_memory": ("no memory for kv cache", "llm_engine.cpp"),
    "fail_root_info": ("HCCL get root info failed.", "collective_service.cpp"),
    "fail_set_device": ("ACL set device id ", "collective_service.cpp"),
    "fail_rank_table": ("Failed to parse rank table file: ", "mapping_npu.cpp"),
    "fail_execute_async": ("Execute_model_async failed. Error code : ", "comm_channel.cpp"),
    "fail_execute_none": ("Failed to execute model, result has no value", "llm_engine.cpp"),
    "fail_missing_worker": ("Not all worker connect to engine server. Miss rank is ", "dist_manager.cpp"),
    "fail_world_size": ("(world_size % dp_size), 0)", "dist_manager.cpp"),
    "fail_brpc_port": ("Failed to start brpc server on port ", "xllm.cpp"),
}


def statement_line(git_dir: str, rev: str, path: str, line: int) -> int:
    """The line where the LOG/CHECK statement holding `line` starts."""
    text = subprocess.run(["git", "-C", git_dir, "show", f"{rev}:{path}"], capture_output=True, text=True).stdout
    lines = text.splitlines()
    index = line - 1
    while index > 0 and not any(mark in lines[index] for mark in ("LOG(", "CHECK", "VLOG(")):
        index -= 1
    return index + 1


def main() -> int:
    git_dir, out, *revs = sys.argv[1:]
    result: dict[str, dict[str, str]] = {}
    for rev in revs:
        found: dict[str, str] = {}
        for key, (text, file_name) in MESSAGES.items():
            grep = subprocess.run(["git", "-C", git_dir, "grep", "-n", "-F", text, rev, "--", f"xllm/*{file_name}"],
                                  capture_output=True, text=True).stdout
            for hit in grep.splitlines():
                _rev, path, number, _rest = hit.split(":", 3)
                if path.rsplit("/", 1)[-1] == file_name and "_test" not in path:
                    found[key] = f"{file_name}:{statement_line(git_dir, rev, path, int(number))}"
                    break
        result[rev] = found
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
