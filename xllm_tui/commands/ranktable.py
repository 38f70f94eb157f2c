"""`xllm-tui ranktable PROFILE [-o FILE]`: the HCCL rank table JSON of a profile (--rank_tablefile)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("profile", metavar="PROFILE",
                        help="the launch profile (YAML); every machine needs device_ips (one machine is allowed too)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the table to FILE (e.g. the profile's rank_tablefile) instead of stdout")


def run(args: argparse.Namespace) -> int:
    from xllm_tui.commands.script import load_or_report
    from xllm_tui.launch import LaunchError, ranktable_json

    profile = load_or_report(args.profile, "ranktable")
    if profile is None:
        return 2
    try:
        text = ranktable_json(profile)
    except LaunchError as error:
        print(f"xllm-tui ranktable: {error}", file=sys.stderr)
        return 2
    if not args.output:
        sys.stdout.write(text)
        return 0
    target = os.path.abspath(args.output)
    temporary = None
    try:
        # Write beside the target and rename: ranks starting meanwhile never read half a table.
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".ranktable-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as error:
        if temporary and os.path.exists(temporary):
            os.unlink(temporary)
        print(f"xllm-tui ranktable: cannot write {args.output}: {error.strerror or error}", file=sys.stderr)
        return 2
    devices = sum(len(m.devices) for m in profile.machines)
    print(f"wrote {args.output}: {len(profile.machines)} server(s), {devices} devices", file=sys.stderr)
    return 0
