"""`xllm-tui validate PROFILE... [--simulate] [--json] [--npu-smi PATH] [--no-devices]`: lint profiles like a
compiler would, and check the binding of this host's ranks against its NPUs.

Exit status: 0 clean, 1 warnings only, 2 any error (as linters do). Notes (devices not readable here, what
was checked) never change it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

from xllm_tui.profile import Diagnostic, LoadResult, load_profile, profile_summary


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("profiles", nargs="+", metavar="PROFILE", help="profile YAML file(s)")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="check for a simulated run: a missing binary, model or sourced script is only a warning, and the "
        "simulated npu-smi stands for machine 0's devices",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--npu-smi", metavar="PATH", help="npu-smi to read the devices with (default: the profile's devices: key, then PATH)")
    parser.add_argument("--nvidia-smi", metavar="PATH", help="nvidia-smi to read the devices with instead")
    parser.add_argument("--no-devices", action="store_true", help="do not read the devices (no binding check, no topology cores)")
    parser.add_argument("--remote", action="store_true",
                        help="also check every other machine over ssh (BatchMode): reachable, xllm-tui there, the "
                        "profile as that machine loads it (paths, scripts, devices, binding); under --simulate the "
                        "machines' loopback addresses")


@dataclass
class DeviceCheck:
    """What validate learnt from this host's devices for one profile."""

    tool: str | None = None  # the tool as described by launch.DeviceTools.describe()
    machines: list[str] = field(default_factory=list)  # hosts whose ranks were checked
    diagnostics: list[Diagnostic] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    topology_cores: dict[int, str] = field(default_factory=dict)  # rank -> cores computed from the topology
    binding: list[dict[str, Any]] = field(default_factory=list)  # BindingIssue.to_dict() per issue
    binding_checked: bool = False  # some rank's cores were compared with its NPU's affinity

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "machines": self.machines,
            "notes": self.notes,
            "topology_cores": {str(rank): cores for rank, cores in self.topology_cores.items()},
            "binding_checked": self.binding_checked,
            "binding": self.binding,
        }


def _without_source(message: str, source_path: str) -> str:
    # LaunchError messages start with the profile path; a diagnostic names the file already.
    return message[len(source_path) + 2 :] if message.startswith(source_path + ": ") else message


def check_binary_and_models(result: LoadResult, *, simulate: bool) -> tuple[list[Diagnostic], list[str]]:
    """The checks that need this machine's files: the binary's flags (its --helpxml) and the model directories;
    (diagnostics, notes). `up` runs them too before any rank starts (lifecycle.preflight)."""
    from xllm_tui.binary_flags import check_profile_binary
    from xllm_tui.model_dir import check_profile_models

    diagnostics, notes = check_profile_binary(result, simulate=simulate)
    return diagnostics + check_profile_models(result, simulate=simulate), notes


def check_devices(result: LoadResult, *, simulate: bool, npu_smi: str | None = None, nvidia_smi: str | None = None,
                  reports: dict | None = None) -> DeviceCheck:
    """Read this host's devices (bounded by the profile's devices.timeout) and check the ranks of the machine
    that is this host (machine 0 under --simulate): cores within their NPU's CPU affinity, NPUs listed,
    and `cores: topology` computed. `reports` caches readings between profiles (key: the tool)."""
    from xllm_tui.devices.affinity import check_binding, parse_core_list
    from xllm_tui.launch import LaunchError, device_tools, machines_here, needs_topology, ranks_of, read_profile_devices, topology_cores_from_devices

    check = DeviceCheck()
    profile = result.profile
    if profile is None:
        return check
    here = machines_here(profile, simulate=simulate)
    if not here:
        hosts = ", ".join(m.host for m in profile.machines)
        check.notes.append(
            f"binding not checked: this host is none of the profile's machines ({hosts}); run validate on the "
            "machine itself, or with --simulate"
        )
        return check
    if simulate and len(profile.machines) > 1:
        check.notes.append(
            f"--simulate: the simulated npu-smi stands for machine 0 ({profile.machines[0].host}); "
            "the other machines' binding is not checked"
        )
    tools = device_tools(profile, simulate=simulate, npu_smi=npu_smi, nvidia_smi=nvidia_smi)
    check.tool = tools.describe()
    topology_wanted = [i for i in here if needs_topology(profile, profile.machines[i].host)]
    if not tools.available:
        hint = " (give one with --npu-smi PATH)" if tools.origin == "auto" else ""
        check.notes.append(f"devices not read: {tools.missing}; binding not checked{hint}")
        report = None
    else:
        cache = reports if reports is not None else {}
        key = (tools.npu_smi, tools.nvidia_smi, tools.timeout_s)
        if key not in cache:
            cache[key] = read_profile_devices(profile, tools=tools)
        report = cache[key]
        if not report.devices:
            check.notes.append(f"devices unavailable: {'; '.join(report.errors) or 'no devices listed'}; binding not checked")
            report = None
        else:
            check.notes += [f"{report.backend}: {error}" for error in report.errors]
    if report is None:
        for index in topology_wanted:
            check.diagnostics.append(result.diagnostic(
                "warning", "cores",
                f"the cores of {profile.machines[index].host} (rule topology) cannot be computed here: the devices "
                "were not read; they are computed at launch on the machine (or give explicit cores)",
            ))
        return check

    affinity = report.topology.cpu_affinity
    listed = sorted(d.logic_id for d in report.devices if d.logic_id is not None)
    cores_written = result.locate("cores")[1] is not None
    for index in here:
        machine = profile.machines[index]
        check.machines.append(machine.host)
        topology = None
        if index in topology_wanted:
            try:
                topology = topology_cores_from_devices(profile, report, machine.host)
            except LaunchError as error:
                check.diagnostics.append(result.diagnostic("error", "cores", _without_source(str(error), profile.source_path)))
                continue
        try:
            specs = ranks_of(profile, machine=machine.host, topology_cores=topology)
        except LaunchError as error:
            check.diagnostics.append(result.diagnostic("error", f"machines[{index}]", _without_source(str(error), profile.source_path)))
            continue
        for spec in specs:
            if spec.device not in listed:
                check.diagnostics.append(result.diagnostic(
                    "warning", f"machines[{index}].devices",
                    f"rank {spec.rank} is on NPU {spec.device}, which this machine's {report.backend} does not list "
                    f"(it lists {', '.join(map(str, listed))})",
                ))
        if topology is not None:
            check.topology_cores = {spec.rank: spec.cores for spec in specs if spec.cores}
            taken: dict[int, int] = {}
            for spec in specs:
                cores = parse_core_list(spec.cores) if spec.cores else set()
                shared = sorted({taken[c] for c in cores if c in taken})
                if shared:
                    check.diagnostics.append(result.diagnostic(
                        "warning", "cores",
                        f"cores from topology: rank {spec.rank} (cores {spec.cores}) shares cores with rank {shared[0]}: "
                        f"{profile.core_rule.count} cores per NPU do not fit its CPU affinity; lower cores.count",
                    ))
                for core in cores:
                    taken.setdefault(core, spec.rank)
        if not affinity:
            check.notes.append(
                f"binding not checked on {machine.host}: {report.backend} prints no CPU Affinity "
                "(npu-smi info -t topo has no such column on this machine, as on A3 machines with ARM CPUs)"
            )
            continue
        check.binding_checked = True
        issues = check_binding({s.rank: s.cores for s in specs}, {s.rank: s.device for s in specs}, report.topology)
        by_rank = {s.rank: s for s in specs}
        for issue in issues:
            spec = by_rank[issue.rank]
            if machine.cores:
                key, hint = f"machines[{index}].cores[{spec.local_rank}]", ""
            else:
                key = "cores" if cores_written else f"machines[{index}].devices"
                hint = "" if topology is not None else "; or take them from the topology: cores: topology"
            check.diagnostics.append(result.diagnostic("warning", key, issue.message + hint))
            check.binding.append(issue.to_dict())
        unchecked = [s.rank for s in specs if s.cores and s.device not in affinity]
        if unchecked:
            check.notes.append(f"ranks {', '.join(map(str, unchecked))}: their NPUs have no CPU affinity in the topology; not checked")
    return check


def _exit_status(diagnostics: list[Diagnostic]) -> int:
    if any(d.severity == "error" for d in diagnostics):
        return 2
    return 1 if diagnostics else 0


def _summary(path: str, result: LoadResult, diagnostics: list[Diagnostic]) -> str:
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    counts = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    if result.profile is None:
        return f"{path}: {counts}; nothing can be launched until the errors are fixed"
    profile = result.profile
    machines = len(profile.machines)
    shape = f"{profile.nnodes} rank{'s' * (profile.nnodes != 1)} on {machines} machine{'s' * (machines != 1)}"
    return f"{path}: profile '{profile.name}' ({shape}): {counts}"


def _sort_key(diagnostic: Diagnostic) -> tuple[str, int, int]:
    return (diagnostic.file, diagnostic.line or 0, diagnostic.column or 0)


def run(args: argparse.Namespace) -> int:
    reports: dict = {}  # one reading of the devices serves every profile given
    checked = []
    notes_by_path: dict[str, list[str]] = {}  # the binary check's notes
    for path in args.profiles:
        result = load_profile(path, simulate=args.simulate)
        devices = None
        if result.profile is not None and not getattr(args, "no_devices", False):
            devices = check_devices(result, simulate=args.simulate, npu_smi=getattr(args, "npu_smi", None),
                                    nvidia_smi=getattr(args, "nvidia_smi", None), reports=reports)
        binary_diagnostics, binary_notes = [], []
        if result.profile is not None:
            binary_diagnostics, binary_notes = check_binary_and_models(result, simulate=args.simulate)
        diagnostics = sorted(result.diagnostics + (devices.diagnostics if devices else []) + binary_diagnostics,
                             key=_sort_key)
        notes_by_path[path] = binary_notes
        checked.append((path, result, devices, diagnostics))
    remote = {path: check_remote_machines(result, args.simulate) if getattr(args, "remote", False) else []
              for path, result, *_ in checked}
    status = max([_exit_status(diagnostics) for *_, diagnostics in checked]
                 + [_remote_status(machines) for machines in remote.values()])
    if args.json:
        document = {
            "ok": status < 2,
            "exit": status,
            "simulate": bool(args.simulate),
            "results": [
                {
                    "file": path,
                    "ok": result.ok and not any(d.severity == "error" for d in diagnostics),
                    "errors": sum(d.severity == "error" for d in diagnostics),
                    "warnings": sum(d.severity == "warning" for d in diagnostics),
                    "profile": profile_summary(result.profile) if result.profile else None,
                    "diagnostics": [d.to_dict() for d in diagnostics],
                    "devices": devices.to_dict() if devices else None,
                    "machines": remote[path],
                    "notes": notes_by_path.get(path, []),
                }
                for path, result, devices, diagnostics in checked
            ],
        }
        print(json.dumps(document, indent=2))
        return status
    for path, result, devices, diagnostics in checked:
        for diagnostic in diagnostics:
            print(diagnostic)
        for note in notes_by_path.get(path, []):
            print(f"{path}: note: {note}")
        if devices is not None:
            if devices.topology_cores:
                cores = ", ".join(f"rank {rank}: {c}" for rank, c in devices.topology_cores.items())
                print(f"{path}: info: cores from topology ({devices.machines[0] if devices.machines else '?'}): {cores}")
            for note in devices.notes:
                print(f"{path}: note: {note}")
            if devices.binding_checked and not devices.binding:
                hosts = ", ".join(devices.machines)
                print(f"{path}: info: binding ok on {hosts}: every rank's cores are within its NPU's CPU affinity ({devices.tool})")
        for machine in remote[path]:
            for line in _remote_lines(machine):
                print(f"{path}: {line}")
        print(_summary(path, result, diagnostics))
    return status


def check_remote_machines(result: LoadResult, simulate: bool) -> list[dict]:
    """Every machine after the first, over ssh, in parallel (each bounded by the ssh timeouts)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from xllm_tui.supervisor.remote import check_machine

    profile = result.profile
    if profile is None or len(profile.machines) < 2:
        return []
    indexes = range(1, len(profile.machines))
    with ThreadPoolExecutor(max_workers=min(8, len(indexes))) as pool:
        return list(pool.map(lambda i: check_machine(profile, i, simulate=simulate, env=dict(os.environ)), indexes))


def _remote_status(machines: list[dict]) -> int:
    status = 0
    for m in machines:
        if m["error"] or any(d["severity"] == "error" for d in m["diagnostics"]):
            return 2
        if m["diagnostics"]:
            status = 1
    return status


def _remote_lines(m: dict) -> list[str]:
    if m["error"]:
        what = "cannot be checked" if m["reachable"] else "cannot be reached over ssh"
        return [f"error: machine {m['machine']}: {what}: {m['error']} ({m['ssh']})"]
    lines = [f"info: machine {m['machine']}: reachable over ssh, xllm-tui {m['version']} there"]
    lines += [f"machine {m['machine']}: {d['text']}" for d in m["diagnostics"]]  # the text says its severity
    lines += [f"note: machine {m['machine']}: {note}" for note in m.get("notes", [])]
    return lines
