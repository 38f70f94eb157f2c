"""Each NPU's own network address, as `hccn_tool -i <id> -ip -g` prints it on its machine (`ipaddr:10.20.0.2`,
then `netmask:...`): what the HCCL rank table's device_ip must be. Pure parsing plus one bounded run per device;
under --simulate the simulated hccn_tool (xllm_tui.sim.hccn_tool)."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys

SIMULATED_HCCN_TOOL = (sys.executable, "-m", "xllm_tui.sim.hccn_tool")
SIM_IPS_ENV = "XLLM_SIM_HCCN_IPS"  # the simulated tool's addresses: JSON {"<device>": "<ip>"}

_IPADDR = re.compile(r"^\s*ipaddr\s*[:=]\s*(\S+)", re.MULTILINE)


def parse_ip(text: str) -> str | None:
    """The address of one `hccn_tool -i N -ip -g` output, or None."""
    match = _IPADDR.search(text)
    if not match:
        return None
    try:
        return str(ipaddress.ip_address(match.group(1)))
    except ValueError:
        return None


def read_device_ips(devices: list[int], *, simulate: bool, env: dict[str, str] | None = None,
                    tool: str = "hccn_tool", timeout: float = 10.0) -> tuple[dict[int, str], list[str]]:
    """({device: ip}, problems) for this machine's NPUs."""
    argv0 = list(SIMULATED_HCCN_TOOL) if simulate else [tool]
    ips: dict[int, str] = {}
    problems: list[str] = []
    for device in devices:
        try:
            done = subprocess.run([*argv0, "-i", str(device), "-ip", "-g"], capture_output=True, text=True,
                                  timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            return ips, [f"{argv0[0]} not found on this machine"]
        except subprocess.TimeoutExpired:
            problems.append(f"NPU {device}: {argv0[0]} gave no answer within {timeout:g}s")
            continue
        ip = parse_ip(done.stdout)
        if done.returncode != 0 or ip is None:
            said = (done.stderr or done.stdout).strip().splitlines()
            problems.append(f"NPU {device}: no address from {argv0[0]} (exit {done.returncode}"
                            + (f": {said[-1]}" if said else "") + ")")
            continue
        ips[device] = ip
    return ips, problems
