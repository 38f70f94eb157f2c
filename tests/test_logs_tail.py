"""The log index: tail-first opening, appends, partial lines, resets, odd bytes; tail/follow/rotation helpers."""

from __future__ import annotations

import os
import random
import re
import threading

import pytest

from xllm_tui.logs.tail import (
    IncrementalReader,
    LogFile,
    follow,
    log_generations,
    rotate_log,
    tail_lines,
)


def write(path, text: str | bytes, mode: str = "w") -> None:
    data = text.encode() if isinstance(text, str) else text
    with open(path, mode + "b") as f:
        f.write(data)


def make_lines(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"line {i} " + "x" * rng.randint(0, 200) for i in range(n)]


@pytest.fixture
def big(tmp_path):
    lines = make_lines(5000)
    path = tmp_path / "big.log"
    write(path, "\n".join(lines) + "\n")
    return path, lines


def test_opens_at_tail_then_indexes_backwards_keeping_numbers_valid(big):
    path, lines = big
    # Small blocks so this small file behaves like a big one: the first view covers only the tail.
    with LogFile(path, initial_lines=50, block_size=1024) as log:
        first = log.snapshot()
        assert not first.complete
        assert 50 <= first.line_count < len(lines)
        assert log.get_lines(first.line_count - 3, 3) == lines[-3:]
        tail_number = first.line_count - 1
        while not log.complete:
            assert log.index_backward(4096) >= 0
        assert log.line_count == len(lines)
        # A number taken before the index grew still names the same line when its base is given.
        assert log.get_line(tail_number, base=first.prepended_lines) == lines[-1]
        assert log.get_lines(0, 3) == lines[:3]
        for i in random.Random(2).sample(range(len(lines)), 300):
            assert log.get_line(i) == lines[i]
            offset = log.line_offset(i)
            assert log.line_at_offset(offset) == lines[i]
            assert log.line_of_offset(offset) == i
            assert log.line_of_offset(offset + len(lines[i])) == i  # its newline belongs to it


def test_index_all_and_small_memory(big):
    path, lines = big
    with LogFile(path, initial_lines=10, block_size=1024) as log:
        seen = []
        log.index_all(progress=lambda done, total: seen.append((done, total)))
        assert log.complete and log.line_count == len(lines)
        assert seen and seen[-1][0] == seen[-1][1] == os.path.getsize(path)
        # ~12 bytes per block, never per line
        blocks = os.path.getsize(path) // 1024 + 1
        assert log.index_memory_bytes() <= 12 * blocks + 64


def test_indexing_backward_stops_on_a_closed_or_unreadable_file(big, monkeypatch):
    path, _ = big
    log = LogFile(path, initial_lines=10, block_size=1024)
    assert not log.complete
    log.close()  # a view switched to another file while its poll worker was indexing this one
    asked = []
    log.index_backward_while(lambda: asked.append(1) or len(asked) < 1000)
    assert len(asked) <= 1  # it used to loop until its deadline, each step doing nothing

    with LogFile(path, initial_lines=10, block_size=1024) as log:
        before = log.snapshot().indexed_bytes

        def failing_read(*args):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr("xllm_tui.logs.tail.os.preadv", failing_read)
        done = threading.Event()
        worker = threading.Thread(target=lambda: (log.index_all(), done.set()), daemon=True)
        worker.start()
        assert done.wait(10), "index_all kept looping on a file it cannot read"
        assert log.snapshot().indexed_bytes == before and not log.complete


def test_appends_and_partial_last_line(tmp_path):
    path = tmp_path / "a.log"
    write(path, "one\ntwo\n")
    with LogFile(path) as log:
        assert log.line_count == 2
        write(path, "three\nfou", "a")
        assert log.refresh() == 1
        assert log.get_lines(0, 10) == ["one", "two", "three"]
        assert log.partial_line() == "fou"
        assert log.refresh() == 0
        write(path, "r\n", "a")
        assert log.refresh() == 1
        assert log.get_line(3) == "four"
        assert log.partial_line() == ""


def test_empty_and_missing_file(tmp_path):
    path = tmp_path / "later.log"
    with LogFile(path) as log:
        assert log.line_count == 0 and log.complete
        assert log.get_lines(0, 5) == []
        with pytest.raises(IndexError):
            log.get_line(0)
        write(path, "")
        assert log.refresh() == 0
        write(path, "hello\n", "a")
        assert log.refresh() == 1
        assert log.get_line(0) == "hello"


def test_truncation_resets_and_reports(tmp_path):
    path = tmp_path / "t.log"
    write(path, "a\nb\nc\n")
    with LogFile(path) as log:
        assert log.line_count == 3
        write(path, "new\n")
        result = log.poll()
        assert result.reset == "truncated"
        assert result.new_lines == 1
        assert log.generation == 1 and log.last_reset == "truncated"
        assert log.get_lines(0, 5) == ["new"]


def test_rotation_resets_to_the_new_file(tmp_path):
    path = tmp_path / "node_0.log"
    write(path, "old 1\nold 2\n")
    with LogFile(path) as log:
        os.rename(path, str(path) + ".1")
        write(path, "fresh\n")
        result = log.poll()
        assert result.reset == "rotated"
        assert log.get_lines(0, 5) == ["fresh"]


def test_huge_line_is_cut_on_read_but_counted_once(tmp_path):
    path = tmp_path / "h.log"
    write(path, "before\n" + "y" * 300_000 + "\nafter\n")
    with LogFile(path, max_line_bytes=1000, block_size=4096, initial_lines=1) as log:
        log.index_all()
        assert log.line_count == 3
        lines = log.get_lines(0, 3)
        assert lines[0] == "before" and lines[2] == "after"
        assert lines[1].startswith("y" * 1000) and lines[1].endswith("[line cut]")
        assert len(lines[1]) < 1100


def test_crlf_and_invalid_utf8(tmp_path):
    path = tmp_path / "c.log"
    write(path, b"dos line\r\nbad \xff\xfe byte\n\xe4\xb8\xad\xe6\x96\x87\n")
    with LogFile(path) as log:
        assert log.get_lines(0, 3) == ["dos line", "bad \ufffd\ufffd byte", "中文"]
    assert tail_lines(path, 1) == ["中文"]


def test_scan_and_find_by_pattern(big):
    path, lines = big
    pattern = re.compile(rb"^line 12\d\d ", re.M)
    expected = [i for i, line in enumerate(lines) if re.match(r"line 12\d\d ", line)]
    with LogFile(path, block_size=2048) as log:
        log.index_all()
        found = [log.line_of_offset(o) for o in log.scan_matching(pattern)]
        assert found == expected
        first = log.find_next(pattern, None)
        assert log.line_of_offset(first) == expected[0]
        second = log.find_next(pattern, first)
        assert log.line_of_offset(second) == expected[1]
        last = log.find_previous(pattern, None)
        assert log.line_of_offset(last) == expected[-1]
        assert log.line_of_offset(log.find_previous(pattern, last)) == expected[-2]
        assert log.find_previous(pattern, first) is None


@pytest.mark.parametrize("ignore_case", [False, True])
def test_literal_patterns_find_what_re_finds(tmp_path, monkeypatch, ignore_case):
    """Plain literals take intake's rare-byte search, other patterns re: both find the same lines, across
    chunk boundaries (tiny chunks), at the file's first line, with and without case."""
    import xllm_tui.logs.tail as tail

    monkeypatch.setattr(tail, "READ_CHUNK", 64)
    rng = random.Random(5)
    words = ["ERROR:", "error:", "Check failed:", "plain", "E1130", "tail"]
    lines = ["ERROR: first line"] + [" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) for _ in range(400)]
    path = tmp_path / "mixed.log"
    write(path, "\n".join(lines) + "\n")
    needle = "error:" if ignore_case else "ERROR:"
    expected = [i for i, line in enumerate(lines) if needle in (line.lower() if ignore_case else line)]
    literal, regex = re.compile(needle.encode()), re.compile(needle[:-1].encode() + b"[:]")
    with LogFile(path, block_size=256) as log:
        log.index_all()
        for pattern in (literal, regex, (literal, re.compile(rb"\nE\d{4}"))):
            found = [log.line_of_offset(o) for o in log.scan_matching(pattern, ignore_case=ignore_case)]
            if isinstance(pattern, tuple):
                assert set(found) >= set(expected) and found == sorted(found)
                continue
            assert found == expected
            first = log.find_next(pattern, None, ignore_case=ignore_case)
            assert log.line_of_offset(first) == expected[0] == 0
            last = log.find_previous(pattern, None, ignore_case=ignore_case)
            assert log.line_of_offset(last) == expected[-1]
            assert log.find_previous(pattern, first, ignore_case=ignore_case) is None


def test_tail_lines(tmp_path, big):
    path, lines = big
    assert tail_lines(path, 3) == lines[-3:]
    assert tail_lines(path, 10_000) == lines
    assert tail_lines(path, 0) == []
    assert tail_lines(tmp_path / "missing.log", 5) == []
    partial = tmp_path / "p.log"
    write(partial, "a\nb\nunfinished")
    assert tail_lines(partial, 2) == ["b", "unfinished"]
    assert tail_lines(partial, 2, include_partial=False) == ["a", "b"]


def test_incremental_reader_holds_partial_lines_and_survives_rotation(tmp_path):
    path = tmp_path / "r.log"
    write(path, "x\n")
    reader = IncrementalReader(path, from_end=True)
    assert reader.read_new() == []
    write(path, "one\ntw", "a")
    assert reader.read_new() == ["one"]
    write(path, "o\n", "a")
    assert reader.read_new() == ["two"]
    os.rename(path, str(path) + ".1")
    write(path, "after rotation\n")
    assert reader.read_new() == ["after rotation"]
    assert reader.resets == 1


def test_follow_yields_appended_lines(tmp_path):
    path = tmp_path / "f.log"
    write(path, "already there\n")
    done = threading.Event()
    got: list[str] = []

    def writer():
        write(path, "first\nsecond\n", "a")

    thread = threading.Thread(target=writer)
    thread.start()
    for line in follow(path, poll_interval=0.01, from_end=False, stop=done.is_set):
        got.append(line)
        if len(got) == 3:
            break
    thread.join()
    assert got == ["already there", "first", "second"]
    stopped = list(follow(path, poll_interval=0.01, stop=lambda: True))
    assert stopped == []


def test_rotate_log_keeps_generations_and_never_truncates(tmp_path):
    path = tmp_path / "node_3.log"
    assert rotate_log(path) is None  # nothing yet
    write(path, "")
    assert rotate_log(path) is None  # empty: nothing worth keeping
    for generation in range(1, 5):
        write(path, f"run {generation}\n")
        assert rotate_log(path, keep=3) == str(path) + ".1"
        assert not path.exists()
    generations = log_generations(path)
    assert generations == [str(path) + ".1", str(path) + ".2", str(path) + ".3"]
    assert [open(p).read() for p in generations] == ["run 4\n", "run 3\n", "run 2\n"]
    # A writer holding the old file keeps writing into the rotated generation.
    write(path, "live\n")
    with open(path, "a") as writer:
        rotate_log(path, keep=3)
        writer.write("still writing\n")
    assert open(str(path) + ".1").read() == "live\nstill writing\n"
    (tmp_path / "node_3.log.x").write_text("not a generation")
    (tmp_path / "node_3.log.01").write_text("not a generation")
    assert len(log_generations(path)) == 3


def test_readers_keep_valid_numbers_while_another_thread_indexes(big):
    path, lines = big
    with LogFile(path, initial_lines=20, block_size=512) as log:
        snap = log.snapshot()
        last = snap.line_count - 1
        errors: list[str] = []

        def indexer():
            while not log.complete:
                log.index_backward(512)

        thread = threading.Thread(target=indexer)
        thread.start()
        try:
            while thread.is_alive():
                got = log.get_line(last, base=snap.prepended_lines)
                if got != lines[-1]:
                    errors.append(got)
                    break
                now = log.snapshot()  # any consistent snapshot names lines correctly
                first_indexed = len(lines) - now.line_count
                if log.get_line(0, base=now.prepended_lines) != lines[first_indexed]:
                    errors.append("snapshot")
                    break
        finally:
            thread.join()
        assert errors == []
        assert log.line_count == len(lines)


# ---- floods: appends far larger than one read, while other threads read ---------------------------------
FLOOD_LINE = b"I20251129 15:20:01.123456 12345 llm_engine.cpp:210] " + b"x" * 67 + b"\n"  # 120 bytes


def block_counts_from_disk(path, block_size: int, blocks: int) -> list[int]:
    with open(path, "rb") as f:
        return [f.read(block_size).count(b"\n") for _ in range(blocks)]


def test_an_append_of_many_megabytes_from_inside_a_block_keeps_one_count_per_block(tmp_path):
    # The indexed end sits inside a block; the append spans several 1 MiB reads, whose ends used to
    # split a block in two counts, shifting every later block's count (IndexError under a flood).
    path = tmp_path / "flood.log"
    write(path, FLOOD_LINE)
    log = LogFile(path)
    write(path, FLOOD_LINE * 40_000, "a")  # 4.8 MB in one poll
    assert log.poll().new_lines == 40_000
    assert list(log._counts) == block_counts_from_disk(path, log.block_size, len(log._counts))
    assert log.get_line(log.line_count - 1) == FLOOD_LINE[:-1].decode()
    assert log.line_offset(log.line_count - 1) == 40_000 * len(FLOOD_LINE)
    lines = log.get_lines(0, log.line_count)
    assert len(lines) == 40_001 and set(lines) == {FLOOD_LINE[:-1].decode()}


def test_reading_while_a_writer_floods_and_a_thread_polls(tmp_path):
    """The TUI's situation: a writer at full speed, a poll thread, reads of the tail and of random lines."""
    path = tmp_path / "flood.log"
    write(path, b"")
    total_lines = 200_000  # 24 MB, written in 100-line writes
    log = LogFile(path, initial_lines=500)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        with open(path, "ab", buffering=0) as f:
            for _ in range(total_lines // 100):
                f.write(FLOOD_LINE * 100)
        done.set()

    def poller() -> None:
        try:
            while True:
                finished = done.is_set()
                log.poll(8 * 1024 * 1024)
                if finished and log.line_count == total_lines:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=poller)]
    for t in threads:
        t.start()
    rng = random.Random(3)
    reads = 0
    try:
        while threads[1].is_alive():
            snap = log.snapshot()
            if snap.line_count:
                tail = log.get_lines(max(0, snap.line_count - 60), 60, base=snap.prepended_lines)
                assert tail and set(tail) == {FLOOD_LINE[:-1].decode()}
                log.get_lines_with_offsets(rng.randrange(snap.line_count), 40, base=snap.prepended_lines)
                log.partial_line()
                reads += 1
    finally:
        done.wait(60)
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert reads > 0 and log.line_count == total_lines
    assert list(log._counts) == block_counts_from_disk(path, log.block_size, len(log._counts))
