"""Smoke test of the benchmark suite (bench/run.sh): the floor alone, small counts; checks the report's shape,
never a figure (the machine is shared: timings are not asserted)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("gcc") is None, reason="bench/sleeper.c needs gcc")
def test_quick_floor_writes_a_results_file(tmp_path):
    out = tmp_path / "RESULTS.md"
    r = subprocess.run(["bash", str(REPO / "bench" / "run.sh"), "--quick", "--only", "floor", "--workloads",
                        "flood,start", "--flood", "2x2000", "--cache", str(tmp_path / "cache"), "--out", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert "## Flood: 2 ranks x 2,000 glog lines" in text
    assert "## Start: launch to all 4 ranks' programs running" in text
    assert "| floor (1 run) |" in text
    assert "shared" in text  # the report says the machine was shared
    assert "error" not in text.lower()
    assert not list((tmp_path / "cache").glob("run-*")), "a work dir was left behind"
