"""The socket protocol against a live supervisor: garbage gets error replies, many clients, subscriptions,
reload; plus the pure parts (policy arithmetic, journal, pre-launch confinement) without processes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading

import pytest
from supervisor_helpers import sim_deployment  # noqa: F401

from xllm_tui.client import AsyncSupervisorClient, SupervisorClient, SupervisorError, SupervisorUnavailable
from xllm_tui.spec import RestartPolicy
from xllm_tui.supervisor.policy import RestartTracker
from xllm_tui.supervisor.prelaunch import Outcome, remove_globs
from xllm_tui.supervisor.state import EventJournal, ShortSocketPath, iter_events


def raw_exchange(path: str, payload: bytes, replies: int) -> list[dict]:
    with ShortSocketPath(path) as address, socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(address)
        s.sendall(payload)
        data = b""
        while data.count(b"\n") < replies:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def test_garbage_gets_error_replies_and_the_supervisor_keeps_serving(sim_deployment):
    dep = sim_deployment(ranks=1)
    dep.start("--no-launch")
    replies = raw_exchange(dep.socket, b"".join([
        b"this is not json\n",
        b"[1, 2, 3]\n",
        b'{"id": 7}\n',
        b'{"id": 8, "op": "fly"}\n',
        b'{"id": 9, "op": "stop", "ranks": "some"}\n',
        b'{"id": 10, "op": "stop", "ranks": [99]}\n',
        b'{"id": 11, "op": "toggle", "group": "nope", "on": true}\n',
        b'{"id": 12, "op": "toggle", "group": 5}\n',
        b'{"id": 13, "op": "subscribe", "since": "yesterday"}\n',
        b"\xff\xfe\n",
        b'{"id": 14, "op": "hello"}\n',
    ]), 11)
    codes = [(r.get("id"), r["ok"], (r.get("error") or {}).get("code")) for r in replies]
    assert codes == [
        (None, False, "bad_json"), (None, False, "bad_request"), (7, False, "bad_request"),
        (8, False, "unknown_op"), (9, False, "bad_request"), (10, False, "unknown_rank"),
        (11, False, "unknown_toggle"), (12, False, "bad_request"), (13, False, "bad_request"),
    ] + codes[9:]
    assert codes[9][2] == "bad_json" and replies[10]["ok"] and replies[10]["result"]["protocol"] == 1
    assert "no rank 99" in replies[5]["error"]["message"]

    # An over-long line is refused; the same connection then serves the next request.
    huge = raw_exchange(dep.socket, b'{"op": "hello", "x": "' + b"a" * (3 << 20) + b'"}\n{"id": 1, "op": "hello"}\n', 2)
    assert huge[0]["error"]["code"] == "line_too_long"
    assert huge[1]["id"] == 1 and huge[1]["ok"]

    # Many clients at once.
    results: list[dict] = []

    def ask() -> None:
        with SupervisorClient(dep.socket) as client:
            results.append(client.snapshot())

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 20 and all(r["protocol"] == 1 for r in results)

    with dep.client() as client:
        with pytest.raises(SupervisorError) as info:
            client.request("restart", ranks=[5])
        assert info.value.code == "unknown_rank"
        assert client.hello()["pid"] == dep.supervisor_pid()


def test_subscribe_replays_since_then_streams_live_and_async_client(sim_deployment):
    dep = sim_deployment(ranks=1, toggles={"determinism": {"enabled": False, "env": {"LCCL_DETERMINISTIC": 1}}})
    dep.start("--no-launch")
    snap = dep.snapshot()
    last_seq = snap["events"][-1]["seq"]
    assert snap["ranks"][0]["state"] == "stopped"

    async def scenario() -> list[dict]:
        client = AsyncSupervisorClient(dep.socket)
        await client.connect()
        assert (await client.request("hello"))["profile"] == dep.name
        seen: list[dict] = []
        stream = client.subscribe(since=last_seq - 1)

        async def consume() -> None:
            async for event in stream:
                seen.append(event)
                if event["kind"] == "toggle":
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        result = await client.request("toggle", group="determinism", on=True)
        assert result["enabled"] is True
        await asyncio.wait_for(task, 10)
        await stream.aclose()
        await client.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen[0]["seq"] == last_seq  # replayed from the journal
    assert seen[-1]["kind"] == "toggle" and seen[-1]["group"] == "determinism"
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)

    with dep.client() as client:
        events = client.events(since=0, timeout=0.5)
        first = next(events)
        assert first["seq"] == 1 and first["kind"] == "supervisor"


def test_reload_validates_and_changes_nothing_on_errors(sim_deployment):
    dep = sim_deployment(ranks=1)
    dep.start("--no-launch")
    good = open(dep.profile_path).read()
    with open(dep.profile_path, "w") as f:
        f.write(good + "\nbogus_key: 1\n")
    with dep.client() as client:
        with pytest.raises(SupervisorError) as info:
            client.request("reload")
        assert info.value.code == "profile_invalid" and "bogus_key" in info.value.message
        dep.profile_data["stop"] = {"grace": "3s"}
        dep.profile_data["env"]["NEW_VAR"] = "1"
        dep.write_profile()
        result = client.request("reload")
        assert result["reloaded"] is True
    assert any("profile reloaded" in str(e.get("reason")) for e in dep.events_file())


def test_unavailable_and_error_types(tmp_path):
    with pytest.raises(SupervisorUnavailable) as info:
        SupervisorClient(str(tmp_path / "nowhere" / "supervisor.sock")).snapshot()
    assert "no supervisor is running" in str(info.value)
    long_dir = tmp_path / ("d" * 60) / ("e" * 60)
    long_dir.mkdir(parents=True)
    with pytest.raises(SupervisorUnavailable):
        SupervisorClient(str(long_dir / "supervisor.sock")).snapshot()


def test_backoff_grows_caps_and_the_limit_means_crash_looping():
    policy = RestartPolicy(mode="on-failure", backoff_initial_s=2, backoff_max_s=5, backoff_factor=2,
                           max_restarts=3, window_s=100)
    tracker = RestartTracker(policy)
    delays = []
    now = 1000.0
    for _ in range(3):
        decision = tracker.decide(now, "the group")
        assert decision.restart and not decision.crash_looping
        delays.append(decision.delay)
        tracker.record_restart(now)
        now += 1
    assert delays == [2, 4, 5]
    decision = tracker.decide(now, "the group")
    assert decision.crash_looping and not decision.restart and "3 times within 100s" in decision.reason
    # Outside the window the history no longer counts.
    assert tracker.decide(now + 200, "the group").restart
    manual = RestartTracker(RestartPolicy(mode="manual")).decide(now, "rank 3")
    assert not manual.restart and not manual.crash_looping and "manual" in manual.reason


def test_journal_seq_continues_across_supervisors_and_skips_torn_lines(tmp_path):
    journal = EventJournal(str(tmp_path))
    journal.append("supervisor", reason="one")
    journal.append("state", 3, reason="two")
    journal.close()
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"seq": 3, "ts": 1, "ki')  # a crash mid-write
    again = EventJournal(str(tmp_path))
    event = again.append("supervisor", reason="three")
    assert event["seq"] == 3
    assert [e["seq"] for e in again.since(1)] == [2, 3]
    assert again.last(2) == again.since(1) and again.last(1)[0]["reason"] == "three"
    again.close()
    # The event after the torn line is a line of its own in the file, not glued to the fragment.
    assert [(e["seq"], e.get("reason")) for e in iter_events(str(tmp_path / "events.jsonl"))] == [
        (1, "one"), (2, "two"), (3, "three")]
    assert [e["seq"] for e in EventJournal(str(tmp_path)).since(None)] == [1, 2, 3]


def test_prelaunch_removal_is_confined_under_simulate(tmp_path, monkeypatch):
    work, run, system = tmp_path / "work", tmp_path / "run", tmp_path / "system"
    for d in (work, run, system):
        d.mkdir()
    (work / "core.1").write_text("x")
    (system / "log").mkdir()
    home = os.path.expanduser("~")
    sock = os.path.join(home, "dynamic_profiling_socket_9")
    open(sock, "w").close()
    outcome = Outcome("clear")
    remove_globs(outcome, ["core.*", str(system / "log") + "/", "~/dynamic_profiling_socket_*"],
                 base_dir=str(work), simulate=True, allowed_roots=[str(work), str(run)])
    assert sorted(outcome.removed) == sorted([str(work / "core.1"), sock])
    assert (system / "log").exists()
    assert any(str(system / "log") in s for s in outcome.skipped)
    real = Outcome("clear")
    remove_globs(real, [str(system / "log") + "/"], base_dir=str(work), simulate=False, allowed_roots=[])
    assert real.removed == [str(system / "log")] and not (system / "log").exists()


def test_weight_progress_counts_main_and_draft_shards_and_worker_readiness():
    from xllm_tui.supervisor.probes import Milestones, worker_ready

    prefix = "I20261129 17:03:08.266814 17122 model_loader.cpp:89] Loading model weights from "
    worker = Milestones("worker", model_path="/models/main", draft_model_path="/models/draft/")
    assert worker.phase == "starting" and worker.describe() == "started, no milestone yet"
    worker.feed("I20261129 17:03:07.000000 17122 worker_server.cpp:253] Worker#1 connect to 127.0.0.1:1 success.")
    for i in range(1, 4):
        worker.feed(prefix + f"/models/main/model-0000{i}-of-00003.safetensors")
    assert worker.describe() == "loading weights 3/3" and not worker.ready
    worker.feed(prefix + "/models/draft/model-00001-of-00001.safetensors")
    assert worker.progress == [4, 4] and worker.describe() == "loading weights 3/3, draft 1/1"
    # An xllm v0.7.x worker prints nothing more: only rank 0's log says its models are initialised.
    master = Milestones("master", "Brpc Server started", model_path="/models/main", draft_model_path="/models/draft")
    assert worker_ready(worker, master) == (False, "")
    master.feed("I20261129 17:03:01.0 1 master.cpp:1] Multi-node serving world_size = 2")
    for _ in range(2):  # each rank's main model
        master.feed("I20261129 17:03:09.0 1 remote_worker.cpp:1] Init_model_async succeed.")
    assert master.phase == "model_ready" and master.describe() == "models initialised 2/2"
    assert not worker_ready(worker, master)[0]  # the draft model is not initialised yet
    for _ in range(2):
        master.feed("I20261129 17:03:09.5 1 remote_worker.cpp:1] Init_model_async succeed.")
    ready, why = worker_ready(worker, master)
    assert ready and "rank 0" in why
    master.feed("I20261129 17:03:10.1 1 xllm_server.cpp:134] Brpc Server Started on port 18994, idle_timeout_s: -1")
    assert master.ready and master.phase == "serving"
    # Newer xllm: a worker's own "Weight loading completed" after each model is its evidence.
    newer = Milestones("worker", draft_model_path="/models/draft")
    newer.feed("I20261129 17:03:07.0 2 worker_server.cpp:253] Worker#1 connect to 127.0.0.1:1 success.")
    done = "I20261129 17:03:08.0 2 worker_impl.cpp:1] Weight loading completed, restored ATen threads=12"
    newer.feed(done)
    assert newer.describe() == "model loaded" and not newer.ready
    newer.feed(done)
    assert newer.ready and worker_ready(newer, None)[0]


def test_weight_totals_come_from_the_model_directories(tmp_path):
    from xllm_tui.supervisor.probes import Milestones, count_weight_files

    main, draft = tmp_path / "main", tmp_path / "draft"
    main.mkdir()
    draft.mkdir()
    for name in ("a.safetensors", "b.safetensors", "config.json"):
        (main / name).write_text("")
    (draft / "mtp.safetensors").write_text("")
    assert count_weight_files("main", str(tmp_path)) == 2
    assert count_weight_files(str(draft)) == 1
    assert count_weight_files(str(tmp_path / "missing")) is None and count_weight_files(None) is None
    worker = Milestones("worker", model_path=str(main), draft_model_path=str(draft))
    worker.set_expected_weights(2, 1)
    worker.feed("I20261129 17:03:08.0 1 model_loader.cpp:89] Loading model weights from " + str(main / "a.safetensors"))
    assert worker.describe() == "loading weights 1/2, draft 0/1" and worker.progress == [1, 3]


def test_identity_uses_the_program_argv_after_numactl():
    from xllm_tui.supervisor.process import program_argv

    assert program_argv(["numactl", "-C", "0-11", "/x/xllm", "--port=1"]) == ["/x/xllm", "--port=1"]
    assert program_argv(["numactl", "--physcpubind=0-11", "-m", "0", "xllm"]) == ["xllm"]
    assert program_argv(["/x/xllm", "--port=1"]) == ["/x/xllm", "--port=1"]
