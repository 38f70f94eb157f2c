"""`xllm-tui script PROFILE [--machine HOST] [--simulate] [--npu-smi PATH]`: the equivalent bash launch script.

A profile with `cores: topology` takes its cores from the CPU affinity npu-smi reports here (the simulated
npu-smi under --simulate); without it the command fails and says how to fix that.
"""

from __future__ import annotations

import argparse
import os
import sys

from xllm_tui.spec import Profile


def load_or_report(path: str, command: str) -> Profile | None:
    """The validated profile, or None after printing its diagnostics (errors stop; warnings go to stderr).

    Rendering launches nothing, so paths that exist only on the deployment machines (binary, model) are
    checked as under --simulate: a warning, not an error. This lets anyone print a script or rank table.
    """
    from xllm_tui.profile import load_profile

    try:
        result = load_profile(path, simulate=True)
    except OSError as error:  # normally reported as a diagnostic; this is the last line of defence
        print(f"xllm-tui {command}: cannot read {path}: {error.strerror or error}", file=sys.stderr)
        return None
    diagnostics = getattr(result, "diagnostics", None)
    if diagnostics is None:
        diagnostics = [*result.errors, *result.warnings]
    for diagnostic in diagnostics:
        print(str(diagnostic), file=sys.stderr)
    if result.errors or result.profile is None:
        print(f"xllm-tui {command}: {path} has errors; nothing was rendered", file=sys.stderr)
        return None
    return result.profile


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("profile", metavar="PROFILE", help="the launch profile (YAML)")
    parser.add_argument("--machine", metavar="HOST",
                        help="only this machine's ranks (its host address or name); default: every machine")
    parser.add_argument("--simulate", action="store_true",
                        help="the script for a simulated run on this machine (simulator binary, loopback addresses, local cores)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the script to FILE (made executable) instead of stdout")
    parser.add_argument("--npu-smi", metavar="PATH", help="npu-smi for `cores: topology` (default: the profile's devices: key, then PATH)")
    parser.add_argument("--nvidia-smi", metavar="PATH", help="nvidia-smi for `cores: topology` instead")


def topology_for_script(profile: Profile, machine: str | None, simulate: bool, npu_smi: str | None,
                        nvidia_smi: str | None) -> tuple[dict[int, str] | None, list[str]]:
    """(device -> cores, notes for the script header) when the profile takes cores from the topology.
    Raises LaunchError when the devices here cannot give them."""
    from xllm_tui.launch import device_tools, needs_topology, read_profile_devices, topology_cores_from_devices

    if not needs_topology(profile, machine):
        return None, []
    tools = device_tools(profile, simulate=simulate, npu_smi=npu_smi, nvidia_smi=nvidia_smi)
    report = read_profile_devices(profile, tools=tools)
    cores = topology_cores_from_devices(profile, report, machine)
    import socket

    where = "the simulated npu-smi" if simulate else f"{tools.describe()} on {socket.gethostname()}"
    note = (f"cores: topology: each rank's cores come from the NPU CPU affinity that {where} reports "
            f"({profile.core_rule.count} per NPU); the same on every machine of the script")
    return cores, [note]


def run(args: argparse.Namespace) -> int:
    from xllm_tui.launch import LaunchError, build_simulate_mapping, render_script

    profile = load_or_report(args.profile, "script")
    if profile is None:
        return 2
    try:
        topology, notes = topology_for_script(profile, args.machine, args.simulate, getattr(args, "npu_smi", None),
                                              getattr(args, "nvidia_smi", None))
        mapping = build_simulate_mapping(profile, topology_cores=topology) if args.simulate else None
        text = render_script(profile, args.machine, simulate=mapping, topology_cores=topology, notes=notes)
    except LaunchError as error:
        print(f"xllm-tui script: {error}", file=sys.stderr)
        return 2
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(args.output, 0o755)
        except OSError as error:
            print(f"xllm-tui script: cannot write {args.output}: {error.strerror or error}", file=sys.stderr)
            return 2
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
