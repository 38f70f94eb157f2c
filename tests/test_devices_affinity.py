"""The binding check (rank cores vs NPU CPU affinity) and cores computed from the topology."""

from __future__ import annotations

import os

import pytest

from xllm_tui.devices.affinity import (
    CoreListError,
    check_binding,
    cores_from_topology,
    format_core_list,
    parse_core_list,
    topology_cores,
)
from xllm_tui.devices.model import Topology
from xllm_tui.devices.npu_smi import parse_topo

TOPO_HCCS = os.path.join(os.path.dirname(__file__), "fixtures", "npu-smi", "npu-smi_info_-t_topo__910B3_8npu_HCCS__ms-swift.txt")


@pytest.fixture
def topology() -> Topology:
    with open(TOPO_HCCS, encoding="utf-8") as handle:
        return parse_topo(handle.read())


def test_core_lists_round_trip():
    assert parse_core_list("0-3,8,10-11") == {0, 1, 2, 3, 8, 10, 11}
    assert format_core_list({11, 10, 8, 3, 2, 1, 0}) == "0-3,8,10-11"
    assert format_core_list([]) == ""
    for bad in ("", "a-b", "5-2", "1,,2"):
        with pytest.raises(CoreListError):
            parse_core_list(bad)


def test_launch_guide_cores_against_a_real_a2_topology(topology):
    # The guide's rule (device i -> cores i*12..i*12+11) on the ms-swift machine, whose NPU 0 sits at 144-167.
    rank_cores = {rank: f"{rank * 12}-{rank * 12 + 11}" for rank in range(8)}
    issues = check_binding(rank_cores, {rank: rank for rank in range(8)}, topology)
    by_rank = {issue.rank: issue for issue in issues}
    assert sorted(by_rank) == list(range(8))  # every rank sits on the wrong socket's cores
    assert by_rank[4].affinity == "0-23" and by_rank[4].outside == "48-59"
    assert by_rank[0].affinity == "144-167" and by_rank[0].cores == "0-11" and by_rank[0].outside == "0-11"
    assert "all outside NPU 0's CPU affinity 144-167" in by_rank[0].message


def test_partly_outside_names_the_cores(topology):
    issues = check_binding({0: "160-171"}, {0: 0}, topology)
    [issue] = issues
    assert (issue.rank, issue.device, issue.outside) == (0, 0, "168-171")
    assert "4 of them (168-171) outside NPU 0's CPU affinity 144-167" in issue.message
    assert issue.to_dict()["affinity"] == "144-167"


def test_cores_inside_affinity_unbound_ranks_and_unknown_affinity_are_fine(topology):
    assert check_binding({0: "144-155", 1: "156-167", 2: "96-119"}, {0: 0, 1: 1, 2: 2}, topology) == []
    assert check_binding({0: None}, {0: 0}, topology) == []
    assert check_binding({0: "0-11"}, {0: 0}, Topology(links={0: {0: "X"}})) == []


def test_unreadable_cores_are_an_issue(topology):
    [issue] = check_binding({3: "zero-eleven"}, {3: 3}, topology)
    assert issue.rank == 3 and "unreadable" in issue.message


def test_cores_from_topology(topology):
    assert cores_from_topology(topology, 2) == "96-119"
    # NPUs 2 and 3 share 96-119: with 12 cores each they get one half each.
    assert cores_from_topology(topology, 2, 12) == "96-107"
    assert cores_from_topology(topology, 3, 12) == "108-119"
    with pytest.raises(ValueError, match="not enough for 16 cores each"):
        cores_from_topology(topology, 3, 16)
    with pytest.raises(ValueError, match="no CPU affinity for NPU 9"):
        cores_from_topology(topology, 9)
    assert topology_cores(topology, 12)[7] == "60-71"
    assert topology_cores(topology, 16)[7] == "48-71"  # does not fit: the whole affinity
