"""A small glog look-alike for the simulated xllm rank.

Lines look like glog 0.6+ writes them: `I20251129 15:20:01.123456 12345 llm_engine.cpp:210] message`
(severity letter, date with year, time with microseconds, thread id padded to 5, file:line). Every line
is flushed as it is written, so a supervisor tailing the rank's log sees it at once. xllm sets
alsologtostderr, so everything goes to stderr; with --log_dir a glog-style INFO file is written too.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import threading
import time

SEVERITIES = "IWEF"  # INFO, WARNING, ERROR, FATAL = glog levels 0..3


class GlogWriter:
    def __init__(self, program: str = "xllm", minloglevel: int = 0, log_dir: str = "", to_files: bool = True,
                 stream=None):
        self.program = program
        self.minloglevel = minloglevel
        self.stream = stream if stream is not None else sys.stderr
        self.muted = False  # a hung rank writes nothing more
        self._lock = threading.RLock()  # re-entrant: signal handlers log too
        self._file = None
        if log_dir and to_files:
            self._file = self._open_log_file(log_dir)

    def _open_log_file(self, log_dir: str):
        """glog's INFO file: <program>.<host>.<user>.log.INFO.<yyyymmdd-hhmmss>.<pid>, plus a symlink."""
        now = time.localtime()
        try:
            user = getpass.getuser()
        except Exception:  # no passwd entry in some containers
            user = "invalid-user"
        name = (f"{self.program}.{socket.gethostname()}.{user}.log.INFO."
                f"{time.strftime('%Y%m%d-%H%M%S', now)}.{os.getpid()}")
        path = os.path.join(log_dir, name)
        try:
            handle = open(path, "a", encoding="utf-8", buffering=1)
        except OSError as exc:
            # glog itself silently falls back to stderr only; say why once.
            self.stream.write(f"Could not create logging file: {exc}\n")
            self.stream.flush()
            return None
        handle.write(f"Log file created at: {time.strftime('%Y/%m/%d %H:%M:%S', now)}\n"
                     f"Running on machine: {socket.gethostname()}\n"
                     "Running duration (h:mm:ss): 0:00:00\n"
                     "Log line format: [IWEF]yyyymmdd hh:mm:ss.uuuuuu threadid file:line] msg\n")
        link = os.path.join(log_dir, f"{self.program}.INFO")
        try:
            if os.path.islink(link):
                os.unlink(link)
            os.symlink(name, link)
        except OSError:
            pass
        return handle

    def format(self, severity: str, where: str, message: str, when: float | None = None) -> str:
        when = time.time() if when is None else when
        stamp = time.strftime("%Y%m%d %H:%M:%S", time.localtime(when))
        micros = int((when % 1) * 1_000_000)
        return f"{severity}{stamp}.{micros:06d} {threading.get_native_id():5d} {where}] {message}\n"

    def log(self, severity: str, where: str, message: str) -> None:
        if self.muted or SEVERITIES.index(severity) < self.minloglevel and severity != "F":
            return
        line = self.format(severity, where, message)
        with self._lock:
            self._write(line)

    def raw(self, text: str) -> None:
        """Text without a glog prefix (stack trace lines, gflags' own messages)."""
        if self.muted:
            return
        with self._lock:
            self._write(text if text.endswith("\n") else text + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed: a real rank keeps running too
        if self._file is not None:
            try:
                self._file.write(text)
            except (OSError, ValueError):
                pass

    def info(self, where: str, message: str) -> None:
        self.log("I", where, message)

    def warning(self, where: str, message: str) -> None:
        self.log("W", where, message)

    def error(self, where: str, message: str) -> None:
        self.log("E", where, message)
