"""`xllm-tui validate PROFILE... [--simulate] [--json]`: lint profiles like a compiler would.

Exit status: 0 clean, 1 warnings only, 2 any error (as linters do).
"""

from __future__ import annotations

import argparse
import json

from xllm_tui.profile import LoadResult, load_profile, profile_summary


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("profiles", nargs="+", metavar="PROFILE", help="profile YAML file(s)")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="check for a simulated run: a missing binary, model or sourced script is only a warning",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _exit_status(result: LoadResult) -> int:
    if result.errors:
        return 2
    return 1 if result.warnings else 0


def _summary(path: str, result: LoadResult) -> str:
    errors, warnings = len(result.errors), len(result.warnings)
    counts = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    if result.profile is None:
        return f"{path}: {counts}; nothing can be launched until the errors are fixed"
    profile = result.profile
    machines = len(profile.machines)
    shape = f"{profile.nnodes} rank{'s' * (profile.nnodes != 1)} on {machines} machine{'s' * (machines != 1)}"
    return f"{path}: profile '{profile.name}' ({shape}): {counts}"


def run(args: argparse.Namespace) -> int:
    results = [(path, load_profile(path, simulate=args.simulate)) for path in args.profiles]
    status = max(_exit_status(result) for _, result in results)
    if args.json:
        document = {
            "ok": status < 2,
            "exit": status,
            "simulate": bool(args.simulate),
            "results": [
                {
                    "file": path,
                    "ok": result.ok,
                    "errors": len(result.errors),
                    "warnings": len(result.warnings),
                    "profile": profile_summary(result.profile) if result.profile else None,
                    "diagnostics": [d.to_dict() for d in result.diagnostics],
                }
                for path, result in results
            ],
        }
        print(json.dumps(document, indent=2))
        return status
    for path, result in results:
        for diagnostic in result.diagnostics:
            print(diagnostic)
        print(_summary(path, result))
    return status
