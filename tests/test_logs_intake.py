"""LogIntake against the path it replaces (IncrementalReader + Milestones.feed of every line): same milestones,
failures, readiness and last line for any log and any cut of it into reads; bounded work and memory."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from xllm_tui.logs import intake as intake_module
from xllm_tui.logs.intake import IntakeResult, LogIntake
from xllm_tui.logs.tail import IncrementalReader
from xllm_tui.supervisor.probes import Milestones


def adopted_log_reader(path: str, backlog: int = 16 << 20) -> tuple[IncrementalReader, list[str]]:
    """The way the supervisor read an adopted rank's log before LogIntake.adopt: the reference it must match."""
    reader = IncrementalReader(path)
    try:
        reader.offset = max(0, os.path.getsize(path) - backlog)
    except OSError:
        return reader, []
    started_mid_file = reader.offset > 0
    lines = reader.read_new(max_bytes=backlog)
    return reader, (lines[1:] if started_mid_file else lines)  # the first line is cut

DEMO_LOGS = sorted((Path(__file__).parents[1] / "xllm_tui" / "data" / "tui-demo" / "logs").glob("node_*.log.txt"))
assert DEMO_LOGS, "the recorded demo logs are missing"
P = "I20261129 17:03:08.266814 17122 "

# Lines that move a tracker, and lines that must not (noise, near misses, odd bytes).
STARTUP = [
    P + "worker.cpp:1] set worker role to local worker",
    P + "master.cpp:1] Master init options: model_path=/models/main",
    P + "engine.cpp:1] Creating engine with devices: npu:0",
    P + "engine.cpp:1] Using draft devices: npu:0",
    P + "master.cpp:1] Multi-node serving world_size = 2, each_node_ranks = 1",
    P + "worker_server.cpp:1] Create worker server with device: 1",
    P + "worker_server.cpp:1] DistributeWorker started on address 127.0.0.1:4000",
    P + "worker_server.cpp:253] Worker#1 try connect to engine server error, try again. Error message: x",
    P + "worker_server.cpp:253] Worker#1 connect to 127.0.0.1:1 success.",
    P + "collective.cpp:1] Collective server started on address 127.0.0.1:19888",
    P + "remote_worker.cpp:1] RemoteWorker Hello connected, server_address: 127.0.0.1:4000, global_rank_: 1",
    P + "engine.cpp:1] Initializing model from: /models/main",
    P + "worker_impl.cpp:1] Temporarily setting ATen threads to 1 during weight loading",
    P + "model_loader.cpp:89] Loading model weights from /models/main/model-00001-of-00002.safetensors",
    P + "model_loader.cpp:89] Loading model weights from /models/main/model-00002-of-00002.safetensors",
    P + "worker_impl.cpp:1] Weight loading completed, restored ATen threads=12",
    P + "remote_worker.cpp:1] Init_model_async succeed.",
    P + "engine.cpp:1] Initializing model from: /models/draft",
    P + "model_loader.cpp:89] Loading model weights from /models/draft/model.safetensors",
    P + "remote_worker.cpp:1] Init_model_async succeed.",
    P + "worker.cpp:1] worker #0: available memory: 10 GB, total memory: 64 GB",
    P + "engine.cpp:1] kv cache capacity: 1000, blocks: 10",
    P + "engine.cpp:1] Initializing k cache with shape: [1, 2]",
    P + "http.cpp:1] BRPC SERVER STARTED on port 18000, idle_timeout_s: -1, num_threads: 32",
    P + "http.cpp:1] Brpc Server started on port 18000, idle_timeout_s: -1, num_threads: 32",
    P + "app.cpp:1] Application startup complete.",
]
FAILURES = [
    "E20261129 17:03:09.000000 17122 engine.cpp:1] something failed without a known cause",
    "ERROR: unknown command line flag 'enable_acl_graph'",
    "I20261129 17:03:09.000000 17122 x.cpp:1] ERROR: in an info line is not a failure",
    "I20261129 17:03:09.000000 17122 x.cpp:1] Check failed: a == b inside an info line",
    "W20261129 17:03:09.000000 17122 x.cpp:1] Available kv cache size must be greater than 0 (a warning)",
    "E20261129 17:03:09.000000 17122 x.cpp:1] Available kv cache size must be greater than 0",
    "F20261129 17:03:09.000000 17122 npu_process_group.cpp:41] Failed, HCCL error :HCCL_E_TIMEOUT",
    "Check failed: x != nullptr",
    "E",
    "F1129 no date",
]
NOISE = [
    P + "llm_engine.cpp:210] step 123456 tokens 2048 latency 12.5ms batch 32 ok xxxxxxxxxxxxxxxxxxxxxxxxx",
    P + "scheduler.cpp:99] worker queue depth 3, server load 0.5 (near misses: Worker, brpc, startup)",
    "",
    "   ",
    "\x1c",
    "plain text without a glog prefix",
    "bad utf-8 \xff\xfe in a line",
    "windows line\r",
    "I1129 15:20:01.123456 1 a.cpp:1] old date form",
    P + "http.cpp:1] the MODEL IS serving requests (a custom ready_pattern's line)",
]


def make_log(seed: int, n: int = 400, failures: bool = True) -> bytes:
    rng = random.Random(seed)
    pool = NOISE * 6 + (FAILURES if failures else [])
    lines = []
    startup = iter(STARTUP)
    for _ in range(n):
        if rng.random() < 0.12:
            line = next(startup, None) or rng.choice(pool)
        else:
            line = rng.choice(pool)
        lines.append(line)
    return "\n".join(lines).encode("utf-8", "surrogateescape").replace(b"\\xff", b"\xff") + b"\n"


def state(m: Milestones) -> tuple:
    t = m.tracker
    return (m.phase, m.progress, m.ready, m.connected, m.all_models_initialised, m.failure, m.describe(),
            m.last_line, t.weights, sorted(t.workers_registered), t.world_size, t.connect_retries,
            t.models_loaded, t.models_initialised, t.last_milestone)


def reported_after_start_up(m: Milestones) -> tuple:
    """What the supervisor still takes from a rank's log once its start-up is over."""
    return (m.ready, m.all_models_initialised, m.failure, m.last_line)


def new_milestones(role: str, ready: str | None) -> Milestones:
    return Milestones(role, ready, model_path="/models/main", draft_model_path="/models/draft")


ROLES = [("master", "Brpc Server started"), ("master", None), ("worker", None), ("master", "Model is Serving"),
         ("master", r"model is serving \w+"), ("master", r"\Aplain TEXT"), ("master", r"\Aapplication")]


def write_in_pieces(path: Path, data: bytes, cuts: list[int], after_each) -> None:
    path.write_bytes(b"")
    previous = 0
    for cut in [*cuts, len(data)]:
        with open(path, "ab") as f:
            f.write(data[previous:cut])
        previous = cut
        after_each()


@pytest.mark.parametrize("role,ready", ROLES)
@pytest.mark.parametrize("seed", range(6))
def test_same_state_as_feeding_every_line_whatever_the_cuts(tmp_path, monkeypatch, role, ready, seed):
    rng = random.Random(seed)
    data = make_log(seed, failures=seed % 3 != 0)
    monkeypatch.setattr(intake_module, "SCAN_BYTES", rng.choice([7, 64, 1000, 1 << 20]))
    cuts = sorted(rng.sample(range(1, len(data)), 12))
    old_m, new_m = new_milestones(role, ready), new_milestones(role, ready)
    reader = IncrementalReader(tmp_path / "node.log")
    intake = LogIntake(tmp_path / "node.log")
    max_bytes = rng.choice([50, 333, 1 << 24])

    def read_both() -> None:
        for line in reader.read_new():
            old_m.feed(line)
        while intake.feed(new_m, max_bytes=max_bytes).more:
            pass
        if new_m.tracker.settled:  # start-up over: later milestone lines are not looked for (failures are)
            assert reported_after_start_up(new_m) == reported_after_start_up(old_m)
        else:
            assert state(new_m) == state(old_m)

    write_in_pieces(tmp_path / "node.log", data, cuts, read_both)
    assert intake.lines_read == data.count(b"\n")
    assert intake.offset == len(data)


@pytest.mark.parametrize("path", DEMO_LOGS, ids=lambda p: p.name)
@pytest.mark.parametrize("role,ready", ROLES[:3])
def test_recorded_demo_logs_give_the_same_state(tmp_path, path, role, ready):
    old_m, new_m = new_milestones(role, ready), new_milestones(role, ready)
    for line in IncrementalReader(path).read_new():
        old_m.feed(line)
    result = LogIntake(path).feed(new_m)
    assert state(new_m) == state(old_m)
    assert result.lines == path.read_bytes().count(b"\n") and result.fed <= result.lines


def test_only_interesting_lines_are_decoded_and_fed(tmp_path):
    path = tmp_path / "node.log"
    noise = (NOISE[0] + "\n").encode()
    path.write_bytes(noise * 5000 + (STARTUP[-2] + "\n").encode() + noise * 5000 + (FAILURES[0] + "\n").encode())
    m = new_milestones("master", "Brpc Server started")
    intake = LogIntake(path)
    result = intake.feed(m)
    assert result == IntakeResult(bytes=path.stat().st_size, lines=10_002, fed=2, more=False, reset=None)
    assert m.ready and m.last_line == FAILURES[0] and m.failure is None  # an E line without a known cause
    with open(path, "ab") as f:
        f.write((FAILURES[5] + "\n" + FAILURES[6] + "\n").encode() + noise)
    assert intake.feed(m).fed == 2 and m.failure[0] == "kv_cache_oom" and m.last_line == NOISE[0]
    # Once a failure is recorded, error lines are no longer looked for (the tracker keeps the first).
    with open(path, "ab") as f:
        f.write((FAILURES[6] + "\n").encode() + noise)
    assert intake.feed(m).fed == 0 and m.failure[0] == "kv_cache_oom"


def test_after_start_up_only_failures_are_looked_for(tmp_path):
    path = tmp_path / "node.log"
    noise = (NOISE[0] + "\n").encode()
    path.write_bytes(noise + (STARTUP[-2] + "\n").encode() + noise * 100)
    m = new_milestones("master", "Brpc Server started")
    intake = LogIntake(path)
    intake.feed(m)
    assert m.ready and m.tracker.settled and m.phase == "serving"
    # A start-up line after start-up (none in a real log) is no longer fed; a fatal line still is.
    with open(path, "ab") as f:
        f.write(noise + (STARTUP[0] + "\n").encode() + noise + (FAILURES[6] + "\n").encode() + noise)
    result = intake.feed(m)
    assert result.fed == 1 and m.failure == ("hccl_error", FAILURES[6].split("] ", 1)[1])
    assert m.tracker.last_milestone.phase == "serving" and m.last_line == NOISE[0]


def test_a_worker_is_settled_once_ready_with_its_kv_cache():
    m = new_milestones("worker", None)
    for line in STARTUP:
        m.feed(line)
        if "Worker#" in line and "success" in line:
            assert not m.tracker.settled  # connected, models not yet initialised
    assert m.ready and m.tracker.settled


def test_work_per_call_is_bounded_and_more_says_so(tmp_path):
    path = tmp_path / "node.log"
    path.write_bytes((NOISE[0] + "\n").encode() * 1000)
    m = new_milestones("worker", None)
    intake = LogIntake(path)
    first = intake.feed(m, max_bytes=10_000)
    assert first.bytes == 10_000 and first.more
    rounds = 1
    while intake.feed(m, max_bytes=10_000).more:
        rounds += 1
    assert intake.offset == path.stat().st_size and intake.lines_read == 1000 and rounds >= 9
    assert not intake.feed(m).grew  # nothing new: no bytes


def test_an_endless_line_is_held_cut_to_its_head(tmp_path, monkeypatch):
    monkeypatch.setattr(intake_module, "SCAN_BYTES", 4096)
    path = tmp_path / "node.log"
    head = P + "x.cpp:1] Init_model_async succeed. "
    path.write_bytes(head.encode() + b"y" * 300_000)
    m = new_milestones("master", None)
    intake = LogIntake(path)
    intake.feed(m)
    assert len(intake._pending) <= intake_module.MAX_LINE_BYTES
    with open(path, "ab") as f:
        f.write(b"y" * 300_000 + b"\nnext line\n")
    result = intake.feed(m)
    assert result.lines == 2 and m.tracker.models_initialised == 1 and m.last_line == "next line"


def test_rotation_and_truncation_restart_at_the_new_start(tmp_path):
    path = tmp_path / "node.log"
    path.write_bytes((STARTUP[0] + "\n").encode() * 3)
    m = new_milestones("worker", None)
    intake = LogIntake(path)
    assert intake.feed(m).lines == 3
    path.write_bytes((FAILURES[6] + "\n").encode())  # truncated: shorter than what was read
    result = intake.feed(m)
    assert result.reset == "truncated" and result.lines == 1 and m.failure[0] == "hccl_error"
    os.rename(path, tmp_path / "node.log.1")
    path.write_bytes((STARTUP[1] + "\n").encode() * 5)
    result = intake.feed(m)
    assert result.reset == "rotated" and result.lines == 5 and intake.resets == 2


def test_from_end_skips_what_was_there(tmp_path):
    path = tmp_path / "node.log"
    path.write_bytes((FAILURES[6] + "\n").encode())
    m = new_milestones("worker", None)
    intake = LogIntake(path, from_end=True)
    assert not intake.feed(m).grew and m.failure is None
    with open(path, "ab") as f:
        f.write((STARTUP[0] + "\n").encode())
    assert intake.feed(m).lines == 1 and m.phase == "role"
    missing = LogIntake(tmp_path / "not-yet.log", from_end=True)
    assert missing.feed(m) == IntakeResult()


@pytest.mark.parametrize("backlog", [100, 1000, 1 << 24])
def test_adopt_reads_the_tail_like_adopted_log_reader(tmp_path, backlog, monkeypatch):
    path = tmp_path / "node.log"
    path.write_bytes(make_log(7, n=60))
    old_m, new_m = new_milestones("master", "Brpc Server started"), new_milestones("master", "Brpc Server started")
    reader, lines = adopted_log_reader(str(path), backlog=backlog)
    for line in lines:
        old_m.feed(line)
    intake = LogIntake.adopt(path, backlog=backlog)
    intake.feed(new_m, max_bytes=backlog)
    assert state(new_m) == state(old_m)
    with open(path, "ab") as f:
        f.write(make_log(8, n=30))
    for line in reader.read_new():
        old_m.feed(line)
    intake.feed(new_m)
    assert state(new_m) == state(old_m)


@pytest.mark.parametrize("fallback", ["gate literals", "gate regex"])
@pytest.mark.parametrize("role,ready", ROLES[:4])
def test_the_fallbacks_for_unreadable_milestone_patterns_are_exact_too(tmp_path, monkeypatch, fallback, role, ready):
    """If glog's milestone patterns stop yielding literals, the gate's literals (or the gate regex) are used."""
    if fallback == "gate literals":
        wanted, regex = intake_module._wanted_from_gate()
        assert wanted and regex is None
    else:
        wanted, regex = [], re.compile(intake_module.glog._CHEAP_FILTER.pattern.encode(), re.I)
    monkeypatch.setattr(intake_module, "_MILESTONE_WANTED", wanted)
    monkeypatch.setattr(intake_module, "_MILESTONE_REGEX", regex)
    path = tmp_path / "node.log"
    path.write_bytes(make_log(11, n=600))
    old_m, new_m = new_milestones(role, ready), new_milestones(role, ready)
    for line in IncrementalReader(path).read_new():
        old_m.feed(line)
    LogIntake(path).feed(new_m)
    assert state(new_m) == state(old_m)


def test_every_milestone_pattern_yields_literals_to_look_for():
    from xllm_tui.logs import glog

    assert intake_module._wanted_from_patterns() is not None
    assert intake_module._MILESTONE_REGEX is None
    for line in STARTUP:  # each start-up line holds one of the runs looked for
        assert glog.milestone_of(line) is not None
        assert any(any((run in line.lower().encode()) if ci else (run in line.encode()) for run in runs)
                   for runs, ci in intake_module._MILESTONE_WANTED), line


def test_two_threads_feeding_one_intake_never_feed_a_line_twice(tmp_path):
    """The supervisor's log thread and its event loop (reading a dead rank's last lines) may overlap."""
    import threading

    path = tmp_path / "node.log"
    weights = (STARTUP[13] + "\n").encode()
    path.write_bytes(weights * 20_000 + (NOISE[0] + "\n").encode() * 20_000)
    m = new_milestones("worker", None)
    intake = LogIntake(path)
    threads = [threading.Thread(target=lambda: [intake.feed(m, max_bytes=50_000) for _ in range(200)])
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    while intake.feed(m).more:
        pass
    assert m.tracker.weights_loaded == 20_000 and intake.lines_read == 40_000


def test_a_key_byte_frequent_beyond_its_sample_still_finds_every_line():
    """A plan made from a sample can pick a key byte that is frequent elsewhere in the slice: the search
    stops counting hits past its budget and finds the needles whole instead, missing nothing."""
    noise = b"I1129 Compute Cache Copy Ceil Count Convert Clear Check Execute Fill\n"
    fatal = b"F1129 x.cpp:1] Check failed: a == b\n"
    data = noise * 2000 + b"E1129 Error line\n" + noise * 10 + fatal + noise
    plan = intake_module._Plan(groups={(b"C",): [(b"Check failed:", 0, False)], (b"E", b"F"): [(b"", 0, False)]},
                               plain=[], error_starts_by_key=True)
    starts: set[int] = set()
    holds = intake_module._find_lines(data, 0, len(data), plan, True, starts)
    error_at = data.index(b"E1129")
    assert not holds and starts == {error_at, data.index(fatal)}


def test_without_line_counts_the_same_lines_are_fed(tmp_path):
    data = make_log(4)
    path = tmp_path / "node.log"
    path.write_bytes(data)
    counted, uncounted = new_milestones("master", "Brpc Server started"), new_milestones("master", "Brpc Server started")
    with_counts = LogIntake(path).feed(counted)
    without = LogIntake(path, count_lines=False).feed(uncounted)
    assert with_counts.lines == data.count(b"\n") and without.lines == 0
    assert (without.bytes, without.fed) == (with_counts.bytes, with_counts.fed) and state(uncounted) == state(counted)


def test_error_literal_is_found_in_the_passes_for_error_line_starts():
    """ERROR: has E as its rarest byte: it rides on the E/F line-start passes instead of a memchr of its own."""
    noise = b"I1129 12:00:00.000000 42 worker_impl.cpp:321] forward done: batch=32 tokens=4096\n"
    data = noise * 500 + b"I1129 x.cpp:1] ERROR: out of memory\n" + noise * 10 + b"E1129 y.cpp:2] boom\n" + noise * 2000
    plan = intake_module._plan(data, 0, len(data), list(intake_module._FAILURE_WANTED), True)
    assert (b"E",) not in plan.groups and (b"ERROR:", 0, False) in plan.groups[(b"E", b"F")]
    starts: set[int] = set()
    assert intake_module._find_lines(data, 0, len(data), plan, True, starts)
    assert starts == {data.index(b"I1129 x.cpp"), data.index(b"E1129")}


def test_a_line_completed_across_slices_does_not_make_the_plan(tmp_path, monkeypatch):
    """The held end of a slice, completed by the next, is one short line: a plan sampled from it alone
    would find every byte of it frequent and search whole needles for the slices after it."""
    monkeypatch.setattr(intake_module, "SCAN_BYTES", 64 * 1024)
    noise = b"I1129 12:00:00.000000 42 worker_impl.cpp:321] forward done: batch=32 tokens=4096\n"
    path = tmp_path / "node.log"
    path.write_bytes((STARTUP[-2] + "\n").encode() + noise * 5000)  # slices cut lines: each held end is completed
    sampled = []
    real_plan = intake_module._plan
    monkeypatch.setattr(intake_module, "_plan", lambda data, start, end, *rest: sampled.append(end - start) or real_plan(data, start, end, *rest))
    m = new_milestones("master", "Brpc Server started")
    LogIntake(path).feed(m)
    assert m.tracker.settled and sampled and min(sampled) >= intake_module._MIN_SAMPLED_REGION


@pytest.mark.parametrize("piece", [1, 5, 13, 64 * 1024])
def test_case_folded_search_is_exact_across_its_pieces(monkeypatch, piece):
    """Lines holding a needle without case are found whatever the piece cut (a needle across two pieces, a line
    across several, the slice's first and last line)."""
    monkeypatch.setattr(intake_module, "_FOLD_PIECE", piece)
    rng = random.Random(piece)
    words = [b"brpc", b"Server", b"STARTED", b"x", b"", b"brpc server started", b"BRPC SERVER STARTED", b"BrPc sErVeR StArTeD!"]
    for _ in range(40):
        lines = [b" ".join(rng.choice(words) for _ in range(rng.randrange(0, 6))) for _ in range(rng.randrange(1, 12))]
        body = b"\n".join(lines) + rng.choice([b"", b"\n"])
        head, tail = b"kv cache brpc server started\n", b"brpc server started"  # outside the region: not searched
        data = head + body + tail
        start, end = len(head), len(head) + len(body)
        expected, pos = set(), start
        for line in lines:
            if b"brpc server started" in line.lower() or b"kv c" in line.lower():
                expected.add(pos)
            pos += len(line) + 1
        starts: set[int] = set()
        intake_module._add_folded_matches(data, [b"brpc server started", b"kv c"], start, end, starts)
        assert starts == expected, (piece, data)


def test_needles_share_a_key_byte_pass_where_they_can():
    """Each memchr pass costs a read of the slice: needles holding a common rare byte are found in one pass."""
    noise = b"I1129 12:00:00.000000 42 worker_impl.cpp:321] forward done: batch=32 tokens=4096\n"
    data = noise * 200 + b"I1129 a.cpp:1] MaX\n" + noise * 50 + b"I1129 b.cpp:2] CoX\n" + noise * 200
    wanted = [((b"MaX",), False), ((b"CoX",), False)]
    plan = intake_module._plan(data, 0, len(data), wanted, False)
    assert list(plan.groups) == [(b"X",)] and not plan.plain
    starts: set[int] = set()
    intake_module._find_lines(data, 0, len(data), plan, False, starts)
    assert starts == {data.index(b"I1129 a.cpp"), data.index(b"I1129 b.cpp")}


@pytest.mark.parametrize("adopted", [False, True])
def test_a_log_removed_as_its_rank_runs_is_read_through_the_rank_stdout(tmp_path, adopted):
    """logs/ cleared while a rank starts (or by the time a new supervisor adopts it): its milestones were
    never seen again and the rank stayed `loading`. What it still writes is read through /proc/PID/fd/1."""
    from conftest import say, start_writer, wait_until

    log = tmp_path / "node_0.log"
    writer = start_writer(log)
    try:
        milestones = new_milestones("master", "Brpc Server started")
        say(writer, "I20251129 15:20:00.000000 12345 xllm_server.cpp:30] starting")
        wait_until(lambda: log.stat().st_size > 0, 10, what="the first line written")
        if adopted:
            log.unlink()
            intake = LogIntake.adopt(log, count_lines=False, writer_pid=writer.pid)
        else:
            intake = LogIntake(log, count_lines=False, writer_pid=writer.pid)
            intake.feed(milestones)
            log.unlink()
        say(writer, "I20251129 15:21:00.000000 12345 xllm_server.cpp:99] Brpc Server started on 127.0.0.1:18994")
        wait_until(lambda: (intake.feed(milestones), milestones.ready)[1], 10, what="the rank seen ready")
        assert "Brpc Server started" in milestones.last_line
    finally:
        writer.stdin.close()
        writer.wait(10)


def test_a_removed_log_is_not_read_from_another_file_of_the_writer(tmp_path):
    """The writer's stdout is read only when it is the file read so far: a rank whose stdout went elsewhere
    (another log made since) is not mistaken for it."""
    from conftest import say, start_writer, wait_until

    log = tmp_path / "node_0.log"
    log.write_bytes(b"I20251129 15:20:00.000000 1 a.cpp:1] the old file\n")
    writer = start_writer(tmp_path / "elsewhere.log")
    try:
        milestones = new_milestones("master", "Brpc Server started")
        intake = LogIntake(log, count_lines=False, writer_pid=writer.pid)
        intake.feed(milestones)
        log.unlink()
        say(writer, "I20251129 15:21:00.000000 12345 xllm_server.cpp:99] Brpc Server started on 127.0.0.1:18994")
        wait_until(lambda: (tmp_path / "elsewhere.log").stat().st_size > 0, 10, what="the line written")
        assert intake.feed(milestones).bytes == 0 and not milestones.ready
    finally:
        writer.stdin.close()
        writer.wait(10)
