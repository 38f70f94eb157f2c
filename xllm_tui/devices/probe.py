"""Run npu-smi or nvidia-smi (argv lists, bounded time) and turn what they print into a DeviceReport.

Blocking: callers with an event loop run read_devices() in a worker thread. Never raises for a missing tool,
a driver error, a timeout or unreadable output: the report then has no devices and says why in `errors`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from xllm_tui.devices import npu_smi as npu_parser
from xllm_tui.devices import nvidia_smi as nvidia_parser
from xllm_tui.devices.model import DeviceReport, unavailable

# A tool is a path or name ("npu-smi", "/usr/local/sbin/npu-smi") or an argv prefix
# ([sys.executable, "-m", "xllm_tui.sim.npu_smi"]); the subcommand words are appended to it.
Tool = str | Sequence[str]


@dataclass
class ToolRun:
    argv: list[str]
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    error: str | None = None  # could not run, or did not finish in time

    @property
    def ok(self) -> bool:
        return self.error is None and self.returncode == 0

    def problem(self, label: str) -> str:
        """A one-line account of what went wrong, for the report's errors."""
        if self.error:
            return self.error
        output = " / ".join(ln.strip() for ln in (self.stdout + "\n" + self.stderr).splitlines() if ln.strip())
        return f"{label} exited with code {self.returncode}: {output[:300] or '(no output)'}"


def tool_argv(tool: Tool) -> list[str]:
    if isinstance(tool, str):
        return [tool]
    argv = [str(part) for part in tool]
    if not argv:
        raise ValueError("empty argv for a device tool")
    return argv


def run_tools(commands: Mapping[str, list[str]], timeout: float, env: Mapping[str, str] | None = None) -> dict[str, ToolRun]:
    """Start every command at once (npu-smi is slow), wait at most `timeout` seconds in all, kill what is late."""
    child_env = None if env is None else {**os.environ, **env}
    runs: dict[str, ToolRun] = {}
    started: dict[str, subprocess.Popen] = {}
    for key, argv in commands.items():
        run = runs[key] = ToolRun(argv=argv)
        try:
            started[key] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=child_env,
            )
        except FileNotFoundError:
            run.error = f"{argv[0]} not found (is the driver installed? give its path with --npu-smi/--nvidia-smi)"
        except PermissionError:
            run.error = f"{argv[0]} cannot be run: permission denied"
        except OSError as exc:
            run.error = f"{argv[0]} cannot be run: {exc}"
    deadline = time.monotonic() + timeout
    for key, process in started.items():
        run = runs[key]
        try:
            run.stdout, run.stderr = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
            run.returncode = process.returncode
        except subprocess.TimeoutExpired:
            process.kill()  # our own child, by its handle
            process.communicate()
            run.error = f"{' '.join(run.argv)} did not answer within {timeout:g} s"
    return runs


def read_npu_smi(npu_smi: Tool = "npu-smi", timeout: float = 10, env: Mapping[str, str] | None = None) -> DeviceReport:
    prefix = tool_argv(npu_smi)
    runs = run_tools(
        {"info": prefix + ["info"], "map": prefix + ["info", "-m"], "topo": prefix + ["info", "-t", "topo"]},
        timeout,
        env,
    )
    info = runs["info"]
    if not info.ok:
        return unavailable(npu_parser.BACKEND, info.problem("npu-smi info"))
    map_text = runs["map"].stdout if runs["map"].ok else None
    topo_text = runs["topo"].stdout if runs["topo"].ok else None
    report = npu_parser.build_report(info.stdout, map_text, topo_text)
    if report.devices:
        if map_text is None:
            report.errors.append(f"{runs['map'].problem('npu-smi info -m')}; logic ids follow card and chip order")
        if topo_text is None:
            report.errors.append(f"{runs['topo'].problem('npu-smi info -t topo')}; no topology")
    return report


def read_nvidia_smi(nvidia_smi: Tool = "nvidia-smi", timeout: float = 10, env: Mapping[str, str] | None = None) -> DeviceReport:
    prefix = tool_argv(nvidia_smi)
    runs = run_tools(
        {
            "query": prefix + [f"--query-gpu={','.join(nvidia_parser.QUERY_FIELDS)}", "--format=csv"],
            "apps": prefix + [f"--query-compute-apps={','.join(nvidia_parser.APPS_FIELDS)}", "--format=csv"],
            "topo": prefix + ["topo", "-m"],
        },
        timeout,
        env,
    )
    query = runs["query"]
    if not query.ok:
        return unavailable(nvidia_parser.BACKEND, query.problem("nvidia-smi --query-gpu"))
    apps_text = runs["apps"].stdout if runs["apps"].ok else None
    topo_text = runs["topo"].stdout if runs["topo"].ok else None
    report = nvidia_parser.build_report(query.stdout, topo_text, apps_text)
    if report.devices:
        if apps_text is None:
            report.errors.append(f"{runs['apps'].problem('nvidia-smi --query-compute-apps')}; no process list")
        if topo_text is None:
            report.errors.append(f"{runs['topo'].problem('nvidia-smi topo -m')}; no topology")
    return report


def read_devices(
    npu_smi: Tool | None = None,
    nvidia_smi: Tool | None = None,
    timeout: float = 10,
    env: Mapping[str, str] | None = None,
) -> DeviceReport:
    """Read the devices with the given tool, or the first of npu-smi, nvidia-smi found on PATH.

    `env` adds variables for the tool (e.g. XLLM_SIM_NPU_PROCS for the simulated npu-smi).
    """
    try:
        if npu_smi is not None:
            return read_npu_smi(npu_smi, timeout, env)
        if nvidia_smi is not None:
            return read_nvidia_smi(nvidia_smi, timeout, env)
        found = shutil.which("npu-smi")
        if found:
            return read_npu_smi(found, timeout, env)
        found = shutil.which("nvidia-smi")
        if found:
            return read_nvidia_smi(found, timeout, env)
    except Exception as exc:  # a device view must never take its caller down
        return unavailable(None, f"reading devices failed unexpectedly: {type(exc).__name__}: {exc}")
    return unavailable(
        None, "no device tool found: neither npu-smi nor nvidia-smi is on PATH (give one with --npu-smi PATH or --nvidia-smi PATH)"
    )
