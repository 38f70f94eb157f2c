"""The profile as the TUI sees it: the next launch of every rank, and what an edit would change.

Pure functions (no Textual), run in a thread by the app: loading and planning read files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xllm_tui.ui.widgets import format as fmt


@dataclass
class ProfilePlan:
    """The result of reading the profile once."""

    errors: list[str] = field(default_factory=list)  # "file:line:col: error: key: message"
    warnings: list[str] = field(default_factory=list)
    launches: dict[int, Any] = field(default_factory=dict)  # rank -> RankLaunch
    watched_env: set[str] = field(default_factory=set)  # variables the profile sets or a toggle touches
    toggles: dict[str, bool] = field(default_factory=dict)  # the toggle states this plan was made with
    text: str | None = None  # the profile's text it was made from (None: the file could not be read)

    @property
    def ok(self) -> bool:
        return not self.errors

    def next_launch(self, rank: int) -> dict[str, Any] | None:
        launch = self.launches.get(rank)
        if launch is None:
            return None
        return {"argv": list(launch.argv), "env": launch.env_dict(), "cwd": launch.cwd}


def plan_profile(
    path: str, *, simulate: bool, toggles: dict[str, bool] | None = None, port_offset: int = 0,
    text: str | None = None,
) -> ProfilePlan:
    """Load and validate the profile (the file, or `text` as if it were the file); on success plan every rank's
    next launch with the toggles' states.

    The environment is planned without the inherited one (base_env={}): the supervisor's inherited
    environment is not ours to know, so diffs cover only what the profile itself sets.
    """
    from xllm_tui import launch
    from xllm_tui.profile import load_profile, load_profile_text

    if text is None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            text = None  # the loader says why, with the path
    result = load_profile(path, simulate=simulate) if text is None else load_profile_text(text, path, simulate)
    plan = ProfilePlan(
        errors=[str(d) for d in result.errors], warnings=[str(d) for d in result.warnings], toggles=dict(toggles or {}),
        text=text,
    )
    if result.errors or result.profile is None:
        if not plan.errors:
            plan.errors.append(f"{path}: the profile could not be loaded")
        return plan
    profile = result.profile
    known = {t.name for t in profile.toggles}
    states = {name: on for name, on in (toggles or {}).items() if name in known}
    try:
        mapping = launch.build_simulate_mapping(profile, port_offset) if simulate else None
        launches = launch.plan_launches(profile, simulate=mapping, base_env={}, toggles=states)
    except launch.LaunchError as error:
        plan.errors.append(f"{path}: {error}")
        return plan
    plan.launches = {item.rank: item for item in launches}
    watched = {name for name, _ in profile.env} | {name for name, _ in profile.path_prepend}
    for toggle in profile.toggles:
        watched |= {name for name, _ in toggle.env} | set(toggle.unset)
    plan.watched_env = watched
    return plan


def describe_change(old: ProfilePlan, new: ProfilePlan) -> tuple[list[int], list[str]]:
    """Ranks whose next launch changes from old to new, and the lines saying how (per rank)."""
    from xllm_tui import launch

    changed: list[int] = []
    lines: list[str] = []
    for rank in sorted(set(old.launches) | set(new.launches)):
        before, after = old.launches.get(rank), new.launches.get(rank)
        if before is None:
            changed.append(rank)
            lines.append(f"rank {rank}: new rank")
            continue
        if after is None:
            changed.append(rank)
            lines.append(f"rank {rank}: no longer in the profile")
            continue
        diff = launch.launch_diff(before, after)
        if diff:
            changed.append(rank)
            lines.append(f"rank {rank}:")
            lines += [f"    {line}" for line in diff.describe()]
    return changed, lines


def change_summary(changed: list[int]) -> str:
    if not changed:
        return "profile saved: no rank's launch changes"
    return f"profile changed: a relaunch would change ranks {fmt.rank_list(changed)} (p shows how)"
