"""A Patrol-like process for the crash test: feeds deterministic readings into a Buffer
while a TsdbWriter drains it to VictoriaMetrics; the test kill -9s it at random moments.

    python -m tests.integration.tsdb_crash_worker BUFFER URL START_MS TOTAL

Reading i (0 <= i < TOTAL) is `crash_reading(i, START_MS)`. The feed position commits in
the same transaction as the readings it covers (a marker event in the outbox), so a kill
cannot separate them: a restarted worker resumes right after the last batch on disk.
After each write the server acknowledged it prints `acked` and holds the buffer delete
back for a moment, so the test can kill it between the answer and the delete. It prints
`drained` and exits 0 once all TOTAL readings are fed and sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from pathlib import Path

from agent.buffer import Buffer
from agent.tsdb import Answer, InfluxConfig, LineSerializer, TsdbWriter, make_sender
from collector.reading import GOOD, Reading, bad

SITE = "crash-site"
ASSETS = {"boiler 1": ("boiler", "plant room"), "pump,2": ("pump", "")}
SERIES = (("boiler 1", "flow temp", "modbus"), ("boiler 1", "return temp", "modbus"),
          ("pump,2", "speed", "mqtt"))
FEED_BATCH = 250
FEED_EVERY = 0.01
ACK_HOLD = 0.05


def crash_reading(i: int, start_ms: int) -> Reading:
    """The i-th reading the worker feeds: series i % 3, one millisecond apart."""
    asset, metric, source = SERIES[i % len(SERIES)]
    if i % 97 == 5:
        return Reading(asset, metric, math.nan, (start_ms + i) / 1000,
                       bad(f"no reply to request {i}"), source=source)
    return Reading(asset, metric, i * 0.5, (start_ms + i) / 1000, GOOD, source=source)


def fed_so_far(buffer: Buffer) -> int:
    return max((body["fed"] for _, body in buffer.pending_events(limit=10**6)), default=0)


async def main(path: Path, url: str, start_ms: int, total: int) -> None:
    buffer = Buffer(path)
    config = InfluxConfig(url=url, bucket="patrol", batch_size=2000, flush_interval=0.05)
    real_send, close = make_sender(config)

    def send(body: bytes) -> Answer:
        answer = real_send(body)
        if answer.ok:
            print("acked", body.count(b"\n") + 1, flush=True)
            time.sleep(ACK_HOLD)  # the writer's thread: the buffer delete waits for this
        return answer

    writer = TsdbWriter(buffer, config, LineSerializer("patrol", SITE, ASSETS), send)
    task = asyncio.create_task(writer.run())
    fed = fed_so_far(buffer)
    print("started at", fed, flush=True)
    while fed < total:
        end = min(total, fed + FEED_BATCH)
        buffer.put([crash_reading(i, start_ms) for i in range(fed, end)],
                   [{"id": f"fed-{end}", "fed": end}])
        fed = end
        await asyncio.sleep(FEED_EVERY)
    while buffer.count()["readings"]:  # noqa: ASYNC110 (the buffer file is the state)
        await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    close()
    buffer.close()
    print("drained", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
