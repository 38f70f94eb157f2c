"""The xllm-tui application: a live view of one deployment, driven from the keyboard.

Data flows one way: a DeploymentSource (the supervisor, or a frozen snapshot) -> workers -> the widgets.
Snapshots are polled at most a few times per second and coalesced (an event only wakes the poller early);
widgets update only what changed. Actions go back through the source; destructive ones confirm first.
Quitting never stops anything: the supervisor and its ranks keep running.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import tomllib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events, work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.widgets import Static, Switch, TabbedContent

from xllm_tui.protocol import Snapshot, plan_restart
from xllm_tui.ui import themes as theme_files
from xllm_tui.ui.screens.confirm import ConfirmScreen
from xllm_tui.ui.screens.help import HelpScreen
from xllm_tui.ui.screens.main import MAIN_KEYS, MainScreen
from xllm_tui.ui.screens.prompt import PromptScreen
from xllm_tui.ui.screens.rank_detail import RankDetailScreen
from xllm_tui.ui.screens.split import SplitScreen
from xllm_tui.ui.screens.text import TextScreen
from xllm_tui.ui.screens.too_small import MIN_HEIGHT, MIN_WIDTH, TooSmallScreen
from xllm_tui.ui.source import ActionFailed, DeploymentSource, SourceUnavailable
from xllm_tui.ui.widgets import format as fmt
from xllm_tui.ui.widgets.devices_pane import DevicesPane
from xllm_tui.ui.widgets.events_pane import EventsPane
from xllm_tui.ui.widgets.rank_log import RankLog
from xllm_tui.ui.widgets.rank_table import RankTable
from xllm_tui.ui.widgets.status_bar import StatusBar
from xllm_tui.ui.widgets.timeline import TimelineTable, scan_ranks, timeline_summary
from xllm_tui.ui.widgets.toggles_panel import TogglesPanel

MIN_REFRESH_S = 0.3  # at most ~3 snapshot redraws per second, however many events arrive
QUIET_POLL_S = 3.0  # the poll interval once snapshots stop changing (an event or an action still wakes it)
QUIET_AFTER = 3  # unchanged snapshots in a row before polling slows down
RETRY_S = 2.0
MAX_TICK_S = 60.0  # the clock tick's longest sleep (nothing shown changes faster than uptimes' minutes)
PROFILE_SETTLE_S = 0.3  # a profile edit is read this long after its first change (a save is several events)
EVENT_BACKLOG = 2000  # events drawn from the journal on attach
APP_KEYS: list[tuple[str, str, str, str, bool, str, str]] = [
    ("help", "question_mark", "help", "Help", True, "this list of keys", "General"),
    ("quit", "q", "quit", "Quit", True, "quit the TUI; the supervisor and the ranks keep running", "General"),
    ("prompt", "colon", "prompt", "Command", False, "command prompt (restart 3, toggle determinism on, ...)", "General"),
    ("palette", "ctrl+p", "command_palette", "palette", False, "command palette: every action, themes", "General"),
    ("shutdown", "ctrl+x", "shutdown", "Shut down", False, "stop every rank and the supervisor, then quit (confirms)", "General"),
]
KEY_LABELS = {
    "question_mark": "?", "colon": ":", "space": "space", "escape": "esc", "enter": "enter",
    "left_square_bracket": "[", "right_square_bracket": "]", "slash": "/",
}


def keymap_path() -> Path | None:
    """The user's keymap file, if any: $XDG_CONFIG_HOME/xllm-tui/keymap.toml (or keymap.yaml)."""
    directory = theme_files.user_config_dir()
    for name in ("keymap.toml", "keymap.yaml", "keymap.yml"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_keymap(path: Path) -> tuple[dict[str, str], list[str]]:
    """binding id -> keys ("r" or "r,x"), and the problems found. Accepts a flat table or a [keymap] table."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # unreadable or malformed: report, keep the default keys
        return {}, [f"{path}: cannot read the keymap: {error}"]
    if isinstance(data, dict) and isinstance(data.get("keymap"), dict):
        data = data["keymap"]
    if not isinstance(data, dict):
        return {}, [f"{path}: expected `binding-id = \"key\"` lines (see docs/tui.md)"]
    known = known_binding_ids()
    keymap, problems = {}, []
    for binding_id, keys in data.items():
        if binding_id not in known:
            problems.append(f"{path}: unknown binding id {binding_id!r} (see the ? screen for ids)")
        elif not isinstance(keys, str) or not keys.strip():
            problems.append(f"{path}: {binding_id}: keys must be a string such as \"r\" or \"ctrl+r,x\"")
        else:
            keymap[binding_id] = keys.strip()
    return keymap, problems


def preferences_path() -> Path:
    """What the TUI remembers between runs (the log pane's compact mode): $XDG_CONFIG_HOME/xllm-tui/preferences.json."""
    return theme_files.user_config_dir() / "preferences.json"


def load_preferences() -> dict[str, Any]:
    try:
        data = json.loads(preferences_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_preference(name: str, value: Any) -> None:
    """Best effort: a read-only home must not break the TUI."""
    path = preferences_path()
    data = {**load_preferences(), name: value}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def known_binding_ids() -> set[str]:
    from xllm_tui.ui.widgets.rank_log import LogView

    ids = {f"main.{k[0]}" for k in MAIN_KEYS} | {f"app.{k[0]}" for k in APP_KEYS}
    classes: list[Any] = [RankTable, ConfirmScreen, HelpScreen, PromptScreen, TextScreen, SplitScreen, RankDetailScreen]
    if LogView is not None:
        classes.append(LogView)
    for cls in classes:
        ids |= {b.id for b in cls.BINDINGS if isinstance(b, Binding) and b.id}
    return ids


def key_label(keys: str) -> str:
    return ", ".join(KEY_LABELS.get(k.strip(), k.strip()) for k in keys.split(","))


# Fields that move without anything worth redrawing: the clock, and the devices reading (polled_at; the
# Devices tab reads app.snapshot on its own tick).
_CLOCK_FIELDS = ("time", "devices")
_RANK_CLOCK_FIELDS = ("uptime_s",)


def next_clock_change(snapshot: dict[str, Any] | None, now: float) -> float:
    """Seconds until some time the TUI shows (uptimes, restart countdown) can change; 1 s at most while a
    countdown or seconds show, MAX_TICK_S at most otherwise."""
    if not snapshot:
        return 1.0
    if (snapshot.get("group") or {}).get("next_restart_at"):
        return 1.0
    delay = MAX_TICK_S
    for rank in snapshot.get("ranks") or []:
        started = rank.get("started_at")
        if not started or not rank.get("pid"):
            continue
        seconds = now - started
        if seconds < 60 and rank.get("state") != "ready":
            return 1.0  # fmt.uptime shows seconds
        # Uptimes show whole minutes (hours past a day: still checked each minute).
        delay = min(delay, 60 - seconds % 60 + 0.05)
    return max(0.05, delay)


def _same_but_clock(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two snapshots that differ only in the supervisor's clock and the uptimes derived from it."""
    if any(a.get(k) != b.get(k) for k in a.keys() | b.keys() if k not in _CLOCK_FIELDS and k != "ranks"):
        return False
    ranks_a, ranks_b = a.get("ranks") or [], b.get("ranks") or []
    if len(ranks_a) != len(ranks_b):
        return False
    for ra, rb in zip(ranks_a, ranks_b):
        if any(ra.get(k) != rb.get(k) for k in ra.keys() | rb.keys() if k not in _RANK_CLOCK_FIELDS):
            return False
    return True


class ActionsProvider(Provider):
    """Command palette entries for every action of the TUI, with their current keys."""

    def _commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        app: XllmApp = self.app  # type: ignore[assignment]
        out = []
        for group, keys, help_text, binding_id in app.key_rows():
            action = app.action_for_binding(binding_id)
            if action is None or binding_id in ("app.palette",):
                continue
            title = f"{help_text[:1].upper()}{help_text[1:]}"
            out.append((f"{title}  [{keys}]", group, partial(app.run_action, action)))
        snapshot = app.snapshot or {}
        for toggle in snapshot.get("toggles") or []:
            on = not toggle.get("enabled")
            out.append((f"Toggle {toggle['name']} {'on' if on else 'off'} (next launch)", "Toggles",
                        partial(app.send_action, "toggle", group=toggle["name"], on=on)))
        for rank in snapshot.get("ranks") or []:
            n = int(rank["rank"])
            for verb in ("restart", "stop", "start"):
                out.append((f"{verb.title()} rank {n}", f"Rank {n} ({rank.get('state')})", partial(app.rank_command, verb, n)))
            out.append((f"Rank {n} detail", f"Rank {n}", partial(app.rank_command, "detail", n)))
            out.append((f"Rank {n} log", f"Rank {n}", partial(app.rank_command, "log", n)))
        return out

    async def discover(self) -> Hits:
        for title, group, callback in self._commands():
            yield DiscoveryHit(title, callback, help=group)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, group, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=group)


class XllmApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "xllm-tui"
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS = [
        Binding(keys, action, label, show=show, id=f"app.{binding_id}", tooltip=help_text,
                priority=binding_id == "palette")  # as Textual's own palette binding: works from any widget
        for binding_id, keys, action, label, show, help_text, _ in APP_KEYS
    ]
    ENABLE_COMMAND_PALETTE = True

    def __init__(
        self,
        source: DeploymentSource,
        *,
        theme: str | None = None,
        bell: bool = False,
        profile_path: str | None = None,
        simulate: bool = False,
        watch_profile: bool = True,
        poll_interval: float = 1.0,
        user_config: bool = True,
        port_offset: int = 0,
    ):
        super().__init__()
        self.source = source
        self.bell_on_failure = bell
        self.profile_path = profile_path
        self.simulate = simulate
        self.port_offset = port_offset
        self.watch_profile = watch_profile and profile_path is not None
        self.poll_interval = poll_interval
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_at: float | None = None
        self.connected = False
        self.disconnect_reason: str | None = None
        self.profile_plan: Any = None  # ProfilePlan of the last valid profile
        # What the edits are compared with: the plan at start, or last loaded into the supervisor (ctrl+r), or made
        # again for the toggles. Against the last save instead, a save read twice (its events split in two reads
        # on a slow machine) or saved twice said "no rank's launch changes" over the change it had just shown.
        self.profile_baseline: Any = None
        self.profile_change: tuple[str, list[str]] | None = None  # (summary, lines) of the last edit
        self.profile_errors: list[str] = []
        self.config_problems: list[str] = []
        self._wake = asyncio.Event()
        self._reported: set[tuple[str, str]] = set()
        self._tick_timer: Any = None  # the clock tick (see _schedule_tick)
        self._heap_frozen = False  # the start-up heap is left out of the garbage collector (gc.freeze)
        self._main_stale = False  # snapshots came while a screen covered the main one (drawn when it shows)
        self._devices_timer: Any = None  # re-reads the devices while their tab is shown
        self._frozen = bool(getattr(source, "frozen", False))
        fmt.use_utc(self._frozen)
        self.main_screen = MainScreen()

        theme_set = theme_files.load_themes(None if user_config else Path("/nonexistent"))
        self.config_problems += theme_set.errors
        for item in theme_set.themes:
            self.register_theme(item)
        self.theme = theme or theme_files.DEFAULT_THEME
        self._remember = user_config
        self._typed_snapshot: Snapshot | None = None  # the last snapshot applied, parsed once
        self._log_view_compact = bool(load_preferences().get("log_compact", False)) if user_config else False
        if user_config:
            path = keymap_path()
            if path is not None:
                keymap, problems = load_keymap(path)
                self.config_problems += problems
                if keymap:
                    self.set_keymap(keymap)

    @property
    def log_view_compact(self) -> bool:
        """The log pane's mode (LogView reads and sets it); remembered between runs with the user config."""
        return self._log_view_compact

    @log_view_compact.setter
    def log_view_compact(self, compact: bool) -> None:
        if compact != self._log_view_compact and self._remember:
            save_preference("log_compact", compact)
        self._log_view_compact = compact

    # -- theme ----------------------------------------------------------------------------------------
    def get_theme_variable_defaults(self) -> dict[str, str]:
        return theme_files.state_colour_defaults(self.current_theme)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def on_mount(self) -> None:
        await self.push_screen(self.main_screen)
        # The table's one way to the log pane. RankSelected, handled later, can name a rank the cursor has left
        # since: it showed that rank's current log over the generation chosen with [ in between.
        self.main_screen.query_one(RankTable).cursor_moved = self._show_rank_log
        for problem in self.config_problems:
            self.notify(problem, title="configuration", severity="warning", timeout=10)
        if self._frozen:
            try:
                self._apply_snapshot(await self.source.snapshot())
            except SourceUnavailable as error:
                self._set_disconnected(str(error))
        self._check_size(self.size.width, self.size.height)
        self._poll_loop()
        self._events_loop()
        if self.profile_path:
            self._load_profile(initial=True)
        if self.watch_profile:
            self._watch_profile()
        if not self._frozen:
            self._schedule_tick()
            # Runs only while the Devices tab is shown (devices_tab_shown): an idle TUI has no wake-up for it.
            self._devices_timer = self.set_interval(5.0, self._devices_tick, pause=True)

    def _freeze_start_up_heap(self) -> None:
        """Leave the objects of the start-up (widgets, styles, modules: most of the heap) out of the cyclic
        garbage collector's passes. A full pass over them took 64 ms of CPU, and 0.8 s on a machine whose
        cores flooding ranks keep busy: the worst keypress of the flood benchmark. gc.freeze(), undone when
        the app ends (objects frozen are never collected as cycles)."""
        gc.collect()
        gc.freeze()

    def on_unmount(self) -> None:
        if self._heap_frozen:
            gc.unfreeze()

    def _schedule_tick(self) -> None:
        """(Re)arm the clock tick for the next moment a shown time can change: every second while a countdown
        or a rank's start-up seconds show, else at the next whole minute of an uptime (an idle TUI wakes once a
        minute, not once a second). A snapshot that changes something re-arms it."""
        if self._frozen or self._exit:
            return
        delay = next_clock_change(self.snapshot, self.now())
        if self._tick_timer is not None:
            self._tick_timer.stop()
        self._tick_timer = self.set_timer(delay, self._tick, name="clock-tick")

    def _tick(self) -> None:
        """Uptimes and the restart countdown move without a new snapshot (each widget repaints only when its
        text changes)."""
        self._tick_timer = None
        self._schedule_tick()  # (not once the app exits)
        if not self.snapshot or not self._ui_ready():  # not while the screens are torn down at exit
            return
        now = self.now()
        if self.screen is self.main_screen:
            if (self.snapshot.get("group") or {}).get("next_restart_at"):  # the only clock in the status line
                self.main_screen.query_one(StatusBar).show(self.snapshot, now)
            self.main_screen.query_one(RankTable).update_uptimes(now)
        elif isinstance(self.screen, RankDetailScreen):
            self.screen.tick(now)

    def now(self) -> float:
        return self.source.now()

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int, height: int) -> None:
        small = width < MIN_WIDTH or height < MIN_HEIGHT
        showing = isinstance(self.screen, TooSmallScreen)
        if small and not showing:
            self.push_screen(TooSmallScreen())
        elif not small and showing:
            self.pop_screen()

    # -- data in --------------------------------------------------------------------------------------
    @work(exit_on_error=False, group="poll", exclusive=True)
    async def _poll_loop(self) -> None:
        unchanged = 0  # snapshots in a row that changed nothing on screen
        while True:
            try:
                snapshot = await self.source.snapshot()
            except SourceUnavailable as error:
                self._set_disconnected(str(error))
                await asyncio.sleep(RETRY_S)
                continue
            except Exception as error:  # a malformed reply must not end the TUI
                self._set_disconnected(f"unexpected reply: {error}")
                await asyncio.sleep(RETRY_S)
                continue
            try:
                changed = self._apply_snapshot(snapshot)
            except Exception as error:  # an unexpected snapshot must not end the TUI: say so, keep polling
                self._report_unexpected("showing the supervisor's snapshot", error)
                changed = True
            unchanged = 0 if changed else unchanged + 1
            # Nothing moving (idle ranks): poll less often; state changes come as events and wake it at once.
            interval = self.poll_interval if unchanged < QUIET_AFTER else max(self.poll_interval, QUIET_POLL_S)
            started = time.monotonic()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            rest = MIN_REFRESH_S - (time.monotonic() - started)
            if rest > 0:
                await asyncio.sleep(rest)  # coalesce a burst of events into one redraw

    @work(exit_on_error=False, group="events", exclusive=True)
    async def _events_loop(self) -> None:
        pane = self.main_screen.query_one(EventsPane)
        while True:
            try:
                since = pane.last_seq if pane.last_seq is not None else await self._first_event_seq(pane)
                async for event in self.source.events(since=since):
                    pane.add_events([event])
                    if event.get("kind") in ("state", "group", "toggle", "supervisor", "action"):
                        self._wake.set()
            except SourceUnavailable as error:
                self._set_disconnected(str(error))
            except Exception as error:
                self._set_disconnected(f"event stream failed: {error}")
            await asyncio.sleep(RETRY_S)

    def _report_unexpected(self, what: str, error: BaseException) -> None:
        """A bug or an unexpected reply: logged, shown once per kind, the TUI goes on."""
        self.log.error(f"{what}: {error!r}")
        key = (what, type(error).__name__)
        if key not in self._reported:
            self._reported.add(key)
            self.notify(f"{what} failed: {type(error).__name__}: {error}", title="unexpected error",
                        severity="error", timeout=10)

    def on_worker_state_changed(self, event: Any) -> None:
        from textual.worker import WorkerState

        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self._report_unexpected(f"background task {event.worker.group or event.worker.name}", event.worker.error)

    async def _first_event_seq(self, pane: EventsPane) -> int:
        """Where the history starts: the whole journal (events missed while nobody watched), or its last
        EVENT_BACKLOG events when it is longer (a journal of months would take a while to draw)."""
        for _ in range(60):  # the first snapshot tells the newest seq; do not wait more than ~3 s for it
            if self.snapshot is not None:
                break
            await asyncio.sleep(0.05)
        latest = max((e.get("seq") or 0 for e in (self.snapshot or {}).get("events") or []), default=0)
        since = max(0, latest - EVENT_BACKLOG)
        if since:
            pane.write(Text(f"... {since} earlier events: `xllm-tui events PROFILE` prints the whole journal",
                            style="dim"))
        return since

    def refresh_now(self) -> None:
        """Ask the poller for a snapshot at once (after an action)."""
        self._wake.set()

    def _ui_ready(self) -> bool:
        """False while starting up or shutting down: workers must not touch widgets then."""
        screen = self.main_screen
        return screen.is_mounted and screen.is_attached and not screen._closing and not self._exit

    def _set_disconnected(self, reason: str) -> None:
        if not self._ui_ready():
            return
        first = self.connected or self.disconnect_reason is None
        self.connected = False
        self.disconnect_reason = reason
        banner = self.main_screen.query_one("#connection-banner", Static)
        when = fmt.clock(self.snapshot_at) if self.snapshot_at else "never"
        text = Text()
        text.append(" Supervisor unreachable ", style="bold reverse")
        text.append(f" {reason}. Showing the last state (from {when}); retrying every {RETRY_S:.0f}s.")
        if getattr(self.source, "can_start_supervisor", False):
            text.append(" Press u to start a new supervisor (it re-adopts running ranks).")
        banner.update(text)
        banner.add_class("visible")
        if first:
            self.notify(f"Supervisor unreachable: {reason}", severity="error", timeout=6)

    def _set_connected(self) -> None:
        if not self._ui_ready():
            return
        if not self.connected and self.disconnect_reason is not None:
            self.notify("Supervisor connected again", severity="information", timeout=4)
        self.connected = True
        self.disconnect_reason = None
        self.main_screen.query_one("#connection-banner", Static).remove_class("visible")

    def _apply_snapshot(self, snapshot: dict[str, Any]) -> bool:
        """Show a snapshot; False when it changed nothing worth a redraw."""
        if not self._ui_ready():
            return False
        previous = self.snapshot
        self.snapshot = snapshot
        self.snapshot_at = snapshot.get("time") or time.time()
        self._set_connected()
        if previous is not None and _same_but_clock(previous, snapshot):
            return False  # the usual idle poll: nothing to redraw (uptimes move with the tick)
        now = self.now()
        ranks = snapshot.get("ranks") or []
        typed = Snapshot.from_dict(snapshot)
        if self.main_covered():
            # Hidden: drawn when it shows again (main_shown). Textual repaints the whole screen on top for each
            # repaint of a screen it covers: a split view of flooding ranks was redrawn whole at every snapshot.
            self._main_stale = True
        else:
            self._show_on_main(snapshot, typed, now)
        by_number = {int(r["rank"]): r for r in ranks}
        for other in self.screen_stack:
            if isinstance(other, RankDetailScreen) and int(other.rank["rank"]) in by_number:
                other.update_rank(by_number[int(other.rank["rank"])])
            elif isinstance(other, SplitScreen):
                other.update_ranks(by_number)
        if self._typed_snapshot is not None:
            self._announce_failures(self._typed_snapshot, typed)
        self._typed_snapshot = typed
        toggles = {t["name"]: bool(t.get("enabled")) for t in snapshot.get("toggles") or []}
        if self.profile_plan is not None and toggles != self.profile_plan.toggles:
            # A toggle changed the next launch (or the plan was made before the first snapshot): re-plan the
            # baseline and the edit from their own texts, so a profile edit's diff shows the edit, not the toggle.
            self.profile_plan.toggles = toggles
            self._replan_with_toggles(toggles)
        if self._tick_timer is not None:
            self._schedule_tick()  # ranks started or stopped: their uptimes change at other moments
        return True

    def _show_on_main(self, snapshot: dict[str, Any], typed: Snapshot, now: float) -> None:
        ranks = snapshot.get("ranks") or []
        first = (typed.group.first_failure or {}).get("rank")
        screen = self.main_screen
        screen.query_one(StatusBar).show(snapshot, now)
        table = screen.query_one(RankTable)
        had_rows = table.row_count > 0
        group_state = typed.group.state
        table.update_ranks(ranks, first, now, failing=group_state in ("failed", "degraded", "crash-looping", "stopping"))
        self._show_rank_log(table.selected_rank)
        if not had_rows and ranks and not self._heap_frozen:
            self._heap_frozen = True
            self.call_after_refresh(self._freeze_start_up_heap)
        screen.query_one(TogglesPanel).show(snapshot.get("toggles") or [], ranks)

    def main_covered(self) -> bool:
        """A screen hides the main one (the split view, a rank's detail), whatever dialog is on top of it."""
        stack = self.screen_stack
        above = stack[stack.index(self.main_screen) + 1:] if self.main_screen in stack else []
        return any(getattr(screen, "COVERS_MAIN", False) for screen in above)

    def main_shown(self) -> None:
        """The main screen shows again: the snapshots that came while it was covered, drawn at once."""
        if self._main_stale and self.snapshot is not None and self._ui_ready():
            self._main_stale = False
            self._show_on_main(self.snapshot, Snapshot.from_dict(self.snapshot), self.now())

    def _announce_failures(self, previous: Snapshot, current: Snapshot) -> None:
        before = {r.rank: r.failed for r in previous.ranks}
        for rank in current.ranks:
            if rank.failed and not before.get(rank.rank):
                cause = (rank.last_exit or {}).get("cause") or rank.reason or "unknown"
                self.notify(f"rank {rank.rank} {rank.state}: {cause}", title="rank failed", severity="error", timeout=8)
                if self.bell_on_failure:
                    self.bell()

    # -- selection and views --------------------------------------------------------------------------
    def rank(self, number: int | None) -> dict[str, Any] | None:
        if number is None or not self.snapshot:
            return None
        return next((r for r in self.snapshot.get("ranks") or [] if int(r["rank"]) == number), None)

    @property
    def selected_rank(self) -> int | None:
        return self.main_screen.query_one(RankTable).selected_rank

    def select_rank(self, number: int) -> None:
        self.main_screen.query_one(RankTable).select_rank(number)

    def _show_rank_log(self, number: int | None) -> None:
        self.main_screen.query_one(RankLog).show_rank(self.rank(number))

    def on_log_view_search_requested(self, message: Any) -> None:
        view = message.log_view

        def search(text: str | None) -> None:
            if text:
                view.set_search(text)
                if view.follow and not view.paused:
                    view.search_previous()  # at the live end: the most recent match, as less's ?
                else:
                    view.search_next()

        self.push_screen(
            PromptScreen("search the log (literal, case-insensitive)", "enter searches; then n / N: next / previous",
                         value=view.search_text or ""),
            search,
        )

    def on_log_view_search_result(self, message: Any) -> None:
        if not message.found:
            self.notify(f"not found: {message.query}", severity="warning", timeout=3)
        elif getattr(message, "wrapped", ""):
            self.notify(message.wrapped, timeout=2)

    def action_show_tab(self, name: str) -> None:
        if self.screen is not self.main_screen:
            return
        self.main_screen.query_one(TabbedContent).active = f"tab-{name}"
        if name == "timeline":
            self.refresh_timeline()
            self.main_screen.query_one(TimelineTable).focus()
        elif name == "toggles":
            switches = self.main_screen.query(Switch)
            if switches:
                switches.first().focus()  # keyboard only: space flips it, tab moves on, esc goes back
        elif name == "events":
            self.main_screen.query_one(EventsPane).focus()
        elif name == "devices":
            self.refresh_devices()

    def action_log_generation(self, delta: int) -> None:
        if self.screen is not self.main_screen:
            return
        self.main_screen.query_one(TabbedContent).active = "tab-log"
        if not self.main_screen.query_one(RankLog).step_generation(delta):
            self.notify("no older log" if delta > 0 else "this is the current log", timeout=2)

    def action_focus_log(self) -> None:
        if self.screen is not self.main_screen:
            return
        self.main_screen.query_one(TabbedContent).active = "tab-log"
        self.main_screen.query_one(RankLog).log_widget.focus()

    def refresh_devices(self) -> None:
        pane = self.main_screen.query_one(DevicesPane)
        snapshot = self.snapshot or {}
        ranks = list(snapshot.get("ranks") or [])
        if snapshot.get("devices"):  # the supervisor's own reading: nothing to run here
            pane.show(snapshot["devices"], ranks)
        elif self._frozen:
            pane.show_unavailable("A frozen snapshot has no devices to read; run `xllm-tui devices PROFILE`.")
        else:
            self._read_devices(ranks)

    def devices_tab_shown(self, shown: bool) -> None:
        if self._devices_timer is not None:
            self._devices_timer.resume() if shown else self._devices_timer.pause()

    def _devices_tick(self) -> None:
        """Every few seconds while the Devices tab is open (npu-smi is slow: never more often)."""
        if self._ui_ready() and self.screen is self.main_screen and self.main_screen.query_one(TabbedContent).active == "tab-devices":
            self.refresh_devices()

    @work(exit_on_error=False, group="devices", exclusive=True, thread=True)
    def _read_devices(self, ranks: list[dict[str, Any]]) -> None:
        from xllm_tui.ui.widgets.devices_pane import read_device_report, report_json

        report = report_json(read_device_report(self.simulate, ranks))
        self.call_from_thread(self.main_screen.query_one(DevicesPane).show, report, ranks)

    def refresh_timeline(self) -> None:
        if self.snapshot:
            ranks = list(self.snapshot.get("ranks") or [])
            # A flooding rank's logs are gigabytes: say what is going on until the scan is done.
            self.main_screen.query_one("#timeline-status", Static).update(
                f"reading the warnings and errors of {len(ranks)} ranks' logs …")
            self._scan_timeline(ranks)

    @work(exit_on_error=False, group="timeline", exclusive=True, thread=True)
    def _scan_timeline(self, ranks: list[dict[str, Any]]) -> None:
        read: list[int] = []
        entries = scan_ranks(ranks, read=read)
        self.call_from_thread(self._show_timeline, entries, read)

    def _show_timeline(self, entries: list, read: list[int]) -> None:
        self.main_screen.query_one(TimelineTable).show(entries)
        self.main_screen.query_one("#timeline-status", Static).update(timeline_summary(entries, read))

    def action_rank_detail(self) -> None:
        rank = self.rank(self.selected_rank)
        if rank is not None and self.screen is self.main_screen:
            self.push_screen(RankDetailScreen(rank))

    def action_split_view(self) -> None:
        if not self.snapshot or self.screen is not self.main_screen:
            return
        table = self.main_screen.query_one(RankTable)
        numbers = sorted(table.marked)
        if len(numbers) < 2:
            everything = [int(r["rank"]) for r in self.snapshot.get("ranks") or []]
            selected = table.selected_rank or 0
            start = max(0, min(everything.index(selected) if selected in everything else 0, len(everything) - 2))
            numbers = everything[start : start + 2] if len(numbers) < 1 else numbers + [n for n in everything if n not in numbers][:1]
        ranks = [r for r in (self.rank(n) for n in numbers) if r is not None]
        if ranks:
            self.push_screen(SplitScreen(ranks))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_rows()))

    def action_prompt(self) -> None:
        if self.screen is self.main_screen:
            self.push_screen(PromptScreen(), self._run_prompt)

    def action_show_profile_change(self) -> None:
        if self.profile_errors:
            self.push_screen(TextScreen("Profile errors (nothing applied)", "\n".join(self.profile_errors)))
        elif self.profile_change:
            summary, lines = self.profile_change
            self.push_screen(TextScreen(summary, "\n".join(lines) or "no rank's launch changes"))
        else:
            self.notify("The profile has not changed since the TUI started.", timeout=4)

    # -- keys -----------------------------------------------------------------------------------------
    def key_rows(self) -> list[tuple[str, str, str, str]]:
        """(group, current keys, description, binding id) for the help screen and the palette."""
        keymap = getattr(self, "_keymap", {}) or {}
        rows = []
        for binding_id, keys, _, _, _, help_text, group in APP_KEYS:
            full = f"app.{binding_id}"
            rows.append((group, key_label(keymap.get(full, keys)), help_text, full))
        for binding_id, keys, _, _, _, help_text, group in MAIN_KEYS:
            full = f"main.{binding_id}"
            rows.append((group, key_label(keymap.get(full, keys)), help_text, full))
        def keys_of(binding_id: str, default: str) -> str:
            return key_label(keymap.get(binding_id, default))

        rows += [
            ("Rank table", keys_of("rank-table.down", "j") + ", down", "next rank (the log follows)", "rank-table.down"),
            ("Rank table", keys_of("rank-table.up", "k") + ", up", "previous rank", "rank-table.up"),
            ("Rank table", keys_of("rank-table.mark", "space"), "mark a rank for the split view", "rank-table.mark"),
            ("Rank table", "enter", "rank detail", "-"),
            ("Everywhere", "esc", "back (close a screen, leave the log or a tab)", "-"),
        ]
        from xllm_tui.ui.widgets.rank_log import LogView

        for binding in getattr(LogView, "BINDINGS", []) if LogView is not None else []:
            if isinstance(binding, Binding) and binding.id:
                rows.append(("Log view (after l)", keys_of(binding.id, binding.key), binding.description.lower(), binding.id))
        return rows

    def action_for_binding(self, binding_id: str) -> str | None:
        for binding_id_, _, action, _, _, _, _ in APP_KEYS:
            if f"app.{binding_id_}" == binding_id:
                return f"app.{action}" if not action.startswith("app.") else action
        for binding_id_, _, action, _, _, _, _ in MAIN_KEYS:
            if f"main.{binding_id_}" == binding_id:
                return action
        return None

    # -- actions --------------------------------------------------------------------------------------
    def _world_size(self) -> int:
        return len((self.snapshot or {}).get("ranks") or [])

    def _confirm_then(self, title: str, body: str, op: str, label: str, **args: Any) -> None:
        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.send_action(op, **args)

        self.push_screen(ConfirmScreen(title, body, label), done)

    @work(exit_on_error=False, group="actions")
    async def send_action(self, op: str, **args: Any) -> dict[str, Any] | None:
        """Send a request to the supervisor and tell the operator how it went (never raises)."""
        what = f"{op} " + " ".join(f"{k}={v}" for k, v in args.items())
        try:
            result = await self.source.action(op, **args)
        except SourceUnavailable as error:
            self.notify(f"{what.strip()}: the supervisor is unreachable ({error})", severity="error")
            return None
        except ActionFailed as error:
            self.notify(f"{what.strip()}: refused: {error.message}", severity="error", timeout=10)
            return None
        except Exception as error:  # the TUI reports, it does not crash
            self.notify(f"{what.strip()}: failed: {error}", severity="error")
            return None
        accepted = result.get("accepted") if isinstance(result, dict) else None
        if accepted is not None:
            explanation = result.get("explanation")
            self.notify((f"{op}: {explanation}" if explanation else
                         f"{op}: ranks {fmt.rank_list(accepted) or 'none'} accepted"), timeout=6 if explanation else 4)
        elif op == "reload":
            pending = fmt.rank_list(result.get("relaunch_pending") or [])
            self.notify(
                "The supervisor loaded the profile; it is used from each rank's next launch"
                + (f" (relaunch pending: ranks {pending}; R restarts the group)" if pending else " (no rank changes)"),
                timeout=8,
            )
            for warning in result.get("warnings") or []:
                self.notify(str(warning), title="profile warning", severity="warning", timeout=8)
            self.profile_baseline = self.profile_plan  # what the supervisor launches next: later edits are against it
            self._profile_loaded_banner()
        elif op == "toggle":
            state = "on" if result.get("enabled") else "off"
            self.notify(f"toggle {result.get('group')} {state}: takes effect at each rank's next launch", timeout=5)
        self.refresh_now()
        return result

    def _require_rank(self) -> dict[str, Any] | None:
        rank = self.rank(self.selected_rank)
        if rank is None:
            self.notify("No rank selected.", severity="warning", timeout=3)
        return rank

    def _group_note(self, number: int) -> str:
        others = self._world_size() - 1
        if others <= 0:
            return ""
        return (
            f"\n\nxllm ranks fail together: while rank {number} is down, the other {others} ranks of this "
            "world lose a peer and usually fail too; with restart scope 'group' the supervisor then restarts "
            "the whole group. To restart all ranks at once use R."
        )

    def _restart_plan(self, op: str, ranks: list[int], only: bool = False):
        """What the supervisor will really do (the same rule it applies: xllm_tui.protocol.plan_restart)."""
        snap = Snapshot.from_dict(self.snapshot or {})
        return plan_restart({r.rank: r.state for r in snap.ranks}, ranks, scope=snap.group.scope, only=only, op=op,
                            waiting={r.rank for r in snap.ranks if r.waiting},
                            restart_scheduled=snap.group.next_restart_at is not None)

    def action_restart_rank(self, only: bool = False) -> None:
        rank = self._require_rank()
        if rank is None:
            return
        n = int(rank["rank"])
        plan = self._restart_plan("restart", [n], only)
        if plan.world:
            body = (
                f"Rank {n} ({fmt.state_text(rank)}, pid {rank.get('pid') or '-'}): {plan.explanation}. xllm ranks "
                f"fail together: the other {len(plan.ranks) - 1} ranks are stopped too (SIGTERM, SIGKILL after the "
                "grace period) and the whole world starts again; serving stops until rank 0 is ready. "
                f"(`:restart {n} only` restarts rank {n} alone and leaves a broken world.)"
            )
            self._confirm_then(f"Restart rank {n}: all {len(plan.ranks)} ranks?", body, "restart",
                               f"Restart all {len(plan.ranks)}", ranks=[n])
            return
        body = (
            f"Rank {n} ({fmt.state_text(rank)}, pid {rank.get('pid') or '-'}) is stopped (SIGTERM to its process "
            f"group, SIGKILL after the grace period) and started again with the profile's next launch."
            + self._group_note(n)
        )
        args = {"ranks": [n], "only": True} if only else {"ranks": [n]}
        self._confirm_then(f"Restart rank {n}" + (" alone" if only else "") + "?", body, "restart", "Restart", **args)

    def action_restart_group(self) -> None:
        size = self._world_size()
        body = (
            f"All {size} ranks are stopped and the group is started again from scratch: every rank reloads its "
            "weights, and serving stops until rank 0 is ready again. Pending toggles and profile edits take "
            "effect now."
        )
        self._confirm_then(f"Restart the whole group ({size} ranks)?", body, "restart", "Restart all", ranks="all")

    def action_stop_rank(self) -> None:
        rank = self._require_rank()
        if rank is None:
            return
        n = int(rank["rank"])
        body = (
            f"Rank {n} (pid {rank.get('pid') or '-'}) is stopped and stays stopped until you start it (S)."
            + (
                f"\n\nThe other {self._world_size() - 1} ranks lose a peer: they will fail or hang "
                "(xllm ranks fail together), and the group stops serving."
                if self._world_size() > 1
                else ""
            )
        )
        self._confirm_then(f"Stop rank {n}?", body, "stop", "Stop", ranks=[n])

    def action_start_rank(self) -> None:
        rank = self._require_rank()
        if rank is not None:
            self.send_action("start", ranks=[int(rank["rank"])])

    def action_start_all(self) -> None:
        self.send_action("start", ranks="all")

    def action_restart_failed(self) -> None:
        failed = Snapshot.from_dict(self.snapshot).failed_ranks
        if not failed:
            self.notify("No rank has failed.", timeout=3)
            return
        plan = self._restart_plan("restart", failed)
        if plan.world:
            title = f"Restart the failed ranks ({fmt.rank_list(failed)}): all {len(plan.ranks)} ranks?"
            body = (f"{plan.explanation[0].upper()}{plan.explanation[1:]}. Every rank still running is stopped and "
                    "the whole world starts again; a restart the policy scheduled happens now instead.")
        else:
            title = f"Restart the failed ranks ({fmt.rank_list(failed)})?"
            body = f"Ranks {fmt.rank_list(failed)} are started again."
        self._confirm_then(title, body, "restart", "Restart failed", ranks="failed")

    def action_stop_all(self) -> None:
        size = self._world_size()
        body = (
            f"All {size} ranks are stopped; serving stops. The supervisor keeps running and this TUI stays "
            "attached: A (or :start all) starts them again."
        )
        self._confirm_then(f"Stop all {size} ranks?", body, "stop", "Stop all", ranks="all")

    def action_shutdown(self) -> None:
        def done(confirmed: bool | None) -> None:
            if confirmed:
                self._shutdown_and_quit()

        body = (
            f"All {self._world_size()} ranks are stopped, then the supervisor exits and this TUI quits. "
            "Nothing keeps running. (q quits the TUI alone and leaves everything running.)"
        )
        self.push_screen(ConfirmScreen("Shut down everything?", body, "Shut down"), done)

    @work(exit_on_error=False, group="actions")
    async def _shutdown_and_quit(self) -> None:
        try:
            await self.source.action("shutdown", stop_ranks=True)
        except (SourceUnavailable, ActionFailed) as error:
            self.notify(f"shutdown: {error}", severity="error")
            return
        self.exit()

    def action_reload_profile(self) -> None:
        if self.profile_errors:
            self.notify("The profile has errors; fix them first (p lists them). Nothing was loaded.",
                        severity="error", timeout=6)
            return
        self.send_action("reload")

    def _profile_loaded_banner(self) -> None:
        banner = self.main_screen.query_one("#profile-banner", Static)
        if banner.has_class("visible") and not banner.has_class("error"):
            banner.update(Text(" profile loaded into the supervisor: used from each rank's next launch (R restarts the group)"))

    def on_toggles_panel_toggle_requested(self, message: TogglesPanel.ToggleRequested) -> None:
        self.send_action("toggle", group=message.group, on=message.on)

    def action_start_supervisor(self) -> None:
        if self.connected:
            self.notify("The supervisor is running.", timeout=3)
            return
        if not getattr(self.source, "can_start_supervisor", False):
            self.notify("This view cannot start a supervisor (no profile).", severity="warning")
            return
        self._start_supervisor()

    @work(exit_on_error=False, group="supervisor", exclusive=True)
    async def _start_supervisor(self) -> None:
        self.notify("Starting a supervisor (it re-adopts running ranks) ...", timeout=4)
        try:
            await self.source.start_supervisor()
        except Exception as error:  # ensure_supervisor reports its reasons as exceptions; show, do not crash
            self.notify(f"Could not start a supervisor: {error}", severity="error", timeout=10)
            return
        self.refresh_now()
        self._events_loop()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start_supervisor":
            return not self.connected
        return True

    def rank_command(self, verb: str, number: int) -> None:
        """Select a rank, then act on it as its key would (destructive verbs still confirm)."""
        self.select_rank(number)
        {
            "restart": self.action_restart_rank,
            "stop": self.action_stop_rank,
            "start": self.action_start_rank,
            "detail": self.action_rank_detail,
            "log": self.action_focus_log,
        }[verb]()

    # -- command prompt -------------------------------------------------------------------------------
    def _run_prompt(self, line: str | None) -> None:
        if not line:
            return
        words = line.split()
        verb, rest = words[0].lower(), words[1:]
        try:
            if verb in ("restart", "stop", "start"):
                target = rest[0] if rest else None
                if target is None:
                    raise ValueError(f"{verb} what? e.g. `{verb} 3`, `{verb} all`")
                if target == "all":
                    {"restart": self.action_restart_group, "stop": self.action_stop_all, "start": self.action_start_all}[verb]()
                elif target == "failed" and verb == "restart":
                    self.action_restart_failed()
                elif verb == "restart" and len(rest) == 2 and rest[1] == "only":
                    self.select_rank(int(rest[0]))
                    self.action_restart_rank(only=True)
                else:
                    numbers = [int(w) for w in rest]
                    if len(numbers) == 1:
                        self.select_rank(numbers[0])
                        {"restart": self.action_restart_rank, "stop": self.action_stop_rank, "start": self.action_start_rank}[verb]()
                    elif verb == "start":
                        self.send_action("start", ranks=numbers)
                    else:
                        body = f"Ranks {fmt.rank_list(numbers)} are {verb}ped." + self._group_note(numbers[0])
                        self._confirm_then(f"{verb.title()} ranks {fmt.rank_list(numbers)}?", body, verb, verb.title(), ranks=numbers)
            elif verb == "toggle" and len(rest) == 2 and rest[1] in ("on", "off"):
                self.send_action("toggle", group=rest[0], on=rest[1] == "on")
            elif verb == "rank" and len(rest) == 1:
                self.select_rank(int(rest[0]))
            elif verb == "split" and rest:
                table = self.main_screen.query_one(RankTable)
                table.marked = {int(w) for w in rest}
                self.action_split_view()
            elif verb in ("timeline", "events", "toggles", "devices", "log"):
                self.action_show_tab(verb) if verb != "log" else self.action_focus_log()
            elif verb == "theme" and len(rest) == 1:
                if rest[0] not in self.available_themes:
                    raise ValueError(f"no theme {rest[0]!r}; available: {', '.join(sorted(self.available_themes))}")
                self.theme = rest[0]
            elif verb == "help":
                self.action_help()
            elif verb in ("quit", "q"):
                self.exit()
            elif verb == "shutdown":
                self.action_shutdown()
            else:
                raise ValueError(f"unknown command {line!r}; ? lists the keys")
        except (ValueError, IndexError) as error:
            self.notify(str(error), severity="warning", timeout=6)

    # -- the profile ----------------------------------------------------------------------------------
    def next_launch(self, rank: int) -> dict[str, Any] | None:
        if self.profile_plan is not None:
            return self.profile_plan.next_launch(rank)
        planned = ((self.snapshot or {}).get("next_launch") or {}).get(str(rank))
        return planned

    def watched_env(self) -> set[str] | None:
        return self.profile_plan.watched_env if self.profile_plan is not None else None

    @work(exit_on_error=False, group="profile", exclusive=True)
    async def _load_profile(self, initial: bool = False) -> None:
        from xllm_tui.ui import profile_watch

        toggles = {t["name"]: bool(t.get("enabled")) for t in (self.snapshot or {}).get("toggles") or []}
        try:
            plan = await asyncio.to_thread(
                profile_watch.plan_profile, self.profile_path, simulate=self.simulate, toggles=toggles,
                port_offset=self.port_offset,
            )
        except Exception as error:  # an unexpected loader failure is shown like a profile error
            plan = profile_watch.ProfilePlan(errors=[f"{self.profile_path}: {error}"])
        banner = self.main_screen.query_one("#profile-banner", Static)
        if not plan.ok:
            self.profile_errors = plan.errors
            text = Text()
            text.append(" Profile error ", style="bold reverse")
            text.append(f" {plan.errors[0]}  (not applied; p shows all {len(plan.errors)})")
            banner.update(text)
            banner.add_class("visible", "error")
            if not initial:
                self.notify(plan.errors[0], title="profile has errors (not applied)", severity="error", timeout=8)
            return
        self.profile_errors = []
        banner.remove_class("error")
        # Warnings an edit introduced (the ones present at start were printed before the TUI opened).
        new_warnings = [w for w in plan.warnings if self.profile_plan is not None and w not in self.profile_plan.warnings]
        if new_warnings and not initial:
            more = f" (and {len(new_warnings) - 1} more: `xllm-tui validate`)" if len(new_warnings) > 1 else ""
            self.notify(new_warnings[0] + more, title="profile warning", severity="warning", timeout=8)
        if initial or self.profile_plan is None:
            self.profile_plan = self.profile_baseline = plan
            if not self.profile_change:
                banner.remove_class("visible")
            return
        self.profile_plan = plan
        summary = self._show_profile_change()
        banner.add_class("visible")
        self.notify(summary, title="profile", timeout=6)
        self._redraw_next_launch()

    def _show_profile_change(self) -> str:
        """The edits (the plan against its baseline) in the banner and for p; returns their summary."""
        from xllm_tui.ui import profile_watch

        changed, lines = profile_watch.describe_change(self.profile_baseline, self.profile_plan)
        summary = profile_watch.change_summary(changed)
        self.profile_change = (summary, lines)
        self.main_screen.query_one("#profile-banner", Static).update(
            Text(f" {summary}; ctrl+r loads it into the supervisor for the next launch"))
        return summary

    def _redraw_next_launch(self) -> None:
        """The profile's plan changed: the open rank detail pages show its next launch."""
        for other in self.screen_stack:
            if isinstance(other, RankDetailScreen):
                other.render_detail()

    @work(exit_on_error=False, group="profile-toggles", exclusive=True)
    async def _replan_with_toggles(self, toggles: dict[str, bool]) -> None:
        """The same texts planned again with new toggle states: what the supervisor launches next (the
        baseline) and the file as edited since. Reading the file here instead took an edit not yet loaded
        (ctrl+r) for the baseline, and its banner then compared later edits with it."""
        from xllm_tui.ui import profile_watch

        baseline, current = self.profile_baseline, self.profile_plan
        if baseline is None or current is None or baseline.text is None:
            self._load_profile(initial=True)
            return

        def plan(text: str | None) -> profile_watch.ProfilePlan:
            return profile_watch.plan_profile(self.profile_path, simulate=self.simulate, toggles=toggles,
                                              port_offset=self.port_offset, text=text)

        try:
            new_baseline = await asyncio.to_thread(plan, baseline.text)
            new_current = new_baseline if current.text == baseline.text else await asyncio.to_thread(plan, current.text)
        except Exception as error:  # an unexpected loader failure is shown like a profile error
            self.notify(f"{self.profile_path}: {error}", title="profile", severity="error", timeout=8)
            return
        if not new_baseline.ok or not new_current.ok or self.profile_baseline is not baseline:
            return  # errors were shown when those texts were read; or a load (ctrl+r) made a newer baseline
        self.profile_baseline = new_baseline
        if self.profile_plan is current:  # else an edit was read meanwhile, planned with these toggles
            self.profile_plan = new_current
            self._redraw_next_launch()  # the toggle's snapshot redrew them with the plan made without it
        if self.profile_change and self.profile_plan is not new_baseline:
            self._show_profile_change()

    @work(exit_on_error=False, group="watch", exclusive=True)
    async def _watch_profile(self) -> None:
        """Re-plan the profile when its file changes. inotify on the event loop costs nothing until then."""
        from xllm_tui.logs.inotify import FileWatch

        path = os.path.abspath(self.profile_path or "")
        try:
            watch = FileWatch(path)  # its directory too: editors save by renaming a new file over the old one
        except (OSError, AttributeError):
            await self._watch_profile_polling(path)
            return
        changed = asyncio.Event()
        watch.listen(changed.set)
        try:
            while True:
                await changed.wait()
                await asyncio.sleep(PROFILE_SETTLE_S)  # a save is several events (write, rename): read it once
                changed.clear()
                self._load_profile()
        finally:
            watch.close()

    async def _watch_profile_polling(self, path: str) -> None:
        """Without inotify: watchfiles, whose thread wakes every `step` ms (its 50 ms default costs an idle
        TUI 20 wake-ups a second)."""
        import watchfiles

        try:
            async for changes in watchfiles.awatch(os.path.dirname(path), debounce=1000, step=500,
                                                   recursive=False):
                if any(os.path.abspath(p) == path for _, p in changes):
                    self._load_profile()
        except Exception as error:  # a vanished directory must not end the TUI
            self.notify(f"stopped watching the profile: {error}", severity="warning")
