"""Machine 0's supervisor and the other machines: one world across machines. A mixin of Supervisor.

When this supervisor coordinates (machine 0 of a multi-machine profile, or --simulate --over-ssh), every other
machine runs its ordinary supervisor as a member (--member: it stops its own ranks as collateral of a failure
but restarts nothing; restarting the world is machine 0's decision) and is reached through remote.RemoteLink.
Here the remote ranks join the snapshot, the journal (with the machine and its clock), the group's state,
the first failure and every start, stop and restart of the world. A machine that cannot be reached is a state:
its ranks are `unknown`, the group is degraded, and nothing is ever restarted on the strength of not seeing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from xllm_tui.logs.glog import PHASE_ORDER
from xllm_tui.protocol import UNKNOWN_STATE, RankStatus, RequestError, is_failed, is_running, plan_restart, \
    select_ranks
from xllm_tui.supervisor.group import Failure, RankView
from xllm_tui.supervisor.remote import SSH_CONFIG_ENV, RemoteLink, RemoteUnavailable, attach_request, \
    request_timeout, ssh_argv, ssh_target

log = logging.getLogger("xllm_tui.supervisor.machines")

REMOTE_SHUTDOWN_WAIT_S = 120.0  # how long machine 0's shutdown waits for another machine's supervisor to end


class RemoteMachines:
    def restart_policy(self, profile):
        """A member of a group world restarts nothing by itself: restarting the world is machine 0's decision
        (with scope `rank`, ranks are independent and each machine restarts its own)."""
        if self.member and profile.restart.scope == "group":
            return replace(profile.restart, mode="manual")
        return profile.restart

    def world_size(self) -> int:
        if self.member:  # one part of a world that spans machines: its ranks fail with the rest of it
            return sum(len(m.devices) for m in self.profile.machines)
        return len(self.ranks) + sum(len(link.machine.devices) for link in getattr(self, "links", {}).values())

    def init_remotes(self, coordinate: bool) -> None:
        self.links: dict[str, RemoteLink] = {}
        self.init_world_launch()
        # Automatic world restarts that relaunched a remote rank: its member counts none (machine 0 decides them).
        self.remote_restarts: dict[int, int] = {}
        if not coordinate:
            return
        config = self.base_env.get(SSH_CONFIG_ENV) or None
        for index, machine in enumerate(self.profile.machines):
            if index == 0:
                continue
            target = ssh_target(self.profile, index, simulate=self.simulate)
            argv = ssh_argv(target, [*target.command, "remote-attach"], config=config)
            attach = attach_request(self.profile, machine, simulate=self.simulate, port_offset=self.port_offset,
                                    env=self.base_env)
            link = RemoteLink(machine, index, argv, attach, on_event=self.on_remote_event,
                              on_change=self.on_remote_change, on_connected=self.on_remote_connected,
                              timeout=request_timeout(self.base_env))
            self.links[link.label] = link

    def start_remotes(self) -> None:
        for link in self.links.values():
            self.event("machine", None, machine=link.label, reason=f"connecting to machine {link.label}: "
                       + " ".join(link.argv[:-1]))
            self.spawn_task(link.run())

    # -------------------------------------------------------------------------------- what is seen

    def remote_worker_view(self, rank: dict) -> tuple[str, str]:
        """(state, reason) of another machine's rank as the world sees it. An xllm v0.7.x worker logs nothing once
        its models are initialised; only rank 0's log (here) says so, so its own supervisor keeps it `loading`:
        connected (its phase is past connecting) and counted by rank 0 here makes it ready."""
        state, reason = rank.get("state", "stopped"), rank.get("reason", "")
        r0 = self.ranks.get(0)
        if state == "loading" and rank.get("pid") and r0 is not None and r0.live is not None \
                and r0.live.milestones.all_models_initialised \
                and PHASE_ORDER.get(rank.get("phase") or "", -1) > PHASE_ORDER["worker_connected"]:
            return "ready", "connected to rank 0; rank 0 reports every rank's models initialised"
        return state, reason

    def remote_rank_statuses(self) -> list[RankStatus]:
        out = []
        for link in self.links.values():
            for number in sorted(link.ranks):
                status = RankStatus.from_dict(link.ranks[number])
                status.state, status.reason = self.remote_worker_view(link.ranks[number])
                status.extra["remote"] = True
                status.restarts += self.remote_restarts.get(number, 0)
                if not link.connected:
                    status.extra["last_known_state"] = status.state
                    status.state, status.reason = UNKNOWN_STATE, link.unreachable_text()
                out.append(status)
        return out

    def machine_statuses(self) -> list[dict]:
        if not self.links:
            return []
        here = {"name": self.machine or "", "host": self.machine or "", "index": 0, "state": "local",
                "ranks": sorted(self.ranks)}
        return [here] + [link.status() for link in self.links.values()]

    def remote_views(self) -> list[RankView]:
        return [RankView(int(r["rank"]), *self.remote_worker_view(r), is_running(r.get("state")), bool(r.get("waiting")))
                for link in self.links.values() if link.connected for r in link.ranks.values()]

    def remote_group_override(self, state: str, reason: str) -> tuple[str, str]:
        """A world with a machine out of sight is degraded (its ranks may run fine; nobody can tell); a world
        whose launch waits for a machine says so (world_launch.py)."""
        if self.launch_waiting is not None and state in ("failed", "stopped"):
            return self.waiting_group_view(state)
        lost = [link for link in self.links.values() if not link.connected and (link.ever_connected or link.ranks)]
        if lost and state in ("ready", "loading", "starting", "degraded"):
            link = lost[0]
            return "degraded", f"machine {link.label}: {link.reason} (its {len(link.ranks)} rank(s) unknown)"
        return state, reason

    # ----------------------------------------------------------------------------- from the link

    def on_remote_change(self, link: RemoteLink) -> None:
        self.state_changed.set()
        if self.journal is None:
            return
        if link.state == "unreachable" and link.journaled_state != "unreachable":
            self.event("machine", None, machine=link.label, reachable=False,
                       reason=f"machine {link.label}: {link.reason}; its ranks are unknown until it is reached again "
                              "(nothing is restarted meanwhile; it reconnects with backoff)")
        link.journaled_state = link.state
        self.update_group()

    async def on_remote_connected(self, link: RemoteLink) -> None:
        note = "reconnected" if link.connects > 1 else "connected"
        self.event("machine", None, machine=link.label, reason=f"machine {link.label} {note}: supervisor pid "
                   f"{link.attached.get('pid')}, run dir {link.attached.get('run_dir')}"
                   + (f", {link.attached.get('note')}" if link.attached.get("note") else ""),
                   ranks=sorted(link.ranks), remote_pid=link.attached.get("pid"), reachable=True)
        if self.launch_waiting and all(x.connected for x in self.links.values()):
            self.spawn_task(self._launch_when_seen())
        # A failure there that nobody here saw (this supervisor is new, or the events are gone): the world's too.
        ff = link.group.get("first_failure")
        if isinstance(ff, dict) and any(is_failed(r.get("state")) for r in link.ranks.values()) \
                and isinstance(ff.get("rank"), int):
            self.remote_failure(link, ff)

    def on_remote_event(self, link: RemoteLink, event: dict) -> None:
        fields = {k: v for k, v in event.items() if k not in ("seq", "ts", "kind", "rank")}
        fields.update(machine=link.label, remote_seq=event.get("seq"), remote_ts=event.get("ts"))
        # That machine's own group is a part of the world, not the world: journaled as a `machine` event, so
        # hooks on group_ready/group_failed fire for the world only. Its rank events keep their kind.
        kind = event.get("kind") or "machine"
        self.event("machine" if kind in ("group", "supervisor") else kind, event.get("rank"), **fields)
        rank = event.get("rank")
        if event.get("kind") == "state" and isinstance(rank, int) and rank in link.ranks and event.get("to"):
            link.ranks[rank] = {**link.ranks[rank], "state": event["to"], "reason": event.get("reason", "")}
            self.update_group()
        ff = event.get("first_failure")
        if event.get("kind") == "group" and isinstance(ff, dict) and isinstance(ff.get("rank"), int):
            self.remote_failure(link, ff)

    # --------------------------------------------------------------------------------- the world

    def remote_failure(self, link: RemoteLink, ff: dict) -> None:
        """A rank on another machine failed first there: the world's first failure, unless one was already chosen."""
        if self.scope != "group":
            return
        if self.group.failing:
            return  # collateral of the failure already being handled
        failure = Failure(ff["rank"], str(ff.get("cause") or "unknown"), str(ff.get("message") or ""),
                          float(ff.get("at") or time.time()), int(ff.get("generation") or 0))
        self.cancel_settle()
        self.group.fail(failure)
        first = dict(self.group.first_failure or {}, machine=link.label)
        self.group.first_failure = first
        self.event("group", None, reason=f"rank {failure.rank} on machine {link.label} failed first: "
                   f"{failure.cause}: {failure.message}", first_failure=first)
        self.spawn_task(self.group_failure(None, failure.cause, rank=failure.rank))

    async def restart_failed_world(self, who: str) -> None:
        for link in self.links.values():
            for number in link.ranks:
                self.remote_restarts[number] = self.remote_restarts.get(number, 0) + 1
        await super().restart_failed_world(who)

    def perform_across_machines(self, op: str, spec: Any, who: str, only: bool = False) -> dict:
        """start/stop/restart across machines: a world-wide action runs here (and reaches every machine through
        launch_group/op_stop); a narrow one is split between this machine and the others."""
        remote = {n: (link, r) for link in self.links.values() for n, r in link.ranks.items()}
        states = {n: r.state for n, r in self.ranks.items()}
        states.update({n: r.get("state", "stopped") for n, (_, r) in remote.items()})
        everyone = sorted(states)
        chosen = select_ranks(spec, states, "in this world")
        world = False
        explanation = ""
        if op in ("start", "restart") and chosen:
            # As on one machine (Supervisor.restart_plan): starting ranks that wait for their NPU stays narrow.
            waiting = {n for n, r in self.ranks.items() if r.waiting} | \
                {n for n, (_, r) in remote.items() if r.get("waiting")}
            plan = plan_restart(states, chosen, scope=self.scope, only=only, op=op, waiting=waiting,
                                restart_scheduled=self.group.restart_scheduled)
            chosen, world, explanation = list(plan.ranks), plan.world, plan.explanation
        elif op == "stop":
            world = chosen == everyone
        lost = sorted({remote[n][0].label for n in chosen if n in remote and not remote[n][0].connected})
        if lost and op != "stop":
            then = (f"; {self.launch_waiting_text()}" if self.launch_waiting is not None
                    else ": wait for it, or stop the world")
            raise RequestError("machine_unreachable", f"machine {', '.join(lost)} cannot be reached; its ranks are "
                               f"unknown and are never restarted unseen{then}")
        self.event("action", None, reason=f"{op} ranks {chosen or 'none'} requested by {who}"
                   + (f" ({explanation})" if explanation else "") + (" (--only)" if only else ""),
                   op=op, ranks=chosen, world=world)
        if world:
            action = {"start": self.op_start, "stop": self.op_stop, "restart": self.op_restart}[op]
            self.spawn_task(action(list(self.ranks.values()), who))
        elif chosen:
            local = [self.ranks[n] for n in chosen if n in self.ranks]
            if local:
                action = {"start": self.op_start, "stop": self.op_stop, "restart": self.op_restart}[op]
                self.spawn_task(action(local, who))
            for link in self.links.values():
                mine = [n for n in chosen if n in link.ranks]
                if mine and link.connected:
                    self.spawn_task(self._forward(link, op, mine, who, only))
        return {"accepted": chosen, "world": world, "explanation": explanation}

    async def read_log(self, rank: int, **how: Any) -> dict:
        """A rank's log wherever it runs: another machine's through its link (log_access.py reads ours)."""
        link = next((x for x in self.links.values() if rank in x.ranks), None) if rank not in self.ranks else None
        if link is None:
            return await super().read_log(rank, **how)
        try:
            return await link.request("log_read", rank=rank, **how)
        except RemoteUnavailable as e:
            raise RequestError("machine_unreachable", str(e)) from None

    async def _forward(self, link: RemoteLink, op: str, ranks: list[int], who: str, only: bool) -> None:
        try:
            await link.request(op, ranks=ranks, who=f"{who} via machine 0", only=True)
        except (RemoteUnavailable, RequestError) as e:
            self.event("machine", None, machine=link.label, reason=f"{op} on machine {link.label}: {e}")

    async def reload_elsewhere(self, result: dict) -> dict:
        """The profile re-read here reaches every machine: its files are sent over the link and reloaded there
        (taking effect at the next launch, as here)."""
        machines = {}
        for link in self.links.values():
            link.attach = attach_request(self.profile, link.machine, simulate=self.simulate,
                                         port_offset=self.port_offset, env=self.base_env)  # for reconnects too
            try:
                done = await link.request("update_profile", timeout=120, profile=link.attach["attach"]["profile"],
                                          who="machine 0 (reload)")
                machines[link.label] = {"reloaded": True, "relaunch_pending": done.get("relaunch_pending", [])}
            except (RemoteUnavailable, RequestError) as e:
                machines[link.label] = {"reloaded": False, "error": str(e)}
                self.event("machine", None, machine=link.label, reason=f"profile reload on machine {link.label}: {e}")
        result["machines"] = machines
        return result

    async def close_remotes(self, stop_ranks: bool) -> None:
        """At shutdown: with stop_ranks the other machines' supervisors stop their ranks and exit too."""
        async def end(link: RemoteLink) -> None:
            if stop_ranks and link.connected:
                proc = link.proc
                link.closing = True  # its connection ending now is the shutdown, not a lost machine
                try:
                    await link.request("shutdown", stop_ranks=True, who="machine 0's shutdown")
                    # The member answers before it stops; its exit closes the bridge and so the connection.
                    if proc is not None:
                        await asyncio.wait_for(proc.wait(), REMOTE_SHUTDOWN_WAIT_S)
                except (RemoteUnavailable, RequestError, asyncio.TimeoutError) as e:
                    self.event("machine", None, machine=link.label, reason=f"shutting down machine {link.label}: {e}")
            elif stop_ranks and link.ranks:
                self.event("machine", None, machine=link.label, reason=f"machine {link.label} is unreachable: its "
                           "supervisor and ranks are left as they are")
            await link.close()

        await asyncio.gather(*(end(link) for link in self.links.values()))
