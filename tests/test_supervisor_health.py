"""Evidence that makes a live rank `degraded` (docs/supervisor.md, "States and evidence"), end to end with
simulated ranks: rank 0's /health failing after it had answered, and a ready rank's silent log. Degraded is
not failed: the processes stay alive and nothing is restarted."""

from __future__ import annotations

from supervisor_helpers import process_alive, sim_deployment  # noqa: F401


def rank_of(snap: dict, rank: int) -> dict:
    return next(r for r in snap["ranks"] if r["rank"] == rank)


def state_events(dep, rank: int | None, to: str) -> list[dict]:
    kind = "group" if rank is None else "state"
    return [e for e in dep.events_file() if e["kind"] == kind and e.get("rank") == rank and e.get("to") == to]


def test_failing_health_probe_degrades_rank0_and_the_group_without_a_restart(sim_deployment):
    # Scale 0.01: /health answers OK for 3 s of serving, then 503 for 3 s, then OK again.
    dep = sim_deployment(ranks=2, readiness={"probe_interval": "0.2s"},
                         env={"XLLM_SIM_HEALTH_FAIL_AFTER": "300", "XLLM_SIM_HEALTH_RECOVER_AFTER": "300"})
    dep.start()
    ready = dep.wait_group("ready")
    pids = dep.rank_pids(ready)
    assert rank_of(ready, 0)["state"] == "ready" and "/health OK" in rank_of(ready, 0)["reason"]

    # The events are the record: they hold every transition even if a snapshot poll missed one.
    degraded = dep.wait_event(lambda e: e["kind"] == "state" and e.get("rank") == 0 and e.get("to") == "degraded",
                              what="rank 0 degraded")
    assert degraded["from"] == "ready"
    assert "health probe failing" in degraded["reason"] and "/health" in degraded["reason"]
    assert "503" in degraded["reason"], degraded
    group = dep.wait_event(lambda e: e["kind"] == "group" and e.get("to") == "degraded", what="group degraded")
    assert group["from"] == "ready" and group["reason"].startswith("rank 0: health probe failing")
    assert "503" in group["reason"]
    # Degraded is not failed: both processes are the same live ones, nothing was stopped or relaunched.
    assert all(process_alive(pid) for pid in pids.values())

    back = dep.wait_event(lambda e: e["kind"] == "state" and e.get("rank") == 0 and e.get("to") == "ready"
                          and e["seq"] > degraded["seq"], what="rank 0 ready again")
    assert "/health OK" in back["reason"]
    snap = dep.wait_group("ready", timeout=30)
    assert dep.rank_pids(snap) == pids
    assert snap["group"]["restarts"] == 0 and all(r["restarts"] == 0 for r in snap["ranks"])
    assert rank_of(snap, 1)["state"] == "ready"  # the worker never changed state because of rank 0's probe
    events = dep.events_file()
    assert not [e for e in events if e["kind"] == "state" and e.get("to") in ("stopping", "failed", "exited")]
    assert not [e for e in events if e.get("first_failure") or "restart_in_s" in e]
    assert [e.get("to") for e in events if e["kind"] == "state" and e.get("rank") == 1].count("degraded") == 0


def test_silent_log_of_a_ready_rank_makes_it_degraded(sim_deployment):
    # Simulated ranks write nothing once serving, so a short silence_warning trips on every ready rank.
    dep = sim_deployment(ranks=2, readiness={"probe_interval": "0.2s", "silence_warning": "1s"})
    dep.start()
    snap = dep.wait_snapshot(lambda s: s["group"]["state"] == "degraded"
                             and all(r["state"] == "degraded" for r in s["ranks"]), 60, "both ranks degraded")
    for r in snap["ranks"]:
        assert r["reason"].startswith("log silent for ") and r["reason"].endswith("s"), r
        assert process_alive(r["pid"])
    assert snap["group"]["reason"].startswith("rank ") and "log silent for" in snap["group"]["reason"]
    for rank in (0, 1):
        # each was ready first (its log grew until it was up), then degraded by the silence alone
        ready = state_events(dep, rank, "ready")
        degraded = state_events(dep, rank, "degraded")
        assert ready and degraded and ready[0]["seq"] < degraded[0]["seq"], (ready, degraded)
    assert snap["group"]["restarts"] == 0
    assert not [e for e in dep.events_file() if e.get("first_failure") or "restart_in_s" in e]
