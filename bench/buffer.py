"""python -m bench.buffer [--readings N] [--dir DIR]: the buffer's speed and size.

Prints readings/s into the buffer (`put` in batches of 1,000 and of 5,000: one
transaction, so one fsync, per batch), readings/s out of it 5,000 at a time (`rows` +
`delete`, the raw rows the TSDB writer reads when it bisects a refused batch, and
`line_batch` + `delete_range`, its usual way), and bytes on disk per reading after N
readings.
Runs on one thread pinned to one core; the readings are built before the clock starts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from agent.buffer import Buffer
from agent.tsdb import LineSerializer
from collector.reading import Reading

SERIES = 100


def make_readings(n: int) -> list[Reading]:
    """n readings over SERIES series, one second apart per series, realistic values."""
    start = 1_767_225_600.0
    return [Reading(f"ahu-{i % SERIES:03d}", "supply_temp", 18.0 + (i % 1000) / 100,
                    start + i // SERIES, unit="degC", source="modbus")
            for i in range(n)]


def put_all(buffer: Buffer, readings: Sequence[Reading], batch: int) -> float:
    started = time.perf_counter()
    for first in range(0, len(readings), batch):
        buffer.put(readings[first:first + batch])
    return time.perf_counter() - started


def drain(buffer: Buffer, batch: int) -> tuple[float, int]:
    started, n = time.perf_counter(), 0
    while rows := buffer.rows(batch):
        buffer.delete([row[0] for row in rows])
        n += len(rows)
    return time.perf_counter() - started, n


def drain_lines(buffer: Buffer, batch: int) -> tuple[float, int]:
    head = LineSerializer("patrol", "bench-site", {}).head
    started, n = time.perf_counter(), 0
    while lines := buffer.line_batch(batch, 0, head):
        buffer.delete_range(lines.first, lines.last)
        n += lines.count
    return time.perf_counter() - started, n


def on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.buffer", description=__doc__)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the buffer files go (default: the system temp dir)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    readings = make_readings(args.readings)
    n = len(readings)
    with tempfile.TemporaryDirectory(prefix="patrol-bench-", dir=args.dir) as directory:
        print(f"buffer benchmark: {n:,} readings over {SERIES} series, one core, "
              f"files in {directory}")
        for batch in (1000, 5000):
            path = Path(directory) / f"buffer-{batch}.sqlite"
            buffer = Buffer(path)
            seconds = put_all(buffer, readings, batch)
            print(f"  in   put, batches of {batch:>5,}: {n / seconds:>10,.0f} readings/s "
                  f"({seconds:.2f} s)")
            if batch == 1000:
                used = buffer.used_bytes()
                buffer.close()  # checkpoints the WAL into the file
                print(f"  size on disk after {n:,} readings: {on_disk(path) / n:.1f} "
                      f"bytes/reading (file), {used / n:.1f} bytes/reading (pages in use)")
                buffer = Buffer(path)
            if batch == 1000:
                seconds, out = drain(buffer, 5000)
                how = "rows+delete (raw rows)"
            else:
                seconds, out = drain_lines(buffer, 5000)
                how = "line_batch+delete_range (the TSDB writer's way)"
            assert out == n, (out, n)
            print(f"  out  {how}, 5,000 at a time: {n / seconds:>10,.0f} readings/s "
                  f"({seconds:.2f} s)")
            buffer.close()


if __name__ == "__main__":
    main()
