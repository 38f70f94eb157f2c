"""A supervisor's first act: reconcile the plan with reality. Ranks recorded in state.json are adopted by their
identity (pid, create time, argv); ranks whose records are lost (state.json missing, truncated, edited) are found
by the marker every rank carries in its environment (its run dir and rank); the ports the plan needs are checked
for processes that are not ours. The result is one `supervisor` event (with `reconcile: true`) saying what was adopted, what is missing and
what the policy does about it: a group world with a missing rank is a failed world, never a ready one, and
nothing is launched over ranks that still run. A mixin of Supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import time
from dataclasses import dataclass, field

import psutil

from xllm_tui.protocol import RUNNING_STATES
from xllm_tui.supervisor.group import Failure
from xllm_tui.logs.intake import ADOPT_BACKLOG, LogIntake
from xllm_tui.supervisor.probes import Milestones
from xllm_tui.supervisor.process import MarkedProcess, RankProcess, find_marked
from xllm_tui.supervisor.slot import Launch, RankSlot, flag_value
from xllm_tui.supervisor.state import STATE_NAME


@dataclass
class Reality:
    """What was found, gathered off the event loop."""

    records: dict  # the last supervisor's state.json ({} when missing or unreadable)
    records_problem: str | None  # why state.json could not be used
    marked: list[MarkedProcess] = field(default_factory=list)
    port_holders: dict[int, str] = field(default_factory=dict)  # port -> "pid N (name)", not this run's


def read_records(path: str) -> tuple[dict, str | None]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as e:
        return {}, f"{os.path.basename(path)} is unreadable ({e.__class__.__name__}: {e})"
    if not isinstance(data, dict):
        return {}, f"{os.path.basename(path)} holds no object"
    return data, None


def _port_taken(port: int) -> bool:
    """Someone listens on this TCP port (any address): a bind with SO_REUSEADDR fails only then."""
    for family, address in ((socket.AF_INET, ("", port)), (socket.AF_INET6, ("::", port))):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
    return False


def foreign_listeners(ports: list[int], ours: set[int]) -> dict[int, str]:
    """Ports of `ports` that a process outside `ours` listens on, with who. Blocking; the process table is
    searched only for a port found taken (a bind test first: the common case costs microseconds)."""
    wanted = {port for port in ports if _port_taken(port)}
    if not wanted:
        return {}
    found: dict[int, str] = {port: "a process this user cannot see" for port in wanted}
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port not in wanted:
                continue
            pid = conn.pid
            if pid in ours:
                found.pop(conn.laddr.port, None)
                continue
            name = ""
            with contextlib.suppress(psutil.Error):
                name = psutil.Process(pid).name() if pid else ""
            found[conn.laddr.port] = f"pid {pid} ({name})" if pid else "another user's process"
    return found


class Reconciler:
    def gather_reality(self) -> Reality:
        records, problem = read_records(os.path.join(self.run_dir, STATE_NAME))
        reality = Reality(records, problem, find_marked(self.run_dir))
        return reality

    def planned_ports(self) -> list[int]:
        """Ports a fresh world binds on this machine: rank 0's --port and the registration port."""
        r0 = self.ranks.get(0)
        if r0 is None:
            return []
        ports = [r0.port]
        master = flag_value(r0.plan.argv, "master_node_addr")
        if master:
            from xllm_tui.profile import split_host_port

            with contextlib.suppress(ValueError):
                ports.append(split_host_port(master)[1])
        return ports

    async def reconcile(self) -> None:
        reality = await asyncio.to_thread(self.gather_reality)
        previous = reality.records
        if reality.records_problem:
            self.event("supervisor", reason=f"{reality.records_problem}; looking for this run's ranks by the marker "
                       "in their environment")
        self.last_launch_at = previous.get("last_launch_at")
        self.group.tracker.restarts_at = [float(t) for t in previous.get("group_restarts_at") or []]
        self.group.restarts = int(previous.get("group_restarts") or 0)
        self.group.first_failure = (previous.get("group") or {}).get("first_failure")
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            self.remote_restarts = {int(n): int(c) for n, c in (previous.get("remote_restarts") or {}).items()}
        adoption = previous.get("adoption") or {}
        adopted: list[int] = []
        by_marker: list[int] = []
        gone: list[tuple[RankSlot, dict]] = []
        takeovers: list[tuple[RankSlot, RankProcess, dict]] = []
        for r in self.ranks.values():
            rec = adoption.get(str(r.rank))
            if not rec:
                continue
            r.generation = int(rec.get("generation") or 0)
            r.restarts = int(rec.get("restarts") or 0)
            r.last_exit = rec.get("last_exit")
            pid = rec.get("pid")
            if pid:
                proc = RankProcess.adopt(int(pid), rec)
                if proc is not None:
                    takeovers.append((r, proc, rec))
                    adopted.append(r.rank)
                    continue
                if rec.get("want_running"):
                    gone.append((r, rec))
        strays: list[MarkedProcess] = []
        taken = {r.rank: proc.pid for r, proc, _ in takeovers}
        for found in reality.marked:
            r = self.ranks.get(found.rank)
            if r is not None and taken.get(r.rank) == found.pid:
                continue
            proc = RankProcess.adopt_marked(found) if r is not None and not r.alive and r.rank not in taken else None
            if proc is None:
                strays.append(found)
                continue
            gone = [(g, rec) for g, rec in gone if g is not r]
            takeovers.append((r, proc, {"state": "loading", "reason": "found by its run-dir marker"}))
            taken[r.rank] = proc.pid
            by_marker.append(r.rank)
        await self.take_over_all(takeovers)
        live = sorted(adopted + by_marker)
        for r in self.ranks.values():
            if not r.alive:
                r.state, r.reason = "stopped", "not running"
        if strays:
            # Ranks of this run dir that cannot be adopted (a second process for one rank, a rank the plan no
            # longer has): they hold NPUs and ports the world needs, so they are stopped, by pid.
            for found in strays:
                with contextlib.suppress(OSError):
                    os.killpg(found.pid, 15)
        await self._reconcile_outcome(live, by_marker, gone, strays)

    async def _reconcile_outcome(self, live: list[int], by_marker: list[int], gone: list[tuple[RankSlot, dict]],
                                 strays: list[MarkedProcess]) -> None:
        n = len(self.ranks)
        missing = [r.rank for r in self.ranks.values() if not r.alive]
        parts = []
        if live:
            parts.append(f"adopted rank(s) {', '.join(map(str, live))}"
                         + (f" ({', '.join(map(str, by_marker))} by marker)" if by_marker else ""))
        if strays:
            parts.append("stopped unadoptable process(es) of this run: "
                         + ", ".join(f"pid {s.pid} (rank {s.rank})" for s in strays))
        fields = {"adopted": live, "by_marker": by_marker, "missing": missing if live else [],
                  "strays": [s.pid for s in strays]}
        if live and not missing:
            self.event("supervisor", reconcile=True, reason="; ".join(parts) + f": all {n} ranks running", **fields)
            return
        if live:
            # Part of a world runs. Ranks cannot rejoin it: in scope group the world has failed.
            now = time.time()
            for r, rec in gone:
                r.last_exit = {"code": None, "signal": None, "at": now, "cause": "unknown", "collateral": False,
                               "status_known": False}
                self.set_state(r, "failed", f"pid {rec.get('pid')} is gone (exited while no supervisor was "
                                            "watching; status unknown)", cause="unknown")
            first = self.ranks[missing[0]]
            if first.state != "failed":
                first.last_exit = {"code": None, "signal": None, "at": now, "cause": "missing", "collateral": False,
                                   "status_known": False}
                self.set_state(first, "failed", f"not running when supervisor {self.pid} took over (never launched "
                                                "or gone)", cause="missing")
            action = ("the world cannot serve without them: restarting it by the policy" if self.scope == "group"
                      else "each is restarted by the policy")
            self.event("supervisor", reconcile=True, reason="; ".join(parts) + f"; missing rank(s) {', '.join(map(str, missing))}: "
                       + action, **fields)
            if self.scope == "group":
                self.handle_failure(first, Failure(first.rank, first.last_exit["cause"], first.reason, now,
                                                   first.generation))
            else:
                for number in missing:
                    r = self.ranks[number]
                    if r.want_running or r.state == "failed":
                        if r.state != "failed":
                            self.set_state(r, "failed", "not running when the supervisor took over", cause="missing")
                        self.handle_failure(r, Failure(r.rank, "missing", r.reason, now, r.generation))
            return
        holders = await asyncio.to_thread(foreign_listeners, self.planned_ports(), set())
        if holders:
            text = "; ".join(f"port {port} is held by {who}" for port, who in sorted(holders.items()))
            self.event("supervisor", reconcile=True, reason=f"no rank of this run is running, but {text}: not launching a world "
                       "over it (stop that process, then `xllm-tui start --all`)", ports=holders, **fields)
            for r in self.ranks.values():
                self.set_state(r, "failed", f"cannot launch: {text}", cause="port_in_use")
            self.group.failing = True
            self.update_group()
            return
        if not self.launch_on_start:
            self.event("supervisor", reconcile=True, reason="no rank of this run is running; not launching (--no-launch)", **fields)
            return
        self.event("supervisor", reconcile=True, reason="no rank of this run is running: launching a new world", **fields)
        await self.launch_new_run()

    async def launch_new_run(self) -> None:
        # A fresh launch is a new run: the restart budget and first failure of the last one no longer apply
        # (they stay in events.jsonl). Generations keep counting so rotated logs never collide.
        if self.group.restarts or self.group.first_failure:
            ff = self.group.first_failure or {}
            self.event("supervisor", reason=f"new run: restart count reset (the previous run had "
                       f"{self.group.restarts} restart(s), first failure: "
                       f"{'rank ' + str(ff.get('rank')) + ' ' + str(ff.get('cause')) if ff else 'none'})")
        self.group.new_run()
        for r in self.ranks.values():
            r.restarts = 0
            r.want_running = True
        self.remote_restarts.clear()
        async with self.action_lock:
            await self.launch_group("supervisor start (`up`)")

    async def take_over_all(self, takeovers: list[tuple[RankSlot, RankProcess, dict]]) -> None:
        """Adopt running ranks. The tail of each one's log (up to ADOPT_BACKLOG, where it is in its start-up)
        is read in a thread: 16 ranks x 16 MiB from a cold disk would hold up every client of the socket."""
        milestones = [self.new_milestones(r) for r, _, _ in takeovers]

        def read_tails() -> list[LogIntake]:
            readers = []
            for (r, proc, _), sink in zip(takeovers, milestones):
                reader = LogIntake.adopt(r.plan.log_path, count_lines=False, writer_pid=proc.pid)
                reader.feed(sink, ADOPT_BACKLOG)
                readers.append(reader)
            return readers

        readers = await asyncio.to_thread(read_tails) if takeovers else []
        for (r, proc, rec), sink, reader in zip(takeovers, milestones, readers):
            self.take_over(r, proc, rec, sink, reader)

    def take_over(self, r: RankSlot, proc: RankProcess, rec: dict, milestones: Milestones, reader: LogIntake) -> None:
        started = rec.get("started_at") or (proc.identity.create_time if proc.identity else time.time())
        launch = Launch(r.plan, proc, milestones, reader, rec.get("env_hash"),
                        rec.get("launch_argv_hash"), started, last_growth=time.time())
        r.current = launch
        r.want_running = True
        proc.watch(self.loop, self.on_exit)
        self.write_sim_procs()
        recorded = rec.get("state")
        state = recorded if recorded in RUNNING_STATES and recorded != "stopping" else "loading"
        r.state = state
        launch.health_seen_ok = state == "ready"  # a failing probe now means degraded, not "still loading"
        r.reason = f"adopted (pid {proc.pid}); {rec.get('reason') or ''}".rstrip("; ")
        self.event("state", r.rank, **{"from": "unknown", "to": state, "reason": r.reason, "adopted": True,
                                        "pid": proc.pid})
        self.evaluate(r)
