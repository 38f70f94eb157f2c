"""Pure formatting of snapshot values for display. Every time-dependent value takes `now` explicitly,
so a frozen clock gives identical output (snapshot tests, screenshots)."""

from __future__ import annotations

import time
from typing import Any

from xllm_tui.protocol import FAILED_STATES as _FAILED
from xllm_tui.units import size  # noqa: F401 - fmt.size, the same style as the CLI's and the supervisor's

FAILED_STATES = tuple(sorted(s.value for s in _FAILED))  # the supervisor's own definition of "failed"
STATE_VARIABLE = {
    "ready": "xllm-state-ready",
    "loading": "xllm-state-loading",
    "starting": "xllm-state-starting",
    "degraded": "xllm-state-degraded",
    "failed": "xllm-state-failed",
    "crash-looping": "xllm-state-failed",
    "stopped": "xllm-state-stopped",
    "exited": "xllm-state-stopped",
    "stopping": "xllm-state-stopping",
    "unknown": "xllm-state-degraded",  # a rank on another machine that machine 0 cannot reach now
}


def duration(seconds: float | None) -> str:
    """Compact duration: 42s, 5m03s, 12m, 2h07m, 3d04h. Seconds only in the first ten minutes (countdowns,
    when they matter); uptimes use the coarser `uptime`."""
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 10:
        return f"{minutes}m{seconds:02d}s"
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def cpu(pct: float | None) -> str:
    return "-" if pct is None else f"{pct:.0f}%"


def clock(ts: float | None) -> str:
    """HH:MM:SS in UTC-free local form; the frozen demo uses UTC for stable output across machines."""
    if ts is None:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.gmtime(ts) if _USE_UTC else time.localtime(ts))


_USE_UTC = False


def use_utc(enabled: bool) -> None:
    """Render clock times in UTC (frozen snapshots must not depend on the machine's time zone)."""
    global _USE_UTC
    _USE_UTC = enabled


def state_text(rank: dict[str, Any]) -> str:
    """'loading 12/48', 'failed hccl_error', 'ready' (short form for the table)."""
    state = rank.get("state") or "?"
    progress = rank.get("progress")
    if state == "loading" and rank.get("phase") == "worker_connect_retry":
        return f"connecting ({progress[0]} retries)" if progress and progress[0] else "connecting"
    if state == "loading" and progress:
        done, total = progress[0], progress[1]
        if total:
            return f"loading {done}/{total}"
        return f"loading {done}" if done else "loading"  # total 0: not known yet (docs/protocol.md)
    if state in FAILED_STATES:
        cause = (rank.get("last_exit") or {}).get("cause")
        return f"{state} {cause}" if cause else state
    return state


def uptime(rank: dict[str, Any], now: float) -> str:
    """How long the rank has run, in whole minutes (<1m, 5m, 2h07m); seconds only in the first minute of a
    rank that is not ready yet (start-up, when they matter). A column of uptimes in seconds changes every
    row every second: an idle screen would never be idle."""
    started = rank.get("started_at")
    if not started or not rank.get("pid"):
        return "-"
    seconds = now - started
    if seconds < 60 and rank.get("state") == "ready":
        return "<1m"
    if 60 <= seconds < 3600:
        return f"{int(seconds) // 60}m"
    return duration(seconds)


def last_exit_text(last_exit: dict[str, Any] | None) -> str:
    if not last_exit:
        return "none"
    if last_exit.get("signal"):
        how = f"signal {last_exit['signal']}"
    else:
        how = f"exit code {last_exit.get('code')}"
    cause = last_exit.get("cause") or "unknown"
    if last_exit.get("collateral") and cause == "collateral":
        return f"{how}, collateral (another rank failed first)"
    extra = " (collateral: another rank failed first)" if last_exit.get("collateral") else ""
    return f"{how}, cause {cause}{extra}"


def rank_list(ranks: list[int]) -> str:
    """[0,1,2,3,5] -> '0-3,5'."""
    ranks = sorted(set(ranks))
    parts: list[str] = []
    i = 0
    while i < len(ranks):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] == ranks[j] + 1:
            j += 1
        parts.append(str(ranks[i]) if i == j else f"{ranks[i]}-{ranks[j]}")
        i = j + 1
    return ",".join(parts)


def event_text(event: dict[str, Any]) -> str:
    """One line for the events pane, after its time and kind columns (so the kind is not repeated):
    "rank 3: ready -> failed [hccl_error]: <reason>", or the message of a non-rank event."""
    rank = event.get("rank")
    who = f"rank {rank}: " if rank is not None else ""
    if "from" in event and "to" in event:
        text = f"{who}{event['from']} -> {event['to']}"
        if event.get("cause"):
            text += f" [{event['cause']}]"
        if event.get("reason"):
            text += f": {event['reason']}"
        return text
    message = event.get("message") or event.get("reason")
    if message:
        return f"{who}{message}"
    extras = {k: v for k, v in event.items() if k not in ("seq", "ts", "kind", "rank")}
    return who + " ".join(f"{k}={v}" for k, v in extras.items())


def env_diff(running: dict[str, str], planned: dict[str, str]) -> list[tuple[str, str, str | None, str | None]]:
    """[(mark, name, running value, planned value)], mark '+' added, '-' removed, '~' changed; sorted by name."""
    rows = []
    for name in sorted(set(running) | set(planned)):
        old, new = running.get(name), planned.get(name)
        if old == new:
            continue
        mark = "+" if old is None else "-" if new is None else "~"
        rows.append((mark, name, old, new))
    return rows


def argv_diff(running: list[str], planned: list[str]) -> list[tuple[str, str]]:
    """Line diff of two argv lists: [('-', arg), ('+', arg)], unchanged arguments left out."""
    import difflib

    out: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=running, b=planned, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        out.extend(("-", a) for a in running[i1:i2])
        out.extend(("+", b) for b in planned[j1:j2])
    return out


def clock_utc(ts: float) -> str:
    """A log line's wall time (parsed as UTC) with milliseconds: the timeline orders ranks by it."""
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + f".{int(round((ts % 1) * 1000)) % 1000:03d}"
