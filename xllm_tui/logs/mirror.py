"""A local copy of the part of a log on another machine that a viewer is looking at, kept current from
`log_read` replies (docs/protocol.md): the TUI's log view then reads a local file as for any rank. Only the
rank on screen is copied, from its last lines on; nothing else of another machine is ever mirrored."""

from __future__ import annotations

import hashlib
import os


def mirror_path(run_dir: str, rank: int) -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:12]
    return os.path.join(base, "xllm-tui", "remote-logs", key, f"node_{rank}.log")


class LogMirror:
    """next: the remote offset to read from, None before the first reply (then ask for the last lines)."""

    def __init__(self, path: str):
        self.path = path
        self.next: int | None = None
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "wb"):
            pass  # a fresh copy: the remote offsets of an old one are unknown

    def apply(self, part: dict) -> bool:
        """Write one log_read reply; True when the copy changed. A remote file that shrank (truncated, or
        rotated by a relaunch) restarts the copy from its last lines."""
        if part.get("missing"):
            return False
        size = part.get("size") or 0
        if self.next is not None and size < self.next:
            with open(self.path, "wb"):
                pass
            self.next = None
            return True
        data = part.get("data") or ""
        if self.next is None or part.get("offset") == self.next:
            if data:
                with open(self.path, "ab") as f:
                    f.write(data.encode())
            self.next = part.get("next", self.next)
            return bool(data)
        return False
