"""A starter profile for this machine (`xllm-tui init`): facts read from the machine in, YAML text out.

Pure: gather_facts() in commands/init.py does the reading (npu-smi, interfaces, ports); starter_profile()
only writes text, so what it decides (cores rule, ports, the after-reboot step) is testable without a machine.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field

from xllm_tui.cores import format_cores, parse_cores

DEFAULT_BASE_PORT = 18994  # the launch guide's
DEFAULT_MASTER_PORT = 10015
GUIDE_BINARY = "./myxllm/xllm/build/xllm/core/server/xllm"  # where `python setup.py build` puts it
_PLAIN = re.compile(r"^[A-Za-z0-9_./@:+-][A-Za-z0-9_./@:+ -]*$")


@dataclass
class MachineFacts:
    host: str  # the address the ranks get as --host (and rank 0's master_node_addr host)
    devices: list[int]  # logic ids, in rank order
    affinity: dict[int, str] = field(default_factory=dict)  # logic id -> CPU affinity ("0-47"); may be empty
    cpus: list[int] = field(default_factory=list)  # cores this process may run on
    base_port: int = DEFAULT_BASE_PORT
    master_port: int = DEFAULT_MASTER_PORT
    backend: str = "npu-smi"
    device_name: str = ""  # e.g. "Ascend910", for the comment
    source_scripts: list[str] = field(default_factory=list)  # the Ascend set_env.sh scripts that exist here
    npu_smi: str | None = None  # an npu-smi given by path: the supervisor must read the devices with it too
    notes: list[str] = field(default_factory=list)  # how facts were found, for the header comment


@dataclass
class Answers:
    name: str
    binary: str
    model: str
    draft_model: str | None = None


def yaml_str(text: str) -> str:
    """A YAML scalar that reads back as exactly `text` (JSON's double quotes are valid YAML)."""
    if _PLAIN.match(text) and text.strip() == text and not text.startswith(("-", "@")) and ": " not in text \
            and " #" not in text and text.lower() not in ("true", "false", "yes", "no", "null", "on", "off", "~"):
        try:
            float(text)
        except ValueError:
            return text
    return json.dumps(text)


def cores_plan(devices: list[int], affinity: dict[int, str], cpus: list[int]) -> tuple[str, list[str] | None, str]:
    """(the top-level `cores:` value, explicit per-device lists or None, a comment saying why).

    With every device's affinity known: `topology`, `count` = the share each NPU gets of the affinity it
    shares with the others (as the rule splits it). Otherwise this machine's cores split evenly, in order."""
    if devices and all(d in affinity for d in devices):
        groups: dict[str, list[int]] = {}
        for device in devices:
            groups.setdefault(affinity[device], []).append(device)
        count = min(len(parse_cores(text)) // len(members) for text, members in groups.items())
        if count >= 1:
            return (f"{{rule: topology, count: {count}}}", None,
                    f"each NPU's share of its CPU affinity (npu-smi info -t topo): {count} cores")
    per = len(cpus) // len(devices) if devices else 0
    if per < 1:
        return "none", None, f"{len(cpus)} core(s) for {len(devices)} NPU(s): too few to pin, so no numactl"
    lists = [format_cores(cpus[i * per:(i + 1) * per]) for i in range(len(devices))]
    why = "no CPU affinity in the topology" if not affinity else "the topology's CPU affinity misses some NPUs"
    return "none", lists, f"{why}: this machine's {len(cpus)} cores split evenly, {per} per NPU"


def device_list(devices: list[int]) -> str:
    if devices and devices == list(range(devices[0], devices[-1] + 1)) and len(devices) > 1:
        return f"{devices[0]}-{devices[-1]}"
    return "[" + ", ".join(map(str, devices)) + "]"


def starter_profile(facts: MachineFacts, answers: Answers) -> str:
    n = len(facts.devices)
    rule, lists, cores_why = cores_plan(facts.devices, facts.affinity, facts.cpus)
    lines = [
        f"# Starter profile written by `xllm-tui init` for {facts.host}: {n} {facts.device_name or 'NPU'}"
        f"{'s' if n != 1 else ''} ({facts.backend}).",
        "# Check it with `xllm-tui validate FILE`; try it without NPUs with `xllm-tui FILE --simulate`.",
        "# Every key: docs/profiles.md.",
    ]
    lines += [f"# {note}" for note in facts.notes]
    lines += [
        "",
        f"name: {yaml_str(answers.name)}",
        f"description: {yaml_str(f'{n} rank(s) on {facts.host}')}",
        "",
        "# Relative paths are relative to this file's directory (or working_dir, if set).",
        f"binary: {yaml_str(answers.binary)}",
        f"model: {yaml_str(answers.model)}",
    ]
    if answers.draft_model:
        lines.append(f"draft_model: {yaml_str(answers.draft_model)}")
    lines += [
        "",
        f"master_node_addr: {facts.host}:{facts.master_port}   # rank 0's registration port (free when written)",
        f"base_port: {facts.base_port}   # rank i serves --port base_port + i ({facts.base_port}-"
        f"{facts.base_port + n - 1} were free when written)",
        "",
        f"cores: {rule}   # {cores_why}",
        "",
        "machines:",
        f"  - host: {facts.host}",
        f"    devices: {device_list(facts.devices)}",
    ]
    if lists:
        lines.append("    cores: [" + ", ".join(f"'{c}'" for c in lists) + "]")
    lines += [
        "",
        "flags:   # the launch guide's; passed to every rank after the identity flags",
        "  max_memory_utilization: 0.86",
        "  max_tokens_per_batch: 5000",
        "  max_seqs_per_batch: 256",
        "  communication_backend: hccl",
        "  enable_prefix_cache: true",
        "  enable_chunked_prefill: true",
    ]
    if answers.draft_model:
        lines += ["  draft_devices: npu:{device}", "  num_speculative_tokens: 1"]
    if facts.npu_smi:
        lines += ["", "devices:", f"  npu_smi: {yaml_str(facts.npu_smi)}   # the npu-smi init read the NPUs with"]
    if facts.source_scripts:
        lines += ["", "source:   # environment captured once from these scripts (found on this machine)"]
        lines += [f"  - {yaml_str(s)}" for s in facts.source_scripts]
    lines += [
        "",
        "env:",
        "  PYTORCH_NPU_ALLOC_CONF: expandable_segments:True",
        "  NPU_MEMORY_FRACTION: 0.96",
        "  OMP_NUM_THREADS: 12",
        "  INF_NAN_MODE_ENABLE: 1",
        "  HCCL_EXEC_TIMEOUT: 0",
        "  HCCL_CONNECT_TIMEOUT: 7200",
        "  HCCL_OP_EXPANSION_MODE: AIV",
        "  HCCL_IF_BASE_PORT: 2864",
        "",
        "toggles:",
        "  determinism:",
        "    enabled: false",
        "    description: bit-exact results across runs (slower)",
        "    env: {LCCL_DETERMINISTIC: 1, HCCL_DETERMINISTIC: true, ATB_MATMUL_SHUFFLE_K_ENABLE: 0}",
        "",
        "pre_launch:",
        "  - name: clear-cores",
        "    remove: [core.*]",
        "  - name: init-devices   # once after a reboot (xllm-tui systemd runs the supervisor at boot)",
        "    when: after_reboot",
        "    run: [python, -c, " + yaml_str(
            "import torch_npu; [torch_npu.npu.set_device(i) for i in (" + ", ".join(map(str, facts.devices))
            + ("," if n == 1 else "") + ")]") + "]",
        "    timeout: 10m",
        "",
        "restart:",
        "  mode: on-failure",
        f"  scope: {'group' if n > 1 else 'rank'}   # xllm ranks of one world fail together",
        "  backoff: {initial: 5s, max: 2m, factor: 2}",
        "  max_restarts: 3",
        "  window: 30m",
        "",
        "stop:",
        "  grace: 15s",
        "",
    ]
    return "\n".join(lines)


def port_free(port: int, host: str = "") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, start: int = DEFAULT_BASE_PORT, master_start: int = DEFAULT_MASTER_PORT,
               is_free=port_free) -> tuple[int, int]:
    """(base, master): the first block of `count` free ports from `start`, and the first free port from
    `master_start` outside that block."""
    base = start
    while not all(is_free(p) for p in range(base, base + count)):
        base += 1
        if base + count > 65535:
            raise RuntimeError(f"no {count} consecutive free ports above {start}")
    master = master_start
    while not is_free(master) or base <= master < base + count:
        master += 1
        if master > 65535:
            raise RuntimeError(f"no free port above {master_start}")
    return base, master
