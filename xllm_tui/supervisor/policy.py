"""Restart policy: when to restart a failed group (or rank), after what backoff, and when to give up.

Pure: times are passed in, so the arithmetic is testable without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xllm_tui.spec import RestartPolicy


@dataclass
class Decision:
    restart: bool
    delay: float = 0.0
    reason: str = ""
    crash_looping: bool = False


@dataclass
class RestartTracker:
    """Restart history of one unit (the group, or one rank when scope is rank)."""

    policy: RestartPolicy
    restarts_at: list[float] = field(default_factory=list)  # times of automatic restarts

    def in_window(self, now: float) -> list[float]:
        return [t for t in self.restarts_at if now - t <= self.policy.window_s]

    def backoff(self, now: float) -> float:
        """initial * factor^(restarts in window), capped at backoff_max_s."""
        p = self.policy
        n = len(self.in_window(now))
        delay = p.backoff_initial_s * (p.backoff_factor ** n)
        return max(0.0, min(delay, p.backoff_max_s))

    def decide(self, now: float, what: str) -> Decision:
        p = self.policy
        if p.mode != "on-failure":
            return Decision(False, reason=f"restart policy is {p.mode}: {what} left as it is")
        recent = self.in_window(now)
        if len(recent) >= p.max_restarts:
            return Decision(
                False,
                crash_looping=True,
                reason=f"{what} restarted {len(recent)} times within {p.window_s:g}s "
                f"(limit {p.max_restarts}); left alone until an operator starts it",
            )
        delay = self.backoff(now)
        return Decision(
            True, delay=delay,
            reason=f"restarting in {delay:g}s (restart {len(recent) + 1} of at most {p.max_restarts} within {p.window_s:g}s)",
        )

    def record_restart(self, now: float) -> None:
        self.restarts_at = self.in_window(now) + [now]

    def reset(self) -> None:
        self.restarts_at = []

    def to_json(self) -> list[float]:
        return list(self.restarts_at)
