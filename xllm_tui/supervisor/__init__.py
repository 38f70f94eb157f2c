"""The supervisor daemon (see docs/supervisor.md and docs/protocol.md). No Textual here.

The names below are loaded on first use: a client that only needs supervisor.state (every CLI command, the
TUI) does not pay for importing the whole daemon (about 0.1 s), which `up` would otherwise pay before the
supervisor even starts."""

from __future__ import annotations

import importlib
import sys

__all__ = ["PROTOCOL", "ProfileInvalid", "RequestError", "RunDirLocked", "Supervisor", "serve"]

_LAZY = {
    "PROTOCOL": "xllm_tui.protocol",
    "RequestError": "xllm_tui.protocol",
    "Supervisor": "xllm_tui.supervisor.daemon",
    "ProfileInvalid": "xllm_tui.supervisor.planner",
    "RunDirLocked": "xllm_tui.supervisor.state",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serve(profile_path: str, *, simulate: bool, run_dir: str, port_offset: int = 0, machine: str | None = None,
          launch: bool = True, over_ssh: bool = False, member: bool = False) -> int:
    """Run a supervisor in this process until it is shut down. Raises RunDirLocked, ProfileInvalid."""
    import asyncio
    import logging

    from xllm_tui.supervisor.daemon import Supervisor

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supervisor = Supervisor(profile_path, simulate=simulate, run_dir=run_dir, port_offset=port_offset,
                            machine=machine, launch=launch, over_ssh=over_ssh, member=member)
    return asyncio.run(supervisor.run())
