"""CPU binding: each rank's numactl cores against its NPU's CPU affinity (from the topology). Pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from xllm_tui.devices.model import Topology


class CoreListError(ValueError):
    """A core list that is not numactl's "0-11,24-35" form."""


def parse_core_list(text: str) -> set[int]:
    """'0-11,24,30-31' -> {0..11, 24, 30, 31}. Raises CoreListError with what is wrong."""
    cores: set[int] = set()
    if not text or not text.strip():
        raise CoreListError("empty core list")
    for part in text.replace(" ", "").split(","):
        if not part:
            raise CoreListError(f"empty item in core list {text!r}")
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise CoreListError(f"{part!r} in {text!r} is not a core number or range like 0-11")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise CoreListError(f"range {part!r} in {text!r} runs backwards")
        cores.update(range(low, high + 1))
    return cores


def format_core_list(cores: set[int] | list[int]) -> str:
    """{0..11, 24} -> '0-11,24' (the form numactl -C and npu-smi print)."""
    ordered = sorted(set(cores))
    parts: list[str] = []
    start = previous = None
    for core in ordered:
        if start is None:
            start = previous = core
        elif core == previous + 1:
            previous = core
        else:
            parts.append(f"{start}-{previous}" if previous != start else str(start))
            start = previous = core
    if start is not None:
        parts.append(f"{start}-{previous}" if previous != start else str(start))
    return ",".join(parts)


@dataclass(frozen=True)
class BindingIssue:
    rank: int
    device: int
    cores: str  # what the rank is bound to
    affinity: str | None  # the NPU's CPU affinity
    message: str
    outside: str = ""  # the cores outside the affinity, e.g. "24-35"

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "device": self.device,
            "cores": self.cores,
            "affinity": self.affinity,
            "outside": self.outside,
            "message": self.message,
        }


def check_binding(rank_cores: dict[int, str | None], rank_devices: dict[int, int], topology: Topology) -> list[BindingIssue]:
    """One issue per rank whose cores are wholly or partly outside its NPU's CPU affinity.

    Ranks without cores (no numactl), and devices whose affinity the topology does not give (e.g. A3 on ARM,
    where npu-smi prints no CPU Affinity column), are not checked. An unreadable core list or affinity is an issue.
    """
    issues: list[BindingIssue] = []
    for rank in sorted(rank_devices):
        device = rank_devices[rank]
        cores_text = rank_cores.get(rank)
        affinity_text = topology.cpu_affinity.get(device)
        if not cores_text or not affinity_text:
            continue
        try:
            cores = parse_core_list(cores_text)
        except CoreListError as exc:
            issues.append(BindingIssue(rank, device, cores_text, affinity_text, f"rank {rank}: cores {cores_text!r} unreadable: {exc}"))
            continue
        try:
            affinity = parse_core_list(affinity_text)
        except CoreListError as exc:
            issues.append(BindingIssue(rank, device, cores_text, affinity_text, f"NPU {device}: CPU affinity unreadable: {exc}"))
            continue
        outside = cores - affinity
        if not outside:
            continue
        outside_text = format_core_list(outside)
        if outside == cores:
            message = (
                f"rank {rank} runs on cores {cores_text}, all outside NPU {device}'s CPU affinity {affinity_text}"
                f" (bind it to cores within {affinity_text})"
            )
        else:
            message = (
                f"rank {rank} runs on cores {cores_text}, {len(outside)} of them ({outside_text}) outside"
                f" NPU {device}'s CPU affinity {affinity_text}"
            )
        issues.append(BindingIssue(rank, device, cores_text, affinity_text, message, outside_text))
    return issues


def cores_from_topology(topology: Topology, device: int, count: int | None = None) -> str:
    """The cores for a rank on `device`, from the NPU's CPU affinity.

    count None: the whole affinity (e.g. "96-119"). count N: the device's own share of N cores. Devices with the
    same affinity split it in logic-id order (NPUs 2 and 3 sharing 96-119 with count 12 get 96-107 and 108-119),
    so ranks on neighbouring NPUs do not compete for cores. Raises ValueError with what is missing.
    """
    affinity_text = topology.cpu_affinity.get(device)
    if not affinity_text:
        raise ValueError(
            f"no CPU affinity for NPU {device} in the topology (npu-smi info -t topo prints none on this machine); "
            "give the cores explicitly"
        )
    affinity = sorted(parse_core_list(affinity_text))
    if count is None:
        return format_core_list(affinity)
    if count <= 0:
        raise ValueError(f"core count must be positive, got {count}")
    sharing = sorted(d for d, text in topology.cpu_affinity.items() if text == affinity_text)
    start = sharing.index(device) * count
    if start + count > len(affinity):
        raise ValueError(
            f"NPU {device}'s CPU affinity {affinity_text} has {len(affinity)} cores, shared by NPUs "
            f"{', '.join(map(str, sharing))}: not enough for {count} cores each"
        )
    return format_core_list(affinity[start : start + count])


def topology_cores(topology: Topology, count: int | None = None) -> dict[int, str]:
    """device -> cores_from_topology(...) for every device with an affinity. Where `count` cores per device do
    not fit, that device gets its whole affinity (the binding check then shows the sharing)."""
    result: dict[int, str] = {}
    for device in sorted(topology.cpu_affinity):
        try:
            result[device] = cores_from_topology(topology, device, count)
        except ValueError:
            try:
                result[device] = cores_from_topology(topology, device, None)
            except ValueError:
                continue
    return result
