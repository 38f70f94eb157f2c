"""A simulated `hccn_tool` for --simulate: `-i <id> -ip -g` prints the NPU's address as the real tool does
(`ipaddr:...`, `netmask:...`). The addresses come from XLLM_SIM_HCCN_IPS (JSON {"<id>": "<ip>"}, which the
supervisor fills from its machine's device_ips), else 192.168.100.<id>."""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "-i" or argv[2:] != ["-ip", "-g"] or not argv[1].isdigit():
        print("usage (simulated): hccn_tool -i <id> -ip -g", file=sys.stderr)
        return 1
    try:
        table = json.loads(os.environ.get("XLLM_SIM_HCCN_IPS") or "{}")
    except ValueError:
        table = {}
    ip = table.get(argv[1]) or f"192.168.100.{int(argv[1]) % 256}"
    print(f"ipaddr:{ip}\nnetmask:255.255.255.0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
