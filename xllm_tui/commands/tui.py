"""`xllm-tui PROFILE [--simulate] [--theme NAME] [--run-dir DIR] [--bell]`: the TUI.

Loads the profile (errors: diagnostics on stderr, exit 2), attaches to the profile's supervisor or starts
one detached (a new supervisor launches the ranks, as `up` does), and runs the app. Quitting the app leaves the
supervisor and the ranks running.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("profile", metavar="PROFILE", help="the deployment's profile (YAML)")
    parser.add_argument("--simulate", action="store_true", help="simulated ranks and npu-smi, on loopback only")
    parser.add_argument("--theme", metavar="NAME", help="colour theme (xllm-dark, xllm-light, xllm-high-contrast, "
                        "a Textual theme, or one of your files in ~/.config/xllm-tui/themes/)")
    parser.add_argument("--run-dir", metavar="DIR", help="the supervisor's run directory (default: from the profile)")
    parser.add_argument("--over-ssh", action="store_true",
                        help="with --simulate: machine 0's ranks here, every other machine reached over ssh "
                        "(docs/two-machines.md)")
    parser.add_argument("--bell", action="store_true", help="ring the terminal bell when a rank fails")
    parser.add_argument("--port-offset", type=int, default=0, metavar="N",
                        help="under --simulate, when starting a supervisor: shift every port by N "
                        "(two simulated deployments on one machine)")


def _theme_names() -> list[str]:
    from textual.theme import BUILTIN_THEMES

    from xllm_tui.ui.themes import load_themes

    return sorted({t.name for t in load_themes().themes} | set(BUILTIN_THEMES))


def run(args: argparse.Namespace) -> int:
    from xllm_tui import client
    from xllm_tui.profile import load_profile

    path = args.profile
    if not os.path.isfile(path):
        print(f"xllm-tui: no profile file {path!r} (give the path of a profile YAML, e.g. profiles/a3-8card.yaml)",
              file=sys.stderr)
        return 2
    if args.port_offset and not args.simulate:
        print("xllm-tui: --port-offset only applies with --simulate (real ranks use the profile's ports)",
              file=sys.stderr)
        return 2
    if args.theme:
        names = _theme_names()
        if args.theme not in names:
            print(f"xllm-tui: unknown theme {args.theme!r}; available: {', '.join(names)}", file=sys.stderr)
            return 2
    result = load_profile(path, simulate=args.simulate)
    for diagnostic in result.diagnostics:
        print(str(diagnostic), file=sys.stderr)
    if result.errors or result.profile is None:
        print(f"xllm-tui: {path} has {len(result.errors)} error(s); fix them (`xllm-tui validate {path}`) and retry",
              file=sys.stderr)
        return 2
    run_dir = os.path.abspath(args.run_dir) if args.run_dir else client.run_dir_for(result.profile, args.simulate)
    started_supervisor = client.supervisor_answers(run_dir) is None
    if started_supervisor:
        print(f"starting the supervisor for {result.profile.name} in {run_dir} ...", file=sys.stderr, flush=True)
    try:
        client.ensure_supervisor(path, simulate=args.simulate, run_dir=run_dir,
                                 port_offset=args.port_offset if args.simulate else 0,
                                 over_ssh=bool(args.simulate and getattr(args, "over_ssh", False)))
    except client.SupervisorUnavailable as error:
        print(f"xllm-tui: {error}", file=sys.stderr)
        return 1

    from xllm_tui.ui.app import XllmApp
    from xllm_tui.ui.source import SupervisorSource

    source = SupervisorSource(run_dir, profile_path=path, simulate=args.simulate,
                              port_offset=args.port_offset if args.simulate else 0)
    app = XllmApp(source, theme=args.theme, bell=args.bell, profile_path=path, simulate=args.simulate,
                  port_offset=args.port_offset)
    app.run()
    status = exit_status(app)
    if status:
        # Textual has printed the traceback (if any); App.run() itself returns normally after a crash.
        print(f"xllm-tui: the TUI stopped on an error (exit status {status}); the supervisor and the ranks keep "
              f"running, run the same command to attach again.", file=sys.stderr)
        return status
    print(f"xllm-tui: the supervisor and the ranks keep running; `xllm-tui down {path}"
          f"{' --simulate' if args.simulate else ''}` stops them.", file=sys.stderr)
    return 0


def exit_status(app) -> int:
    """The process exit status for a finished Textual app: non-zero if it ended on an unhandled error.

    Textual (8.2.8) catches an exception raised in a handler or render, prints it after restoring the
    terminal and sets `return_code` to 1, but `App.run()` returns normally: without this check a crashed
    TUI exited 0.
    """
    code = app.return_code
    if code:
        return int(code)
    return 1 if getattr(app, "_exception", None) is not None else 0

