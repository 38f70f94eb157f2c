"""Toggles change the next launch's environment and nothing else; pre-launch removals are journaled and,
under --simulate, confined to the deployment's own directories."""

from __future__ import annotations

import json
import os

from supervisor_helpers import read_cmdline, read_environ, sim_deployment  # noqa: F401


def test_toggle_changes_only_the_next_launch_environment(sim_deployment, tmp_path):
    home = os.path.expanduser("~")
    stale = os.path.join(home, "dynamic_profiling_socket_123")
    open(stale, "w").close()
    outside = tmp_path / "outside-system-dir"
    outside.mkdir()
    (outside / "keep.log").write_text("must survive\n")
    dep = sim_deployment(
        ranks=2,
        toggles={
            "determinism": {"enabled": False, "env": {"LCCL_DETERMINISTIC": 1, "HCCL_DETERMINISTIC": "true"}},
            "profiling": {"enabled": False, "env": {"PROFILING_MODE": "dynamic"},
                          "remove": ["~/dynamic_profiling_socket_*"]},
        },
        pre_launch=[{"name": "clear-logs", "remove": [str(outside) + "/", "core.*"]}],
    )
    core = os.path.join(str(dep.workdir), "core.4242")
    open(core, "w").close()
    dep.start()
    before = dep.rank_pids(dep.wait_group("ready"))
    env_before = {r: read_environ(pid) for r, pid in before.items()}
    argv_before = {r: read_cmdline(pid) for r, pid in before.items()}
    assert "LCCL_DETERMINISTIC" not in env_before[0]

    # Pre-launch under --simulate: core.* in the working dir removed, the absolute system-like path skipped.
    pre = [e for e in dep.events_file() if e["kind"] == "prelaunch" and e["step"] == "clear-logs"][0]
    assert pre["removed"] == [core] and not os.path.exists(core)
    assert any(str(outside) in s for s in pre["skipped"])
    assert (outside / "keep.log").exists()

    out = dep.cli("toggle", dep.profile_path, "--simulate", "determinism", "on", check=True).stdout
    assert "relaunch pending for rank(s) 0, 1" in out
    snap = dep.snapshot()
    assert all(r["relaunch_pending"] for r in snap["ranks"])
    assert dep.rank_pids(snap) == before  # a toggle never restarts anything by itself
    assert {t["name"]: t["enabled"] for t in snap["toggles"]} == {"determinism": True, "profiling": False}
    assert json.load(open(os.path.join(dep.run_dir, "toggles.json")))["determinism"] is True
    toggle_ev = [e for e in dep.events_file() if e["kind"] == "toggle"][-1]
    assert toggle_ev["group"] == "determinism" and toggle_ev["enabled"] is True

    dep.request("toggle", group="profiling", on=True)
    dep.cli("restart", dep.profile_path, "--simulate", "--all", "--wait", check=True)
    snap = dep.wait_group("ready")
    after = dep.rank_pids(snap)
    assert not set(after.values()) & set(before.values())
    assert not any(r["relaunch_pending"] for r in snap["ranks"])
    for rank, pid in after.items():
        env = read_environ(pid)
        assert env["LCCL_DETERMINISTIC"] == "1" and env["HCCL_DETERMINISTIC"] == "true"
        assert env["PROFILING_MODE"] == "dynamic"
        added = set(env) - set(env_before[rank])
        assert added == {"LCCL_DETERMINISTIC", "HCCL_DETERMINISTIC", "PROFILING_MODE"}, added
        assert all(env[k] == v for k, v in env_before[rank].items())
        assert read_cmdline(pid) == argv_before[rank]  # argv identical
    removed = [e for e in dep.events_file() if e["kind"] == "prelaunch" and e["step"] == "toggle profiling"]
    assert removed and stale in removed[-1]["removed"] and not os.path.exists(stale)


def test_toggles_survive_a_supervisor_restart(sim_deployment):
    dep = sim_deployment(ranks=1, toggles={"determinism": {"enabled": False, "env": {"LCCL_DETERMINISTIC": 1}}})
    dep.start("--no-launch")
    result = dep.request("toggle", group="determinism", on=True)
    assert result == {"group": "determinism", "enabled": True, "relaunch_pending": []}
    dep.shutdown()
    dep.start()
    snap = dep.wait_group("ready")
    assert snap["toggles"][0]["enabled"] is True
    assert read_environ(snap["ranks"][0]["pid"])["LCCL_DETERMINISTIC"] == "1"
