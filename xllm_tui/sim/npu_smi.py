"""A simulated `npu-smi` for --simulate and tests: `python -m xllm_tui.sim.npu_smi info [-m | -t topo]`.

Prints the real layouts (row formats from npu-smi's published printf formats and the A3/A2 samples in
tests/fixtures/npu-smi/), so xllm_tui.devices parses it exactly like the real tool.

Environment (all optional):
- XLLM_SIM_NPU_KIND: "a3" (default; 8 cards x 2 dies = 16 chips, Phy-IDs) or "a2" (8 x 910B4).
- XLLM_SIM_NPU_PROCS: a JSON file, a list of {"pid", "logic_id", "name", "memory_mb"}: processes shown on
  their devices while alive (psutil.pid_exists). Without memory_mb a process's HBM ramps up with its age,
  like a rank loading weights. HBM used = idle base + its processes.
- XLLM_SIM_NPU_EXTRA_PROCS: a second file of the same form, for processes that are not the supervisor's ranks
  (the supervisor owns XLLM_SIM_NPU_PROCS): a stray holding an NPU. An entry without a pid adds HBM that no
  process row shows (memory left behind, or a process of another container).
- XLLM_SIM_NPU_HEALTH: "3=Warning,5=Critical": health words per logic id (default OK).
- XLLM_SIM_NPU_HEALTH_FILE: a file holding the same text, read at every call (so a test can change health
  while a supervisor polls); it wins over XLLM_SIM_NPU_HEALTH for the ids it names.
- XLLM_SIM_NPU_AFFINITY: "0" leaves out the topology's CPU Affinity column (as A3 machines on ARM print it).
- XLLM_SIM_NPU_FAIL: "dcmi" prints the driver's initialisation error and exits non-zero.
"""

from __future__ import annotations

import json
import os
import sys
import time

VERSION = "25.2.0"
CARD_SEPARATOR = "+===========================+===============+====================================================+"
TABLE_TOP = "+---------------------------+---------------+----------------------------------------------------+"
CHIP_SEPARATOR = "+" + "-" * 96 + "+"
WIDTH = len(CHIP_SEPARATOR)
IDLE_HBM_MB = 3400
LOADED_HBM_MB = 58000  # what a process reaches when it gives no memory_mb
RAMP_SECONDS = 20.0

LEGEND = """Legend:

  X    = Self
  SYS  = Path traversing PCIe and NUMA nodes. Nodes are connected through SMP, such as QPI, UPI.
  PHB  = Path traversing PCIe and the PCIe host bridge of a CPU.
  PIX  = Path traversing a single PCIe switch
  PXB  = Path traversing multiple PCIe switches
  HCCS = Connection traversing HCCS.
  SIO  = Path traversing the SIO bus
  HCCS_SW = Connection traversing HCCS through a switch
  NA   = Unknown relationship."""


class Kind:
    def __init__(self, name: str):
        self.a3 = name != "a2"
        self.cards = 8
        self.chips_per_card = 2 if self.a3 else 1
        self.chip_name = "Ascend910" if self.a3 else "910B4"
        self.map_name = "Ascend910" if self.a3 else "Ascend 910B4"
        self.hbm_total_mb = 65536 if self.a3 else 32768
        # Cores near each NPU: A3 = 4 groups of 4 chips on 48 cores, A2 = 4 pairs on 24 cores, so the launch
        # guide's "device i -> cores i*12..i*12+11" falls inside each NPU's affinity.
        self.chips_per_numa = 4 if self.a3 else 2
        self.cores_per_numa = 48 if self.a3 else 24

    @property
    def count(self) -> int:
        return self.cards * self.chips_per_card

    def card_chip(self, logic_id: int) -> tuple[int, int]:
        return divmod(logic_id, self.chips_per_card)

    def affinity(self, logic_id: int) -> str:
        group = logic_id // self.chips_per_numa
        first = group * self.cores_per_numa
        return f"{first}-{first + self.cores_per_numa - 1}"

    def bus_id(self, logic_id: int) -> str:
        bus = 0x9D - 4 * (logic_id // 2) + 2 * (logic_id % 2) if self.a3 else [0xC1, 0xC2, 0x81, 0x82, 0x01, 0x02, 0x41, 0x42][logic_id]
        return f"{0:04X}:{bus:02X}:{0:02X}.{0:<2X}"


def _alive_processes(
    path: str | None, count: int, unowned_hbm: dict[int, int] | None = None
) -> dict[int, list[tuple[int, str, int]]]:
    """logic id -> [(pid, name, MB)] from the JSON file, keeping only live pids. Entries without a pid add
    their memory_mb to `unowned_hbm` (HBM no process row shows), when given."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except (OSError, ValueError):
        return {}  # not written yet, or mid-write: no processes this time
    if not isinstance(entries, list):
        return {}
    import psutil  # only when there are processes to check

    result: dict[int, list[tuple[int, str, int]]] = {}
    now = time.time()
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        pid, logic_id = entry.get("pid"), entry.get("logic_id")
        if pid is None and unowned_hbm is not None and isinstance(logic_id, int) and 0 <= logic_id < count:
            memory = entry.get("memory_mb")
            if isinstance(memory, int) and memory > 0:
                unowned_hbm[logic_id] = unowned_hbm.get(logic_id, 0) + memory
            continue
        if not isinstance(pid, int) or not isinstance(logic_id, int) or not 0 <= logic_id < count or pid <= 0:
            continue
        if not psutil.pid_exists(pid):
            continue
        memory = entry.get("memory_mb")
        if not isinstance(memory, int):
            try:
                age = now - psutil.Process(pid).create_time()
            except psutil.Error:
                continue
            memory = int(1024 + (LOADED_HBM_MB - 1024) * min(1.0, max(0.0, age) / RAMP_SECONDS))
        name = str(entry.get("name") or "")[:15]
        result.setdefault(logic_id, []).append((pid, name, max(0, memory)))
    return result


def _health_overrides(text: str) -> dict[int, str]:
    result = {}
    for item in text.split(","):
        logic, _, word = item.partition("=")
        if logic.strip().isdigit() and word.strip():
            result[int(logic)] = word.strip()
    return result


def _row(text: str) -> str:
    return text.ljust(WIDTH - 1) + "|"


def _health_file(path: str | None) -> dict[int, str]:
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return _health_overrides(handle.read().strip())
    except OSError:
        return {}


def render_info(
    kind: Kind,
    processes: dict[int, list[tuple[int, str, int]]],
    health: dict[int, str],
    unowned_hbm: dict[int, int] | None = None,
) -> str:
    lines = [
        "+" + "-" * 96 + "+",
        _row(f"| npu-smi {VERSION:<24} Version: {VERSION:<46}"),
        TABLE_TOP,
        "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|",
        "| Chip  Phy-ID              | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |"
        if kind.a3
        else "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |",
        CARD_SEPARATOR,
    ]
    for logic_id in range(kind.count):
        card, chip = kind.card_chip(logic_id)
        procs = processes.get(logic_id, [])
        busy = bool(procs)
        hbm_used = min(kind.hbm_total_mb, IDLE_HBM_MB + (logic_id * 7) % 20 + sum(mb for _, _, mb in procs)
                       + (unowned_hbm or {}).get(logic_id, 0))
        if kind.a3 and chip == 1:
            power = "-"  # npu-smi prints no power for an A3 card's second die
        else:
            power = f"{(92.0 + (card * 37) % 13 + (110.0 if busy else 0.0)):.1f}"
        temp = 39 + (logic_id * 5) % 7 + (5 if busy else 0)
        aicore = 7 if busy else 0
        lines.append(
            f"| {card:<5d} {kind.chip_name:<20}| {health.get(logic_id, 'OK'):<13} | {power:<11} {temp:<17d} {0:<5d}/ {0:<13d} |"
        )
        first = f"| {chip:<5d} {logic_id:<20d}| " if kind.a3 else f"| {chip:<26d}| "
        lines.append(
            f"{first}{kind.bus_id(logic_id)} | {aicore:<11d} {0:<5d}/ {0:<10d} {hbm_used:<5d}/ {kind.hbm_total_mb:<13d} |"
        )
        last_chip = chip == kind.chips_per_card - 1
        lines.append(CARD_SEPARATOR if last_chip else CHIP_SEPARATOR)
    lines += [TABLE_TOP, "| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |", CARD_SEPARATOR]
    for card in range(kind.cards):
        rows = []
        for chip in range(kind.chips_per_card):
            logic_id = card * kind.chips_per_card + chip
            for pid, name, memory in processes.get(logic_id, []):
                rows.append(f"| {card:<7d} {chip:<18d}| {pid:<13d} | {name:<24} | {memory:<23d} |")
        lines += rows or [_row(f"| No running processes found in NPU {card:<7d}")]
        lines.append(CARD_SEPARATOR)
    return "\n".join(lines) + "\n"


def render_map(kind: Kind) -> str:
    if kind.a3:
        lines = ["\t" + " ".join(f"{h:<30}" for h in ("NPU ID", "Chip ID", "Chip Logic ID", "Chip Phy-ID")) + " Chip Name"]
    else:
        lines = ["\t" + " ".join(f"{h:<30}" for h in ("NPU ID", "Chip ID", "Chip Logic ID", "Chip Name"))]
    for card in range(kind.cards):
        for chip in range(kind.chips_per_card):
            logic_id = card * kind.chips_per_card + chip
            if kind.a3:
                lines.append(f"\t{card:<30d} {chip:<30d} {logic_id:<30d} {logic_id:<30d} {kind.map_name}")
            else:
                lines.append(f"\t{card:<30d} {chip:<30d} {logic_id:<30d} {kind.map_name}")
        mcu_chip = kind.chips_per_card
        if kind.a3:
            lines.append(f"\t{card:<30d} {mcu_chip:<30d} {'-':<30} {'-':<30} Mcu")
        else:
            lines.append(f"\t{card:<30d} {mcu_chip:<30d} {'-':<30} {'Mcu':<30}")
    return "\n".join(lines) + "\n"


def render_topo(kind: Kind, with_affinity: bool) -> str:
    label = (lambda i: f"Phy-ID{i:<5d}") if kind.a3 else (lambda i: f"NPU{i:<8d}")
    # A2 topo columns are card ids; A3 columns are Phy-IDs (equal to logic ids in this simulator).
    header = "\t   " + "".join(label(i) for i in range(kind.count))
    lines = [header + ("CPU Affinity" if with_affinity else "")]
    for row in range(kind.count):
        cells = []
        for column in range(kind.count):
            if row == column:
                cells.append("X")
            elif kind.a3 and row // 2 == column // 2:
                cells.append("SIO")  # the two dies of one A3 card
            else:
                cells.append("HCCS")
        line = label(row) + "".join(f"{c:<11}" for c in cells)
        lines.append(line + kind.affinity(row) if with_affinity else line.rstrip())
    return "\n".join(lines) + "\n\n" + LEGEND + "\n"


USAGE = "usage: npu-smi info [-m | -t topo]   (simulated npu-smi of xllm-tui)"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("XLLM_SIM_NPU_FAIL") == "dcmi":
        print("dcmi module initialize failed. ret is -8005")
        return 255
    kind = Kind(os.environ.get("XLLM_SIM_NPU_KIND", "a3").strip().lower())
    if args == ["info"]:
        processes = _alive_processes(os.environ.get("XLLM_SIM_NPU_PROCS"), kind.count)
        unowned_hbm: dict[int, int] = {}
        extra = _alive_processes(os.environ.get("XLLM_SIM_NPU_EXTRA_PROCS"), kind.count, unowned_hbm)
        for logic_id, entries in extra.items():
            processes.setdefault(logic_id, []).extend(entries)
        health = _health_overrides(os.environ.get("XLLM_SIM_NPU_HEALTH", ""))
        health.update(_health_file(os.environ.get("XLLM_SIM_NPU_HEALTH_FILE")))
        sys.stdout.write(render_info(kind, processes, health, unowned_hbm))
        return 0
    if args == ["info", "-m"]:
        sys.stdout.write(render_map(kind))
        return 0
    if args == ["info", "-t", "topo"]:
        sys.stdout.write(render_topo(kind, os.environ.get("XLLM_SIM_NPU_AFFINITY", "1") != "0"))
        return 0
    print(f"Error: unsupported command {' '.join(args)!r} in the simulated npu-smi\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
