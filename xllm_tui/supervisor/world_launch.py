"""Launching a world that spans machines, from machine 0. A mixin of Supervisor (before Launcher in its bases).

A world launch is all or nothing: xllm worlds fail together and no rank can rejoin a running world, so a world
started without one machine's ranks could never serve. Every machine must be reached before anything starts;
its ranks of the last world are stopped, the rank table is written everywhere, machine 0's ranks start, then
every other machine's. A machine out of reach at any of these steps (every remote operation is bounded by
the link's request timeout) holds the launch: what was started is stopped again, the group says which machine
it waits for, and the launch is retried as soon as every machine is reached again (machines.on_remote_connected).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from xllm_tui.protocol import RequestError, is_running
from xllm_tui.supervisor.remote import RemoteLink, RemoteUnavailable

CONNECT_WAIT_S = 90.0  # how long a launch at start-up waits for a machine whose first connection is under way
STOP_WAIT_S = 120.0  # how long a relaunch waits for a machine's ranks to be down
REACHED_AGAIN = "; every machine reached again"
RETRY_S = 10.0  # a launch held by a machine that is connected but could not do its part is tried again after this


class WorldLaunch:
    launch_waiting: str | None  # why a world launch is held until every machine is reached
    launch_waiting_for: list[str]  # the machines it waits for
    launch_waiting_what: str  # what holds it, for the group's reason
    launch_is_restart: bool  # it relaunches a world that ran ("restarted", not "started")

    def init_world_launch(self) -> None:
        self.clear_launch_waiting()

    def machine_words(self, link: RemoteLink) -> str:
        """`machine 1 (11.87.49.111)`, or the host alone when the machine has no other name."""
        return f"machine {link.label}" + (f" ({link.machine.host})" if link.label != link.machine.host else "")

    def launch_waiting_text(self) -> str:
        """The group's reason while a launch waits: which machine, since when, and what happens next."""
        verb = "restarted" if self.launch_is_restart else "started"
        lost = [link for link in self.links.values() if not link.connected]
        if not lost:
            return f"{self.launch_waiting_what}: the world cannot be {verb} yet; it is tried again every {RETRY_S:g}s"
        names = ", ".join(f"{self.machine_words(x)} unreachable since "
                          f"{time.strftime('%H:%M:%S', time.localtime(x.since))}" for x in lost)
        return (f"{names}: the world cannot be {verb} until it is back; it is {verb} as soon as every machine is "
                "reached (or stop it)")

    def waiting_group_view(self, state: str) -> tuple[str, str]:
        """The group while a launch waits for a machine: not running, and why, and what comes next."""
        ff = self.group.first_failure
        before = f"rank {ff['rank']} failed first ({ff['cause']}); " if ff and state == "failed" else ""
        return state, before + self.launch_waiting_text()

    def hold_launch(self, why: str, labels: list[str], what: str) -> None:
        """No world now: remember the launch, and retry it when every machine is connected."""
        self.launch_waiting = why
        self.launch_waiting_for = labels
        self.launch_waiting_what = what
        self.launch_is_restart = self.launch_is_restart or self.group.restarts > 0 or "restart" in why
        self.event("group", None, reason=f"launch waits: {what}; {self.launch_waiting_text()} ({why})",
                   waiting_for=labels)
        self.update_group()
        if all(link.connected for link in self.links.values()):  # no reconnection will come to retry it
            self.loop.call_later(RETRY_S, lambda: self.spawn_task(self._launch_when_seen()))

    def clear_launch_waiting(self) -> None:
        self.launch_waiting = None
        self.launch_waiting_for = []
        self.launch_waiting_what = ""
        self.launch_is_restart = False

    async def _launch_when_seen(self) -> None:
        async with self.action_lock:
            if self.launch_waiting is None or not any(r.want_running for r in self.ranks.values()):
                return  # stopped or launched meanwhile
            if not all(link.connected for link in self.links.values()):
                return  # lost again: the next connection tries again
            why = self.launch_waiting.removesuffix(REACHED_AGAIN)
            await self.launch_group(why + REACHED_AGAIN)
            self.update_group()

    async def stop_elsewhere(self, reason: str, running_only: bool = True) -> list[str]:
        """Stop the ranks on the other machines (the world stops as one) and wait until they are down; the
        machines where that could not be done. running_only: leave a failed rank's state (its first failure) as
        it is; otherwise every rank ends `stopped`."""
        if not running_only:
            self.clear_launch_waiting()  # the operator stopped the world: nothing waits to be launched
        done = await asyncio.gather(*(self._stop_machine(link, reason, running_only) for link in self.links.values()))
        return [link.label for link, ok in zip(self.links.values(), done) if not ok]

    async def _stop_machine(self, link: RemoteLink, reason: str, running_only: bool) -> bool:
        if not link.connected:
            if link.ranks:
                self.event("machine", None, machine=link.label, reason=f"{self.machine_words(link)} is unreachable: "
                           f"its ranks could not be stopped ({reason})")
            return not link.ranks
        try:
            ranks: Any = sorted(n for n, r in link.ranks.items() if is_running(r.get("state"))) if running_only \
                else "all"
            if not ranks:
                return True
            await link.request("stop", ranks=ranks, who=f"machine 0 ({reason})")
            deadline = time.monotonic() + STOP_WAIT_S
            while time.monotonic() < deadline:
                await link.refresh()
                if not any(is_running(r.get("state")) for r in link.ranks.values()):
                    return True
                await asyncio.sleep(0.3)
            self.event("machine", None, machine=link.label, reason=f"stopping {self.machine_words(link)}'s ranks: "
                       f"still running after {STOP_WAIT_S:g}s")
        except (RemoteUnavailable, RequestError) as e:
            self.event("machine", None, machine=link.label, reason=f"stopping {self.machine_words(link)}'s ranks: {e}")
        return False

    async def start_elsewhere(self, why: str) -> list[str]:
        """Start every other machine's ranks; the machines where that failed."""
        async def start(link: RemoteLink) -> bool:
            try:
                await link.request("start", ranks="all", who=f"machine 0 ({why})")
                await link.refresh()
                return True
            except (RemoteUnavailable, RequestError) as e:
                self.event("machine", None, machine=link.label,
                           reason=f"starting {self.machine_words(link)}'s ranks: {e}")
                return False

        done = await asyncio.gather(*(start(link) for link in self.links.values()))
        return [link.label for link, ok in zip(self.links.values(), done) if not ok]

    async def launch_group(self, why: str, forced: Any = frozenset()) -> None:
        if not self.links:
            await super().launch_group(why, forced)
            return
        # At start-up the first connections may still be under way: each is bounded by ssh's and the attach's
        # timeouts. Later a machine is either connected or not; nothing here waits for it to come back.
        await asyncio.gather(*(link.wait_settled(CONNECT_WAIT_S) for link in self.links.values()))
        lost = [link.label for link in self.links.values() if not link.connected]
        if lost:
            self.hold_launch(why, lost, f"machine {', '.join(lost)} cannot be reached")
            return
        not_stopped = await self.stop_elsewhere(f"relaunch: {why}")
        if not_stopped:
            self.hold_launch(why, not_stopped, f"the last world's ranks on machine {', '.join(not_stopped)} could "
                             "not be stopped")
            return
        await self.distribute_rank_table()
        self.clear_launch_waiting()
        await super().launch_group(why, forced)
        not_started = await self.start_elsewhere(why)
        if not_started:
            await self.abort_launch(why, not_started)

    async def abort_launch(self, why: str, labels: list[str]) -> None:
        """A machine was lost while the world was being launched: the part started cannot serve without it and
        its ranks could not join later, so it is stopped, and the whole launch waits for that machine."""
        reason = f"machine {', '.join(labels)} was lost during the launch"
        local = [r for r in self.ranks.values() if r.alive]
        await asyncio.gather(self.stop_ranks(local, f"stopped: {reason}", collateral=True),
                             self.stop_elsewhere(reason))
        self.group.failing = True  # a failed launch: the world is not there, and a restart is due
        self.hold_launch(why, labels, reason)
