"""The HCCL rank table of a world over several machines, written on every machine before each world launch.
Each machine reads its own NPUs' addresses (hccn_tool; the simulated one under --simulate), machine 0 builds
the table (launch.render_ranktable's layout) and every machine writes it where --rank_tablefile points.
An address that differs from the profile's device_ips is journaled; the machine's reading wins. A mixin of
Supervisor (machine 0 drives it from machines.py; a member answers the two ops)."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace

from xllm_tui.devices.hccn import SIM_IPS_ENV, read_device_ips
from xllm_tui.launch import LaunchError, render_ranktable, working_dir_of
from xllm_tui.protocol import RequestError
from xllm_tui.supervisor.remote import RemoteUnavailable
from xllm_tui.supervisor.state import atomic_write_json


class RankTables:
    def this_machine(self):
        return next((m for m in self.profile.machines if m.host == self.machine), self.profile.machines[0])

    def rank_table_path(self) -> str | None:
        """Where this machine's ranks read it; under --simulate the run dir (never the profile's directory)."""
        name = self.profile.rank_tablefile
        if not name:
            return None
        if self.simulate:
            return os.path.join(self.run_dir, os.path.basename(name))
        return os.path.join(working_dir_of(self.profile), os.path.expanduser(name))

    async def read_device_ips(self) -> dict:
        """The `device_ips` op: this machine's NPU addresses, read here."""
        machine = self.this_machine()
        env = None
        if self.simulate:
            env = {**self.base_env, SIM_IPS_ENV: json.dumps({str(d): ip for d, ip in zip(machine.devices,
                                                                                        machine.device_ips)})}
        ips, problems = await asyncio.to_thread(read_device_ips, list(machine.devices), simulate=self.simulate,
                                                env=env)
        return {"machine": machine.host, "ips": {str(d): ip for d, ip in ips.items()}, "problems": problems}

    async def write_rank_table(self, table: dict) -> dict:
        """The `write_ranktable` op: the table machine 0 built, written where this machine's ranks read it."""
        path = self.rank_table_path()
        if path is None:
            raise RequestError("bad_request", "this profile has no rank_tablefile")
        await asyncio.to_thread(atomic_write_json, path, table)
        return {"path": path}

    async def distribute_rank_table(self) -> None:
        """Machine 0, before a world launch: read every machine's addresses, build the table, write it everywhere."""
        if not self.links or not self.profile.rank_tablefile:
            return
        readings = {self.this_machine().host: await self.read_device_ips()}
        for link in self.links.values():
            try:
                readings[link.machine.host] = await link.request("device_ips", timeout=120)
            except (RemoteUnavailable, RequestError) as e:
                readings[link.machine.host] = {"ips": {}, "problems": [str(e)]}
        machines, notes = [], []
        for m in self.profile.machines:
            got = readings.get(m.host, {})
            notes += [f"machine {m.host}: {p}" for p in got.get("problems", [])]
            ips = []
            for index, device in enumerate(m.devices):
                read = got.get("ips", {}).get(str(device))
                written = m.device_ips[index] if index < len(m.device_ips) else None
                if read and written and read != written:
                    notes.append(f"machine {m.host} NPU {device}: hccn_tool says {read}, the profile {written}; "
                                 f"the table uses {read}")
                ips.append(read or written or "")
            machines.append(replace(m, device_ips=tuple(ips) if all(ips) else ()))
        try:
            table = render_ranktable(replace(self.profile, machines=tuple(machines)))
        except LaunchError as e:
            self.event("group", None, reason=f"rank table not written: {e}" + (f" ({'; '.join(notes)})" if notes else ""))
            return
        written = [(await self.write_rank_table(table))["path"]]
        for link in self.links.values():
            try:
                written.append((await link.request("write_ranktable", table=table))["path"])
            except (RemoteUnavailable, RequestError) as e:
                notes.append(f"machine {link.label}: not written: {e}")
        self.event("group", None, reason=f"rank table written on {len(written)} machine(s) with the NPU addresses "
                   f"read there: {', '.join(dict.fromkeys(written))}" + (f"; {'; '.join(notes)}" if notes else ""),
                   rank_table=table, rank_table_paths=written)
