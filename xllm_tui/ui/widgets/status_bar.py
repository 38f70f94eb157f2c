"""One line at the top: profile, group state and reason, restarts, the pending restart, the connection."""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text
from textual.widgets import Static

from xllm_tui.protocol import GroupStatus
from xllm_tui.ui.widgets import format as fmt


_RESTART_CLAUSE = re.compile(r"[;,]?\s*(group )?restart in [0-9.]+\s*s\b")


def status_line(snapshot: dict[str, Any] | None, now: float, variables: dict[str, str]) -> Text:
    """The essentials first (they must fit 80 columns): profile, group state, the pending restart, the
    first failure; then the group's reason, the rank count, restarts, the relaunch-pending legend."""
    if not snapshot:
        return Text("connecting to the supervisor ...", style="dim")
    profile, group = snapshot.get("profile") or {}, GroupStatus.from_dict(snapshot.get("group"))
    state = group.state or "?"
    colour = variables.get(fmt.STATE_VARIABLE.get(state, ""), "")
    ranks = snapshot.get("ranks") or []
    dim = "dim"
    # Fields in order of importance, separated by " │ " so they never run together; a narrow terminal
    # cuts the end of the line, which holds the least important ones.
    fields: list[Text] = []
    fields.append(Text(f" {profile.get('name', '?')}", style="bold"))
    fields.append(Text.assemble("group ", (state, f"bold {colour}")))
    next_at = group.next_restart_at
    if next_at:  # counts down between snapshots (the reason's own "restart in" is dropped below)
        fields.append(Text(f"restart in {fmt.duration(max(0.0, next_at - now))}", style=variables.get("warning", "")))
    first = group.first_failure
    if first and first.get("rank") is not None:
        error = variables.get("xllm-state-failed", "")
        label = "first failure" if state in ("failed", "degraded", "crash-looping", "stopping") else "last failure"
        fields.append(Text(f"{label}: rank {first['rank']} {first.get('cause') or ''}".rstrip(), style=error))
    disks = [("", d) for d in (snapshot.get("supervisor") or {}).get("disks") or []] + [
        (f" on {m.get('name') or m.get('host')}", d) for m in snapshot.get("machines") or []
        if m.get("state") != "local" for d in m.get("disks") or []]
    for where, disk in disks:
        level = disk.get("level")
        if level in ("low", "full"):
            soon = f", full in {fmt.duration(disk['full_in_s'])}" if level == "low" and disk.get("full_in_s") else ""
            held = f", {fmt.size(disk['held_bytes'])} in deleted logs" if disk.get("held_bytes") else ""
            fields.append(Text(f"disk {level}{where}: {fmt.size(disk.get('free'))} left{soon}{held}",
                               style=variables.get("error" if level == "full" else "warning", "")))
    reason = _RESTART_CLAUSE.sub("", group.reason or "").strip(" ;,")
    if first and reason.startswith(f"rank {first.get('rank')} failed first"):
        # That part says what the first-failure field already says; what follows it (a restart held for a
        # machine out of reach) is kept.
        reason = reason.split("; ", 1)[1] if "; " in reason else ""
    if reason:
        fields.append(Text(reason))
    count = f"{len(ranks)} ranks"
    if group.restarts:
        count += f", {group.restarts} restart{'s' if group.restarts != 1 else ''}"
    fields.append(Text(count, style=dim))
    if profile.get("simulate"):
        fields.append(Text("simulated", style=dim))
    if any(r.get("relaunch_pending") for r in ranks):
        fields.append(Text("~ relaunch pending", style=dim))
    return Text(" │ ", style=dim).join(fields)


class StatusBar(Static):
    _shown: Text | None = None

    def show(self, snapshot: dict[str, Any] | None, now: float) -> None:
        line = status_line(snapshot, now, self.app.theme_variables)
        if line != self._shown:  # redraw only on change: a slow link pays for every update
            self._shown = line
            self.update(line)
