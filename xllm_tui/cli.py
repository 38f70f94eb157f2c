"""Entry point `xllm-tui`: the TUI for a profile path, headless subcommands otherwise."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under xllm_tui.commands, one-line help). Imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("validate", "check a profile: errors and warnings, exit 0 ok / 1 warnings / 2 errors"),
    "script": ("script", "print the equivalent bash launch script"),
    "ranktable": ("ranktable", "print the HCCL rank table JSON of a multi-machine profile"),
    "up": ("lifecycle", "start the supervisor for a profile (detached) and launch its ranks"),
    "down": ("lifecycle", "stop every rank and the supervisor"),
    "status": ("lifecycle", "show the state of every rank"),
    "start": ("lifecycle", "start ranks"),
    "stop": ("lifecycle", "stop ranks"),
    "restart": ("lifecycle", "restart ranks"),
    "toggle": ("lifecycle", "switch an environment group on or off for the next launch"),
    "logs": ("lifecycle", "print a rank's log"),
    "events": ("lifecycle", "print the supervisor's event journal"),
    "devices": ("devices", "show NPUs (or GPUs): health, memory, processes, topology"),
    "examples": ("examples", "list the example profiles shipped with xllm-tui, or copy one: examples NAME PATH"),
    "completion": ("completion", "print a bash or zsh completion script"),
    "systemd": ("systemd", "print or install a systemd unit that runs the supervisor at boot (reboot survival)"),
    "init": ("init", "write a starter profile for this machine (its NPUs, address, free ports), then validate it"),
    "supervise": ("supervise", argparse.SUPPRESS),  # the daemon itself, started by `up`
    "remote-attach": ("remote_attach", argparse.SUPPRESS),  # machine 0's ssh connection lands here
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xllm-tui",
        description="Launch, supervise and watch the ranks of an xllm deployment. "
        "`xllm-tui PROFILE` opens the TUI; the subcommands below work without a screen.",
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version")  # handled in main()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    loaded: dict[str, object] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=None if help_text == argparse.SUPPRESS else help_text)
        p.set_defaults(_module=module_name)
        if module_name not in loaded:
            loaded[module_name] = importlib.import_module(f"xllm_tui.commands.{module_name}")
        getattr(loaded[module_name], "add_arguments")(p, name)
    return parser


def _command_parser(name: str) -> argparse.ArgumentParser:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(f"xllm_tui.commands.{module_name}")
    p = argparse.ArgumentParser(prog=f"xllm-tui {name}", description=help_text if help_text != argparse.SUPPRESS else None)
    module.add_arguments(p, name)
    p.set_defaults(_module=module_name, command=name)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xllm-tui")
    except PackageNotFoundError:  # run from a checkout without installing
        from xllm_tui import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        name = argv[0]
        args = _command_parser(name).parse_args(argv[1:])
        module = importlib.import_module(f"xllm_tui.commands.{args._module}")
        try:
            return int(module.run(args) or 0)
        except KeyboardInterrupt:
            return 130
    if argv and argv[0] in ("-V", "--version"):
        print(f"xllm-tui {_version()}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        _build_parser().print_help()
        return 0 if argv else 2
    # Anything else is the TUI: xllm-tui PROFILE [--simulate] [--theme NAME]
    from xllm_tui.commands import tui

    p = argparse.ArgumentParser(prog="xllm-tui", description="Open the TUI for a profile.")
    tui.add_arguments(p, "tui")
    return int(tui.run(p.parse_args(argv)) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
