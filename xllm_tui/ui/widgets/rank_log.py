"""A rank's log pane: a title line (rank, state, log path) over the shared LogView widget."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static

from xllm_tui.ui.widgets import format as fmt

try:  # LogView is built by the logs work; until it exists the pane says where the log is.
    from xllm_tui.ui.widgets.log_view import LogView
except ImportError:  # pragma: no cover - only before log_view.py lands
    LogView = None  # type: ignore[assignment,misc]


def make_log_widget(**kwargs: Any) -> Widget:
    if LogView is not None:
        return LogView(classes="rank-log-body", **kwargs)
    return Static("", classes="rank-log-body log-placeholder", **kwargs)


class RankLog(Vertical):
    """Shows one rank's log; show_rank() switches to another rank at once (same widget, new path)."""

    def __init__(self, *, log_id: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._log_id = log_id
        self.rank: int | None = None
        self.path: str | None = None  # the file shown (the current log, or an earlier generation)
        self.back = 0  # 0: current log; 1: the previous generation (node_3.log.1); 2: the one before ...
        self._rank_data: dict[str, Any] | None = None
        self._title: Text | None = None
        self._mirror: Any = None  # logs.mirror.LogMirror while a rank on another machine is shown
        self._remote_timer: Any = None
        self._pull: Any = None  # the Worker of the last pull of the remote log
        self._copy_error: str | None = None  # why the local copy of a remote log cannot be written, while so
        self._source_key: tuple | None = None  # (rank, pid, log path) the local file shown was chosen for

    def on_mount(self) -> None:
        # Runs only while a rank on another machine is shown (a local log needs no pulling).
        self._remote_timer = self.set_interval(0.5, self._pull_remote, pause=self._mirror is None)

    def _pull_remote(self, *, new_mirror: bool = False) -> None:
        """One pull at a time. A pull still waiting for its reply is left to finish: cancelling it at each tick
        would starve a link slower than the tick. Only a new mirror (another rank or generation) replaces it."""
        if self._mirror is None or not self.shown:
            return  # a hidden view (another tab, a covering screen): set_shown(True) pulls
        if self._pull is not None and not self._pull.is_finished:
            if not new_mirror:
                return
            self._pull.cancel()
        self._pull = self.run_worker(self._pull_once(self._mirror), group="remote-log", exit_on_error=False)

    async def _pull_once(self, mirror: Any) -> None:
        """A rank on another machine: its new log bytes through machine 0's supervisor (log_read)."""
        try:
            part = await self.app.source.action("log_read", **mirror.request())
        except Exception:  # noqa: BLE001 - machine out of reach or supervisor gone: the next pull tries again
            return
        if mirror is self._mirror:
            had = mirror.generations
            try:
                # Up to 4 MiB encoded and appended to the copy: not on the event loop.
                await asyncio.to_thread(mirror.apply, part)
            except OSError as e:  # a full disk: the copy stays as it was, and the next pull asks again
                self._copy_failed(e, mirror.rank)
                return
            self._copy_error = None
            if mirror is self._mirror and mirror.generations != had and self._rank_data is not None:
                self.show_rank(self._rank_data)  # the `[ earlier logs` hint

    def _local_path(self, rank: dict[str, Any]) -> str | None:
        """The file the view reads: the log itself, or for a rank on another machine a local copy of the
        generation shown (fetched through machine 0's supervisor)."""
        if not rank.get("remote"):
            if self._mirror is not None:
                self._mirror.retire()
            self._mirror = None
            if self._remote_timer is not None:
                self._remote_timer.pause()
            return self._deleted_log_or(rank)
        from xllm_tui.logs.mirror import LogMirror, mirror_path

        self._source_key = None  # the local file chosen last is no longer the one shown
        run_dir = getattr(self.app.source, "run_dir", "") or ""
        path = mirror_path(run_dir, int(rank["rank"]), self.back)
        if self._mirror is None or self._mirror.path != path:
            known = self._mirror.generations if self._mirror is not None and self._mirror.rank == rank["rank"] \
                else None
            if self._mirror is not None:
                self._mirror.retire()  # its pull in flight must not write into the new copy of the same path
            try:
                self._mirror = LogMirror(path, int(rank["rank"]), self.back)
            except OSError as e:  # the cache directory cannot be made or written (a full disk, permissions)
                self._mirror = None
                self._copy_failed(e, int(rank["rank"]))
                return None
            self._mirror.generations = known
            self._pull_remote(new_mirror=True)
        if self._remote_timer is not None:
            self._remote_timer.resume()
        return path

    def _deleted_log_or(self, rank: dict[str, Any]) -> str | None:
        """The rank's log; when its name is gone (logs/ cleared while it runs), the file it still writes, through
        its stdout (/proc/PID/fd/1), unless this view already has the log open (it reads on from its own open
        file)."""
        from xllm_tui.logs.tail import deleted_log_source

        path = rank.get("log_path")
        pid = rank.get("pid")
        if not path or self.back:
            self._source_key = None
            return path
        # Looked up once per rank, launch and path, not at every snapshot (a stat of /proc on the UI loop). The
        # file chosen stays open in the view: it reads on from it, even once the name is gone or the rank exited.
        key = (int(rank["rank"]), pid, path)
        previous, self._source_key = self._source_key, key
        if key == previous or (pid is None and previous is not None and previous[0::2] == key[0::2]):
            return self.path
        return deleted_log_source(path, pid) or path

    def _copy_failed(self, e: OSError, rank: int) -> None:
        """Said once per cause, not at every pull: the local copy of a remote rank's log cannot be written."""
        text = f"{e.strerror or e}"
        if text != self._copy_error:
            self._copy_error = text
            self.notify(f"cannot write the local copy of rank {rank}'s log: {text}; it goes on when it can "
                        f"(`xllm-tui logs --rank {rank}` reads it without a copy)", severity="error", timeout=10)

    def compose(self) -> ComposeResult:
        yield Static("", classes="rank-log-title")
        yield make_log_widget(id=self._log_id) if self._log_id else make_log_widget()

    @property
    def log_widget(self) -> Widget:
        return self.query_one(".rank-log-body")

    @property
    def shown(self) -> bool:
        """False while another tab or a covering screen hides the log (see set_shown)."""
        return not getattr(self.log_widget, "suspended", False)

    def set_shown(self, shown: bool) -> None:
        """The log shows or hides. A hidden log is neither read nor, for a rank on another machine, pulled (a
        flooding rank's log was read behind another tab); shown again, it reads and pulls what it missed."""
        view = self.log_widget
        if not hasattr(view, "suspend"):
            return
        if not shown:
            view.suspend()
        elif view.suspended:
            view.resume()
            self._pull_remote()

    def earlier_logs(self) -> list[str]:
        """The files of this rank's earlier generations, newest first (for a rank on another machine: where
        each would be copied; how many there are is told by each log_read reply)."""
        data = self._rank_data or {}
        base = data.get("log_path")
        if data.get("remote"):
            from xllm_tui.logs.mirror import mirror_path

            count = (self._mirror.generations if self._mirror is not None else None) or 0
            run_dir = getattr(self.app.source, "run_dir", "") or ""
            return [mirror_path(run_dir, int(data["rank"]), g) for g in range(1, count + 1)]
        if not base:
            return []
        from xllm_tui.logs.tail import log_generations

        return log_generations(base)

    def step_generation(self, delta: int) -> bool:
        """Show an older (delta=+1) or newer (-1) generation of this rank's log; False when there is none."""
        if self._rank_data is None:
            return False
        target = self.back + delta
        if target < 0 or target > len(self.earlier_logs()):
            return False
        self.back = target
        self.show_rank(self._rank_data)
        return True

    def show_rank(self, rank: dict[str, Any] | None) -> None:
        title = self.query_one(".rank-log-title", Static)
        if rank is None:
            title.update(Text("no rank selected", style="dim"))
            self._title = None  # the rank's title, shown again, is no longer on screen
            return
        if self.rank is not None and int(rank["rank"]) != self.rank:
            self.back = 0  # another rank: start at its current log
        self._rank_data = rank
        number, path = int(rank["rank"]), self._local_path(rank)
        if self.back and path and not rank.get("remote"):  # a remote rank's copy is of the generation shown
            earlier = self.earlier_logs()
            if self.back <= len(earlier):
                path = earlier[self.back - 1]
            else:
                self.back = 0
        state_colour = self.app.theme_variables.get(fmt.STATE_VARIABLE.get(rank.get("state") or "", ""), "")
        text = Text()
        text.append(f" rank {number} ", style="bold reverse")
        text.append(f" {fmt.state_text(rank)} ", style=f"bold {state_colour}")
        if self.back:
            shown = f"{rank.get('machine')}:{rank.get('log_path')}.{self.back}" if rank.get("remote") else path
            text.append(f" earlier log, {self.back} launch(es) back ", style="bold reverse")
            text.append(f"  {shown}  (] newer)", style="dim")
        else:
            hint = "  ([ earlier logs)" if not rank.get("remote") or self.earlier_logs() else ""
            shown = path or "no log file"
            if rank.get("remote"):  # the file there, not our copy of it
                shown = f"{rank.get('machine')}:{rank.get('log_path')}"
            elif path and path.startswith("/proc/"):
                shown = f"{rank.get('log_path')} (deleted; read through {path})"
            # A narrow terminal keeps the file's end (its name) and the hint, not the directories.
            room = self.size.width - text.cell_len - len(f" gen {rank.get('generation', '-')}  ") - len(hint)
            if path and self.size.width and len(shown) > room > 12:
                shown = "…" + shown[-(room - 1):]
            text.append(f" gen {rank.get('generation', '-')}  {shown}", style="dim")
            text.append(hint, style="dim")
        if text != self._title:
            self._title = text
            # A title of fixed height (app.tcss) cannot change the layout: skip the reflow of the whole screen
            # Static.update does by default (it was most of a rank switch's frame under a flood).
            height = title.styles.height
            title.update(text, layout=height is None or not height.is_cells)
        if path == self.path and number == self.rank:
            return
        self.rank, self.path = number, path
        widget = self.log_widget
        if LogView is not None and isinstance(widget, LogView):
            widget.set_path(path)  # None too: no log shown rather than the previous rank's
        elif isinstance(widget, Static):
            widget.update(Text(f"log view not available yet; the log is {path}", style="dim"))
