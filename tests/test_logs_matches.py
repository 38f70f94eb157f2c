"""MatchIndex: an errors-only filter's rows over an error storm, without an offset per line in memory."""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right

import pytest

from xllm_tui.logs.glog import ERRORS_PATTERNS
from xllm_tui.logs.matches import COUNTED_RUN, MatchIndex
from xllm_tui.logs.tail import LogFile


def storm(path, lines: int, seed: int = 7) -> None:
    """Info lines with bursts of error lines among them, as a rank failing every request for a while writes."""
    rnd = random.Random(seed)
    with open(path, "w") as f:
        for i in range(lines):
            burst = (i // 5000) % 3 == 1
            sev = "E" if burst or rnd.random() < 0.001 else "I"
            f.write(f"{sev}20261201 07:20:00.123456 12345 llm_engine.cpp:210] request {i} "
                    f"{'failed: Check the input shape' if sev == 'E' else 'done'}\n")


def built(logfile: LogFile, dense_limit: int) -> MatchIndex:
    index = MatchIndex(logfile, ERRORS_PATTERNS, dense_limit=dense_limit)
    for piece in logfile.scan_runs(ERRORS_PATTERNS):
        for lo, hi, found in MatchIndex.pieces(*piece, dense_limit=dense_limit):
            index.add(lo, hi, found)
    return index


def test_rows_and_bisects_are_those_of_the_whole_scan_while_few_offsets_are_held(tmp_path):
    path = tmp_path / "node_0.log"
    storm(path, 120_000)
    with LogFile(path) as logfile:
        logfile.index_all()
        everything = logfile.scan_matching(ERRORS_PATTERNS)
        index = built(logfile, dense_limit=64)
        assert len(index) == len(everything) > 40_000
        # The bursts are kept as counts and found again on demand: a small part of 8 bytes a match. A count
        # covers at most COUNTED_RUN matches, so finding them again (on the UI thread, drawing) reads little.
        assert index.held_bytes() < 8 * len(everything) / 20
        counts = [index._cum[i + 1] - index._cum[i] for i, d in enumerate(index._dense) if d is None]
        assert counts and max(counts) <= COUNTED_RUN
        assert [index[row] for row in range(len(index))] == list(everything)
        assert index[-1] == everything[-1]
        with pytest.raises(IndexError):
            index[len(index)]
        probes = [0, everything[0], everything[0] + 1, everything[-1], everything[-1] + 5, logfile.file_size]
        probes += random.Random(3).sample(range(logfile.file_size), 200)
        for offset in probes:
            assert index.bisect_left(offset) == bisect_left(everything, offset)
            assert index.bisect_right(offset) == bisect_right(everything, offset)


def test_ranges_added_after_and_before_as_a_view_grows_its_index_both_ways(tmp_path):
    path = tmp_path / "node_1.log"
    storm(path, 250_000)  # several pieces of 4 MiB
    with LogFile(path) as logfile:
        logfile.index_all()
        everything = logfile.scan_matching(ERRORS_PATTERNS)
        pieces = list(logfile.scan_runs(ERRORS_PATTERNS))
        middle = len(pieces) // 2
        index = MatchIndex(logfile, ERRORS_PATTERNS, dense_limit=16)
        index.add(*pieces[middle])
        for piece in pieces[middle + 1:]:  # appended lines
            index.add(*piece)
        for piece in reversed(pieces[:middle]):  # the index growing towards the start
            index.add(*piece)
        copy = index.copy()
        assert [copy[row] for row in range(len(copy))] == list(everything)
        assert index.range == (pieces[0][0], pieces[-1][1])
        with pytest.raises(ValueError):
            index.add(pieces[middle][0], pieces[middle][1], pieces[middle][2])


def test_few_matches_at_a_time_share_one_run(tmp_path):
    path = tmp_path / "node_2.log"
    path.write_text("")
    with LogFile(path) as logfile:
        index = MatchIndex(logfile, ERRORS_PATTERNS, dense_limit=100)
        for i in range(50):  # a poll every so often finding one error
            index.add(1000 * i, 1000 * i + 999, [1000 * i + 10])
        assert len(index) == 50 and index[49] == 49_010
        assert len(index._los) == 1
