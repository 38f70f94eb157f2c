"""`xllm-tui devices [PROFILE]`: the NPUs (or GPUs) with health, memory and processes, the topology with CPU
affinity, and with a profile each rank on its device and the binding check. Exit 0 ok, 1 devices unavailable,
2 bad profile. JSON layout: docs/devices.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

from xllm_tui.devices.affinity import BindingIssue, check_binding
from xllm_tui.devices.model import Device, DeviceReport

SIMULATED_NPU_SMI = [sys.executable, "-m", "xllm_tui.sim.npu_smi"]


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("profile", nargs="?", metavar="PROFILE", help="show this profile's ranks on their devices and check their core binding")
    parser.add_argument("--npu-smi", metavar="PATH", help="npu-smi to run (default: npu-smi on PATH, then nvidia-smi)")
    parser.add_argument("--nvidia-smi", metavar="PATH", help="nvidia-smi to run instead")
    parser.add_argument("--json", action="store_true", help="print the documented JSON (docs/devices.md)")
    parser.add_argument("--simulate", action="store_true", help="read the simulated npu-smi (XLLM_SIM_NPU_KIND=a2 for an A2 machine)")
    parser.add_argument("--machine", metavar="HOST", help="with a multi-machine profile: the machine whose ranks run here (default: the one with this host's address)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="how long the tool may take (default: the profile's devices.timeout, else 10)")


@dataclass
class RankPlacement:
    rank: int
    device: int
    cores: str | None
    machine: str


@dataclass
class ProfileView:
    name: str
    machine: str
    ranks: list[RankPlacement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ProfileProblem(Exception):
    pass


def _profile_view(path: str, simulate: bool, machine: str | None, report: DeviceReport) -> ProfileView:
    try:
        from xllm_tui.launch import LaunchError, ranks_of
        from xllm_tui.profile import load_profile
    except ImportError as exc:  # profile support not installed in this build
        raise ProfileProblem(f"cannot read profiles in this build: {exc}") from exc
    result = load_profile(path, simulate=simulate)
    if result.profile is None:
        lines = [str(d) for d in result.diagnostics if d.severity == "error"] or [f"{path}: the profile could not be loaded"]
        raise ProfileProblem("\n".join(lines) + "\n(run `xllm-tui validate " + path + "` for every problem)")
    profile = result.profile
    notes: list[str] = []
    if machine is None and len(profile.machines) > 1:
        from xllm_tui.launch import machine_of_this_host

        here = machine_of_this_host(profile)
        machine = (here or profile.machines[0]).host
        if here is None:
            notes.append(f"this host is none of the profile's machines; showing machine {machine} (choose with --machine)")
    from dataclasses import replace

    from xllm_tui.launch import topology_cores_from_devices
    from xllm_tui.spec import CoreRule

    cores_by_device = None
    try:
        cores_by_device = topology_cores_from_devices(profile, report, machine)
    except LaunchError as exc:
        # Still show where the ranks are; their cores cannot be known from this topology.
        notes.append(str(exc).removeprefix(f"{profile.source_path}: "))
        profile = replace(profile, core_rule=CoreRule(kind="none"))
    try:
        specs = ranks_of(profile, machine=machine, topology_cores=cores_by_device)
    except (LaunchError, ValueError) as exc:
        raise ProfileProblem(str(exc)) from exc
    chosen = machine or (profile.machines[0].host if profile.machines else "")
    view = ProfileView(name=profile.name, machine=chosen, notes=notes)
    view.ranks = [RankPlacement(s.rank, s.device, s.cores, s.machine.host) for s in specs]
    return view


def _binding(view: ProfileView | None, report: DeviceReport) -> tuple[list[BindingIssue], list[str]]:
    if view is None:
        return [], []
    problems = []
    known = {d.logic_id for d in report.devices}
    for placement in view.ranks:
        if report.devices and placement.device not in known:
            problems.append(f"rank {placement.rank} is on NPU {placement.device}, which this machine does not list")
    issues = check_binding({r.rank: r.cores for r in view.ranks}, {r.rank: r.device for r in view.ranks}, report.topology)
    return issues, problems


# ------------------------------------------------------------------------------------------------ text


def _fmt(value, unit: str = "", digits: int | None = None) -> str:
    if value is None:
        return "-"
    if digits is not None and isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _hbm(device: Device) -> str:
    if device.hbm_used_mb is None and device.hbm_total_mb is None:
        return "-"
    text = f"{_fmt(device.hbm_used_mb)}/{_fmt(device.hbm_total_mb)} MB"
    pct = device.hbm_pct
    return f"{text} {pct:3.0f}%" if pct is not None else text


def _processes(device: Device) -> str:
    if not device.processes:
        return "-"
    shown = [
        f"{p.pid}{' ' + p.name if p.name else ''}{f' {p.memory_mb} MB' if p.memory_mb is not None else ''}" for p in device.processes[:3]
    ]
    more = len(device.processes) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def render_text(report: DeviceReport, view: ProfileView | None, issues: list[BindingIssue], problems: list[str]) -> str:
    lines: list[str] = []
    what = "NPU" if report.backend == "npu-smi" else "GPU"
    title = f"{report.backend}{' ' + report.version if report.version else ''}: {len(report.devices)} devices"
    if view is not None:
        title += f" · profile {view.name}, machine {view.machine}"
    lines.append(title)
    ranks_on: dict[int, list[int]] = {}
    if view is not None:
        for placement in view.ranks:
            ranks_on.setdefault(placement.device, []).append(placement.rank)
    header = [what, "CARD/CHIP", "NAME", "HEALTH", "TEMP", "POWER", "AICORE" if what == "NPU" else "UTIL", "HBM" if what == "NPU" else "MEMORY"]
    if view is not None:
        header.append("RANK")
    header.append("PROCESSES")
    rows = [header]
    for d in report.devices:
        card_chip = f"{_fmt(d.card)}/{_fmt(d.chip)}" if d.card is not None else "-"
        row = [
            _fmt(d.logic_id),
            card_chip,
            d.name or "-",
            d.health or "-",
            _fmt(d.temp_c, "C", 0),
            _fmt(d.power_w, "W", 1),
            _fmt(d.aicore_pct, "%", 0),
            _hbm(d),
        ]
        if view is not None:
            row.append(",".join(f"r{r}" for r in ranks_on.get(d.logic_id, [])) or "-")
        row.append(_processes(d))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])

    lines.append("")
    if report.links:
        ids = sorted(report.links)
        cell = max([4] + [len(label) for row in report.links.values() for label in row.values()] + [len(str(i)) for i in ids]) + 1
        has_affinity = any(d.cpu_affinity for d in report.devices)
        lines.append(f"Topology (links between {what}s{', CPU affinity' if has_affinity else ''}):")
        lines.append(" " * 5 + "".join(str(i).ljust(cell) for i in ids) + ("CPU Affinity" if has_affinity else ""))
        for row_id in ids:
            device = report.device(row_id)
            affinity = device.cpu_affinity if device and device.cpu_affinity else ""
            cells = "".join(report.links[row_id].get(col, "-").ljust(cell) for col in ids)
            lines.append(f"{row_id:<5}" + cells + affinity)
    else:
        lines.append("Topology: not available")

    if view is not None:
        lines.append("")
        lines.append("Binding check (numactl cores vs the NPU's CPU affinity):")
        lines += [f"  note: {n}" for n in view.notes]
        bound = [r for r in view.ranks if r.cores]
        for placement in view.ranks:
            cores = placement.cores or "not bound (no numactl)"
            device = report.device(placement.device)
            affinity = device.cpu_affinity if device and device.cpu_affinity else "unknown"
            lines.append(f"  rank {placement.rank}: NPU {placement.device}, cores {cores}, affinity {affinity}")
        for problem in problems:
            lines.append(f"  warning: {problem}")
        for issue in issues:
            lines.append(f"  warning: {issue.message}")
        if not issues and not problems:
            if not report.topology.cpu_affinity:
                lines.append("  not checked: the topology gives no CPU affinity on this machine")
            elif bound:
                lines.append("  ok: every bound rank's cores are within its NPU's CPU affinity")
            else:
                lines.append("  not checked: no rank is bound to cores")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from xllm_tui.launch import device_tools, read_profile_devices

    if args.timeout is not None and args.timeout <= 0:
        print("xllm-tui devices: --timeout must be positive", file=sys.stderr)
        return 2
    # The profile's devices: key chooses the tool (unless --npu-smi/--nvidia-smi/--simulate say otherwise);
    # a profile that does not load is reported after the devices are read, as before.
    settings = None
    if args.profile:
        from xllm_tui.profile import load_profile

        settings = load_profile(args.profile, simulate=args.simulate).profile
    tools = device_tools(settings, simulate=args.simulate, npu_smi=args.npu_smi, nvidia_smi=args.nvidia_smi, timeout=args.timeout)
    report = read_profile_devices(tools=tools)

    view = None
    # Ranks are placed only on devices that were read: without them there is nothing to check against.
    if args.profile and report.devices:
        try:
            view = _profile_view(args.profile, args.simulate, args.machine, report)
        except ProfileProblem as exc:
            print(f"xllm-tui devices: {exc}", file=sys.stderr)
            return 2
    issues, problems = _binding(view, report)

    if args.json:
        data = report.to_dict()
        if view is not None:
            data["profile"] = {"name": view.name, "machine": view.machine}
            data["ranks"] = [
                {"rank": r.rank, "device": r.device, "cores": r.cores, "machine": r.machine} for r in view.ranks
            ]
            data["binding"] = [i.to_dict() for i in issues]
            data["binding_problems"] = problems
            data["notes"] = view.notes
        print(json.dumps(data, indent=2))
        return 0 if report.devices else 1

    if not report.devices:
        print("devices unavailable:", file=sys.stderr)
        for error in report.errors or ["no devices listed"]:
            print(f"  {error}", file=sys.stderr)
        return 1
    print(render_text(report, view, issues, problems))
    # Notes go to stderr: flush stdout first, so that on a shared terminal or pipe every note starts on a
    # line of its own after the table ("Topology: not availablenote: ..." otherwise).
    sys.stdout.flush()
    for error in report.errors:
        print(f"note: {error}", file=sys.stderr, flush=True)
    return 0
