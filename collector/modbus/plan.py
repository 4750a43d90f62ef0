"""Request planning: the fewest reads that serve a device's points, within the limits.

A read costs a round trip (and on a 9600-baud RS-485 bus, tens of milliseconds), so points
of one table and interval are merged into as few reads as the protocol allows: at most
`max_registers` registers (125 on the wire) or `max_bits` coils/inputs (2000) per read,
and at most `max_gap` unused registers (or bits) between two points of one read.

Points are sorted by address and merged greedily left to right. Because points that
share registers cover the same range (the config insists), the ranges are disjoint once
equal ones are folded together, so some optimal plan reads consecutive runs of them; and
since shrinking a run never breaks a limit, taking the longest run that fits at each
step gives the minimum number of reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from collector.errors import SettingError
from collector.modbus.config import ModbusConfig, ModbusDevice, ModbusPoint, Table, connection_of

BIT_TABLES = ("coil", "discrete")
_TABLES: tuple[Table, ...] = ("holding", "input", "coil", "discrete")


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read on the wire and the points its answer serves."""

    table: Table
    address: int
    count: int
    points: tuple[ModbusPoint, ...]

    @property
    def end(self) -> int:
        """One past the last register (or bit) read."""
        return self.address + self.count

    @property
    def unused(self) -> int:
        """Registers (or bits) read that no point needs."""
        used: set[int] = set()
        for p in self.points:
            used.update(range(p.address, p.address + p.count))
        return self.count - len(used)

    def __str__(self) -> str:
        where = f"{self.address}-{self.end - 1}" if self.count > 1 else str(self.address)
        unit = "bit" if self.table in BIT_TABLES else "register"
        extra = f", {self.unused} unused" if self.unused else ""
        return f"{self.table} {where} ({_count(self.count, unit)}{extra})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def plan(
    points: Iterable[ModbusPoint], *, max_gap: int, max_registers: int = 125,
    max_bits: int = 2000,
) -> list[ReadRequest]:
    """The fewest reads serving `points`, table by table, in address order."""
    if max_gap < 0:
        raise SettingError(f"max_gap cannot be negative: {max_gap}")
    by_table: dict[Table, list[ModbusPoint]] = {}
    for point in points:
        by_table.setdefault(point.table, []).append(point)
    requests: list[ReadRequest] = []
    for table in _TABLES:
        limit = max_bits if table in BIT_TABLES else max_registers
        requests += _plan_table(table, by_table.get(table, []), max_gap, limit)
    return requests


def _plan_table(table: Table, points: Sequence[ModbusPoint], max_gap: int,
                limit: int) -> list[ReadRequest]:
    requests: list[ReadRequest] = []
    run: list[ModbusPoint] = []
    start = end = 0
    for point in sorted(points, key=lambda p: (p.address, p.count)):
        p_end = point.address + point.count
        if point.count > limit:
            raise SettingError(f"{table} point {point.metric} at {point.address} needs "
                             f"{point.count} registers, more than one read may carry ({limit})")
        if run and point.address - end <= max_gap and max(end, p_end) - start <= limit:
            run.append(point)
            end = max(end, p_end)
            continue
        if run:
            requests.append(ReadRequest(table, start, end - start, tuple(run)))
        run, start, end = [point], point.address, p_end
    if run:
        requests.append(ReadRequest(table, start, end - start, tuple(run)))
    return requests


def split(request: ReadRequest) -> list[ReadRequest]:
    """Smaller reads for a request the device refused: contiguous runs, else one per range.

    A merged read that spans unused registers splits at its gaps; a read that is already
    contiguous splits into one read per distinct register range, so one unmapped point
    no longer blanks its neighbours. A read of one range cannot split: it returns itself.
    """
    runs = plan(request.points, max_gap=0, max_registers=request.count,
                max_bits=request.count)
    if len(runs) > 1:
        return runs
    ranges: dict[tuple[int, int], list[ModbusPoint]] = {}
    for point in request.points:
        ranges.setdefault((point.address, point.count), []).append(point)
    return [ReadRequest(request.table, address, count, tuple(points))
            for (address, count), points in sorted(ranges.items())]


def device_plan(device: ModbusDevice, points: Iterable[ModbusPoint]) -> list[ReadRequest]:
    """`plan` with the device's own limits."""
    return plan(points, max_gap=device.max_gap, max_registers=device.max_registers,
                max_bits=device.max_bits)


def by_interval(device: ModbusDevice) -> dict[float, list[ModbusPoint]]:
    """The device's points grouped by their polling interval (a point may override it)."""
    groups: dict[float, list[ModbusPoint]] = {}
    for point in device.points:
        groups.setdefault(point.interval or device.interval, []).append(point)
    return groups


def explain(config: ModbusConfig) -> str:
    """The read requests each device makes per cycle, for `patrol check --explain-modbus`."""
    lines = []
    for device in config.devices:
        lines.append(f"{device.name} ({connection_of(device)}, unit {device.unit_id}, "
                     f"max_gap {device.max_gap}, max_registers {device.max_registers}):")
        for interval, points in by_interval(device).items():
            requests = device_plan(device, points)
            lines.append(f"  every {interval:g}s: {_count(len(requests), 'request')} for "
                         f"{_count(len(points), 'point')}")
            for r in requests:
                metrics = ", ".join(f"{p.asset}.{p.metric}@{p.address}" for p in r.points)
                lines.append(f"    {r}: {metrics}")
    return "\n".join(lines)
