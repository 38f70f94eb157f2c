"""Where the supervisor's news goes besides its clients: the profile's `hooks:` (a command per chosen event, never
blocking the loop: xllm_tui.alerts) and `metrics:` (Prometheus text for node_exporter's textfile collector or a
loopback scrape: xllm_tui.metrics). A mixin of Supervisor."""

from __future__ import annotations

import asyncio
import logging
import os

from xllm_tui.alerts import HookOutcome, HookRunner
from xllm_tui.metrics import MetricsExporter
from xllm_tui.spec import Profile

log = logging.getLogger("xllm_tui.supervisor")


class Outlets:
    def init_outlets(self) -> None:
        self.hooks: HookRunner | None = None
        self.metrics: MetricsExporter | None = None
        self.metrics_task: asyncio.Task | None = None

    def start_outlets(self) -> None:
        """Once the loop and the journal exist, before the first rank event."""
        self.hooks = HookRunner(self.profile.hooks, profile_name=self.profile.name,
                                cwd=os.path.dirname(self.profile.source_path),
                                on_result=lambda outcome: self.loop.call_soon_threadsafe(self.hook_done, outcome))
        self.start_metrics(self.profile)

    def start_metrics(self, profile: Profile) -> None:
        if not profile.metrics:
            return
        exporter = MetricsExporter(profile.metrics)
        try:
            exporter.start()
        except OSError as e:
            self.event("supervisor", reason=f"metrics: cannot serve {profile.metrics.listen}: {e}")
            return
        self.metrics = exporter
        self.metrics_task = self.spawn_task(exporter.run(
            lambda: self.snapshot(events=0),
            on_error=lambda e: log.error("metrics: cannot write %s: %s", profile.metrics.textfile, e)))

    def hook_done(self, outcome: HookOutcome) -> None:
        if not outcome.ok:
            self.event("supervisor", reason=outcome.summary(), hook=outcome.to_dict())

    async def reload_outlets(self, profile: Profile) -> None:
        if self.hooks is not None:
            self.hooks.hooks = profile.hooks
        if profile.metrics != (self.metrics.settings if self.metrics else None):
            await self.close_metrics()
            self.start_metrics(profile)

    async def close_metrics(self) -> None:
        if self.metrics_task is not None:
            self.metrics_task.cancel()
            self.metrics_task = None
        if self.metrics is not None:
            exporter, self.metrics = self.metrics, None
            await asyncio.to_thread(exporter.update, self.snapshot(events=0))
            await asyncio.to_thread(exporter.close)

    async def close_outlets(self) -> None:
        await self.close_metrics()
        if self.hooks is not None:
            await asyncio.to_thread(self.hooks.close, 5.0)
