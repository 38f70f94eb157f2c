#!/usr/bin/env python3
"""Record the frozen deployment the TUI's snapshot tests and demo use (xllm_tui/data/tui-demo/).

    python3 scripts/record_tui_demo.py

It runs a real simulated a3-8card deployment (xllm-tui's supervisor and eight simulated ranks, on a private
run dir and free ports; scripts/sim_session.py), with XLLM_SIM_FAIL=serving:hccl_error on rank 3: the group
comes up, determinism is switched on (for the next launch), then rank 3 fails with the simulator's HCCL
error, the supervisor stops the other ranks as collateral and schedules the group restart. At that moment
it saves the supervisor's snapshot (with every event), the profile's planned next launch of each rank, and
the ranks' log files. Nothing is edited except paths: the temp directory becomes "/tmp/xllm-tui-sim" and
log paths become logs/node_N.log (relative, so no temp path shows); pids and times stay as recorded, and
the snapshot's "time" is the frozen clock (xllm_tui.ui.demo, StaticSource).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_session import PROFILE, REPO, SimSession, exit_on_termination  # noqa: E402

OUT = REPO / "xllm_tui" / "data" / "tui-demo"
MAX_LOG_LINES = 80  # the screens show a log's tail; W/E/F lines (the timeline) are always kept


def _trim(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LOG_LINES:
        return lines
    tail_start = len(lines) - MAX_LOG_LINES
    return [line for i, line in enumerate(lines) if i >= tail_start or line[:1] in ("W", "E", "F")]


def _replace_paths(value, old: str, new: str):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace_paths(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replace_paths(v, old, new) for k, v in value.items()}
    return value


def record(out: Path = OUT) -> Path:
    from xllm_tui.ui.profile_watch import plan_profile

    env = {"XLLM_SIM_FAIL": "serving:hccl_error", "XLLM_SIM_FAIL_RANKS": "3", "XLLM_SIM_FAIL_AFTER": "60"}
    with SimSession(env=env) as sim:
        sim.wait(lambda s: s["group"]["state"] == "ready", "the group to be ready")
        sim.request("toggle", group="determinism", on=True)
        snap = sim.wait(lambda s: (s["group"].get("first_failure") or {}).get("rank") == 3
                        and s["group"].get("next_restart_at"), "rank 3's failure and the restart countdown")
        toggles = {t["name"]: bool(t["enabled"]) for t in snap.get("toggles") or []}
        plan = plan_profile(str(PROFILE), simulate=True, toggles=toggles, port_offset=sim.port_offset)
        snap["next_launch"] = {str(r["rank"]): plan.next_launch(int(r["rank"])) for r in snap["ranks"]}
        if out.exists():
            shutil.rmtree(out)
        (out / "logs").mkdir(parents=True)
        for rank in snap["ranks"]:
            source = Path(rank["log_path"])
            lines = source.read_text(encoding="utf-8", errors="replace").splitlines()
            (out / "logs" / f"{source.name}.txt").write_text("".join(line + "\n" for line in _trim(lines)), encoding="utf-8")
            rank["log_path"] = f"logs/{source.name}"
        snap = _replace_paths(snap, str(sim.root), "/tmp/xllm-tui-sim")
        snap = _replace_paths(snap, str(REPO) + "/", "")
    (out / "snapshot.json").write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    exit_on_termination()
    print(record())
