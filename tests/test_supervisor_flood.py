"""Ranks that log hard: the supervisor keeps answering, keeps its states right, catches up with every log and
keeps its memory bounded while four simulated ranks write verbose lines as fast as they can."""

from __future__ import annotations

import psutil

from conftest import wait_until
from supervisor_helpers import sim_deployment  # noqa: F401

FLOOD = 200_000


def test_a_flood_of_log_lines_leaves_the_supervisor_answering_and_right(sim_deployment):
    dep = sim_deployment(ranks=4, env={"XLLM_SIM_LOG_FLOOD": str(FLOOD)})
    dep.start()
    supervisor = psutil.Process(dep.supervisor_pid())
    peak_rss = 0
    seen_ready = False
    done = f"flood of {FLOOD} lines done"

    def caught_up() -> bool:
        nonlocal peak_rss, seen_ready
        snap = dep.snapshot()  # answered during the flood (the client gives up after 5 s)
        peak_rss = max(peak_rss, supervisor.memory_info().rss)
        assert not seen_ready or snap["group"]["state"] == "ready", snap["group"]  # the flood breaks nothing
        seen_ready = seen_ready or snap["group"]["state"] == "ready"
        return snap["group"]["state"] == "ready" and all(done in (r["last_line"] or "") for r in snap["ranks"])

    wait_until(caught_up, 120, 0.2, "every rank's last line read while the group stays ready")
    sizes = [len(open(dep.log_path(n), "rb").read().splitlines()) for n in range(4)]
    assert all(size > FLOOD for size in sizes), sizes
    assert peak_rss < 150 * 2**20, f"supervisor peak RSS {peak_rss / 2**20:.0f} MiB"
    assert not [e for e in dep.events_file() if e["kind"] == "state" and e.get("to") in ("failed", "degraded")]
