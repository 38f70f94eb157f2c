"""`xllm-tui supervise PROFILE ...`: the supervisor daemon itself, in the foreground of this process.

`xllm-tui up` starts it detached (own session, output to <run_dir>/supervisor.log); systemd units run
`xllm-tui up PROFILE --foreground`, which ends up here. Exit status: 0 after a clean shutdown, 2 for a
bad profile, 4 when another supervisor already holds the run directory.
"""

from __future__ import annotations

import argparse
import os
import sys

# The supervisor never speaks TLS, but asyncio and http.client load the ssl module (and libcrypto: about 4 MiB
# resident for the life of the process) whenever it exists. Marked absent, they run without it.
sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
# The same for hashlib's OpenSSL backend (its argv and environment fingerprints are sha256): without it,
# hashlib uses CPython's own implementations, the same digests, and libcrypto (3.3 MiB resident) stays unloaded.
sys.modules.setdefault("_hashlib", None)  # type: ignore[arg-type]

from xllm_tui.commands.lifecycle import add_run_dir_arguments, resolve_target  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("profile", metavar="PROFILE", help="profile YAML file")
    add_run_dir_arguments(parser)
    parser.add_argument("--port-offset", type=int, default=0, help="under --simulate: shift every port by N")
    parser.add_argument("--machine", help="the machine (host or name) whose ranks this supervisor runs")
    parser.add_argument("--no-launch", action="store_true", help="start without launching the ranks")
    parser.add_argument("--over-ssh", action="store_true",
                        help="under --simulate: machine 0's ranks here, the other machines reached over ssh")
    parser.add_argument("--member", action="store_true", help=argparse.SUPPRESS)  # started by remote-attach


def _lean_malloc() -> None:
    """glibc's defaults suit a busy server, not a long-lived daemon that allocates big short-lived buffers (log
    replies, snapshots; log slices now go to reused buffers): its dynamic mmap threshold rises after the first
    free of such a buffer, so later ones come from the heap and stay resident; and every thread that allocates
    gets its own arena. A fixed threshold hands each back to the kernel when freed; two arenas are plenty for the
    event loop and its worker threads."""
    from xllm_tui.libc import libc as c_library

    m_mmap_threshold, m_arena_max = -3, -8  # <malloc.h>
    try:
        libc = c_library()
        libc.mallopt(m_mmap_threshold, 256 * 1024)
        libc.mallopt(m_arena_max, 2)
    except (OSError, AttributeError):  # not glibc: its own defaults
        pass


def run(args: argparse.Namespace) -> int:
    from xllm_tui.supervisor import ProfileInvalid, RunDirLocked, serve

    _lean_malloc()

    if args.run_dir:  # as `up` starts it: the Supervisor is the one to read the profile, once
        run_dir = os.path.abspath(args.run_dir)
    else:
        target = resolve_target(args)
        if target is None:
            return 2
        run_dir = target.run_dir
    try:
        return serve(args.profile, simulate=args.simulate, run_dir=run_dir, port_offset=args.port_offset,
                     machine=args.machine, launch=not args.no_launch, over_ssh=args.over_ssh, member=args.member)
    except RunDirLocked as e:
        print(f"xllm-tui supervise: {e}", file=sys.stderr)
        return 4
    except ProfileInvalid as e:  # with --run-dir the profile is first read here
        for line in e.diagnostics:
            print(line, file=sys.stderr)
        return 2
