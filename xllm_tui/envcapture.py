"""Capture the environment that `source script.sh` would produce, without launching ranks through a shell.

The launch guide sources the Ascend toolkit and ATB set_env.sh scripts before starting xllm. Ranks here
are started from argv lists, so the scripts are run once in bash and their resulting environment is
read back with `env -0` (NUL-separated: values may hold newlines).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable, Mapping

# Variables bash itself sets or changes on every run: never part of what a script exported.
_SHELL_NOISE = frozenset({"_", "SHLVL", "PWD", "OLDPWD"})

# The scripts arrive as positional parameters (never interpolated into the command text). They are moved
# to an array and the positional parameters cleared, so a script that inspects "$@" sees none.
# Each script's exit status goes first, as one NUL-terminated field, then the environment.
_BASH_PROGRAM = r"""
__xllm_tui_scripts=("$@")
set --
__xllm_tui_status=""
for __xllm_tui_script in "${__xllm_tui_scripts[@]}"; do
    source "$__xllm_tui_script" >/dev/null 2>&1 </dev/null
    __xllm_tui_status="$__xllm_tui_status $?"
done
printf '%s\0' "$__xllm_tui_status"
exec env -0
"""


def _parse_env0(data: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        if not item:
            continue
        name, sep, value = item.decode("utf-8", "surrogateescape").partition("=")
        if sep and name:
            env[name] = value
    return env


def capture_sourced_env(
    scripts: Iterable[str],
    base_env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[dict[str, str], list[str]]:
    """(variables the scripts set or changed relative to base_env, warnings).

    One bash process sources every script in order. A missing script, a script that fails, a timeout or
    unreadable output becomes a warning (the launch proceeds with what is known), never an exception.
    Variables a script unsets are not reported (the result is an overlay on base_env).
    """
    base = dict(os.environ if base_env is None else base_env)
    warnings: list[str] = []
    present: list[str] = []
    for script in scripts:
        path = os.path.expanduser(script)
        if os.path.isfile(path):
            present.append(path)
        else:
            warnings.append(f"environment script {script} not found on this machine: its variables are not set")
    if not present:
        return {}, warnings

    try:
        process = subprocess.Popen(
            ["bash", "-c", _BASH_PROGRAM, "xllm-tui-envcapture", *present],
            env=base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so a timeout can end everything it started
        )
    except OSError as error:
        return {}, warnings + [f"could not run bash to source {', '.join(present)}: {error}"]
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.communicate()
        return {}, warnings + [
            f"sourcing {', '.join(present)} did not finish within {timeout:g} s: its variables are not set"
        ]

    status_field, sep, env_data = output.partition(b"\0")
    if not sep or process.returncode != 0:
        return {}, warnings + [
            f"could not read the environment after sourcing {', '.join(present)} (bash exit status {process.returncode})"
        ]
    for script, status in zip(present, status_field.decode().split()):
        if status != "0":
            warnings.append(f"environment script {script} ended with status {status}; using the environment it left")
    captured = _parse_env0(env_data)
    changed = {
        name: value
        for name, value in captured.items()
        if name not in _SHELL_NOISE and not name.startswith("BASH_FUNC_") and base.get(name) != value
    }
    return changed, warnings
