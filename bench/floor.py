#!/usr/bin/env python3
"""The floor of the benchmark: ranks started by a bare posix_spawn loop, writing straight to their log files,
with nothing supervising them.

    floor.py RANKS.json [--restart]

RANKS.json: [{"argv": [...], "env": {...}, "log": "/path/node_0.log"}, ...]. Each rank is posix_spawn'ed in
its own session with stdout and stderr on its log file (O_APPEND). Then the loop only waits: with --restart
it posix_spawns a rank again the moment os.wait() returns its death (the least a restart can cost); without,
it exits once every rank has exited. It reads no output and keeps no state, so its own cost is the floor.
"""

import json
import os
import sys


def spawn(rank: dict) -> int:
    actions = [
        (os.POSIX_SPAWN_OPEN, 1, rank["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
    ]
    return os.posix_spawn(rank["argv"][0], rank["argv"], rank["env"], file_actions=actions, setsid=True)


def main() -> int:
    with open(sys.argv[1]) as f:
        ranks = json.load(f)
    restart = "--restart" in sys.argv[2:]
    pids = {spawn(rank): i for i, rank in enumerate(ranks)}
    while pids:
        pid, _status = os.wait()
        index = pids.pop(pid, None)
        if restart and index is not None:
            pids[spawn(ranks[index])] = index
    return 0


if __name__ == "__main__":
    sys.exit(main())
