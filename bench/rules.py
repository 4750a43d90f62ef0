"""python -m bench.rules: throughput, latency and memory of the rules engine. Prints figures.

A site of 1,000 assets, each under the same 20 standards (every check kind, expr, `for`,
`clear_after`, deadband, schedules): 20,000 (asset, standard) pairs. Each asset reports
13 metrics; readings go round the (asset, metric) series in batches of 1,000 (one
`observe` call each), a simulated second per batch by default, and `tick(now)` runs once
per simulated second, as the agent's pipeline does. Some assets drift out of limits now and
then, so episodes start and clear throughout.

Figures:
- readings/s: readings divided by the time spent in observe + tick (and in observe
  alone), on one core; batches are built outside the timed calls. Wall-clock time, and the
  thread's CPU time beside it (the honest figure when other processes share the cores).
- latency to violation_started: a reading is handed to the engine at the start of the
  observe call that holds it, and its event is available when that call returns, so each
  violation_started an observe call returns counts that call's duration. Violations raised
  by a `for` on-delay come out of `tick`; their latency is the tick's duration after the
  second the delay ran out (ticks run each second), printed apart.
- peak memory: the process's peak RSS (ru_maxrss), beside the peak before the engine was
  built.
Then each kind alone (only its standards, only the readings they read), in CPU time.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collector.reading import Reading, bad
from rules.engine import Engine
from rules.standard import Asset, Standard

T0 = 1_772_445_000.0  # 2026-03-02T09:50:00Z = 17:50 in Asia/Shanghai: schedules end at 18:00
TIMEZONE = "Asia/Shanghai"
WORKING_HOURS = "Mon-Fri 08:00-18:00"

# metric -> (normal value, noise, offset while faulty); counters and states are special
METRICS: dict[str, tuple[float, float, float]] = {
    "supply_temp": (7.0, 0.2, 2.0),
    "return_temp": (12.0, 0.3, 0.0),
    "pressure": (250.0, 5.0, 60.0),
    "flow": (8.0, 0.3, -4.0),
    "status_word": (0.0, 0.0, 4.0),
    "running": (1.0, 0.0, 0.0),
    "energy_kwh": (0.0, 0.0, 0.0),
    "air_temp": (22.0, 0.5, 6.0),
    "humidity": (45.0, 2.0, 20.0),
    "vibration": (4.0, 0.5, 5.0),
    "heartbeat": (1.0, 0.0, 0.0),
    "door": (0.0, 0.0, 1.0),
    "co2": (600.0, 30.0, 600.0),
}
NAMES = list(METRICS)

# (kind for the breakdown, standard) x 20
STANDARDS: list[tuple[str, dict[str, Any]]] = [
    ("range", {"metric": "supply_temp", "check": {"min": 6, "max": 8}, "for": "5m",
               "deadband": 0.2}),
    ("rate", {"metric": "supply_temp", "check": {"kind": "rate", "max": 2, "per": "10m"}}),
    ("expr", {"expr": "return_temp - supply_temp", "check": {"min": 3, "max": 7}}),
    ("range", {"metric": "pressure", "check": {"max": 300}, "for": "1m"}),
    ("window", {"metric": "pressure", "check": {"kind": "window", "agg": "p95",
                                                "over": "10m", "max": 280}}),
    ("range", {"metric": "flow", "check": {"min": 5}}),
    ("window", {"metric": "flow", "check": {"kind": "window", "agg": "mean", "over": "5m",
                                            "min": 6}}),
    ("equals", {"metric": "status_word", "check": {"kind": "equals", "value": 0}}),
    ("transitions", {"metric": "running", "check": {"kind": "transitions", "to": 1, "max": 6,
                                                    "per": "1h"}}),
    ("equals", {"metric": "running", "check": {"kind": "equals", "value": 1},
                "active": WORKING_HOURS}),
    ("budget", {"metric": "energy_kwh", "check": {"kind": "budget", "period": "day",
                                                  "max": 300}}),
    ("budget", {"metric": "energy_kwh", "check": {"kind": "budget", "period": "month",
                                                  "max": 12000}}),
    ("range", {"metric": "air_temp", "check": {"min": 18, "max": 26},
               "active": WORKING_HOURS}),
    ("window", {"metric": "air_temp", "check": {"kind": "window", "agg": "max", "over": "15m",
                                                "max": 28}}),
    ("range", {"metric": "humidity", "check": {"min": 30, "max": 60}, "for": "10m",
               "clear_after": "5m"}),
    ("window", {"metric": "vibration", "check": {"kind": "window", "agg": "p95", "over": "5m",
                                                 "max": 7}}),
    ("rate", {"metric": "vibration", "check": {"kind": "rate", "max": 3, "per": "1m"}}),
    ("stale", {"metric": "heartbeat", "check": {"kind": "stale", "after": "5m"}}),
    ("equals", {"metric": "door", "check": {"kind": "equals", "value": 0}, "for": "2m"}),
    ("window", {"metric": "co2", "check": {"kind": "window", "agg": "mean", "over": "10m",
                                           "max": 1000}, "deadband": 50}),
]
KINDS = ["range", "equals", "rate", "stale", "window", "budget", "transitions", "expr"]


def make_standards(kinds: Sequence[str] = KINDS) -> list[Standard]:
    return [Standard.model_validate({"id": f"S{n:02d}-{kind}", "title": f"{kind} {n}", **body})
            for n, (kind, body) in enumerate(STANDARDS, start=1) if kind in kinds]


def make_assets(count: int) -> list[Asset]:
    return [Asset(id=f"A{i:04d}", type="unit", tags={"floor": str(i % 20)})
            for i in range(count)]


class Plant:
    """Readings of every (asset, metric) series in turn; values drift out of limits on a
    few assets now and then (a fault window of 3 minutes in every 12)."""

    def __init__(self, assets: int, metrics: Sequence[str], seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.assets, self.metrics = assets, list(metrics)
        self.series = assets * len(self.metrics)
        self.ids = [f"A{i:04d}" for i in range(assets)]
        self.faulty = self.rng.random(assets) < 0.03
        self.phase = self.rng.integers(0, 720, assets)
        self.kwh_rate = self.rng.uniform(0.05, 0.5, assets)  # kWh per second
        self.cycling = self.rng.random(assets) < 0.02  # compressors that short-cycle
        self.dead = self.rng.random(assets) < 0.01  # heartbeats gone bad
        self.position = 0

    def batch(self, size: int, ts: float) -> list[Reading]:
        index = np.arange(self.position, self.position + size) % self.series
        self.position += size
        asset = index // len(self.metrics)
        metric = index % len(self.metrics)
        noise = self.rng.standard_normal(size)
        fault = self.faulty[asset] & (((ts + self.phase[asset]) // 180) % 4 == 0)
        stamps = ts + np.arange(size) / size  # spread over the second, in order
        out = []
        for i in range(size):
            a, name = int(asset[i]), self.metrics[metric[i]]
            base, spread, offset = METRICS[name]
            value = base + spread * noise[i] + (offset if fault[i] else 0.0)
            if name == "energy_kwh":
                value = 1000.0 * a + self.kwh_rate[a] * (ts - T0)
            elif name == "running":
                value = float((ts // (60 if self.cycling[a] else 600)) % 2)
            reading = Reading(self.ids[a], name, value, float(stamps[i]))
            if name == "heartbeat" and self.dead[a]:
                reading.quality = bad("timeout")
            out.append(reading)
        return out


@dataclass
class Result:
    """Wall-clock seconds, and the same in CPU time of this thread (`*_cpu`: what the
    engine costs when other processes share the cores)."""

    readings: int = 0
    observe_s: float = 0.0
    observe_cpu: float = 0.0
    tick_s: float = 0.0
    tick_cpu: float = 0.0
    ticks: int = 0
    batch_s: list[float] = field(default_factory=list)
    started_latency: list[float] = field(default_factory=list)  # one per observe event
    started_latency_cpu: list[float] = field(default_factory=list)
    tick_durations: list[float] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    tick_started: int = 0


def batches(plant: Plant, total: int, size: int, per_second: int) -> Iterator[
        tuple[float, list[Reading]]]:
    """(simulated second, batch) pairs; `per_second` readings in each simulated second."""
    done, second = 0, 0
    while done < total:
        in_second = 0
        while in_second < per_second and done < total:
            n = min(size, per_second - in_second, total - done)
            yield T0 + second, plant.batch(n, T0 + second + in_second / per_second)
            in_second += n
            done += n
        second += 1


def run(engine: Engine, plant: Plant, total: int, size: int, per_second: int) -> Result:
    result = Result()
    clock, cpu = time.perf_counter, time.thread_time
    current = None
    gc.collect()
    for second, readings in batches(plant, total, size, per_second):
        if second != current:
            if current is not None:  # the second is over: tick, as the pipeline does
                start, start_cpu = clock(), cpu()
                events = engine.tick(current + 1)
                elapsed, elapsed_cpu = clock() - start, cpu() - start_cpu
                result.tick_s += elapsed
                result.tick_cpu += elapsed_cpu
                result.ticks += 1
                result.tick_durations.append(elapsed)
                count(result, events, tick=True)
            current = second
        start, start_cpu = clock(), cpu()
        events = engine.observe(readings)
        elapsed, elapsed_cpu = clock() - start, cpu() - start_cpu
        result.observe_s += elapsed
        result.observe_cpu += elapsed_cpu
        result.batch_s.append(elapsed)
        result.readings += len(readings)
        started = count(result, events, tick=False)
        result.started_latency += [elapsed] * started
        result.started_latency_cpu += [elapsed_cpu] * started
    return result


def count(result: Result, events: Sequence[Any], *, tick: bool) -> int:
    started = 0
    for event in events:
        result.events[event.type] = result.events.get(event.type, 0) + 1
        if event.type == "violation_started":
            started += 1
    if tick:
        result.tick_started += started
    return started


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report_main(result: Result, engine: Engine, rss_before: float, args: argparse.Namespace
                ) -> None:
    total_s = result.observe_s + result.tick_s
    total_cpu = result.observe_cpu + result.tick_cpu
    n = result.readings
    print(f"site: {args.assets} assets x {len(STANDARDS)} standards = {engine.pairs} pairs; "
          f"{len(METRICS)} metrics per asset; {n:,} readings in batches of "
          f"{args.batch}, {args.per_second} readings per simulated second, "
          f"{result.ticks} ticks")
    print(f"throughput (observe + tick): {n / total_s:,.0f} readings/s wall "
          f"({total_s:.2f} s), {n / total_cpu:,.0f} readings/s cpu ({total_cpu:.2f} s)")
    print(f"throughput (observe alone):  {n / result.observe_s:,.0f} readings/s wall, "
          f"{n / result.observe_cpu:,.0f} readings/s cpu")
    print(f"tick over {engine.pairs} pairs: mean {ms(result.tick_cpu / max(result.ticks, 1))} "
          f"cpu, {ms(result.tick_s / max(result.ticks, 1))} wall, "
          f"p99 {ms(percentile(result.tick_durations, 99))}, "
          f"max {ms(max(result.tick_durations, default=0.0))}")
    print(f"observe call of {args.batch} readings: mean "
          f"{ms(result.observe_cpu / len(result.batch_s))} cpu, "
          f"{ms(result.observe_s / len(result.batch_s))} wall, p99 "
          f"{ms(percentile(result.batch_s, 99))}")
    lat, lat_cpu = result.started_latency, result.started_latency_cpu
    print(f"latency reading -> violation_started (observe call holding the reading, "
          f"{len(lat)} events): p50 {ms(percentile(lat, 50))}, p99 "
          f"{ms(percentile(lat, 99))}, max {ms(max(lat, default=float('nan')))} wall; "
          f"p99 {ms(percentile(lat_cpu, 99))} cpu")
    print(f"violation_started raised by tick (on-delays, stale, windows): "
          f"{result.tick_started}, each within 1 s + a tick (p99 tick "
          f"{ms(percentile(result.tick_durations, 99))})")
    print("events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.events.items())))
    print(f"out-of-order readings: {engine.out_of_order}")
    print(f"peak RSS {peak_rss_mb():.0f} MB (before the engine: {rss_before:.0f} MB)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--per-second", type=int, default=1000,
                        help="readings per simulated second (a tick after each second)")
    parser.add_argument("--kind-readings", type=int, default=200_000,
                        help="readings for each kind alone (0: skip the breakdown)")
    args = parser.parse_args(argv)

    rss_before = peak_rss_mb()
    engine = Engine("bench", make_assets(args.assets), make_standards(), timezone=TIMEZONE,
                    started=T0)
    result = run(engine, Plant(args.assets, NAMES), args.readings, args.batch,
                 args.per_second)
    report_main(result, engine, rss_before, args)

    if args.kind_readings <= 0:
        return 0
    print(f"\nper kind alone ({args.kind_readings:,} readings of the metrics its standards "
          f"read, same batches and ticks):")
    print(f"{'kind':<12} {'stds':>4} {'pairs':>6} {'obs+tick r/s':>13} {'observe r/s':>12} "
          f"{'tick mean':>10} {'p99 obs call':>13}   (cpu time; p99 call wall)")
    for kind in KINDS:
        standards = make_standards([kind])
        metrics = [m for m in NAMES if any(m in s.metrics for s in standards)]
        engine = Engine("bench", make_assets(args.assets), standards, timezone=TIMEZONE,
                        started=T0)
        res = run(engine, Plant(args.assets, metrics), args.kind_readings, args.batch,
                  args.per_second)
        total_cpu = res.observe_cpu + res.tick_cpu
        print(f"{kind:<12} {len(standards):>4} {engine.pairs:>6} "
              f"{res.readings / total_cpu:>13,.0f} {res.readings / res.observe_cpu:>12,.0f} "
              f"{ms(res.tick_cpu / max(res.ticks, 1)):>10} {ms(percentile(res.batch_s, 99)):>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
