"""`xllm-tui systemd PROFILE [--install] [--user]`: print (or install and enable) a systemd unit that runs
the supervisor for PROFILE in the foreground, so that a rebooted machine comes back serving.
`xllm-tui up` stays the way to start it by hand (the unit refuses to start while such a supervisor runs)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

SYSTEM_UNIT_DIR = "/etc/systemd/system"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    from xllm_tui.commands.lifecycle import add_run_dir_arguments

    parser.add_argument("profile", metavar="PROFILE", help="profile YAML file")
    add_run_dir_arguments(parser)
    parser.add_argument("--machine", metavar="HOST",
                        help="the machine whose ranks the unit runs (a multi-machine profile; default: this host)")
    parser.add_argument("--install", action="store_true",
                        help="write the unit file, then systemctl daemon-reload and enable it (start: --now)")
    parser.add_argument("--now", action="store_true", help="with --install: start it too")
    parser.add_argument("--user", action="store_true",
                        help="a user unit (~/.config/systemd/user; `loginctl enable-linger` to run without a login)")
    parser.add_argument("--unit-dir", metavar="DIR", help="with --install: write the unit into DIR; no systemctl")


def _user_unit_dir() -> str:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(config, "systemd", "user")


def run(args: argparse.Namespace) -> int:
    from xllm_tui.commands.lifecycle import resolve_target
    from xllm_tui.systemd_unit import unit_name, unit_text

    target = resolve_target(args, need_profile=True)
    if target is None or target.profile is None:
        return 2
    profile = target.profile
    text = unit_text(profile, command=[sys.executable, "-m", "xllm_tui"], run_dir=target.run_dir,
                     simulate=args.simulate, user=args.user, path_env=os.environ.get("PATH"), machine=args.machine)
    name = unit_name(profile, args.simulate)
    if not args.install:
        sys.stdout.write(text)
        return 0
    directory = args.unit_dir or (_user_unit_dir() if args.user else SYSTEM_UNIT_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)
    print(f"wrote {path}")
    scope = ["--user"] if args.user else []
    commands = [["systemctl", *scope, "daemon-reload"], ["systemctl", *scope, "enable", *(["--now"] if args.now else []), name]]
    if args.unit_dir or shutil.which("systemctl") is None:
        print("now run:" if args.unit_dir else "systemctl not found; on the machine run:")
        for argv in commands:
            print("  " + " ".join(argv))
        return 0
    for argv in commands:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            print(f"xllm-tui systemd: `{' '.join(argv)}` failed (exit {done.returncode})", file=sys.stderr)
            return 1
    print(f"enabled {name}: it starts at boot" + (" and runs now" if args.now else
                                                     f"; start it now with systemctl {' '.join(scope)} start {name}"))
    return 0
