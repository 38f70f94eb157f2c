"""Shared test helpers: bounded waits, free loopback ports, and leftover-process checks."""

from __future__ import annotations

import errno
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll condition() until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition!r} (last value: {last!r})")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# Ports for tests are taken below the kernel's ephemeral range: a port the kernel hands out for bind(0) or an
# outgoing connection (every simulated worker binds one) could otherwise be taken between our check and the
# moment rank 0 binds it. Random starts keep parallel runs apart.
_rng = random.Random(os.getpid() ^ int(time.time() * 1000))


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A base port such that base..base+count-1 are all free right now, outside the ephemeral range."""
    low, _high = _ephemeral_range()
    top = min(low, 65535) - count
    for _ in range(500):
        base = _rng.randrange(10000, max(top, 10001))
        if all(_port_is_free(host, p) for p in range(base, base + count)):
            return base
    raise RuntimeError("no free port block")


def free_port(host: str = "127.0.0.1") -> int:
    return free_port_block(1, host)


@pytest.fixture
def repo_root() -> str:
    return REPO


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """Every test gets its own XDG dirs: no test can touch a real run directory or user config."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(exist_ok=True)
    # Child processes (`python -m xllm_tui...` from another cwd) import this checkout, not whatever
    # xllm_tui is installed: otherwise the simulator under test is someone else's.
    inherited = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", REPO + (os.pathsep + inherited if inherited else ""))
    yield


def record_layouts(widget) -> list[dict]:
    """From now on, the keyword arguments of every refresh of `widget` that asks for a layout of the screen."""
    layouts: list[dict] = []
    original = widget.refresh

    def refresh(*regions, **kwargs):
        if kwargs.get("layout"):
            layouts.append(kwargs)
        return original(*regions, **kwargs)

    widget.refresh = refresh
    return layouts


async def until(pilot, condition, timeout: float = 10.0, what: str = "", describe=None):
    """Let the app run until condition() holds (bounded); returns its value. On timeout the assertion says
    what was awaited, and describe() (if given) what the app showed instead."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = f"; {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or condition}{seen}")
        await pilot.pause(0.02)


async def until_quiet(pilot, changes: list, window: float, timeout: float = 20.0) -> None:
    """Empty `changes` and let the app run `window` seconds, again until nothing was added to it in a whole
    window (bounded): the start-up has settled, however long that takes on a loaded machine."""
    deadline = time.monotonic() + timeout
    while True:
        changes.clear()
        await pilot.pause(window)
        if not changes:
            return
        assert time.monotonic() < deadline, f"still changing after {timeout}s: {changes}"


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs: a disk that can really fill (mounting needs root, which CI has). Ask for it before
    sim_deployment, so that the deployment is torn down before the disk goes."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk) -> str:
    """Write a file until the disk has no room left; returns its path."""
    path = os.path.join(disk, "filler")
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    with open(path, "ab", buffering=0) as f:  # the last few bytes too
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return path


WRITER = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"


def start_writer(log) -> subprocess.Popen:
    """A rank's stand-in: its stdout straight into `log` (appended), each line given with say() written at once.
    Close its stdin and wait for it to end it."""
    import sys

    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-c", WRITER], stdin=subprocess.PIPE, stdout=out, text=True)


def say(writer: subprocess.Popen, text: str) -> None:
    writer.stdin.write(text + "\n")
    writer.stdin.flush()
