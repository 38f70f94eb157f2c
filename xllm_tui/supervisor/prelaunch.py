"""Pre-launch work before a group launch: the profile's pre-launch steps and active toggles' removals.

Everything here is data-driven (globs to remove, argv to run, never a shell) and reports what it did,
so the supervisor can journal each thing. Under --simulate removals are confined to the profile's working
directory, the run directory and (for ~ patterns) $HOME, and `run` steps are skipped: a simulated run
never deletes real system files such as /root/atb/log.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass
class Outcome:
    """What one step or toggle removal did (becomes one `prelaunch` event)."""

    name: str
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: why"
    errors: list[str] = field(default_factory=list)
    ran: list[str] | None = None
    code: int | None = None
    note: str = ""

    def to_event(self) -> dict:
        data: dict = {"step": self.name, "removed": self.removed}
        if self.skipped:
            data["skipped"] = self.skipped
        if self.errors:
            data["errors"] = self.errors
        if self.ran is not None:
            data["ran"] = self.ran
            data["code"] = self.code
        if self.note:
            data["note"] = self.note
        data["reason"] = self.summary()
        return data

    def summary(self) -> str:
        parts = []
        if self.removed:
            parts.append(f"removed {len(self.removed)} path(s)")
        if self.ran is not None:
            parts.append(f"ran {' '.join(self.ran)} -> exit {self.code}")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)}")
        if self.errors:
            parts.append(f"{len(self.errors)} error(s)")
        if self.note:
            parts.append(self.note)
        return f"{self.name}: " + (", ".join(parts) if parts else "nothing to do")


def _within(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    for root in roots:
        root_real = os.path.realpath(root)
        if real == root_real or real.startswith(root_real.rstrip("/") + "/"):
            return True
    return False


def remove_globs(
    outcome: Outcome, patterns: tuple[str, ...] | list[str], *, base_dir: str, simulate: bool, allowed_roots: list[str]
) -> None:
    home = os.path.expanduser("~")
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if not os.path.isabs(expanded):
            expanded = os.path.join(base_dir, expanded)
        roots = list(allowed_roots) + ([home] if pattern.startswith("~") else [])
        for path in sorted(glob.glob(expanded)):
            path = path.rstrip("/") or path
            if simulate and not _within(path, roots):
                outcome.skipped.append(f"{path}: outside the working/run directory under --simulate")
                continue
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                outcome.removed.append(path)
            except OSError as e:
                outcome.errors.append(f"{path}: {e.strerror or e}")
        if simulate and not glob.glob(expanded) and not _within(expanded, roots) and not outcome.removed:
            # Say so even when nothing matched: the operator sees the guard worked.
            outcome.skipped.append(f"{expanded}: outside the working/run directory under --simulate")


def run_step(outcome: Outcome, argv: tuple[str, ...], *, cwd: str, env: dict[str, str], timeout: float, log) -> None:
    outcome.ran = list(argv)
    try:
        done = subprocess.run(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            timeout=timeout, close_fds=True, start_new_session=True,
        )
        outcome.code = done.returncode
        if done.returncode != 0:
            outcome.errors.append(f"exit status {done.returncode}")
    except subprocess.TimeoutExpired:
        outcome.errors.append(f"timed out after {timeout:g}s")
    except OSError as e:
        outcome.errors.append(f"cannot run {argv[0]}: {e.strerror or e}")
