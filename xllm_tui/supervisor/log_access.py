"""A rank's log over the socket (`log_read`): what a client on another machine cannot open itself. Machine 0
forwards it for a rank on another machine (machines.py), so `xllm-tui logs` works on every rank of the world.
Fetched on demand, never mirrored; each reply says how many earlier generations the rank has, so a viewer
can offer them (the TUI's `[` on a remote rank). A mixin of Supervisor."""

from __future__ import annotations

import asyncio
import os

from xllm_tui.protocol import RequestError


def read_log_file(path: str, *, offset: int | None, lines: int | None, max_bytes: int) -> dict:
    """{"path", "size", "inode", "offset" (where the data starts), "next" (where to read on), "data"}: bytes
    from `offset`, or the last `lines` lines; at most max_bytes, decoded with replacement. The inode tells a
    reader that the name now means another file (a relaunch rotated the logs). The data is the file's bytes as
    they are (a last line still being written stays unfinished), so a reader going on from "next" joins it up."""
    try:
        st = os.stat(path)
    except OSError:
        return {"path": path, "size": None, "offset": 0, "next": 0, "data": "", "missing": True}
    size = st.st_size
    start = min(offset or 0, size)  # a truncated or rotated file: read from its end
    if lines is not None:
        start = max(0, size - max_bytes)
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(max_bytes)
    first = 0
    if lines is not None:
        first = _start_of_last_lines(raw, lines)
    return {"path": path, "size": size, "inode": st.st_ino, "offset": start + first, "next": start + len(raw),
            "data": raw[first:].decode(errors="replace")}


def _start_of_last_lines(raw: bytes, lines: int) -> int:
    """Where the last `lines` lines of raw begin (an unfinished last line counts as one); 0 if it has fewer."""
    if lines <= 0:
        return len(raw)
    cut = len(raw) - 1 if raw.endswith(b"\n") else len(raw)
    for _ in range(lines):
        cut = raw.rfind(b"\n", 0, cut)
        if cut == -1:
            return 0
    return cut + 1


class LogAccess:
    async def read_log(self, rank: int, *, generation: int, offset: int | None, lines: int | None,
                       max_bytes: int) -> dict:
        from xllm_tui.logs.tail import deleted_log_source, log_generations

        r = self.ranks.get(rank)
        if r is None:
            raise RequestError("unknown_rank", f"no rank {rank} here")
        log_path = r.plan.log_path
        pid = r.proc.pid if r.alive else None

        def read() -> dict:  # the listing and the read in one trip to a worker thread (a follower asks twice a second)
            earlier = log_generations(log_path)
            path = log_path if generation else deleted_log_source(log_path, pid) or log_path
            if generation:
                if generation > len(earlier):
                    raise RequestError("bad_request", f"rank {rank} has {len(earlier)} earlier log generation(s); "
                                       f"generation {generation} does not exist")
                path = earlier[generation - 1]
            result = read_log_file(path, offset=offset, lines=lines, max_bytes=max_bytes)
            return {"rank": rank, "generation": generation, "generations": len(earlier), **result}

        return await asyncio.to_thread(read)
