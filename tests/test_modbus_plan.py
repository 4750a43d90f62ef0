"""Request planning: hand-worked maps, then properties against independent slow planners.

The greedy planner is checked against two planners written here without its insight: a
DP over address-ordered runs (polynomial, for larger maps) and an exhaustive search over
every partition of the points (exponential, for tiny maps), which also proves that
reading consecutive runs loses nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.modbus.config import ModbusConfig, ModbusPoint
from collector.modbus.plan import ReadRequest, explain, plan, split


def point(metric: str, address: int, type_: str = "uint16", **more: Any) -> ModbusPoint:
    return ModbusPoint(asset="ch1", metric=metric, address=address, type=type_, **more)


def spans(requests: Sequence[ReadRequest]) -> list[tuple[str, int, int]]:
    return [(r.table, r.address, r.count) for r in requests]


def metrics(request: ReadRequest) -> list[str]:
    return [p.metric for p in request.points]


# --- worked examples ---------------------------------------------------------------------


def test_adjacent_points_merge_with_no_gap_allowed():
    points = [point("b", 2, "float32"), point("a", 0, "float32"), point("c", 4)]
    requests = plan(points, max_gap=0)
    assert spans(requests) == [("holding", 0, 5)]
    assert metrics(requests[0]) == ["a", "b", "c"]  # in address order


def test_a_gap_merges_only_when_max_gap_allows_it():
    points = [point("a", 0), point("b", 4)]  # registers 1-3 unused
    assert spans(plan(points, max_gap=2)) == [("holding", 0, 1), ("holding", 4, 1)]
    assert spans(plan(points, max_gap=3)) == [("holding", 0, 5)]
    assert plan(points, max_gap=3)[0].unused == 3


def test_a_read_never_passes_125_registers():
    points = [point(f"m{i}", 2 * i, "float32") for i in range(63)]  # 126 registers
    requests = plan(points, max_gap=0)
    assert spans(requests) == [("holding", 0, 124), ("holding", 124, 2)]
    assert spans(plan(points, max_gap=0, max_registers=50)) == [
        ("holding", 0, 50), ("holding", 50, 50), ("holding", 100, 26)]


def test_a_point_is_never_cut_across_two_reads():
    points = [point("a", 0), point("b", 1, "float64")]  # 5 registers, limit 4
    assert spans(plan(points, max_gap=0, max_registers=4)) == [
        ("holding", 0, 1), ("holding", 1, 4)]


def test_bits_of_a_status_word_and_the_word_itself_share_one_register():
    points = [point("word", 8), point("door", 8, "bool", bit=2), point("alarm", 8, bit=3),
              point("next", 9)]
    requests = plan(points, max_gap=0)
    assert spans(requests) == [("holding", 8, 2)]
    assert sorted(metrics(requests[0])) == ["alarm", "door", "next", "word"]
    assert requests[0].unused == 0


def test_tables_are_planned_apart_and_bits_have_their_own_limit():
    points = [point("h", 0), point("i", 1, table="input"),
              *(point(f"c{n}", n, "bool", table="coil") for n in range(0, 3000, 2)),
              point("d", 5, "bool", table="discrete")]
    requests = plan(points, max_gap=1)
    assert spans(requests) == [
        ("holding", 0, 1), ("input", 1, 1), ("coil", 0, 1999), ("coil", 2000, 999),
        ("discrete", 5, 1)]
    assert [r.table for r in plan(points, max_gap=1, max_bits=10)].count("coil") == 300


def test_a_point_wider_than_a_read_is_refused():
    with pytest.raises(ValueError, match="needs 4 registers, more than one read may carry"):
        plan([point("a", 0, "float64")], max_gap=0, max_registers=2)


def test_split_cuts_at_the_gaps_then_per_point():
    merged = plan([point("a", 0, "float32"), point("b", 2), point("c", 10),
                   point("d", 10, bit=1)], max_gap=10)[0]
    assert spans([merged]) == [("holding", 0, 11)]
    runs = split(merged)
    assert spans(runs) == [("holding", 0, 3), ("holding", 10, 1)]
    assert spans(split(runs[0])) == [("holding", 0, 2), ("holding", 2, 1)]
    assert split(runs[1]) == [runs[1]]  # one range (two points share it): nothing to cut
    assert [metrics(r) for r in split(runs[1])] == [["c", "d"]]


def test_explain_shows_each_request_and_its_points():
    config = ModbusConfig.model_validate({"devices": [{
        "name": "plc", "host": "10.0.0.5", "max_gap": 4, "interval": 5,
        "points": [
            {"asset": "ch1", "metric": "supply", "address": 100, "type": "float32"},
            {"asset": "ch1", "metric": "ret", "address": 104, "type": "float32"},
            {"asset": "ch1", "metric": "run", "address": 200, "bit": 0},
            {"asset": "ch1", "metric": "kwh", "table": "input", "address": 0,
             "type": "uint32", "interval": 60},
        ]}]})
    assert explain(config) == "\n".join([
        "plc (tcp 10.0.0.5:502, unit 1, max_gap 4, max_registers 125):",
        "  every 5s: 2 requests for 3 points",
        "    holding 100-105 (6 registers, 2 unused): ch1.supply@100, ch1.ret@104",
        "    holding 200 (1 register): ch1.run@200",
        "  every 60s: 1 request for 1 point",
        "    input 0-1 (2 registers): ch1.kwh@0",
    ])


# --- properties against independent planners ---------------------------------------------


def feasible(points: Sequence[ModbusPoint], max_gap: int, limit: int) -> bool:
    """Whether one read can serve exactly these points, from first principles."""
    used = {a for p in points for a in range(p.address, p.address + p.count)}
    low, high = min(used), max(used)
    if high - low + 1 > limit:
        return False
    gap = 0
    for address in range(low, high + 1):
        gap = 0 if address in used else gap + 1
        if gap > max_gap:
            return False
    return True


def dp_minimum(points: Sequence[ModbusPoint], max_gap: int, limit: int) -> int:
    """Fewest reads over consecutive runs of address-ordered register ranges (O(n^2))."""
    ranges: dict[tuple[int, int], list[ModbusPoint]] = {}
    for p in points:
        ranges.setdefault((p.address, p.count), []).append(p)
    groups = [ranges[key] for key in sorted(ranges)]

    @functools.cache
    def best(i: int) -> int:
        if i == len(groups):
            return 0
        return min(1 + best(j) for j in range(i + 1, len(groups) + 1)
                   if feasible([p for g in groups[i:j] for p in g], max_gap, limit))

    return best(0)


def partitions(items: list[int]) -> Any:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]
        yield [[first], *part]


def exhaustive_minimum(points: Sequence[ModbusPoint], max_gap: int, limit: int) -> int:
    """Fewest reads over every way to group the points (tiny maps only)."""
    return min(len(groups) for groups in partitions(list(range(len(points))))
               if all(feasible([points[i] for i in g], max_gap, limit) for g in groups))


WIDTHS = {1: "uint16", 2: "float32", 4: "float64"}


@st.composite
def point_maps(draw: st.DrawFn, max_ranges: int = 30) -> tuple[list[ModbusPoint], int, int]:
    """Register points of one table, ranges disjoint or equal (as the config insists)."""
    limit = draw(st.integers(4, 40))
    n = draw(st.integers(1, max_ranges))
    points: list[ModbusPoint] = []
    address = draw(st.integers(0, 100))
    for i in range(n):
        width = draw(st.sampled_from(sorted(WIDTHS)))
        if address + width > 65536:
            break
        points.append(point(f"m{i}", address, WIDTHS[width]))
        if width == 1:  # a few bits of the same status word share its register
            points += [point(f"m{i}b{bit}", address, "bool", bit=bit)
                       for bit in draw(st.sets(st.integers(0, 15), max_size=2))]
        address += width + draw(st.one_of(st.just(0), st.integers(0, 12), st.integers(0, 60)))
    return points, draw(st.integers(0, 20)), limit


@given(point_maps(), st.randoms(use_true_random=False))
@settings(max_examples=300, deadline=None)
def test_the_plan_covers_each_point_once_within_limits_and_is_minimal(
    case: tuple[list[ModbusPoint], int, int], shuffler: Any
):
    points, max_gap, limit = case
    shuffled = list(points)
    shuffler.shuffle(shuffled)
    requests = plan(shuffled, max_gap=max_gap, max_registers=limit)
    served = [p for r in requests for p in r.points]
    assert sorted(p.metric for p in served) == sorted(p.metric for p in points)
    for r in requests:
        assert r.count <= limit
        assert r.address == min(p.address for p in r.points)  # no register read for nothing
        assert r.end == max(p.address + p.count for p in r.points)
        assert feasible(r.points, max_gap, limit)
    assert len(requests) == dp_minimum(points, max_gap, limit)


@given(point_maps(max_ranges=6))
@settings(max_examples=200, deadline=None)
def test_the_plan_matches_an_exhaustive_search_on_tiny_maps(
    case: tuple[list[ModbusPoint], int, int],
):
    points, max_gap, limit = case
    distinct = list({(p.address, p.count): p for p in points}.values())
    assert len(plan(points, max_gap=max_gap, max_registers=limit)) == exhaustive_minimum(
        distinct, max_gap, limit)


@given(st.sets(st.integers(0, 300), min_size=1, max_size=60), st.integers(0, 40),
       st.integers(1, 50))
@settings(max_examples=200, deadline=None)
def test_coil_plans_are_minimal_too(addresses: set[int], max_gap: int, max_bits: int):
    coils = [point(f"c{a}", a, "bool", table="coil") for a in addresses]
    requests = plan(coils, max_gap=max_gap, max_bits=max_bits)
    assert sorted(p.address for r in requests for p in r.points) == sorted(addresses)
    assert all(r.count <= max_bits and feasible(r.points, max_gap, max_bits)
               for r in requests)
    assert len(requests) == dp_minimum(coils, max_gap, max_bits)
