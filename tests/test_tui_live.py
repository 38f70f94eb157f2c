"""The TUI against a real supervisor running simulated ranks: every action, driven by keys, changes the
deployment as the operator expects; losing the supervisor is survived and a new one re-adopts the ranks."""

from __future__ import annotations

import os
import signal
import time

from conftest import until as wait_until_shown
from supervisor_helpers import TAG_VAR, process_alive, sim_deployment  # noqa: F401
from textual.widgets import Static, Switch

from xllm_tui.ui.app import XllmApp
from xllm_tui.ui.screens.confirm import ConfirmScreen
from xllm_tui.ui.screens.main import MainScreen
from xllm_tui.ui.source import SupervisorSource
from xllm_tui.ui.widgets.rank_table import RankTable

TOGGLES = {"determinism": {"enabled": False, "env": {"LCCL_DETERMINISTIC": 1}}}


async def until(pilot, condition, timeout: float = 45.0, what: str = ""):
    """conftest.until, with a live deployment's longer default and its ranks in a timeout's message."""
    def shown() -> str:
        snap = pilot.app.snapshot or {}
        seen = [(r["rank"], r["state"], r.get("reason"), r.get("pid")) for r in snap.get("ranks") or []]
        return f"ranks: {seen}; group: {snap.get('group')}"

    return await wait_until_shown(pilot, condition, timeout, what, describe=shown)


def states(app) -> dict[int, str]:
    return {int(r["rank"]): r["state"] for r in (app.snapshot or {}).get("ranks") or []}


def pids(app) -> dict[int, int]:
    return {int(r["rank"]): r["pid"] for r in (app.snapshot or {}).get("ranks") or [] if r.get("pid")}


def all_ready(app, count: int) -> bool:
    return len(states(app)) == count and set(states(app).values()) == {"ready"}


def make_app(dep) -> XllmApp:
    source = SupervisorSource(dep.run_dir, profile_path=dep.profile_path, simulate=True)
    return XllmApp(source, user_config=False, watch_profile=False, poll_interval=0.2, profile_path=dep.profile_path,
                   simulate=True)


async def confirm(pilot, app, *keys: str) -> str:
    await pilot.press(*keys)
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10, "confirmation")
    body = str(app.screen.query_one("#confirm-body", Static).render())
    await pilot.press("y")
    await until(pilot, lambda: isinstance(app.screen, MainScreen), 10, "back on the main screen")
    return body


def action_events(dep) -> list[dict]:
    return [e for e in dep.events_file() if e.get("kind") == "action"]


async def test_every_action_against_a_real_supervisor(sim_deployment):
    dep = sim_deployment(ranks=2, toggles=TOGGLES, restart={"mode": "manual", "scope": "group"})
    dep.start()
    dep.wait_group("ready")
    app = make_app(dep)
    messages = []
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        table = app.main_screen.query_one(RankTable)
        await until(pilot, lambda: all_ready(app, 2) and table.row_count == 2, what="two ready ranks")
        # The events pane holds the history from before the TUI attached.
        await until(pilot, lambda: app.main_screen.query_one("#events").count > 0, what="event history")

        # r: restart rank 0 (the selected one)
        before = pids(app)
        body = await confirm(pilot, app, "r")
        assert "Rank 0" in body and "fail together" in body
        await until(pilot, lambda: pids(app).get(0) not in (None, before[0]), what="rank 0 restarted")
        # A lone restarted rank 0 waits for workers that are still bound to its old self (ranks fail
        # together): the group restart brings the world back.
        await confirm(pilot, app, "R")
        await until(pilot, lambda: all_ready(app, 2) and pids(app)[1] != before[1], what="both ranks ready")

        # s: stop rank 1; S: start it again
        await pilot.press("down")
        await until(pilot, lambda: table.selected_rank == 1)
        await confirm(pilot, app, "s")
        await until(pilot, lambda: states(app).get(1) == "stopped", what="rank 1 stopped")
        await pilot.press("S")
        await until(pilot, lambda: states(app).get(1) in ("starting", "loading", "ready") and pids(app).get(1),
                    what="rank 1 started")
        before_group = pids(app)
        await confirm(pilot, app, "R")  # rejoin the world as a whole
        await until(pilot, lambda: all_ready(app, 2) and not set(pids(app).values()) & set(before_group.values()),
                    what="both ranks relaunched and ready")

        # toggle determinism from the toggles tab: relaunch pending, nothing restarted
        running = pids(app)
        await pilot.press("t")
        await until(pilot, lambda: app.main_screen.query_one("#toggle-determinism", Switch).region.height > 0)
        await pilot.click("#toggle-determinism")
        await until(pilot, lambda: all(r["relaunch_pending"] for r in app.snapshot["ranks"]), what="relaunch pending")
        assert pids(app) == running
        assert "~" in str(table.get_cell("0", "state"))

        # R: restart the group; the new ranks run with the toggle and nothing is pending
        await pilot.press("escape")
        await confirm(pilot, app, "R")
        await until(
            pilot,
            lambda: all_ready(app, 2) and not set(pids(app).values()) & set(running.values())
            and not any(r["relaunch_pending"] for r in app.snapshot["ranks"]),
            what="group restarted with the toggle",
        )

        # A rank killed from outside fails; the TUI notifies; F restarts the failed ranks
        victim = pids(app)[1]
        os.kill(victim, signal.SIGKILL)
        await until(pilot, lambda: states(app).get(1) == "failed", what="rank 1 failed")
        await until(pilot, lambda: any("rank 1 failed" in n.message for n in app._notifications), 10)
        await confirm(pilot, app, "F")
        await until(pilot, lambda: states(app).get(1) not in ("failed", "stopped") and pids(app).get(1) != victim,
                    what="failed rank restarted")

        # ctrl+k: stop everything (the supervisor stays)
        before_group = pids(app)
        await confirm(pilot, app, "R")
        await until(pilot, lambda: all_ready(app, 2) and not set(pids(app).values()) & set(before_group.values()),
                    what="ready again")
        await confirm(pilot, app, "ctrl+k")
        await until(pilot, lambda: set(states(app).values()) == {"stopped"}, what="all stopped")
        assert dep.answers() is not None

    requested = [(e.get("op") or e.get("action") or e.get("message"), e.get("ranks")) for e in action_events(dep)]
    assert len(requested) >= 6, requested
    assert any(type(m).__name__ == "ToggleRequested" for m in messages)
    assert not any(process_alive(p) for p in running.values())


async def test_supervisor_loss_is_survived_and_a_new_one_adopts_the_ranks(sim_deployment, monkeypatch):
    dep = sim_deployment(ranks=2)
    dep.start()
    dep.wait_group("ready")
    monkeypatch.setattr("xllm_tui.ui.app.RETRY_S", 0.2)
    # A supervisor the TUI starts is detached; tag it so the fixture's leftover check sees it too.
    monkeypatch.setenv(TAG_VAR, dep.tag)
    app = make_app(dep)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: all_ready(app, 2), what="ready")
        running = pids(app)
        # Devices tab: the (simulated) npu-smi read in a worker, each rank on its device with its pid
        await pilot.press("D")
        devices = app.main_screen.query_one("#devices-table")
        await until(pilot, lambda: devices.row_count > 0, 30, "device rows")
        row0 = [str(c) for c in devices.get_row_at(0)]
        assert row0[0] == "0" and row0[7] == "0"  # NPU 0 carries rank 0
        # The processes column is the supervisor's last npu-smi reading: rank 0's pid once it has polled.
        assert row0[8] in ("-", str(running[0])), row0
        dep.kill_supervisor()
        banner = app.main_screen.query_one("#connection-banner", Static)
        await until(pilot, lambda: banner.has_class("visible"), 20, "supervisor-gone banner")
        text = str(banner.render())
        assert "Supervisor unreachable" in text and "Press u" in text
        assert app.main_screen.query_one(RankTable).row_count == 2  # the last state stays
        assert all(process_alive(p) for p in running.values())  # the ranks outlive their supervisor
        await pilot.press("u")
        await until(pilot, lambda: not banner.has_class("visible"), 60, "reconnected to a new supervisor")
        await until(pilot, lambda: pids(app) == running, 30, "ranks re-adopted with the same pids")


async def test_a_frozen_supervisor_is_shown_as_frozen_and_is_not_replaced(sim_deployment, monkeypatch):
    dep = sim_deployment(ranks=2)
    dep.start()
    dep.wait_group("ready")
    monkeypatch.setattr("xllm_tui.ui.app.RETRY_S", 0.2)
    monkeypatch.setattr("xllm_tui.ui.source.REQUEST_TIMEOUT_S", 1.0)
    app = make_app(dep)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: all_ready(app, 2), what="ready")
        pid = dep.supervisor_pid()
        banner = app.main_screen.query_one("#connection-banner", Static)
        os.kill(pid, signal.SIGSTOP)
        try:
            await until(pilot, lambda: banner.has_class("visible"), 20, "supervisor-frozen banner")
            text = str(banner.render())
            # Connected but silent: said as such, with the way out; never "connection lost" with no reason.
            assert f"pid {pid}" in text and "does not answer" in text and "SIGSTOP" in text, text
            assert "no answer within 1s" in text and "lost" not in text, text
            assert "Press u" not in text  # a second supervisor cannot take a run dir the frozen one holds
        finally:
            os.kill(pid, signal.SIGCONT)
        await until(pilot, lambda: not banner.has_class("visible"), 30, "connected again after SIGCONT")
        assert all_ready(app, 2)


async def test_profile_edit_then_reload_takes_effect_at_the_relaunch(sim_deployment):
    dep = sim_deployment(ranks=2)
    dep.start()
    dep.wait_group("ready")
    source = SupervisorSource(dep.run_dir, profile_path=dep.profile_path, simulate=True)
    app = XllmApp(source, user_config=False, watch_profile=True, poll_interval=0.2, profile_path=dep.profile_path,
                  simulate=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: all_ready(app, 2) and app.profile_plan is not None, what="ready and planned")
        await pilot.pause(0.5)  # the watcher is running
        running = pids(app)
        banner = app.main_screen.query_one("#profile-banner", Static)
        dep.profile_data["env"]["XLLM_TUI_EDITED"] = "yes"
        deadline = time.monotonic() + 20
        while not banner.has_class("visible"):  # rewrite until the watcher has seen it (bounded)
            assert time.monotonic() < deadline, "the profile edit was not noticed"
            dep.write_profile()
            await pilot.pause(0.5)
        assert "a relaunch would change ranks 0-1" in str(banner.render())
        assert not any(r["relaunch_pending"] for r in app.snapshot["ranks"])  # nothing applied yet
        await pilot.press("ctrl+r")
        await until(pilot, lambda: all(r["relaunch_pending"] for r in app.snapshot["ranks"]), 20, "relaunch pending")
        assert pids(app) == running  # loading a profile restarts nothing
        await confirm(pilot, app, "R")
        await until(pilot, lambda: all_ready(app, 2) and not set(pids(app).values()) & set(running.values()), 60,
                    "relaunched")
        assert not any(r["relaunch_pending"] for r in app.snapshot["ranks"])
        from supervisor_helpers import read_environ

        assert read_environ(pids(app)[0]).get("XLLM_TUI_EDITED") == "yes"
