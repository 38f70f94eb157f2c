"""The frozen eight-rank deployment the snapshot tests and the TUI's pilot tests replay (StaticSource).

It is a recording of a real simulated run (scripts/record_tui_demo.py writes xllm_tui/data/tui-demo/):
the supervisor's snapshot with every event, the profile's planned next launches, and the ranks' logs.
Rank 3 failed with the simulator's HCCL error while serving, the supervisor stopped the other ranks as
collateral and scheduled the group restart; determinism had been switched on for the next launch.
Pids and times are as recorded; the snapshot's own "time" is the frozen clock, so renders are identical.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

RECORDING = Path(__file__).resolve().parents[1] / "data" / "tui-demo"  # shipped in the wheel


def demo_snapshot(log_dir: str | Path, recording: str | Path = RECORDING) -> dict[str, Any]:
    """Copy the recorded logs into log_dir and return the recorded snapshot pointing at them.

    log_dir is used as given (a relative one keeps temp paths out of the screens)."""
    recording = Path(recording)
    snapshot = json.loads((recording / "snapshot.json").read_text(encoding="utf-8"))
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    for rank in snapshot["ranks"]:
        name = Path(rank["log_path"]).name
        recorded = recording / "logs" / f"{name}.txt"  # stored as .txt: a committed *.log reads as junk
        if recorded.exists():
            shutil.copyfile(recorded, log_dir / name)
        rank["log_path"] = str(log_dir / name)
    return snapshot
