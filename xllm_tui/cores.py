"""CPU core lists in numactl's `-C` syntax ("0-11", "0-11,24-35", "3"), and the per-rank core rules.

Pure functions, no I/O except `available_cores()`. Used by profile.py (validation), launch.py (numactl -C)
and the simulator (mapping a profile's cores onto the cores this machine really has).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

from xllm_tui.spec import CoreRule

_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_cores(text: str) -> tuple[int, ...]:
    """Parse "0-11,24-35" into the sorted core numbers; ValueError says what is wrong and how to write it."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"expected a core list such as '0-11' or '0-11,24-35', got {text!r}")
    text = str(text).strip()
    if not text:
        raise ValueError("empty core list; write a list such as '0-11' or '0-11,24-35'")
    seen: set[int] = set()
    for raw_part in text.split(","):
        part = raw_part.replace(" ", "")
        if not part:
            raise ValueError(f"empty entry in core list '{text}' (two commas in a row or a trailing comma?)")
        match = _PART.match(part)
        if not match:
            raise ValueError(
                f"cannot read '{raw_part.strip()}' in core list '{text}': "
                "use numbers and ranges such as '0-11' or '0-11,24-35'"
            )
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ValueError(f"range '{part}' in core list '{text}' runs backwards; write '{high}-{low}'")
        for core in range(low, high + 1):
            if core in seen:
                raise ValueError(f"core {core} appears twice in core list '{text}'")
            seen.add(core)
    return tuple(sorted(seen))


def format_cores(cores: Iterable[int]) -> str:
    """The compact numactl form of a set of cores: [0..11, 24..35] -> "0-11,24-35"."""
    ordered = sorted(set(int(c) for c in cores))
    parts: list[str] = []
    index = 0
    while index < len(ordered):
        start = end = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == end + 1:
            index += 1
            end = ordered[index]
        parts.append(str(start) if start == end else f"{start}-{end}")
        index += 1
    return ",".join(parts)


def cores_for_rank(rule: CoreRule, device: int, local_rank: int) -> str | None:
    """The numactl -C argument a rule gives one rank, or None when the rule cannot say here.

    per_device: the guide's `$((i*12))-$((i*12+11))` keyed on the device id; per_rank: keyed on the
    rank's index on its machine. "topology" needs `npu-smi info -t topo` (see devices/affinity), and
    "none" means no binding: both return None.
    """
    if rule.kind == "per_device":
        index = device
    elif rule.kind == "per_rank":
        index = local_rank
    else:
        return None
    first = rule.first + index * rule.count
    return format_cores(range(first, first + rule.count))


def available_cores() -> tuple[int, ...]:
    """The cores this process may run on (its affinity mask), sorted."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return tuple(range(os.cpu_count() or 1))


def map_cores(cores: Iterable[int], available: Sequence[int]) -> tuple[int, ...]:
    """Fold a profile's core numbers onto the cores a (smaller) machine has: core c -> available[c % n].

    Used under --simulate so a 96-core profile still runs under numactl on a laptop.
    """
    if not available:
        raise ValueError("no available cores to map onto")
    return tuple(sorted({available[c % len(available)] for c in cores}))
