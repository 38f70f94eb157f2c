"""Profile hooks (xllm_tui.alerts): which journal events trigger which hooks, and real commands run with the
event on stdin, in their own thread, killed with their children at the time limit; the `hooks:` schema."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import psutil

from conftest import wait_until
from supervisor_helpers import sim_deployment  # noqa: F401
from xllm_tui.alerts import HookRunner, alert_kinds, hooks_for
from xllm_tui.client import SupervisorClient
from xllm_tui.profile import load_profile_text
from xllm_tui.spec import Hook


def test_alert_kinds_of_journal_events():
    assert alert_kinds({"kind": "state", "rank": 3, "from": "ready", "to": "failed", "cause": "hccl_error"}) == {"rank_failed"}
    # Ranks stopped because another failed are not each an alert.
    assert alert_kinds({"kind": "state", "rank": 2, "from": "ready", "to": "failed", "cause": "collateral"}) == set()
    assert alert_kinds({"kind": "group", "from": "loading", "to": "ready"}) == {"group_ready"}
    assert alert_kinds({"kind": "group", "from": "failed", "to": "crash-looping"}) == {"crash_looping"}
    assert alert_kinds({"kind": "state", "rank": 1, "from": "failed", "to": "crash-looping"}) == {"crash_looping"}
    assert alert_kinds({"kind": "device", "device": 3, "from": "OK", "to": "Critical"}) == {"device_health"}
    assert alert_kinds({"kind": "device", "device": 3, "holders": []}) == set()
    assert alert_kinds({"kind": "action", "op": "restart"}) == set()


def test_hooks_match_alerts_raw_kinds_and_any():
    page = Hook("page", ("rank_failed", "crash_looping"), ("true",))
    audit = Hook("audit", ("action",), ("true",))
    everything = Hook("all", ("any",), ("true",))
    failed = {"kind": "state", "to": "failed", "cause": "killed"}
    assert [(h.name, a) for h, a in hooks_for(failed, [page, audit, everything])] == [("page", "rank_failed"),
                                                                                     ("all", "rank_failed")]
    assert [(h.name, a) for h, a in hooks_for({"kind": "action"}, [page, audit, everything])] == [
        ("audit", "action"), ("all", "action")]


def _writer(tmp_path, name="hook.py", body="") -> str:
    """A hook script: its stdin to out-<seq>.json, its environment's XLLM_TUI_ALERT beside it."""
    script = tmp_path / name
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n{body}\n"
        "data = sys.stdin.read()\nseq = json.loads(data).get('seq')\n"
        f"open(os.path.join({str(tmp_path)!r}, f'out-{{seq}}.json'), 'w').write(data)\n"
        f"open(os.path.join({str(tmp_path)!r}, f'alert-{{seq}}.txt'), 'w').write(os.environ['XLLM_TUI_ALERT'])\n")
    script.chmod(0o755)
    return str(script)


def test_hook_gets_the_event_on_stdin_without_blocking_the_caller(tmp_path):
    gate = tmp_path / "gate"
    script = _writer(tmp_path, body=f"import time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)")
    results = []
    runner = HookRunner([Hook("page", ("rank_failed",), (script,), timeout_s=60)], profile_name="p",
                        on_result=results.append)
    event = {"seq": 7, "ts": 1.0, "kind": "state", "rank": 3, "from": "ready", "to": "failed", "cause": "killed",
             "reason": "killed by signal 9"}
    assert runner.on_event(event) == ["page"]
    # on_event returned while the hook is still waiting for the gate: it runs in its own thread.
    assert runner.running == 1 and not (tmp_path / "out-7.json").exists()
    assert runner.on_event({"seq": 8, "kind": "action", "op": "stop"}) == []  # not chosen
    gate.write_text("")
    wait_until(lambda: results, 30, what="hook outcome")
    assert results[0].ok, results[0].to_dict()
    received = json.loads((tmp_path / "out-7.json").read_text())
    assert received == {**event, "alert": "rank_failed", "profile": "p"}
    assert (tmp_path / "alert-7.txt").read_text() == "rank_failed"
    runner.close()


def test_time_limit_kills_the_hook_and_its_children(tmp_path):
    pids = tmp_path / "pids"
    script = tmp_path / "hang.sh"
    script.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}\nwait\n")
    script.chmod(0o755)
    results = []
    runner = HookRunner([Hook("slow", ("any",), (str(script),), timeout_s=0.5)], on_result=results.append)
    runner.on_event({"seq": 1, "kind": "group", "to": "ready"})
    wait_until(lambda: results, 30, what="the hook to be killed")
    assert results[0].timed_out and not results[0].ok
    for pid in map(int, pids.read_text().split()):
        wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10,
                   what=f"hook process {pid} gone")
    runner.close()


def test_missing_command_and_a_flood_are_reported_not_raised(tmp_path):
    results = []
    runner = HookRunner([Hook("gone", ("any",), (str(tmp_path / "nope"),))], on_result=results.append)
    runner.on_event({"seq": 1, "kind": "group", "to": "failed"})
    wait_until(lambda: results, 30, what="outcome")
    assert results[0].error and "nope" in results[0].error
    gate = tmp_path / "gate"
    script = tmp_path / "wait.sh"
    script.write_text(f"#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n")
    script.chmod(0o755)
    results.clear()
    flood = HookRunner([Hook("w", ("any",), (str(script),), timeout_s=60)], max_running=2, on_result=results.append)
    for seq in range(5):
        flood.on_event({"seq": seq, "kind": "group", "to": "failed"})
    assert flood.dropped == 3 and sum(r.dropped for r in results) == 3
    gate.write_text("")
    wait_until(lambda: len(results) == 5, 30, what="both hooks done")
    flood.close()


def test_close_kills_hooks_still_running(tmp_path):
    script = tmp_path / "forever.sh"
    script.write_text("#!/bin/sh\nexec sleep 300\n")
    script.chmod(0o755)
    runner = HookRunner([Hook("f", ("any",), (str(script),), timeout_s=600)])
    runner.on_event({"seq": 1, "kind": "group", "to": "failed"})
    wait_until(lambda: runner._processes, 10, what="hook started")
    (pid,) = list(runner._processes)
    runner.close(timeout=0.2)
    assert runner.running == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


BASE = """name: t
binary: /opt/xllm
model: /m
master_node_addr: 127.0.0.1:10015
base_port: 18994
machines: [{host: 127.0.0.1, devices: 0-1}]
"""


def test_hooks_schema_diagnostics_name_file_and_line(tmp_path):
    path = str(tmp_path / "p.yaml")
    text = BASE + """hooks:
  - name: page
    on: [rank_failed, crash_loping]
    run: [true]
  - on: [group_ready]
    run: "notify-send hi"
  - name: slow
    on: any
    run: [true]
    timeout: 0
"""
    result = load_profile_text(text, path, simulate=True)
    errors = [str(d) for d in result.errors]
    assert f"{path}:9:23: error: hooks[0].on: unknown event 'crash_loping' (did you mean 'crash_looping'?)" in errors[0]
    assert any(e.startswith(f"{path}:12:10: error: hooks[1].run: run must be a list") for e in errors)
    assert any(e.startswith(f"{path}:16:14: error: hooks[2].timeout: must be more than 0") for e in errors)
    good = load_profile_text(BASE + "hooks:\n  - {on: [rank_failed, action], run: [./page.sh, ops], timeout: 5s}\n",
                             path, simulate=True)
    assert not good.errors
    (hook,) = good.profile.hooks
    assert hook.on == ("rank_failed", "action") and hook.run == (str(tmp_path / "page.sh"), "ops")
    assert hook.timeout_s == 5.0 and hook.name == "hook 1"
    assert any("page.sh is not an executable file" in str(d) for d in good.warnings)


def test_hook_on_a_real_supervisors_events(tmp_path, sim_deployment):  # noqa: F811
    """What the supervisor will do, done here by a subscriber: every journal event through on_event."""
    dep = sim_deployment(ranks=2)
    dep.start()
    dep.wait_group("ready")
    results = []
    runner = HookRunner([Hook("page", ("rank_failed",), (_writer(tmp_path),), timeout_s=30)], profile_name=dep.name,
                        on_result=results.append)
    last = max(e["seq"] for e in dep.events_file())
    client = SupervisorClient(dep.socket, timeout=5.0)

    def feed():
        for event in client.events(since=last, timeout=60):
            runner.on_event(event)
            if results:
                return

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    victim = dep.rank_pids()[1]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: results, 60, what="the rank_failed hook")
    assert results[0].ok, results[0].to_dict()
    (out,) = tmp_path.glob("out-*.json")
    event = json.loads(out.read_text())
    assert event["kind"] == "state" and event["rank"] == 1 and event["to"] == "failed"
    assert event["alert"] == "rank_failed" and event["profile"] == dep.name
    client.close()
    runner.close()


def test_an_event_about_a_hook_triggers_no_hook(tmp_path):
    runner = HookRunner([Hook("all", ("any",), ("true",))])
    assert runner.on_event({"seq": 3, "kind": "supervisor", "reason": "hook all exit 1", "hook": {"hook": "all"}}) == []
    runner.close()


def test_a_typed_event_object_is_accepted(tmp_path):
    class TypedEvent:  # the protocol's Event: to_dict() gives the journal's dict
        def to_dict(self):
            return {"seq": 4, "kind": "group", "from": "loading", "to": "ready", "reason": "up"}

    results = []
    runner = HookRunner([Hook("up", ("group_ready",), ("true",))], on_result=results.append)
    assert runner.on_event(TypedEvent()) == ["up"]
    wait_until(lambda: results, 30, what="outcome")
    assert results[0].ok and results[0].alert == "group_ready"
    runner.close()
