"""Everything about one rank: state, last exit and its cause, log path, argv and environment of the running
process, and how the profile's next launch differs from it."""

from __future__ import annotations

import os
import shlex
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from xllm_tui.ui.widgets import format as fmt


def _section(title: str) -> Text:
    return Text(f"\n{title}\n", style="bold underline")


def detail_text(
    rank: dict[str, Any],
    running: dict[str, Any] | None,
    planned: dict[str, Any] | None,
    now: float,
    variables: dict[str, str],
    watched_env: set[str] | None = None,
    flag_defaults: tuple[dict[str, str], str] | None = None,
) -> Text:
    """The detail page as text. watched_env: the variables the profile sets (the env diff is limited to
    them, so the supervisor's own inherited environment is not reported as a difference)."""
    colour = variables.get(fmt.STATE_VARIABLE.get(rank.get("state") or "", ""), "")
    text = Text()
    text.append(f"rank {rank['rank']}", style="bold")
    text.append(f"  ({rank.get('role', '?')})  ")
    text.append(fmt.state_text(rank), style=f"bold {colour}")
    if rank.get("reason"):
        text.append(f"  {rank['reason']}")
    text.append("\n")
    rows = [
        ("machine", f"{rank.get('machine', '-')} (runs as {rank.get('host', '-')})"),
        ("device/cores/port", f"npu:{rank.get('device', '-')}  cores {rank.get('cores') or '-'}  port {rank.get('port', '-')}"),
        ("pid", f"{rank.get('pid') or '-'}  up {fmt.uptime(rank, now)}  restarts {rank.get('restarts', 0)}  generation {rank.get('generation', '-')}"),
        ("cpu/mem/threads", f"{fmt.cpu(rank.get('cpu_pct'))}  {fmt.size(rank.get('rss_bytes'))}  {rank.get('threads') or '-'}"),
        ("last exit", fmt.last_exit_text(rank.get("last_exit"))),
        ("log", rank.get("log_path") or "-"),
        ("relaunch pending", "yes: the next launch differs (see below)" if rank.get("relaunch_pending") else "no"),
    ]
    for label, value in rows:
        text.append(f"{label:>17}  ", style="dim")
        text.append(f"{value}\n")

    for label, value in (
        # A stopped rank 0 keeps its last probe result in the snapshot: stale, so not shown.
        ("health (rank 0)", (rank.get("health") or {}).get("detail") if rank.get("pid") else None),
        ("core binding", (rank.get("binding") or {}).get("message") if isinstance(rank.get("binding"), dict) else rank.get("binding")),
        ("waiting", rank.get("reason") if rank.get("waiting") else None),
    ):
        if value:
            text.append(f"{label:>17}  ", style="dim")
            text.append(f"{value}\n", style=variables.get("warning", "") if label != "health (rank 0)" else "")

    # The supervisor reports the argv it launched (with the numactl prefix); /proc shows it after exec.
    launched_argv = list(rank.get("argv") or (running or {}).get("argv") or [])
    text.append_text(_section("argv (as launched)" if rank.get("argv") else "argv (running process)"))
    if launched_argv and rank.get("pid"):
        text.append(shlex.join(launched_argv) + "\n")
    else:
        text.append("not running (or not readable)\n", style="dim")

    text.append_text(_section("environment (running process, variables the profile sets)"))
    running_env: dict[str, str] = dict((running or {}).get("env") or {})
    planned_env: dict[str, str] = dict((planned or {}).get("env") or {})
    names = watched_env if watched_env is not None else set(planned_env)
    shown = {k: v for k, v in running_env.items() if k in names or not planned_env}
    if shown:
        for name in sorted(shown):
            text.append(f"  {name}={shown[name]}\n")
    else:
        text.append("  (none)\n", style="dim")

    text.append_text(_section("next launch vs running"))
    if not planned:
        text.append("the profile's next launch is not known (profile not loaded)\n", style="dim")
    elif not running:
        text.append("not running: the next launch is\n", style="dim")
        text.append(shlex.join(planned.get("argv") or []) + "\n")
    else:
        add = variables.get("success", "")
        remove = variables.get("error", "")
        change = variables.get("warning", "")
        running_watched = {k: v for k, v in running_env.items() if k in names}
        planned_watched = {k: v for k, v in planned_env.items() if k in names}
        env_rows = fmt.env_diff(running_watched, planned_watched)
        running_argv = launched_argv
        planned_argv = list(planned.get("argv") or [])
        if running_argv and os.path.basename(running_argv[0]) != "numactl":
            # numactl execs the binary: a running rank's argv no longer shows the `numactl -C cores` prefix
            from xllm_tui.supervisor.process import program_argv

            planned_argv = program_argv(planned_argv)
        argv_rows = fmt.argv_diff(running_argv, planned_argv)
        if not env_rows and not argv_rows:
            text.append("identical: a relaunch changes nothing\n", style="dim")
        for mark, name, old, new in env_rows:
            if mark == "+":
                text.append(f"  + {name}={new}\n", style=add)
            elif mark == "-":
                text.append(f"  - {name}={old}\n", style=remove)
            else:
                text.append(f"  ~ {name}: {old} -> {new}\n", style=change)
        for mark, arg in argv_rows:
            text.append(f"  {mark} arg {arg}\n", style=add if mark == "+" else remove)

    argv_for_flags = launched_argv or list((planned or {}).get("argv") or [])
    if flag_defaults is not None and argv_for_flags:
        defaults, origin = flag_defaults
        text.append_text(_section(f"flags: value (default, from {origin})"))
        for arg in argv_for_flags:
            if not arg.startswith("--"):
                continue
            name, _, value = arg[2:].partition("=")
            default = defaults.get(name)
            shown = ("unknown to the binary" if default is None else "default" if default == value
                     else default or '""')
            text.append(f"  {name:<32} {value}  ", style="")
            text.append(f"({shown})\n", style="dim" if default is not None else variables.get("error", ""))
    return text


class RankDetailScreen(Screen[None]):
    COVERS_MAIN = True  # opaque and full: the main screen's log stops following under it
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="detail.back"),
        Binding("l", "show_log", "Log", id="detail.log"),
    ]

    def __init__(self, rank: dict[str, Any]):
        super().__init__()
        self.rank = rank
        self.running: dict[str, Any] | None = None
        self.flag_defaults: tuple[dict[str, str], str] | None = None
        self.loaded = False
        self._shown_uptime: str | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-scroll"):
            yield Static(Text("reading the process ...", style="dim"), id="detail-body")
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(self._load(), exclusive=True, group="detail", exit_on_error=False)

    async def _load(self) -> None:
        app: Any = self.app
        try:
            self.running = await app.source.process_info(self.rank)
        except Exception as error:  # a vanished process or a dead supervisor: show what we have
            self.running = None
            app.log.warning(f"process info for rank {self.rank['rank']}: {error}")
        planned = app.next_launch(int(self.rank["rank"])) or {}
        argv = list(self.rank.get("argv") or planned.get("argv") or [])
        if argv:
            import asyncio

            from xllm_tui.binary_flags import flag_defaults_for

            # A cache read and a stat: off the event loop all the same.
            self.flag_defaults = await asyncio.to_thread(flag_defaults_for, argv, dict(planned.get("env") or {}),
                                                         planned.get("cwd"))
        self.loaded = True
        self.render_detail()

    def render_detail(self) -> None:
        app: Any = self.app
        planned = app.next_launch(int(self.rank["rank"]))
        now = app.now()
        self._shown_uptime = fmt.uptime(self.rank, now)
        body = detail_text(self.rank, self.running, planned, now, app.theme_variables, app.watched_env(),
                           self.flag_defaults)
        self.query_one("#detail-body", Static).update(body)

    def tick(self, now: float) -> None:
        """Between snapshots: redraw only when the uptime shown changes."""
        if self.loaded and fmt.uptime(self.rank, now) != self._shown_uptime:
            self.render_detail()

    def update_rank(self, rank: dict[str, Any]) -> None:
        self.rank = rank
        if self.loaded:
            self.render_detail()

    def action_show_log(self) -> None:
        app: Any = self.app
        app.pop_screen()
        app.call_later(app.action_focus_log)
