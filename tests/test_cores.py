"""Core lists in numactl syntax and the per-rank core rules."""

from __future__ import annotations

import pytest

from xllm_tui.cores import available_cores, cores_for_rank, format_cores, map_cores, parse_cores
from xllm_tui.spec import CoreRule


@pytest.mark.parametrize(
    "text, cores",
    [
        ("3", (3,)),
        ("0-11", tuple(range(12))),
        ("0-11,24-35", tuple(range(12)) + tuple(range(24, 36))),
        (" 24-35 , 0-1 ", (0, 1) + tuple(range(24, 36))),
        ("5-5", (5,)),
    ],
)
def test_parse_cores(text, cores):
    assert parse_cores(text) == cores


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty core list; write a list such as '0-11'"),
        ("0-11,", "empty entry in core list '0-11,'"),
        ("a-b", "cannot read 'a-b' in core list 'a-b'"),
        ("11-0", "range '11-0' in core list '11-0' runs backwards; write '0-11'"),
        ("0-3,2", "core 2 appears twice in core list '0-3,2'"),
        ("-3", "cannot read '-3'"),
        ("1-2-3", "cannot read '1-2-3'"),
    ],
)
def test_parse_cores_explains_bad_input(text, message):
    with pytest.raises(ValueError) as caught:
        parse_cores(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "cores, text",
    [
        (range(12), "0-11"),
        (list(range(12)) + list(range(24, 36)), "0-11,24-35"),
        ([3], "3"),
        ([5, 1, 2, 3, 9, 2], "1-3,5,9"),
        ([], ""),
    ],
)
def test_format_cores_is_compact(cores, text):
    assert format_cores(cores) == text


def test_format_and_parse_round_trip():
    for text in ("0-11", "0-11,24-35", "7", "1,3,5-6"):
        assert format_cores(parse_cores(text)) == text


def test_per_device_rule_is_the_guides_i_times_12():
    rule = CoreRule(kind="per_device", count=12, first=0)
    assert [cores_for_rank(rule, device=i, local_rank=i) for i in range(8)] == [
        f"{i * 12}-{i * 12 + 11}" for i in range(8)
    ]
    # keyed on the device id, not the rank's index
    assert cores_for_rank(rule, device=5, local_rank=0) == "60-71"


def test_per_rank_rule_and_first_core():
    rule = CoreRule(kind="per_rank", count=40, first=8)
    assert cores_for_rank(rule, device=5, local_rank=0) == "8-47"
    assert cores_for_rank(rule, device=5, local_rank=1) == "48-87"
    assert cores_for_rank(CoreRule(kind="per_device", count=1), device=3, local_rank=0) == "3"


def test_topology_and_none_give_no_list_here():
    assert cores_for_rank(CoreRule(kind="topology"), 0, 0) is None
    assert cores_for_rank(CoreRule(kind="none"), 0, 0) is None


def test_map_cores_folds_onto_available_cores():
    assert map_cores(range(84, 96), [0, 1]) == (0, 1)
    assert map_cores([2, 3], [0, 1, 2, 3]) == (2, 3)
    assert set(map_cores(range(12), available_cores())) <= set(available_cores())
    with pytest.raises(ValueError):
        map_cores([1], [])
