"""How a client starts the supervisor: in its own session, output in the run dir's log, no descriptor of the
caller's held open, and never left a zombie of a long-lived caller (the TUI)."""

from __future__ import annotations

import json
import os
import sys

from conftest import wait_until
from xllm_tui.client import pid_alive, start_detached
from xllm_tui.supervisor.state import LOG_NAME

PROBE = ("import json, os; print(json.dumps({'pid': os.getpid(), 'sid': os.getsid(0), "
         "'fds': sorted(int(f) for f in os.listdir('/proc/self/fd')), 'stdin': os.readlink('/proc/self/fd/0')}), flush=True)")


def test_the_supervisor_gets_its_own_session_and_none_of_the_callers_descriptors(tmp_path):
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # as a pipe a caller of ours waits on for EOF could be
    try:
        pid = start_detached([sys.executable, "-c", PROBE], str(tmp_path))
        log = tmp_path / LOG_NAME
        seen = json.loads(wait_until(lambda: log.exists() and log.read_text().strip(), 10, what="the probe's line"))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert seen["pid"] == pid and seen["sid"] == pid  # a session leader: no tie to our terminal
    assert write_end not in seen["fds"] and seen["stdin"] == "/dev/null"
    assert set(seen["fds"]) <= {0, 1, 2, 3}  # 3: the descriptor of its own /proc/self/fd listing
    # Exited: reaped by the caller (the TUI lives on), not left a zombie.
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, what="the exited supervisor reaped")
    assert not pid_alive(pid)


def test_the_supervisor_starts_with_default_signals(tmp_path):
    """Python ignores SIGPIPE in itself; a child must not inherit that (nor a blocked signal)."""
    pid = start_detached(["/bin/sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/$$/status"], str(tmp_path))
    log = tmp_path / LOG_NAME
    text = wait_until(lambda: log.exists() and log.read_text().count("\n") >= 2 and log.read_text(), 10, what="masks")
    masks = {line.split(":")[0]: int(line.split()[1], 16) for line in text.splitlines()}
    assert not masks["SigIgn"] & (1 << (13 - 1)) and masks["SigBlk"] == 0  # 13: SIGPIPE
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, what="the exited child reaped")
