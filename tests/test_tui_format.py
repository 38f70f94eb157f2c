"""What the TUI prints for snapshot values: durations, sizes, states, rank lists, diffs, glog timelines."""

from __future__ import annotations

import pytest

from xllm_tui.ui.widgets import format as fmt
from xllm_tui.ui.widgets.rank_table import short_line
from xllm_tui.ui.widgets.timeline import first_failure_index, parse_glog, scan_log, TimelineEntry


def test_durations_sizes_and_cpu():
    assert [fmt.duration(s) for s in (None, -1, 0, 59, 60, 599, 600, 3599, 3600, 86399, 86400 * 3 + 3600 * 4)] == [
        "-", "-", "0s", "59s", "1m00s", "9m59s", "10m", "59m", "1h00m", "23h59m", "3d04h"]
    assert fmt.size(None) == "-" and fmt.size(512) == "512B" and fmt.size(123_456_789) == "118M"
    assert fmt.size(9_800_000_000) == "9.1G"
    assert fmt.cpu(None) == "-" and fmt.cpu(97.4) == "97%"


def test_state_text_shows_progress_and_cause():
    assert fmt.state_text({"state": "loading", "progress": [12, 48]}) == "loading 12/48"
    assert fmt.state_text({"state": "loading", "progress": None}) == "loading"
    # A worker retrying rank 0 counts retries, not progress.
    retrying = {"state": "loading", "phase": "worker_connect_retry", "progress": [3, 0]}
    assert fmt.state_text(retrying) == "connecting (3 retries)"
    assert fmt.state_text({"state": "failed", "last_exit": {"cause": "hccl_error"}}) == "failed hccl_error"
    assert fmt.state_text({"state": "crash-looping", "last_exit": None}) == "crash-looping"
    # Uptimes: seconds in the first minute of a starting rank only, then whole minutes (an idle table must
    # not change every second).
    assert [fmt.uptime({"pid": 1, "started_at": 100.0, "state": "ready"}, 100.0 + s) for s in (5, 59, 60)] == [
        "<1m", "<1m", "1m"]
    assert [fmt.uptime({"pid": 1, "started_at": 100.0}, 100.0 + s) for s in (0, 59, 60, 130, 3599, 3600, 86400 * 3)] == [
        "0s", "59s", "1m", "2m", "59m", "1h00m", "3d00h"]
    assert fmt.uptime({"pid": None, "started_at": 100.0}, 230.0) == "-"


def test_rank_list_and_last_exit():
    assert fmt.rank_list([7, 0, 1, 2, 3, 5]) == "0-3,5,7"
    assert fmt.rank_list([]) == ""
    assert fmt.last_exit_text({"signal": 9, "cause": "killed"}) == "signal 9, cause killed"
    assert "collateral" in fmt.last_exit_text({"code": 0, "cause": "collateral", "collateral": True})
    assert fmt.last_exit_text(None) == "none"


def test_env_and_argv_diffs():
    rows = fmt.env_diff({"A": "1", "B": "2", "C": "3"}, {"A": "1", "B": "20", "D": "4"})
    assert rows == [("~", "B", "2", "20"), ("-", "C", "3", None), ("+", "D", None, "4")]
    assert fmt.argv_diff(["x", "--a=1", "--b=2"], ["x", "--a=1", "--b=3", "--c"]) == [
        ("-", "--b=2"), ("+", "--b=3"), ("+", "--c")]


def test_event_lines():
    assert fmt.event_text({"kind": "state", "rank": 3, "from": "ready", "to": "failed", "cause": "hccl_error",
                           "reason": "boom"}) == "rank 3: ready -> failed [hccl_error]: boom"
    # The pane shows the kind in its own column: the text does not repeat it.
    assert fmt.event_text({"kind": "toggle", "rank": None, "reason": "determinism on"}) == "determinism on"
    assert fmt.event_text({"kind": "group", "rank": None, "from": "ready", "to": "failed",
                           "reason": "rank(s) 3 not running"}) == "ready -> failed: rank(s) 3 not running"


def test_last_line_drops_the_glog_prefix():
    assert short_line("E20251129 15:39:30.000000 51251 hccl_comm.cpp:140] Failed, HCCL error") == "E Failed, HCCL error"
    assert short_line("plain text\tline") == "plain text line"


def test_glog_parsing_and_first_failure(tmp_path):
    assert parse_glog("W1129 15:20:01.5 77 a.cc:1] slow")[:2] == ("W", parse_glog("W20251129 15:20:01.5 77 a.cc:1] x")[1])
    assert parse_glog("not a glog line") is None
    log = tmp_path / "node_0.log"
    log.write_text("I20251129 15:00:00.000000 1 a.cc:1] hello\nW20251129 15:00:01.000000 1 a.cc:2] careful\n"
                   "E20251129 15:00:02.000000 1 a.cc:3] broken\nnoise\n")
    entries = scan_log(str(log), 0)
    assert [(e.severity, e.message) for e in entries] == [("W", "careful"), ("E", "broken")]
    older = TimelineEntry(1.0, 5, "E", "x", "old failure", back=1)
    newer = TimelineEntry(9.0, 2, "E", "x", "new failure", back=0)
    assert first_failure_index([older, TimelineEntry(5.0, 1, "W", "x", "warn"), newer]) == 2
    assert first_failure_index([TimelineEntry(5.0, 1, "W", "x", "warn")]) is None


def test_loading_progress_with_an_unknown_total():
    assert fmt.state_text({"state": "loading", "progress": [12, 48]}) == "loading 12/48"
    assert fmt.state_text({"state": "loading", "progress": [7, 0]}) == "loading 7"  # total not known yet
    assert fmt.state_text({"state": "loading", "progress": [0, 0]}) == "loading"


def _scan_log_line_by_line(path: str, rank: int) -> list:
    """The reference: every line read in Python, W/E/F ones parsed (how scan_log read logs before)."""
    kept = []
    with open(path, "rb") as handle:
        for raw in handle:
            if raw[:1] in (b"W", b"E", b"F"):
                parsed = parse_glog(raw.decode("utf-8", "replace").rstrip("\r\n"))
                if parsed:
                    kept.append(TimelineEntry(parsed[1], rank, parsed[0], parsed[2], parsed[3]))
    return kept


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 22])
def test_the_timeline_scan_finds_what_a_line_by_line_read_finds(tmp_path, monkeypatch, chunk):
    import random

    from xllm_tui.ui.widgets import timeline

    monkeypatch.setattr(timeline, "_SCAN_CHUNK", chunk)
    rng = random.Random(chunk)
    pieces = ["I20251129 15:00:00.000000 1 a.cc:1] hello", "W20251129 15:00:01.000000 1 a.cc:2] careful",
              "E20251129 15:00:02.5 1 a.cc:3] broken \xe9", "F1129 15:00:03.000000 1 b.cc:4] Check failed: x",
              "Worker noise", "", "E not glog", "W20251129 15:00:04.000000 1 c.cc:5] crlf\r"]
    for round_ in range(20):
        lines = [rng.choice(pieces) for _ in range(rng.randrange(0, 30))]
        log = tmp_path / f"node_{round_}.log"
        log.write_bytes(("\n".join(lines) + rng.choice(["", "\n"])).encode("utf-8") + rng.choice([b"", b"\xff\xfe"]))
        assert timeline.scan_log(str(log), 3) == _scan_log_line_by_line(str(log), 3), lines
