"""python -m bench.modbus_plan [--cycles N]: how many reads planning saves, and what a poll costs.

1. A realistic 200-point register map (clusters of float32, uint16 and int32 with gaps of
   varied sizes, several bits of status words, input registers, a few coils): reads per
   cycle by our planner, one read per point, and the theoretical minimum (a DP written
   here, independent of the planner), for max_gap 0, 2, 8, 32 and 125.
2. 20 devices x 50 points on loopback: 20 pymodbus TCP servers in a child process (so
   they do not share our event loop), polled by `ModbusCollector`'s own cycle, all 20
   devices at once as `run()` does; wall time per cycle of 1,000 points, median and p95,
   with max_gap 8 and with one read per point.

Figures only; no asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from random import Random
from typing import Any

from collector.modbus.config import ModbusConfig, ModbusDevice, ModbusPoint, connection_of
from collector.modbus.plan import ReadRequest, device_plan, plan
from collector.modbus.poller import ModbusCollector, _Health, _Link, client_for

GAPS = (125, 32, 8, 2, 0)
DEVICES, POINTS_PER_DEVICE = 20, 50


def site_map(n: int, seed: int) -> list[dict[str, Any]]:
    """n points as a vendor's register map lays them out: clusters with holes between."""
    rng = Random(seed)
    points: list[dict[str, Any]] = []
    next_free = {"holding": 0, "input": 0, "coil": 0}

    def add(table: str, address: int, **more: Any) -> None:
        points.append({"asset": f"ahu{seed}", "metric": f"p{len(points)}", "table": table,
                       "address": address, **more})

    while len(points) < n:
        kind = rng.choices(["floats", "setpoints", "counters", "status", "inputs", "coils"],
                           weights=[4, 2, 1, 2, 2, 1])[0]
        table = {"inputs": "input", "coils": "coil"}.get(kind, "holding")
        at = next_free[table] + rng.choice([0, 0, 1, 2, 3, 4, 6, 10, 16, 30, 60, 100])
        if kind in ("floats", "inputs"):
            for _ in range(rng.randint(3, 10)):
                add(table, at, type="float32", unit="degC")
                at += 2 + (2 if rng.random() < 0.15 else 0)  # now and then a reserved pair
        elif kind == "setpoints":
            for _ in range(rng.randint(2, 8)):
                add(table, at, type="uint16", scale=0.1)
                at += 1 + (1 if rng.random() < 0.2 else 0)
        elif kind == "counters":
            for _ in range(rng.randint(2, 4)):
                add(table, at, type=rng.choice(["int32", "uint32"]))
                at += 2
        elif kind == "status":
            for bit in sorted(rng.sample(range(16), rng.randint(3, 6))):
                add(table, at, type="bool", bit=bit)
            at += 1
        else:
            for _ in range(rng.randint(2, 6)):
                add(table, at, type="bool")
                at += 1 + rng.choice([0, 0, 1, 3])
        next_free[table] = at
    return points[:n]


def minimum_reads(points: Sequence[ModbusPoint], max_gap: int, limit: int,
                  bit_limit: int) -> int:
    """The fewest reads, by a DP over address-ordered register ranges (not the planner)."""
    total = 0
    for table in ("holding", "input", "coil", "discrete"):
        ranges = sorted({(p.address, p.count) for p in points if p.table == table})
        cap = bit_limit if table in ("coil", "discrete") else limit

        def fits(run: Sequence[tuple[int, int]], cap: int = cap) -> bool:
            used = {a for start, count in run for a in range(start, start + count)}
            if max(used) - min(used) + 1 > cap:
                return False
            holes = sorted(set(range(min(used), max(used) + 1)) - used)
            gap = longest = 0
            for i, hole in enumerate(holes):
                gap = gap + 1 if i and hole == holes[i - 1] + 1 else 1
                longest = max(longest, gap)
            return longest <= max_gap

        best = [0] + [len(ranges) + 1] * len(ranges)
        for j in range(1, len(ranges) + 1):
            for i in range(j - 1, -1, -1):
                if not fits(ranges[i:j]):
                    if ranges[j - 1][0] + ranges[j - 1][1] - ranges[i][0] > cap:
                        break  # a longer run only spans more
                    continue
                best[j] = min(best[j], best[i] + 1)
        total += best[-1]
    return total


def planning_table() -> None:
    device = ModbusDevice.model_validate({"name": "ahu", "host": "h", "points": site_map(200, 3)})
    points = device.points
    tables = {t: sum(p.table == t for p in points) for t in ("holding", "input", "coil")}
    bits = [p for p in points if p.bit is not None]
    distinct = len({(p.table, p.address, p.count) for p in points})
    print(f"Request planning, one 200-point map: {tables['holding']} holding points "
          f"({len(bits)} of them bits of {len({p.address for p in bits})} status words), "
          f"{tables['input']} input, {tables['coil']} coils; {distinct} distinct ranges")
    print(f"{'max_gap':>7}  {'planner':>7}  {'one per point':>13}  {'minimum':>7}  "
          f"{'registers+bits read':>19}  {'of them unused':>14}")
    for gap in sorted(GAPS):
        requests = plan(points, max_gap=gap)
        read = sum(r.count for r in requests)
        unused = sum(r.unused for r in requests)
        print(f"{gap:>7}  {len(requests):>7}  {len(points):>13}  "
              f"{minimum_reads(points, gap, 125, 2000):>7}  {read:>19}  {unused:>14}")


# --- polling wall time -------------------------------------------------------------------


def serve(ports: Sequence[int]) -> None:
    """Child process: one pymodbus TCP server per port; answers `count` on stdin."""
    from pymodbus.datastore import (
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )
    from pymodbus.server import ModbusTcpServer

    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    received = [0]

    def trace(sending: bool, pdu: Any) -> Any:
        if not sending:
            received[0] += 1
        return pdu

    async def main() -> None:
        servers = []
        for port in ports:
            unit = ModbusDeviceContext(
                hr=ModbusSequentialDataBlock(1, [(i * 37) % 65536 for i in range(2000)]),
                ir=ModbusSequentialDataBlock(1, [(i * 11) % 65536 for i in range(2000)]),
                co=ModbusSequentialDataBlock(1, [i % 3 == 0 for i in range(2000)]))
            server = ModbusTcpServer(ModbusServerContext(devices={1: unit}, single=False),
                                     address=("127.0.0.1", port), trace_pdu=trace)
            await server.serve_forever(background=True)
            servers.append(server)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "count":
                print(received[0], flush=True)
        for server in servers:
            await server.shutdown()

    asyncio.run(main())


class Servers:
    """The child process running DEVICES servers."""

    def __init__(self, ports: Sequence[int]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.modbus_plan", "--serve", *map(str, ports)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the Modbus servers did not start")

    def received(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def one_per_point(device: ModbusDevice) -> list[ReadRequest]:
    return [ReadRequest(p.table, p.address, p.count, (p,)) for p in device.points]


async def time_cycles(config: ModbusConfig, servers: Servers, cycles: int,
                      naive: bool) -> tuple[list[float], float, int]:
    """Wall time of each cycle of all devices at once; requests per cycle; bad readings."""
    collector = ModbusCollector(config)
    links = [_Link(connection_of(d), client_for(d)) for d in config.devices]
    healths = [_Health(d) for d in config.devices]
    plans = [one_per_point(d) if naive else device_plan(d, d.points) for d in config.devices]
    times: list[float] = []
    bad = per_cycle = 0
    try:
        for cycle in range(cycles + 1):
            before = servers.received()
            started = time.perf_counter()
            batches = await asyncio.gather(*(
                collector._cycle(d, link, health, requests)
                for d, link, health, requests in zip(config.devices, links, healths, plans,
                                                     strict=True)))
            elapsed = time.perf_counter() - started
            if cycle:  # the first cycle also connects: leave it out
                times.append(elapsed)
                bad += sum(not r.quality.good for batch in batches for r in batch)
                per_cycle = servers.received() - before
    finally:
        for link in links:
            link.client.close()
    return times, per_cycle, bad


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports nobody listens on right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def polling(cycles: int) -> None:
    ports = free_ports(DEVICES)
    config = ModbusConfig.model_validate({"devices": [
        {"name": f"ahu{n}", "host": "127.0.0.1", "port": port, "max_gap": 8, "timeout": 2,
         "retries": 0, "points": site_map(POINTS_PER_DEVICE, seed=100 + n)}
        for n, port in enumerate(ports)]})
    points = sum(len(d.points) for d in config.devices)
    print(f"\nPolling {DEVICES} devices x {POINTS_PER_DEVICE} points = {points} points, one "
          f"TCP connection each, on loopback ({cycles} cycles; servers in a child process)")
    print(f"{'reads':<22}  {'requests/cycle':>14}  {'median ms':>9}  {'p95 ms':>7}  "
          f"{'bad readings':>12}")
    servers = Servers(ports)
    try:
        for label, naive in (("planned, max_gap 8", False), ("one per point", True)):
            times, per_cycle, bad = asyncio.run(time_cycles(config, servers, cycles, naive))
            ms = sorted(t * 1000 for t in times)
            p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
            print(f"{label:<22}  {per_cycle:>14}  {statistics.median(ms):>9.1f}  {p95:>7.1f}  "
                  f"{bad:>12}")
    finally:
        servers.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.modbus_plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20, help="poll cycles to time")
    parser.add_argument("--serve", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    planning_table()
    polling(args.cycles)


if __name__ == "__main__":
    main()
