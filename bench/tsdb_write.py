"""python -m bench.tsdb_write [--readings N]: buffer -> VictoriaMetrics through our writer,
beside the server's own ceiling, in the same run.

- writer: N readings from a filled Buffer through TsdbWriter and the v2 sender
  (influxdb-client, gzip, batches of 5,000, two in flight) until the buffer is empty.
- ceiling: the same line protocol in one file, posted in one request with
  `curl --data-binary @file`, plain and gzipped (compressed beforehand, not timed).
  `vmctl` cannot import line protocol from a file (it migrates from a running InfluxDB,
  OpenTSDB, Prometheus or VictoriaMetrics), so curl is the ceiling.

Each run gets a fresh VictoriaMetrics (same flags as the tests: 1 ms dedup), so every run
registers the same new series. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import subprocess
import tempfile
import time
from pathlib import Path

from agent.buffer import Buffer
from agent.tsdb import InfluxConfig, LineSerializer, TsdbWriter, make_sender
from bench.buffer import SERIES, make_readings
from bench.servers import VictoriaMetrics

SITE = "bench-site"
ASSETS = {f"ahu-{i:03d}": ("ahu", f"roof {i // 10}") for i in range(SERIES)}
FIELDS_PER_READING = 2  # value and quality: one VictoriaMetrics sample each


async def run_writer(writer: TsdbWriter) -> None:
    while await writer.flush_once() or writer.buffer.count()["readings"]:
        pass


def through_writer(directory: Path, n: int, batch: int) -> tuple[float, float]:
    """(seconds, samples VictoriaMetrics took) for n readings through our writer."""
    buffer = Buffer(directory / "buffer.sqlite")
    readings = make_readings(n)
    for first in range(0, n, 5000):
        buffer.put(readings[first:first + 5000])
    del readings
    serializer = LineSerializer("patrol", SITE, ASSETS)
    started, after = time.perf_counter(), 0
    while lines := buffer.line_batch(5000, after, serializer.head):  # what flushes read
        after = lines.last
    print(f"  for scale: Buffer.line_batch builds {n / (time.perf_counter() - started):,.0f} "
          "readings/s of line protocol")
    with VictoriaMetrics(directory / "vm-writer") as vm:
        config = InfluxConfig(url=vm.url, bucket="patrol", batch_size=batch)
        send, close = make_sender(config)
        writer = TsdbWriter(buffer, config, serializer, send)
        started = time.perf_counter()
        asyncio.run(run_writer(writer))
        seconds = time.perf_counter() - started
        close()
        assert writer.written == n and not writer.dead_lettered, writer.written
        inserted = vm.metric("vm_rows_inserted_total")
    buffer.close()
    return seconds, inserted


def with_curl(directory: Path, name: str, body: Path, gzipped: bool) -> tuple[float, float]:
    """(seconds, samples taken) for one `curl --data-binary @body` into a fresh server."""
    with VictoriaMetrics(directory / f"vm-{name}") as vm:
        command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                   "--data-binary", f"@{body}", f"{vm.url}/api/v2/write"]
        if gzipped:
            command[1:1] = ["-H", "Content-Encoding: gzip"]
        started = time.perf_counter()
        status = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        seconds = time.perf_counter() - started
        assert status == "204", status
        return seconds, vm.metric("vm_rows_inserted_total")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tsdb_write", description=__doc__)
    parser.add_argument("--readings", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=5000, help="influxdb.batch_size")
    args = parser.parse_args()
    n = args.readings
    with tempfile.TemporaryDirectory(prefix="patrol-bench-") as tmp:
        directory = Path(tmp)
        serializer = LineSerializer("patrol", SITE, ASSETS)
        plain = directory / "lines.txt"
        readings = make_readings(n)
        started = time.perf_counter()
        text = "\n".join(serializer.line(r) for r in readings).encode() + b"\n"
        serialize = time.perf_counter() - started
        del readings
        plain.write_bytes(text)
        packed = directory / "lines.txt.gz"
        started = time.perf_counter()
        packed.write_bytes(gzip.compress(text))  # level 9, as influxdb-client compresses
        squeeze = time.perf_counter() - started
        print(f"tsdb_write benchmark: {n:,} readings ({n * FIELDS_PER_READING:,} samples), "
              f"{SERIES} series, {len(text) / n:.0f} bytes of line protocol per reading "
              f"({len(text) / len(packed.read_bytes()):.0f}x smaller gzipped)")
        del text
        print(f"  for scale: LineSerializer writes {n / serialize:,.0f} lines/s, gzip level 9 "
              f"packs {n / squeeze:,.0f} lines/s")
        writer_s, writer_rows = through_writer(directory, n, args.batch)
        rows = [(f"our writer (v2, gzip, {args.batch:,}/batch)", writer_s, writer_rows)]
        for name, body, gzipped in (("curl plain", plain, False), ("curl gzip", packed, True)):
            seconds, taken = with_curl(directory, name.replace(" ", "-"), body, gzipped)
            rows.append((f"ceiling: {name}, one request", seconds, taken))
        for label, seconds, taken in rows:
            print(f"  {label:<38} {n / seconds:>10,.0f} readings/s  ({seconds:.2f} s, "
                  f"VictoriaMetrics took {taken:,.0f} samples)")
        ceiling = max(n / seconds for _, seconds, _ in rows[1:])
        print(f"  writer / best ceiling: {(n / writer_s) / ceiling:.2f}")


if __name__ == "__main__":
    main()
