"""LogFile's filter and search (scan_matching, find_next, find_previous) against a line-by-line reference.

Property-style: random logs (glog lines, lines starting with E/F that are not glog lines, "Execute" and other
frequent key bytes, needles in every case, lines longer than a chunk, empty lines, a partial last line), random
chunk sizes (READ_CHUNK patched small, so lines cross chunk boundaries), random start/end/anchor offsets, with
and without case. Every seed is fixed: a failure names its seed.
"""

from __future__ import annotations

import random
import re

import pytest

import xllm_tui.logs.tail as tail
from xllm_tui.logs.glog import ERRORS_PATTERNS, WARNINGS_PATTERNS
from xllm_tui.logs.tail import LogFile

PIECES = [
    "E1130 12:00:00.000001 7 a.cc:1]", "F20251129 12:00:00 7 b.cc:2]", "I1130 12:00:00.5 7 c.cc:3]",
    "W1130 12:00:00 7 d.cc:4]", "E113", "E11301", "F1130x", "Execute model", "Fine", "ERROR:", "error:",
    "Error:", "Check failed:", "check failed:", "BigLog-Needle-ab12", "biglog-needle-AB12", "BIGLOG-NEEDLE-AB12",
    "-_=12", "e1130 ", "x", "E", "F", "\r", "é", "中文", "word", "  ",
]


def random_log(rng: random.Random, lines: int, long_line: int) -> bytes:
    out = []
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.05:
            out.append("")
        elif kind < 0.08:
            out.append(rng.choice(PIECES) + "y" * rng.randint(long_line // 2, long_line * 2))
        else:
            out.append(" ".join(rng.choice(PIECES) for _ in range(rng.randint(1, 5))))
    text = "\n".join(out) + "\n"
    if rng.random() < 0.5:
        text += rng.choice(PIECES)  # a partial last line: not indexed, never found
    raw = text.encode()
    if rng.random() < 0.3:
        raw = raw.replace(b"\xc3\xa9", b"\xff", 1)  # invalid UTF-8 is searched as bytes
    if rng.random() < 0.2:
        raw = raw.replace(b"x", b"\0", 1)  # a NUL (strcasestr would stop there)
    return raw


def line_starts(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of the complete lines (end: the newline)."""
    spans, pos = [], 0
    while True:
        nl = raw.find(b"\n", pos)
        if nl == -1:
            return spans
        spans.append((pos, nl))
        pos = nl + 1


def matches(patterns, text: bytes, ignore_case: bool) -> bool:
    """The reference: one line's text (without its newline), a newline put before it so "\\n" anchors."""
    subject = b"\n" + (text.lower() if ignore_case else text)
    return any(p.search(subject) for p in ((patterns,) if isinstance(patterns, re.Pattern) else patterns))


CASES = [
    (ERRORS_PATTERNS, False),
    (WARNINGS_PATTERNS, False),
    (re.compile(rb"\n[EF]\d{4}[ \d]"), False),
    (re.compile(rb"\nE"), False),
    (re.compile(rb"\n[EF]\d"), False),
    (re.compile(rb"\nF\d{4}[ \d]"), False),
    (re.compile(rb"\n[E-F].{2,}\]"), False),
    (re.compile(rb"\n[EF]\d{4}\s"), False),  # \s can match a newline: not a line-start key pattern, re does it
    (re.compile(rb"ERROR:"), False),
    (re.compile(rb"Check failed:"), False),
    (re.compile(re.escape(b"biglog-needle-ab12")), True),
    (re.compile(re.escape(b"biglog-needle-ab12")), False),
    (re.compile(re.escape(b"BigLog-Needle-ab12")), False),
    (re.compile(re.escape(b"error:")), True),
    (re.compile(re.escape(b"-_=12")), True),  # no letters: searched as it is
    (re.compile(re.escape(b"e")), True),
    (re.compile(re.escape(b"yyy")), True),
    (re.compile(re.escape("中文".encode())), True),
    (re.compile(re.escape(b"\xff")), True),
    (re.compile(rb"err(or)?:"), True),
    ((re.compile(re.escape(b"needle")), re.compile(rb"\nW")), False),
]


def check_one(rng: random.Random, tmp_path, monkeypatch, seed: int) -> None:
    monkeypatch.setattr(tail, "READ_CHUNK", rng.choice([4, 16, 37, 64, 200, 1024, 4096]))
    monkeypatch.setattr(tail, "_KEY_SAMPLE", rng.choice([8, 64, 4096]))
    monkeypatch.setattr(tail, "_PARALLEL_BYTES", rng.choice([32, 1 << 20]))  # halves on two threads
    raw = random_log(rng, rng.randint(1, 300), rng.choice([10, 100, 1000, 5000]))
    path = tmp_path / f"r{seed}.log"
    path.write_bytes(raw)
    spans = line_starts(raw)
    with LogFile(path, block_size=rng.choice([64, 256, 4096])) as log:
        log.index_all()
        for patterns, ignore_case in CASES:
            where = f"seed {seed}, {patterns!r}, ignore_case={ignore_case}"
            hits = [start for start, end in spans if matches(patterns, raw[start:end], ignore_case)]
            assert list(log.scan_matching(patterns, ignore_case=ignore_case)) == hits, where
            # A range between two line starts (what the view scans as the index grows).
            a, b = sorted(rng.choice(spans)[0] if spans else 0 for _ in range(2))
            in_range = [h for h in hits if a <= h < b]
            assert list(log.scan_matching(patterns, a, b, ignore_case=ignore_case)) == in_range, where
            # find_next: the first match after the line holding byte `after`.
            after = rng.randrange(len(raw) + 1)
            following = [s for s, e in spans if s > after and (s == 0 or raw[s - 1 : s] == b"\n")]
            expected_next = next((h for h in hits if following and h >= following[0]), None)
            assert log.find_next(patterns, after, ignore_case=ignore_case) == expected_next, (where, after)
            assert log.find_next(patterns, None, ignore_case=ignore_case) == (hits[0] if hits else None), where
            # find_previous: the last line starting before `before`, matched on its text up to `before`.
            before = rng.choice([rng.randrange(len(raw) + 1), rng.choice(spans)[0] if spans else 0])
            expected_previous = None
            for start, end in spans:
                if start < before and matches(patterns, raw[start : min(end, before)], ignore_case):
                    expected_previous = start
            assert log.find_previous(patterns, before, ignore_case=ignore_case) == expected_previous, (where, before)
            assert log.find_previous(patterns, None, ignore_case=ignore_case) == (hits[-1] if hits else None), where


@pytest.mark.parametrize("seed", range(40))
def test_scan_and_find_match_a_line_by_line_reference(tmp_path, monkeypatch, seed):
    check_one(random.Random(seed), tmp_path, monkeypatch, seed)


@pytest.mark.parametrize("seed", range(40, 50))
def test_without_libc_strcasestr_the_same_lines(tmp_path, monkeypatch, seed):
    """Where libc's case folding is not bytes.lower's (or there is no libc), intake's lower-and-find does it."""
    monkeypatch.setattr(tail, "_strcasestr", lambda: None)
    check_one(random.Random(seed), tmp_path, monkeypatch, seed)


def test_frequent_and_rare_line_start_keys_find_the_same_lines(tmp_path, monkeypatch):
    """A chunk where the key byte "E" is frequent (re does it) and one where it is rare (memchr): both exact,
    including a sample that misleads (rare where sampled, frequent between)."""
    monkeypatch.setattr(tail, "READ_CHUNK", 16 * 1024)
    monkeypatch.setattr(tail, "_KEY_SAMPLE", 256)
    rare = [f"I1130 00:00:00 1 a.cc:1] line {i}" for i in range(3000)]
    frequent = [f"I1130 00:00:00 1 a.cc:1] Execute EEEE {i}" for i in range(3000)]
    lines = rare[:1000] + ["E1130 00:00:00 1 a.cc:1] one"] + rare[1000:] + frequent[:1500] + [
        "F1130 00:00:00 1 a.cc:1] two"] + frequent[1500:] + ["E1130 00:00:00 1 a.cc:1] last"]
    lines[1200] = "E" * 5000  # a line start with E, no digits
    path = tmp_path / "keys.log"
    path.write_text("\n".join(lines) + "\n")
    raw = path.read_bytes()
    with LogFile(path) as log:
        log.index_all()
        found = [log.line_of_offset(o) for o in log.scan_matching(ERRORS_PATTERNS)]
    assert found == [i for i, line in enumerate(lines) if matches(ERRORS_PATTERNS, line.encode(), False)]
    assert len(found) == 3 and raw.count(b"E") > 10_000


def test_scans_read_into_a_reused_buffer(tmp_path, monkeypatch):
    """Filter and search read their chunks into a reused buffer: a fresh bytes object per read was, in a worker
    thread, a fresh mapping paid for in page faults (about a quarter of a 1 GiB scan)."""
    import tracemalloc

    monkeypatch.setattr(tail, "READ_CHUNK", 256 * 1024)  # chunks of 1 MiB
    path = tmp_path / "big.log"
    line = "I1130 00:00:00.000000 1 a.cc:1] Execute model done, batch size 7, tokens 12\n"
    path.write_text("E1130 00:00:00 1 a.cc:1] first\n" + line * (4 * 1024 * 1024 // len(line)))
    needle = re.compile(re.escape(b"first"))
    with LogFile(path) as log:
        log.index_all()
        log.scan_matching(ERRORS_PATTERNS)  # makes the buffer
        tracemalloc.start()
        try:
            assert len(log.scan_matching(ERRORS_PATTERNS)) == 1
            assert log.find_previous(needle, None, ignore_case=True) == 0
            assert log.find_next(re.compile(re.escape(b"FIRST")), None) is None
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 512 * 1024, peak


def test_a_line_start_pattern_reaching_into_the_next_line_still_goes_through_re(tmp_path):
    """A match of "\\nE\\nE" holds a second newline: no line-start key pattern, re scans for it as before (its
    matches do not overlap: of three "E" lines, the first matches, the second is taken by that match)."""
    path = tmp_path / "two.log"
    path.write_text("E\nE\nE\nx\nE\nF\n")
    with LogFile(path) as log:
        assert list(log.scan_matching(re.compile(rb"\nE\nE"))) == [0]
        assert list(log.scan_matching(re.compile(rb"\nE[^x]"))) == [0, 4, 8]


def folded_log(tmp_path, hits: int):
    """A log whose needle bytes are all frequent (the benchmark's case: no rare byte to memchr for)."""
    line = "I1130 00:00:00.000000 1 a.cc:1] Generated 12 tokens in 12.3 ms, needle-ish biglog-ne edle\n"
    lines = [line] * 40_000
    for i in range(hits):
        lines[(i * 7919 + 11) % len(lines)] = f"I1130 00:00:00 1 a.cc:1] {i} the BigLog-NEEDLE-ab12 x\n"
    path = tmp_path / "folded.log"
    path.write_text("".join(lines))
    expected = [i for i, text in enumerate(lines) if "biglog-needle-ab12" in text.lower()]
    return path, expected


@pytest.mark.skipif(tail._strcasestr() is None, reason="no libc strcasestr folding ASCII")
@pytest.mark.parametrize("hits", [0, 3, 5000])
def test_a_folded_needle_of_frequent_bytes_is_searched_by_strcasestr(tmp_path, monkeypatch, hits):
    """Not by lowering each piece then searching it (two passes): strcasestr folds as it compares. With many
    hits (5000: beyond the budget of libc calls per chunk) the rest of a chunk is lowered and searched."""
    import xllm_tui.logs.intake as intake

    path, expected = folded_log(tmp_path, hits)
    lowered = []
    original = intake._add_folded_matches
    monkeypatch.setattr(intake, "_add_folded_matches", lambda *a, **k: (lowered.append(1), original(*a, **k)))
    needle = re.compile(re.escape(b"biglog-needle-ab12"))
    with LogFile(path) as log:
        log.index_all()
        found = [log.line_of_offset(o) for o in log.scan_matching(needle, ignore_case=True)]
        assert found == expected
        last = log.find_previous(needle, None, ignore_case=True)
        assert (log.line_of_offset(last) if last is not None else None) == (expected[-1] if expected else None)
    assert bool(lowered) == (hits > 1000)


@pytest.mark.skipif(tail._strcasestr() is None, reason="no libc strcasestr folding ASCII")
def test_strcasestr_is_skipped_exactly_where_intake_has_a_rare_byte(tmp_path, monkeypatch):
    """The choice between strcasestr and intake's rare-byte search is intake's own plan: with every byte rare to
    intake, intake searches (a second estimate in tail could send the needle to strcasestr all the same)."""
    import xllm_tui.logs.intake as intake

    path, expected = folded_log(tmp_path, 3)
    monkeypatch.setattr(intake, "_MAX_HITS_PER_MIB", 1 << 30)
    called = []
    original = tail._strcasestr
    monkeypatch.setattr(tail, "_strcasestr", lambda: (called.append(1), original())[1])
    needle = re.compile(re.escape(b"biglog-needle-ab12"))
    with LogFile(path) as log:
        log.index_all()
        assert [log.line_of_offset(o) for o in log.scan_matching(needle, ignore_case=True)] == expected
    assert not called


@pytest.mark.parametrize("nuls", [1, 50, 20_000])
def test_nul_bytes_do_not_hide_folded_matches(tmp_path, nuls):
    """strcasestr stops at a NUL: one in the data ends a call and the search goes on after it (a NUL before a
    match on its line, right before the needle, at a line start); very many: intake's search does the rest."""
    rng = random.Random(nuls)
    line = b"I1130 00:00:00.000000 1 a.cc:1] Generated 12 tokens in 12.3 ms, needle-ish biglog-ne edle\n"
    lines = [line] * 40_000
    for i in range(0, 40_000, 997):
        lines[i] = b"I1130 00:00:00 1 a.cc:1] \0 x \0BigLog-NEEDLE-ab12 x\n"
    for _ in range(nuls):
        i = rng.randrange(len(lines))
        at = rng.randrange(len(lines[i]) - 1)
        lines[i] = lines[i][:at] + b"\0" + lines[i][at + 1 :]
    path = tmp_path / "nul.log"
    path.write_bytes(b"".join(lines))
    expected = [i for i, text in enumerate(lines) if b"biglog-needle-ab12" in text.lower()]
    needle = re.compile(re.escape(b"biglog-needle-ab12"))
    with LogFile(path) as log:
        log.index_all()
        assert [log.line_of_offset(o) for o in log.scan_matching(needle, ignore_case=True)] == expected
        assert log.line_of_offset(log.find_previous(needle, None, ignore_case=True)) == expected[-1]
