"""Smoke test of the benchmark suite (bench/run.sh): the floor alone, small counts; checks the report's shape,
never a figure (the machine is shared: timings are not asserted)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

REPO = Path(__file__).resolve().parent.parent


def assert_no_errors(raw: Path, text: str) -> None:
    """A measurement that failed keeps its exception under "error" in the raw figures (the table shows "-")."""
    results = json.loads(raw.read_text())["results"]
    failed = {(key, tool): figures["error"] for key, tools in results.items() for tool, figures in tools.items()
              if "error" in figures}
    assert not failed, failed
    assert "Errors:" not in text


@pytest.mark.skipif(shutil.which("gcc") is None, reason="bench/sleeper.c needs gcc")
def test_quick_floor_writes_a_results_file(tmp_path):
    out = tmp_path / "RESULTS.md"
    r = subprocess.run(["bash", str(REPO / "bench" / "run.sh"), "--quick", "--only", "floor", "--workloads",
                        "flood,start", "--flood", "2x2000", "--cache", str(tmp_path / "cache"), "--out", str(out),
                        "--json", str(tmp_path / "R.json")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert "## Flood: 2 ranks x 2,000 glog lines" in text
    assert "## Start: launch to all 4 ranks' programs running" in text
    assert "| floor (1 run) |" in text
    assert "shared" in text  # the report says the machine was shared
    assert_no_errors(tmp_path / "R.json", text)
    assert not list((tmp_path / "cache").glob("run-*")), "a work dir was left behind"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="bench/sleeper.c needs gcc")
def test_quick_scale_and_biglog_measure_the_supervisor_and_the_tui(tmp_path):
    out = tmp_path / "RESULTS.md"
    r = subprocess.run(["bash", str(REPO / "bench" / "run.sh"), "--quick", "--only", "floor,xllm-tui", "--workloads",
                        "scale,biglog", "--scale-ranks", "1,2,3", "--scale-seconds", "1", "--scale-calls", "2",
                        "--scale-frames", "2", "--biglog-size", "4M", "--biglog-repeats", "1",
                        "--cache", str(tmp_path / "cache"), "--out", str(out), "--json", str(tmp_path / "R.json")],
                       capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert_no_errors(tmp_path / "R.json", text)
    assert "## Scale: 1 to 3 sleeping ranks" in text
    assert "## Big log: 0.00391 GiB" in text
    results = json.loads((tmp_path / "R.json").read_text())["results"]
    for n in (1, 2, 3):
        mine = results[f"scale:{n}:1"]["xllm-tui"]
        for metric in ("start_s", "cpu_pct", "rss_mib", "status_ms_median", "socket_ms_median", "frame_ms_median",
                       "frame_apply_ms", "tui_rss_mib"):
            assert mine[metric][0] is not None and mine[metric][0] >= 0, (n, metric, mine)
        assert results[f"scale:{n}:1"]["floor"]["rss_mib"][0] > 0
        assert "status_ms_median" not in results[f"scale:{n}:1"]["floor"]  # the floor has no status or TUI
    big = results[f"biglog:{4 << 20}"]["xllm-tui"]
    for metric in ("tail_ms_median", "filter_s", "search_s", "grep_errors_s", "grep_search_s", "rss_growth_mib"):
        assert big[metric][0] is not None and big[metric][0] >= 0, (metric, big)
    assert "floor" not in results[f"biglog:{4 << 20}"]
    # the plot: one panel per metric, xllm-tui's points for every rank count, linked from the report
    svg = ElementTree.parse(tmp_path / "scale.svg").getroot()
    assert "(scale.svg)" in text
    polylines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(polylines) >= 9
    assert all(len(p.get("points").split()) == 3 for p in polylines)
    assert not list((tmp_path / "cache").glob("run-*")), "a work dir (and its big log) was left behind"


def test_linearity_verdicts():
    sys.path.insert(0, str(REPO / "bench"))
    from suite import linearity

    counts = (1, 8, 16, 64, 128)
    assert linearity([(n, 10 + 0.5 * n) for n in counts])[0].startswith("linear")
    assert "superlinear" in linearity([(n, 10 + 0.01 * n * n) for n in counts])[0]
    assert linearity([(n, 30.0 + (n % 3) * 0.1) for n in counts])[0].startswith("flat")
    verdict, slopes = linearity([(1, 1.0), (8, 8.0), (16, 16.0)])
    assert slopes == [1.0, 1.0] and verdict.startswith("linear")
    assert "not monotonic" in linearity([(1, 5.0), (16, 40.0), (64, 250.0), (128, 60.0)])[0]
