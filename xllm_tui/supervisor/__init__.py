"""The supervisor daemon (see docs/supervisor.md and docs/protocol.md). No Textual here."""

from __future__ import annotations

import asyncio
import logging
import sys

from xllm_tui.protocol import PROTOCOL, RequestError
from xllm_tui.supervisor.daemon import Supervisor
from xllm_tui.supervisor.planner import ProfileInvalid
from xllm_tui.supervisor.state import RunDirLocked

__all__ = ["PROTOCOL", "ProfileInvalid", "RequestError", "RunDirLocked", "Supervisor", "serve"]


def serve(profile_path: str, *, simulate: bool, run_dir: str, port_offset: int = 0, machine: str | None = None,
          launch: bool = True, over_ssh: bool = False, member: bool = False) -> int:
    """Run a supervisor in this process until it is shut down. Raises RunDirLocked, ProfileInvalid."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supervisor = Supervisor(profile_path, simulate=simulate, run_dir=run_dir, port_offset=port_offset,
                            machine=machine, launch=launch, over_ssh=over_ssh, member=member)
    return asyncio.run(supervisor.run())
