"""The supervisor runs the profile's hooks on its own events and keeps the metrics textfile current."""

from __future__ import annotations

import json
import os
import signal
import stat

from conftest import wait_until
from prometheus_client.parser import text_string_to_metric_families
from supervisor_helpers import sim_deployment  # noqa: F401


def samples(path) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "profile")))] = s.value
    return out


def received(inbox) -> list[dict]:
    out = []
    for path in sorted(inbox.iterdir()):
        text = path.read_text()
        if text.endswith("\n"):  # written whole (the hook may still be writing another)
            out.append(json.loads(text))
    return out


def names(inbox) -> set[str]:
    return {a["alert"] for a in received(inbox)}


def test_a_killed_rank_runs_the_hook_and_the_metrics_follow(tmp_path, sim_deployment):
    hook = tmp_path / "hook.sh"
    inbox = tmp_path / "alerts"
    inbox.mkdir()
    hook.write_text(f'#!/bin/sh\ncat > "$(mktemp -p {inbox} alert.XXXXXX)"\n')  # one file per run: no interleaving
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    prom = tmp_path / "xllm.prom"
    dep = sim_deployment(ranks=2, extra={"hooks": [{"on": ["rank_failed", "group_ready"], "run": [str(hook)]}],
                                         "metrics": {"textfile": str(prom), "interval": "0.2s"}})
    dep.start()
    first = dep.rank_pids(dep.wait_group("ready"))
    wait_until(lambda: "group_ready" in names(inbox), 30, what="group_ready hook")
    wait_until(lambda: prom.exists() and samples(prom).get(("xllm_tui_ranks", (("state", "ready"),))) == 2, 30,
               what="two ready ranks in the textfile")

    os.kill(first[1], signal.SIGKILL)
    wait_until(lambda: "rank_failed" in names(inbox), 30, what="rank_failed hook")
    alerts = received(inbox)
    failed = [a for a in alerts if a["alert"] == "rank_failed"]
    assert len(failed) == 1 and failed[0]["rank"] == 1 and failed[0]["cause"] == "killed"  # rank 0: collateral
    dep.wait_snapshot(lambda s: s["group"]["restarts"] == 1 and s["group"]["state"] == "ready", 60, "restarted")
    wait_until(lambda: samples(prom).get(("xllm_tui_group_restarts_total", ())) == 1, 30, what="restart counted")

    dep.shutdown()
    up = [v for (name, _labels), v in samples(prom).items() if name == "xllm_tui_up"]
    assert up == [0]  # the last word of a supervisor that exited
