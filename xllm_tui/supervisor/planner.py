"""From the profile to launch plans: loading and checking the profile, which machine this supervisor runs, the
captured environment, `cores: topology`, and the --simulate mapping."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Callable

from xllm_tui.devices.model import DeviceReport
from xllm_tui.launch import LaunchError
from xllm_tui.spec import CoreRule, Profile, RankLaunch
from xllm_tui.supervisor import devices as devwatch


class ProfileInvalid(Exception):
    def __init__(self, path: str, diagnostics: list[str]):
        self.path = path
        self.diagnostics = diagnostics
        super().__init__(f"{path}: profile has errors:\n" + "\n".join(diagnostics))


def load_profile_checked(path: str, simulate: bool) -> tuple[Profile, list[str]]:
    """(profile, warnings) or ProfileInvalid with printable diagnostics."""
    from xllm_tui.profile import load_profile

    result = load_profile(path, simulate=simulate)
    if result.errors or result.profile is None:
        diags = [str(d) for d in (result.errors or result.diagnostics)] or [f"{path}: cannot load profile"]
        raise ProfileInvalid(path, diags)
    return result.profile, [str(w) for w in result.warnings]


def choose_machine(profile: Profile, simulate: bool, machine: str | None) -> str | None:
    """Which machine's ranks this supervisor runs: all under --simulate, else the one that is this host."""
    from xllm_tui.launch import machine_of_this_host

    if machine or simulate:
        return machine
    if len(profile.machines) == 1:
        return None
    here = machine_of_this_host(profile)
    if here is not None:
        return here.host
    raise ProfileInvalid(
        profile.source_path,
        [f"{profile.source_path}: none of the profile's machines ({', '.join(m.host for m in profile.machines)}) "
         "is an address of this host; pass --machine HOST to say which one this is"],
    )


class Planner:
    """The launch plans of this supervisor's ranks, and what they depend on besides the profile."""

    def __init__(self, profile: Profile, *, simulate: bool, machine: str | None, port_offset: int,
                 base_env: dict[str, str], run_dir: str, on_warning: Callable[[str], None]):
        self.profile = profile
        self.simulate = simulate
        self.machine = machine
        self.port_offset = port_offset
        self.base_env = base_env
        self.run_dir = run_dir
        self.on_warning = on_warning
        self.captured_env: dict[str, str] = {}
        self.topology_report: DeviceReport | None = None  # for cores: topology (affinity does not change)
        self.topology_problem: str | None = None  # why cores: topology could not be computed
        self.sim_procs_path = os.path.join(run_dir, devwatch.SIM_PROCS_NAME)

    def topology_cores(self, profile: Profile | None = None) -> dict[int, str] | None:
        """device -> cores for `cores: topology` from the topology read before; raises LaunchError."""
        from xllm_tui.launch import needs_topology, topology_cores_from_devices

        profile = profile or self.profile
        if not needs_topology(profile, self.machine):
            return None
        return topology_cores_from_devices(profile, self.topology_report, self.machine)

    def plan(self, profile: Profile | None = None, toggles: dict[str, bool] | None = None) -> list[RankLaunch]:
        from xllm_tui.launch import build_simulate_mapping, plan_launches

        profile = profile or self.profile
        topology = self.topology_cores(profile)
        mapping = build_simulate_mapping(profile, port_offset=self.port_offset, topology_cores=topology) \
            if self.simulate else None
        return plan_launches(
            profile,
            machine=self.machine,
            simulate=mapping,
            base_env=self.base_env,
            captured_env=self.captured_env,
            toggles=toggles or {},
            topology_cores=topology,
            log_root=self.run_dir if self.simulate else None,
        )

    def plan_or_placeholder(self, toggles: dict[str, bool]) -> list[RankLaunch]:
        """plan(); when `cores: topology` cannot be computed, the same ranks without numactl (so they exist in
        the snapshot) and topology_problem says why: the launcher refuses to launch them."""
        try:
            launches = self.plan(toggles=toggles)
        except LaunchError as e:
            self.topology_problem = str(e)
            return self.plan(replace(self.profile, core_rule=CoreRule(kind="none")), toggles)
        self.topology_problem = None
        return launches

    def simulate_mapping_lines(self) -> list[str]:
        """What --simulate changes (binary, addresses to loopback, cores onto this machine), for people."""
        from xllm_tui.launch import build_simulate_mapping

        try:
            topology = self.topology_cores()
        except LaunchError:
            topology = None
        return build_simulate_mapping(self.profile, port_offset=self.port_offset, topology_cores=topology).describe()

    async def read_topology(self, profile: Profile | None = None) -> None:
        from xllm_tui.launch import needs_topology, read_profile_devices

        profile = profile or self.profile
        if needs_topology(profile, self.machine):
            self.topology_report = await asyncio.to_thread(
                read_profile_devices, profile, simulate=self.simulate, env=self.device_env(profile))

    def capture_env(self, profile: Profile | None = None) -> dict[str, str]:
        profile = profile or self.profile
        if not profile.source_scripts:
            return {}
        from xllm_tui.envcapture import capture_sourced_env

        env, warnings = capture_sourced_env(profile.source_scripts, self.base_env)
        for w in warnings:
            self.on_warning(f"environment capture: {w}")
        return env

    def device_env(self, profile: Profile | None = None) -> dict[str, str] | None:
        """Extra environment for the device tool: under --simulate the ranks' process file, and the profile's
        XLLM_SIM_NPU_* variables (the simulated npu-smi runs in the supervisor's environment, not the ranks')."""
        if not self.simulate:
            return None
        profile = profile or self.profile
        env = {name: value for name, value in profile.env if name.startswith(devwatch.SIM_ENV_PREFIX)}
        env["XLLM_SIM_NPU_PROCS"] = self.sim_procs_path
        return env
