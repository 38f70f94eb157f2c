"""Profile hooks: run a command on chosen events, with the event as JSON on stdin. Never blocks the caller.

The supervisor calls `HookRunner.on_event(event)` for every journal event it appends (the dict written to
events.jsonl, see docs/protocol.md). `alert_kinds(event)` names what the event means for an operator
(`rank_failed`, `group_ready`, `crash_looping`, ...); each hook whose `on:` holds one of those names, or the
event's raw journal kind, is started in a worker thread: argv (no shell), its own session, stdin = the event
JSON plus "alert" and "profile", a time limit after which its whole process group is killed. At most
`max_running` hooks run at once; beyond that a run is dropped and counted (a flood of events must not fork
without bound). Outcomes go to `on_result` (called in the worker thread) and to `recent`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from xllm_tui.spec import Hook

# Rank states after which a rank counts as failed (docs/protocol.md, "Rank states").
_FAILED = {"failed"}


def alert_kinds(event: dict) -> set[str]:
    """The hook events (spec.HOOK_EVENTS) a journal event stands for; empty for routine ones."""
    kind, to = event.get("kind"), event.get("to")
    kinds: set[str] = set()
    if kind == "state" and to:
        if to in _FAILED and event.get("cause") != "collateral":
            kinds.add("rank_failed")  # collateral ranks are stopped because another failed: one alert, not N
        elif to == "exited":
            kinds.add("rank_exited")
        elif to == "degraded":
            kinds.add("rank_degraded")
        elif to == "ready":
            kinds.add("rank_ready")
        elif to == "crash-looping":
            kinds.add("crash_looping")
    elif kind == "group" and to:
        mapping = {"ready": "group_ready", "failed": "group_failed", "degraded": "group_degraded",
                   "stopped": "group_stopped", "crash-looping": "crash_looping"}
        if to in mapping:
            kinds.add(mapping[to])
    elif kind == "device" and event.get("from") != event.get("to") and (event.get("from") or event.get("to")):
        kinds.add("device_health")
    elif kind == "machine" and event.get("reachable") is False:
        kinds.add("machine_unreachable")  # machine 0's supervisor lost its connection to that machine
    return kinds


def hooks_for(event: dict, hooks: Iterable[Hook]) -> list[tuple[Hook, str]]:
    """(hook, the name it matched) for every hook this event triggers."""
    kinds = alert_kinds(event)
    raw = event.get("kind")
    matched = []
    for hook in hooks:
        for name in hook.on:
            if name in kinds:
                matched.append((hook, name))
            elif name in ("any", raw):
                matched.append((hook, min(kinds) if kinds else str(raw)))
            else:
                continue
            break
    return matched


@dataclass
class HookOutcome:
    hook: str
    alert: str
    seq: int | None
    argv: list[str]
    started_at: float
    duration_s: float = 0.0
    code: int | None = None
    timed_out: bool = False
    error: str | None = None  # could not be started
    output: str = ""  # the last part of its stdout+stderr
    dropped: bool = False  # not run: too many hooks running

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timed_out and self.error is None and not self.dropped

    def summary(self) -> str:
        if self.dropped:
            return f"hook {self.hook} ({self.alert}) not run: too many hooks running"
        if self.error:
            return f"hook {self.hook} ({self.alert}) could not run: {self.error}"
        if self.timed_out:
            return f"hook {self.hook} ({self.alert}) killed after {self.duration_s:.1f}s (time limit)"
        return f"hook {self.hook} ({self.alert}) exit {self.code} in {self.duration_s:.1f}s"

    def to_dict(self) -> dict:
        return {"hook": self.hook, "alert": self.alert, "seq": self.seq, "argv": self.argv, "code": self.code,
                "timed_out": self.timed_out, "error": self.error, "dropped": self.dropped,
                "duration_s": round(self.duration_s, 3), "output": self.output, "reason": self.summary()}


@dataclass
class HookRunner:
    hooks: tuple[Hook, ...] | list[Hook]
    profile_name: str = ""
    cwd: str | None = None  # the profile's directory, so relative things in a hook's argv mean the same
    on_result: Callable[[HookOutcome], None] | None = None  # called in the hook's worker thread
    max_running: int = 8
    output_limit: int = 4000
    env: dict[str, str] | None = None  # extra variables; the hook inherits the caller's environment
    recent: deque = field(default_factory=lambda: deque(maxlen=50))
    dropped: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._processes: dict[int, subprocess.Popen] = {}
        self._closed = False

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._threads)

    def on_event(self, event: dict | Any) -> list[str]:
        """Start the hooks this event triggers; returns their names at once (they run in threads).

        An event that reports a hook's own outcome (it has a "hook" field) triggers nothing: a failing hook
        on `any` would otherwise feed itself forever."""
        started: list[str] = []
        if not isinstance(event, dict):  # a typed protocol Event
            event = event.to_dict()
        if "hook" in event:
            return started
        for hook, alert in hooks_for(event, self.hooks):
            with self._lock:
                if self._closed:
                    return started
                full = len(self._threads) >= self.max_running
                if full:
                    self.dropped += 1
                else:
                    thread = threading.Thread(target=self._run, args=(hook, alert, event), daemon=True,
                                              name=f"hook {hook.name}")
                    self._threads.add(thread)
            if full:  # reported outside the lock: on_result may look at the runner
                self._finish(HookOutcome(hook.name, alert, event.get("seq"), list(hook.run), time.time(), dropped=True))
                continue
            thread.start()
            started.append(hook.name)
        return started

    def _finish(self, outcome: HookOutcome) -> None:
        self.recent.append(outcome)
        if self.on_result is not None:
            try:
                self.on_result(outcome)
            except Exception:  # noqa: BLE001 - a broken callback must not kill the worker or the caller
                pass

    def _run(self, hook: Hook, alert: str, event: dict) -> None:
        payload = json.dumps({**event, "alert": alert, "profile": self.profile_name}).encode() + b"\n"
        env = {**os.environ, **(self.env or {}), "XLLM_TUI_ALERT": alert, "XLLM_TUI_PROFILE": self.profile_name,
               "XLLM_TUI_HOOK": hook.name}
        outcome = HookOutcome(hook.name, alert, event.get("seq"), list(hook.run), time.time())
        started = time.monotonic()
        try:
            try:
                process = subprocess.Popen(list(hook.run), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, cwd=self.cwd, env=env, close_fds=True,
                                           start_new_session=True)  # its own group: a timeout kills its children too
            except OSError as e:
                outcome.error = f"{hook.run[0]}: {e.strerror or e}"
                return
            with self._lock:
                self._processes[process.pid] = process
            try:
                output, _ = process.communicate(payload, timeout=hook.timeout_s)
            except subprocess.TimeoutExpired:
                outcome.timed_out = True
                _kill_group(process)
                try:
                    output, _ = process.communicate(timeout=5)
                except subprocess.TimeoutExpired:  # a descendant in another session still holds the pipe
                    process.stdout.close()
                    process.wait()
                    output = b""
            outcome.code = process.returncode
            outcome.output = output.decode(errors="replace")[-self.output_limit:]
            with self._lock:
                self._processes.pop(process.pid, None)
        finally:
            outcome.duration_s = time.monotonic() - started
            self._finish(outcome)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close(self, timeout: float = 5.0) -> None:
        """Let running hooks finish for up to `timeout` seconds, then kill their process groups; start no more."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            _kill_group(process)
        for thread in threads:
            thread.join(5.0)


def _kill_group(process: subprocess.Popen) -> None:
    if process.returncode is not None:
        return  # reaped: its pid may belong to someone else by now
    try:
        os.killpg(process.pid, signal.SIGKILL)  # start_new_session: its pgid is its pid
    except (ProcessLookupError, PermissionError):
        pass
