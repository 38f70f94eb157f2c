"""Parse the text `npu-smi` prints (Huawei Ascend) into the device model.

Column widths change between driver releases (98-column tables up to 25.x, 116 columns in 26.x, 104 columns on
310P), so every table is split on `|` and whitespace, never on character offsets. What the rows mean:
- `npu-smi info`: two rows per chip. Row 1: card id, name | health | power, temperature, hugepages.
  Row 2: chip index (A3: and Phy-ID; 310P: and Device) | bus id | AICore %, memory used/total, HBM used/total.
  Then a process table (card, chip | pid | name | MB), or "No running processes found in NPU n".
- `npu-smi info -m`: card, chip -> Chip Logic ID (the `--devices=npu:N` number); A3 adds Chip Phy-ID.
- `npu-smi info -t topo`: a link matrix whose headers are card ids ("NPUx") or, on A3, Phy-IDs ("Phy-IDx")
  (facts from the open-sourced npucli printer, see tests/fixtures/npu-smi/SOURCES.md), then an optional
  CPU Affinity column, optional NIC columns, and a legend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xllm_tui.devices.model import Device, DeviceProcess, DeviceReport, Topology, unavailable

BACKEND = "npu-smi"

_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]+$")
_USED_TOTAL = re.compile(r"(\S+?)\s*/\s*(\S+)")
_MISSING = {"", "-", "NA", "N/A", "--"}


class NpuSmiParseError(ValueError):
    """The text is not the table the parser expects; the message says what and where."""


def _int(text: str | None) -> int | None:
    if text is None or text.strip() in _MISSING:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    if text is None or text.strip() in _MISSING:
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


def _number(text: str | None) -> int | float | None:
    """An int when printed as one (npu-smi prints temperature and AICore with %d), else a float."""
    value = _float(text)
    if value is not None and text is not None and re.fullmatch(r"-?\d+", text.strip()):
        return int(value)
    return value


def _table_cells(line: str) -> list[str] | None:
    """The cells of a `| a | b |` row, or None for anything else (separators, text, a cut-off row)."""
    stripped = line.strip()
    if len(stripped) < 2 or not stripped.startswith("|") or not stripped.endswith("|"):
        return None
    return [cell.strip() for cell in stripped[1:-1].split("|")]


def _is_separator(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 2 and stripped[0] == "+" and stripped[-1] == "+" and set(stripped) <= set("+-=")


def _first_lines(text: str, count: int = 3) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    shown = " / ".join(lines[:count])
    return shown[:300] if shown else "(no output)"


# ---------------------------------------------------------------------------------------------- npu-smi info


def parse_info(text: str) -> DeviceReport:
    """Parse `npu-smi info`. Logic ids follow card and chip order (or 310P's Device column) until
    apply_chip_map() sets the real ones. Never raises: unreadable text gives a report with no devices."""
    try:
        return _parse_info(text)
    except NpuSmiParseError as exc:
        return unavailable(BACKEND, str(exc))


def _parse_info(text: str) -> DeviceReport:
    lines = text.splitlines()
    report = DeviceReport(backend=BACKEND)
    section = None  # None, "devices", "processes"
    second_label = None  # what follows the chip index on row 2: "Phy-ID", "Device" or None
    has_hbm_column = True
    pending_row1: tuple[int, list[str]] | None = None
    separate_name = False
    by_card_chip: dict[tuple[int, int], Device] = {}
    device_hint_logic: dict[int, int] = {}  # id(device) -> logic id from 310P's Device column
    processes: list[tuple[int, int, DeviceProcess]] = []
    notes: list[str] = []
    saw_table = False

    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if _is_separator(line):
            saw_table = True
            if pending_row1 is not None and section == "devices":
                raise NpuSmiParseError(
                    f"npu-smi info: line {pending_row1[0]} starts a chip but its second row is missing"
                )
            continue
        cells = _table_cells(line)
        if cells is None:
            if line.lstrip()[:1] in ("|", "+"):
                raise NpuSmiParseError(
                    f"npu-smi info output is truncated or malformed at line {number}: {line.strip()[:120]!r}"
                )
            notes.append(line.strip())
            continue
        saw_table = True
        first = cells[0]
        joined = " ".join(cells)
        if first.startswith("npu-smi") or "Version:" in joined and section is None:
            match = re.search(r"Version:\s*(\S+)", joined)
            report.version = match.group(1) if match else first.split()[-1]
            continue
        if first.startswith("NPU") and ("Name" in first or (len(cells) > 1 and cells[1].startswith("Name"))):
            section = "devices"
            # 950 printer ("| NPU ID | Name | Health | ..."): card and name in their own cells, no chip index.
            separate_name = "Name" not in first
            continue
        if section == "devices" and pending_row1 is None and "Bus-Id" in joined:
            label = first[4:].strip() if first.startswith("Chip") else ""
            second_label = label.split()[0] if label else None
            has_hbm_column = "HBM" in joined
            continue
        if first.startswith("NPU") and "Process id" in joined:
            section = "processes"
            continue
        if section == "devices":
            if pending_row1 is None:
                pending_row1 = (number, cells)
                continue
            row1_number, row1 = pending_row1
            pending_row1 = None
            if separate_name:
                row1 = [f"{row1[0]} {row1[1]}"] + row1[2:]
                cells = ["0"] + cells[2:]  # the 950 printer leaves chip and Phy-ID blank: one chip per card
            device = _device_from_rows(row1, cells, second_label, has_hbm_column, row1_number)
            if device.card is None or device.chip is None:
                raise NpuSmiParseError(f"npu-smi info: no card/chip number on lines {row1_number}-{number}")
            if second_label == "Device" and device.phy_id is not None:
                device_hint_logic[id(device)] = device.phy_id
                device.phy_id = None  # 310P's second number is a device id, not a Phy-ID
            by_card_chip[(device.card, device.chip)] = device
            continue
        if section == "processes":
            if first.startswith("No running processes"):
                continue
            process = _process_from_row(cells, number)
            if process is not None:
                processes.append(process)
            continue
        notes.append(line.strip())

    if pending_row1 is not None:
        raise NpuSmiParseError(f"npu-smi info output is truncated: the chip on line {pending_row1[0]} has no second row")
    if not by_card_chip:
        if saw_table:
            raise NpuSmiParseError(f"npu-smi info printed a table without devices: {_first_lines(text)}")
        raise NpuSmiParseError(f"npu-smi info printed no device table: {_first_lines(text)}")

    devices = [by_card_chip[key] for key in sorted(by_card_chip)]
    for order, device in enumerate(devices):
        device.logic_id = device_hint_logic.get(id(device), order)
    for card, chip, process in processes:
        owner = by_card_chip.get((card, chip))
        if owner is None:
            report.errors.append(f"npu-smi info lists process {process.pid} on NPU {card} chip {chip}, which has no device row")
            continue
        owner.processes.append(process)
    report.devices = devices
    report.errors.extend(f"npu-smi: {note}" for note in notes)
    return report


def _device_from_rows(row1: list[str], row2: list[str], second_label: str | None, has_hbm: bool, line: int) -> Device:
    if len(row1) < 3 or len(row2) < 3:
        raise NpuSmiParseError(f"npu-smi info: the chip rows at line {line} have fewer than 3 columns")
    card_and_name = row1[0].split(None, 1)
    card = _int(card_and_name[0]) if card_and_name else None
    name = card_and_name[1].strip() if len(card_and_name) > 1 else None
    health = row1[1] or None
    stats = row1[2].split()
    power = _float(stats[0]) if stats else None
    temp = _number(stats[1]) if len(stats) > 1 else None

    chip_fields = row2[0].split()
    chip = _int(chip_fields[0]) if chip_fields else None
    second = _int(chip_fields[1]) if len(chip_fields) > 1 and second_label else None
    bus_id = row2[1] if _BUS_ID.match(row2[1]) else None
    usage = row2[2]
    aicore_text = usage.split()[0] if usage.split() else None
    aicore = _number(aicore_text) if aicore_text and "/" not in aicore_text else None
    pairs = _USED_TOTAL.findall(usage)
    # Pairs: Memory-Usage, then HBM-Usage when that column exists; 310P has only Memory-Usage (its device memory).
    used_total = pairs[1] if has_hbm and len(pairs) > 1 else (pairs[0] if pairs and not has_hbm else None)
    hbm_used = _int(used_total[0]) if used_total else None
    hbm_total = _int(used_total[1]) if used_total else None
    return Device(
        logic_id=None,
        card=card,
        chip=chip,
        phy_id=second,
        name=name,
        health=health,
        power_w=power,
        temp_c=temp,
        aicore_pct=aicore,
        hbm_used_mb=hbm_used,
        hbm_total_mb=hbm_total,
        bus_id=bus_id,
    )


def _process_from_row(cells: list[str], line: int) -> tuple[int, int, DeviceProcess] | None:
    if len(cells) < 4:
        raise NpuSmiParseError(f"npu-smi info: process row at line {line} has {len(cells)} columns, expected 4 or more")
    card_chip = cells[0].split()
    if not card_chip:
        raise NpuSmiParseError(f"npu-smi info: process row at line {line} has no card number: {cells[0]!r}")
    # "card chip", or only "card" where the printer shows one chip per card (950)
    card, chip, pid = _int(card_chip[0]), _int(card_chip[1]) if len(card_chip) > 1 else 0, _int(cells[1])
    if card is None or chip is None or pid is None:
        raise NpuSmiParseError(f"npu-smi info: process row at line {line} is not 'card chip | pid | name | MB'")
    return card, chip, DeviceProcess(pid=pid, name=cells[2] or None, memory_mb=_int(cells[3]))


# ------------------------------------------------------------------------------------------- npu-smi info -m


@dataclass(frozen=True)
class ChipMapping:
    card: int
    chip: int
    logic_id: int
    phy_id: int | None
    name: str | None


def parse_chip_map(text: str) -> dict[tuple[int, int], ChipMapping]:
    """Parse `npu-smi info -m`: (card, chip) -> logic id (and Phy-ID on A3). Mcu rows (logic id "-") are skipped.
    Raises NpuSmiParseError when there is no header with "Chip Logic ID" or no chip row."""
    header_seen = False
    has_phy = False
    mapping: dict[tuple[int, int], ChipMapping] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if "Chip Logic ID" in line:
            header_seen = True
            has_phy = "Phy-ID" in line
            continue
        if not header_seen:
            continue
        fields = line.split()
        width = 4 if has_phy else 3
        if len(fields) < width or _int(fields[0]) is None or _int(fields[1]) is None:
            raise NpuSmiParseError(f"npu-smi info -m: line {number} is not a chip row: {line[:120]!r}")
        logic = _int(fields[2])
        if logic is None:  # the card's MCU, or a chip without a logic id
            continue
        card, chip = int(fields[0]), int(fields[1])
        name = " ".join(fields[width:]) or None
        mapping[(card, chip)] = ChipMapping(card, chip, logic, _int(fields[3]) if has_phy else None, name)
    if not header_seen:
        raise NpuSmiParseError(f"npu-smi info -m printed no 'Chip Logic ID' table: {_first_lines(text)}")
    if not mapping:
        raise NpuSmiParseError("npu-smi info -m listed no chip with a logic id")
    return mapping


def apply_chip_map(report: DeviceReport, mapping: dict[tuple[int, int], ChipMapping]) -> None:
    """Give each device its real logic id (and Phy-ID) from `npu-smi info -m`, then sort by logic id."""
    missing = []
    for device in report.devices:
        entry = mapping.get((device.card, device.chip))
        if entry is None:
            missing.append(f"NPU {device.card} chip {device.chip}")
            continue
        device.logic_id = entry.logic_id
        if device.phy_id is None:
            device.phy_id = entry.phy_id
    if missing:
        report.errors.append(
            "npu-smi info -m has no logic id for " + ", ".join(missing) + "; their logic ids follow card and chip order"
        )
    report.devices.sort(key=lambda d: (d.logic_id is None, d.logic_id if d.logic_id is not None else 0, d.card or 0, d.chip or 0))


# -------------------------------------------------------------------------------------- npu-smi info -t topo

_HEADER_TOKEN = re.compile(r"CPU Affinity|NUMA Affinity|GPU NUMA ID|\S+")
_DEVICE_LABEL = re.compile(r"^(NPU|Phy-ID|GPU)(\d+)$")
_NIC_LABEL = re.compile(r"^NIC(\d+)$")


@dataclass
class _Matrix:
    kind: str  # "npu", "phy_id", "gpu"
    columns: list[str]  # device and NIC labels, in order
    extras: list[str]  # trailing column names (CPU Affinity, NUMA Affinity, ...)
    rows: dict[str, list[str]]  # row label -> cells (links, then extras)
    nic_names: dict[str, str]


def _row_cells(line: str) -> list[str]:
    """A matrix row's cells. Tab-separated rows keep their empty cells (a NIC row's empty affinity);
    a field holding spaces (tabs expanded, or spaces mixed in) is split on them too."""
    if "\t" not in line:
        return line.split()
    cells: list[str] = []
    for field in line.split("\t"):
        parts = field.split()
        cells.extend(parts if parts else [""])
    while cells and cells[0] == "":  # an indent made of tabs
        cells.pop(0)
    return cells


def parse_matrix(text: str, tool: str) -> _Matrix:
    """The matrix shared by `npu-smi info -t topo` and `nvidia-smi topo -m` (tabs or spaces)."""
    lines = [ln for ln in text.splitlines()]
    header_index = None
    for index, line in enumerate(lines):
        # The header row is labels only (NPU0 NPU1 ... CPU Affinity); a matrix row is a label, then links.
        # Leading blank space is not required: copied and re-indented output loses or adds it.
        tokens = _HEADER_TOKEN.findall(line)
        if tokens and _DEVICE_LABEL.match(tokens[0]) and (
            len(tokens) == 1 or _DEVICE_LABEL.match(tokens[1]) or _NIC_LABEL.match(tokens[1]) or " " in tokens[1]
        ):
            header_index = index
            break
    if header_index is None:
        raise NpuSmiParseError(f"{tool} printed no topology matrix: {_first_lines(text)}")
    tokens = _HEADER_TOKEN.findall(lines[header_index])
    columns = [t for t in tokens if _DEVICE_LABEL.match(t) or _NIC_LABEL.match(t)]
    extras = [t for t in tokens if t not in columns]
    kinds = {_DEVICE_LABEL.match(t).group(1) for t in columns if _DEVICE_LABEL.match(t)}
    if len(kinds) != 1:
        raise NpuSmiParseError(f"{tool} topology header mixes device labels: {lines[header_index].strip()[:120]!r}")
    kind = {"NPU": "npu", "Phy-ID": "phy_id", "GPU": "gpu"}[kinds.pop()]

    rows: dict[str, list[str]] = {}
    nic_names: dict[str, str] = {}
    in_matrix = True
    for number, line in enumerate(lines[header_index + 1 :], start=header_index + 2):
        stripped = line.strip()
        if not stripped:
            in_matrix = False
            continue
        nic_name = re.match(r"^(NIC\d+):\s*(\S+)$", stripped)
        if nic_name:
            nic_names[nic_name.group(1)] = nic_name.group(2)
            continue
        if not in_matrix or stripped.startswith("Legend"):
            in_matrix = False
            continue
        cells = _row_cells(line)
        label, cells = cells[0], cells[1:]
        if not (_DEVICE_LABEL.match(label) or _NIC_LABEL.match(label)):
            raise NpuSmiParseError(f"{tool} topology: line {number} is not a matrix row: {stripped[:120]!r}")
        if len([c for c in cells[: len(columns)] if c]) < len(columns):
            raise NpuSmiParseError(
                f"{tool} topology: row {label} at line {number} has fewer cells than the {len(columns)} columns (truncated?)"
            )
        rows[label] = cells
    device_rows = [r for r in rows if _DEVICE_LABEL.match(r)]
    if not device_rows:
        raise NpuSmiParseError(f"{tool} topology has a header but no device rows")
    missing = [c for c in columns if _DEVICE_LABEL.match(c) and c not in rows]
    if missing:
        raise NpuSmiParseError(f"{tool} topology has no row for {', '.join(missing)} (truncated?)")
    return _Matrix(kind=kind, columns=columns, extras=extras, rows=rows, nic_names=nic_names)


def topology_from_matrix(matrix: _Matrix) -> Topology:
    topology = Topology(key_kind=matrix.kind, nic_names=dict(matrix.nic_names))
    for label, cells in matrix.rows.items():
        row_match = _DEVICE_LABEL.match(label)
        if not row_match:
            continue
        row_id = int(row_match.group(2))
        links: dict[int, str] = {}
        nics: dict[str, str] = {}
        for column, cell in zip(matrix.columns, cells):
            column_match = _DEVICE_LABEL.match(column)
            if column_match:
                links[int(column_match.group(2))] = cell
            else:
                nics[column] = cell
        topology.links[row_id] = links
        if nics:
            topology.nic_links[row_id] = nics
        extra_cells = cells[len(matrix.columns) :]
        for name, value in zip(matrix.extras, extra_cells):
            if not value or value in _MISSING:
                continue
            if name == "CPU Affinity":
                topology.cpu_affinity[row_id] = value
            elif name == "NUMA Affinity":
                topology.numa_affinity[row_id] = value
    return topology


def parse_topo(text: str) -> Topology:
    """Parse `npu-smi info -t topo`. Keys are as printed: card ids (key_kind "npu") or Phy-IDs ("phy_id").
    Raises NpuSmiParseError for text without a matrix."""
    return topology_from_matrix(parse_matrix(text, "npu-smi info -t topo"))


def apply_topology(report: DeviceReport, topology: Topology) -> None:
    """Re-key the topology by logic id and put each device's CPU affinity on it."""
    if topology.key_kind == "phy_id":
        to_logic = {d.phy_id: d.logic_id for d in report.devices if d.phy_id is not None}
        what = "Phy-ID"
    elif topology.key_kind == "npu":
        # NPUx is the card id (npucli lists cards); on one-chip cards that names exactly one device.
        chips_per_card: dict[int, list[Device]] = {}
        for device in report.devices:
            chips_per_card.setdefault(device.card, []).append(device)
        to_logic = {card: chips[0].logic_id for card, chips in chips_per_card.items() if len(chips) == 1}
        what = "NPU"
    else:
        to_logic = {d.logic_id: d.logic_id for d in report.devices}
        what = "device"
    unknown = sorted(k for k in topology.links if k not in to_logic)
    if unknown:
        report.errors.append(
            f"topology names {', '.join(f'{what}{k}' for k in unknown)} that npu-smi info does not list; left out"
        )

    def key(k: int) -> int | None:
        return to_logic.get(k)

    links: dict[int, dict[int, str]] = {}
    for row, cells in topology.links.items():
        if key(row) is None:
            continue
        links[key(row)] = {key(col): label for col, label in cells.items() if key(col) is not None}
    report.links = {row: dict(sorted(cells.items())) for row, cells in sorted(links.items())}
    for row, affinity in topology.cpu_affinity.items():
        device = report.device(key(row)) if key(row) is not None else None
        if device is not None:
            device.cpu_affinity = affinity


def build_report(info_text: str, map_text: str | None = None, topo_text: str | None = None) -> DeviceReport:
    """Combine `npu-smi info`, `info -m` and `info -t topo` output (the last two optional) into one report."""
    report = parse_info(info_text)
    if not report.devices:
        return report
    if map_text is not None:
        try:
            apply_chip_map(report, parse_chip_map(map_text))
        except NpuSmiParseError as exc:
            report.errors.append(f"{exc}; logic ids follow card and chip order")
    if topo_text is not None:
        try:
            apply_topology(report, parse_topo(topo_text))
        except NpuSmiParseError as exc:
            report.errors.append(f"{exc}; no topology")
    return report
