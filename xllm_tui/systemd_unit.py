"""The systemd unit that brings a deployment back after a reboot (`xllm-tui systemd PROFILE`). Pure text.

The unit runs `xllm-tui up PROFILE --foreground --run-dir DIR`: the supervisor in the service's main process,
which launches the ranks at start (running the profile's pre-launch steps first, the `after_reboot` ones only
when the machine booted since the last launch) and restarts them by the profile's policy. The run directory
is fixed in the unit so that the operator's `xllm-tui status/down/PROFILE` reach the same supervisor.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from xllm_tui.spec import Profile

EXIT_BAD_PROFILE, EXIT_ALREADY_RUNNING = 2, 4  # commands/lifecycle.py's; systemd must not retry these


def unit_name(profile: Profile, simulate: bool = False) -> str:
    safe = re.sub(r"[^A-Za-z0-9:_.-]", "-", profile.name)
    return f"xllm-tui-{safe}{'-sim' if simulate else ''}.service"


def _quote(argv: Sequence[str]) -> str:
    """systemd's ExecStart quoting: double quotes, backslash escapes; % is systemd's specifier character."""
    words = []
    for word in argv:
        word = word.replace("%", "%%")
        if word and not re.search(r"[\s\"'\\;$]", word):
            words.append(word)
        else:
            words.append('"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(words)


def _environment(name: str, value: str) -> str:
    """Environment="NAME=value", systemd's documented quoting for a value with any character."""
    assignment = f"{name}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{assignment}"'


def unit_text(profile: Profile, *, command: Sequence[str], run_dir: str, simulate: bool = False,
              user: bool = False, path_env: str | None = None, machine: str | None = None) -> str:
    """command: how to run xllm-tui (e.g. [sys.executable, "-m", "xllm_tui"]), absolute."""
    argv = [*command, "up", profile.source_path, "--foreground", "--run-dir", run_dir]
    if machine:
        argv += ["--machine", machine]
    if simulate:
        argv.append("--simulate")
    reboot_steps = [s for s in profile.pre_launch if s.when == "after_reboot"]
    other_steps = [s for s in profile.pre_launch if s.when == "always"]
    lines = [
        f"# {unit_name(profile, simulate)}: the xllm ranks of profile {profile.name}"
        f"{' (simulated)' if simulate else ''}, supervised by xllm-tui.",
        "# Written by `xllm-tui systemd`. The supervisor runs in the foreground of this service: it launches",
        "# the ranks at start and restarts them by the profile's restart policy. Before a launch it runs the",
        "# profile's pre-launch steps; those marked after_reboot only when the machine booted since the last launch:",
    ]
    for step in reboot_steps:
        what = shlex.join(step.run) if step.run else "remove " + " ".join(step.remove)
        lines.append(f"#   {step.name} (after_reboot): {what}")
    if not reboot_steps:
        lines.append("#   (this profile has no after_reboot step; the guide's is torch_npu set_device per NPU)")
    for step in other_steps:
        what = shlex.join(step.run) if step.run else "remove " + " ".join(step.remove)
        lines.append(f"#   {step.name} (every launch): {what}")
    lines += [
        f"# Watch or steer it as usual: xllm-tui status {shlex.quote(profile.source_path)}"
        f"{' --simulate' if simulate else ''} (same run directory). `xllm-tui down` stops ranks and",
        "# supervisor and the service stays stopped (exit 0); systemctl stop does the same (SIGTERM to the supervisor).",
        "",
        "[Unit]",
        f"Description=xllm ranks of profile {profile.name} (xllm-tui supervisor)",
        "Documentation=https://github.com/jd-opensource/xllm",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={_quote(argv)}",
        f"WorkingDirectory={_quote([profile.source_path.rsplit('/', 1)[0] or '/'])}",
    ]
    if path_env:
        lines.append("# PATH as it was where the unit was written (npu-smi, numactl, python for pre-launch steps)")
        lines.append(_environment("PATH", path_env))
    lines += [
        "Environment=PYTHONUNBUFFERED=1",
        "# SIGTERM to the supervisor alone: it stops every rank's process group itself (TERM, the profile's",
        "# grace, then KILL) and exits; systemd kills whatever is left (also when the supervisor itself dies:",
        "# the ranks then go with it and the restarted service launches them afresh).",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={int(profile.stop_grace_s) + 30}",
        "Restart=on-failure",
        "RestartSec=5",
        f"# {EXIT_BAD_PROFILE}: the profile has errors; {EXIT_ALREADY_RUNNING}: a supervisor started by hand "
        "(`xllm-tui up`) holds the run directory",
        f"RestartPreventExitStatus={EXIT_BAD_PROFILE} {EXIT_ALREADY_RUNNING}",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)
