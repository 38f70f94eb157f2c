"""The supervisor's state as the protocol's typed snapshot (xllm_tui.protocol), and state.json: the snapshot plus
what a successor needs to re-adopt the ranks. A mixin of Supervisor."""

from __future__ import annotations

import os
import time

from xllm_tui.protocol import PROTOCOL, Event, GroupStatus, RankStatus, Snapshot
from xllm_tui.supervisor.slot import RankSlot, flag_value
from xllm_tui.supervisor.state import LOG_NAME, SOCKET_NAME

EVENT_FIELDS = Event().to_dict()  # an event's wire form always has these (seq, ts, kind, rank, reason)


class Snapshots:
    def rank_status(self, r: RankSlot, now: float) -> RankStatus:
        live = r.live
        m = r.milestones
        plan = live.plan if live is not None else r.plan
        return RankStatus(
            rank=r.rank,
            role=r.role,
            machine=r.plan.spec.machine.name or r.plan.spec.machine.host,
            host=flag_value(r.plan.argv, "host") or r.plan.spec.machine.host,
            device=r.plan.spec.device,
            cores=r.plan.spec.cores,
            port=r.port,
            pid=live.proc.pid if live else None,
            pgid=live.proc.pgid if live else None,
            adopted=bool(live and live.proc.adopted),
            state=r.state,
            reason=r.reason,
            since=round(r.since, 3),
            phase=m.phase if (m and live) else None,
            progress=m.progress if (m and live) else None,
            started_at=live.started_at if live else None,
            uptime_s=round(now - live.started_at, 1) if live else None,
            restarts=r.restarts,
            generation=r.generation,
            last_exit=r.last_exit,
            cpu_pct=live.cpu_pct if live else None,
            rss_bytes=live.rss_bytes if live else None,
            threads=live.threads if live else None,
            last_line=m.last_line if m else None,
            log_path=r.plan.log_path,
            health=live.health if live else None,
            relaunch_pending=r.relaunch_pending(),
            next_restart_at=r.next_restart_at,
            argv=list(plan.argv),
            binding=self.binding[r.rank].to_dict() if r.rank in self.binding else None,
            waiting=r.waiting,
        )

    def snapshot_typed(self, events: int = 50) -> Snapshot:
        now = time.time()
        toggles = [{
            "name": t.name,
            "enabled": self.toggles.get(t.name, t.enabled),
            "env": dict(t.env),
            "remove": list(t.remove),
            "unset": list(t.unset),
            "description": t.description,
        } for t in self.profile.toggles]
        p = self.profile.restart
        return Snapshot(
            protocol=PROTOCOL,
            time=round(now, 3),
            profile={"name": self.profile.name, "path": self.profile_path, "simulate": self.simulate,
                     "machine": self.machine, "port_offset": self.port_offset,
                     "simulate_mapping": self._mapping_lines, "over_ssh": bool(self.links)},
            supervisor={"pid": self.pid, "started_at": round(self.started_at, 3), "run_dir": self.run_dir,
                        "log": os.path.join(self.run_dir, LOG_NAME), "socket": os.path.join(self.run_dir, SOCKET_NAME),
                        "disks": self.disk_status()},
            group=GroupStatus(
                state=self.group_state,
                reason=self.group_reason,
                since=round(self.group_since, 3),
                restarts=self.group.restarts,
                next_restart_at=self.group.next_restart_at,
                first_failure=self.group.first_failure,
                policy={"mode": p.mode, "scope": self.scope, "max_restarts": p.max_restarts, "window_s": p.window_s,
                        "backoff_initial_s": p.backoff_initial_s, "backoff_max_s": p.backoff_max_s,
                        "backoff_factor": p.backoff_factor},
                extra={"waiting_for": list(self.launch_waiting_for)} if self.launch_waiting is not None else {},
            ),
            ranks=sorted([*(self.rank_status(r, now) for r in self.ranks.values()), *self.remote_rank_statuses()],
                         key=lambda r: r.rank),
            toggles=toggles,
            devices=self.devices_json(),
            events=[Event.from_dict(e) for e in (self.journal.last(events) if self.journal else [])],
            machines=self.machine_statuses(),
        )

    def snapshot(self, events: int = 50) -> dict:
        data = self.snapshot_typed(events=0).to_dict()
        # The journal's entries are the events' wire form already (subscribers get them as they are): no
        # Event round trip per event at every poll, only the fields an Event always has.
        data["events"] = [{**EVENT_FIELDS, **e} for e in self.journal.last(events)] if self.journal else []
        return data

    def state_data(self) -> dict:
        """The snapshot plus what the next supervisor needs to re-adopt the ranks."""
        data = self.snapshot()
        data["ranks"] = [r for r in data["ranks"] if not r.get("remote")]  # other machines' state is theirs
        data["adoption"] = {}
        for r in self.ranks.values():
            live = r.live
            data["adoption"][str(r.rank)] = {
                **(live.proc.identity.to_json() if (live and live.proc.identity) else {"pid": None}),
                "pgid": live.proc.pgid if live else None,
                "env_hash": live.env_hash if live else None,
                "launch_argv_hash": live.argv_hash if live else None,
                "generation": r.generation,
                "restarts": r.restarts,
                "started_at": live.started_at if live else None,
                "state": r.state,
                "reason": r.reason,
                "want_running": r.want_running,
                "last_exit": r.last_exit,
            }
        data["group_restarts_at"] = self.group.tracker.to_json()
        data["group_restarts"] = self.group.restarts
        # Other machines' ranks: the world restarts machine 0 counted for them (their own supervisors count none).
        data["remote_restarts"] = {str(n): count for n, count in sorted(self.remote_restarts.items())}
        data["last_launch_at"] = self.last_launch_at
        return data
