"""One line at the top: profile, group state and reason, restarts, the pending restart, the connection."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from xllm_tui.ui.widgets import format as fmt


def status_line(snapshot: dict[str, Any] | None, now: float, variables: dict[str, str]) -> Text:
    if not snapshot:
        return Text("connecting to the supervisor ...", style="dim")
    profile = snapshot.get("profile") or {}
    group = snapshot.get("group") or {}
    state = group.get("state") or "?"
    colour = variables.get(fmt.STATE_VARIABLE.get(state, ""), "")
    text = Text()
    text.append(f" {profile.get('name', '?')}", style="bold")
    if profile.get("simulate"):
        text.append(" [sim]", style="dim")
    ranks = snapshot.get("ranks") or []
    text.append(f"  {len(ranks)} ranks  group ")
    text.append(state, style=f"bold {colour}")
    if group.get("reason"):
        text.append(f": {group['reason']}")
    if group.get("restarts"):
        text.append(f"  restarts {group['restarts']}", style="dim")
    next_at = group.get("next_restart_at")
    if next_at and "restart in" not in (group.get("reason") or ""):
        text.append(f"  restart in {fmt.duration(max(0.0, next_at - now))}", style=variables.get("warning", ""))
    first = group.get("first_failure")
    if first and first.get("rank") is not None:
        error = variables.get("xllm-state-failed", "")
        label = "first failure" if state in ("failed", "degraded", "crash-looping", "stopping") else "last failure"
        text.append(f"  {label}: rank {first['rank']} {first.get('cause') or ''}".rstrip(), style=error)
    if any(r.get("relaunch_pending") for r in ranks):
        text.append("  ~ relaunch pending", style="dim")
    return text


class StatusBar(Static):
    _shown: Text | None = None

    def show(self, snapshot: dict[str, Any] | None, now: float) -> None:
        line = status_line(snapshot, now, self.app.theme_variables)
        if line != self._shown:  # redraw only on change: a slow link pays for every update
            self._shown = line
            self.update(line)
