"""Backpressure against a private Mosquitto: under a flood the collector reads only as fast
as the pipeline judges, and the broker holds the rest.

The engine is a small slow stand-in passed to the real `Pipeline` (with a real `Buffer`),
so the pipeline falls behind the way an engine that cannot keep up would. A thread samples
what the agent holds in memory (messages in the collector's inbox plus readings queued in
the pipeline) while `mosquitto_pub -l` floods QoS 0 messages (`bench.servers.Publishers`,
as `bench.flood` does) and a paho client publishes numbered QoS 1 ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.buffer import Buffer
from agent.pipeline import Pipeline
from bench.servers import Publishers, write_lines
from collector.mqtt import DRAIN_MAX, MqttCollector
from collector.mqtt.config import MqttConfig, Subscription
from collector.reading import Reading
from tests.integration.mosquitto import Mosquitto, Publisher, mosquitto_available

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
    pytest.mark.usefixtures("no_threads_left"),
]

FLOOD = 60_000  # QoS 0 messages
NUMBERED = 1_000  # QoS 1 messages
MAX_INBOX, HIGH, LOW = 3_000, 2_000, 500
ZERO, ONE = "flood/a0/zero", "flood/a0/one"
QUEUE = 100  # a small max_queued_messages: Mosquitto drops what a slow consumer leaves
PACE, PACED = 10, 300  # QoS 1 messages per tenth of a second, and in all


class SlowEngine:
    """Judges nothing and takes its time: an engine that cannot keep up with the flood.

    `stall` seconds are spent once, on the first batch (the loop thread is blocked then,
    as by a long garbage collection or a slow disk)."""

    def __init__(self, per_reading: float, stall: float = 0.0) -> None:
        self.per_reading = per_reading
        self.stall = stall
        self.zeros = 0
        self.ones: set[int] = set()

    def observe(self, readings: Sequence[Reading]) -> list[Any]:
        time.sleep(len(readings) * self.per_reading + self.stall)
        self.stall = 0.0
        for reading in readings:
            if reading.metric == "one":
                self.ones.add(int(reading.value))
            else:
                self.zeros += 1
        return []

    def tick(self, now: float) -> list[Any]:
        return []

    def state(self) -> dict[str, Any]:
        return {}


class Peak:
    """Samples `measure` every millisecond on its own thread; `peak` is the largest seen."""

    def __init__(self, measure: Callable[[], int]) -> None:
        self.peak = 0
        self._measure = measure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler")

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._measure())

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto").start()  # max_queued_messages 100000
    yield broker
    broker.close()


def flood(port: int, directory: Path) -> None:
    """FLOOD QoS 0 messages as fast as mosquitto_pub can send them."""
    lines = write_lines(directory / "flood.txt", (str(n % 10) for n in range(FLOOD)))
    publishers = Publishers(port, 0, [(ZERO, lines)], keep_open=False)
    try:
        publishers.wait(60)
    finally:
        publishers.stop()


def numbered(port: int) -> None:
    publisher = Publisher(port)
    try:
        publisher.publish([(ONE, str(n)) for n in range(NUMBERED)], qos=1)
    finally:
        publisher.close()


async def until(condition: Callable[[], bool], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def agent(broker: Mosquitto, tmp_path: Path, engine: SlowEngine, **options: Any
          ) -> tuple[MqttCollector, Pipeline, Buffer]:
    config = MqttConfig(url=broker.url, client_id=f"flood-{uuid.uuid4().hex[:8]}", qos=1,
                        subscriptions=[Subscription(topic="flood/{asset}/{metric}",
                                                    format="number")], **options)
    collector = MqttCollector(config, max_inbox=MAX_INBOX)
    buffer = Buffer(tmp_path / "buffer.db")
    pipeline = Pipeline(engine, buffer, high_water=HIGH, low_water=LOW)  # type: ignore[arg-type]
    pipeline.on_backlog.append(collector.pause)
    return collector, pipeline, buffer


@contextlib.asynccontextmanager
async def running(collector: MqttCollector, pipeline: Pipeline) -> Any:
    tasks = [asyncio.create_task(collector.run(pipeline.emit)),
             asyncio.create_task(pipeline.run())]
    try:
        await until(lambda: collector.stats.subscribed, "the SUBACK")
        yield
    finally:
        for task in tasks:  # the source first, as the agent stops
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_a_flood_waits_at_the_broker_and_no_qos1_message_is_lost(
        broker: Mosquitto, tmp_path: Path) -> None:
    engine = SlowEngine(per_reading=50e-6)  # 20,000 readings a second
    collector, pipeline, buffer = agent(broker, tmp_path, engine)
    # A full inbox, and in the pipeline up to the high-water mark plus the one drain
    # that crossed it.
    bound = MAX_INBOX + HIGH + DRAIN_MAX

    async def scenario() -> None:
        async with running(collector, pipeline):
            with Peak(lambda: collector.queued + pipeline.backlog) as peak:
                await asyncio.gather(asyncio.to_thread(flood, broker.port, tmp_path),
                                     asyncio.to_thread(numbered, broker.port))
                await until(lambda: engine.zeros == FLOOD and len(engine.ones) == NUMBERED,
                            "every message judged")
        assert peak.peak <= bound, f"{peak.peak} held in memory, bound {bound}"
        print(f"peak in memory {peak.peak} (bound {bound}), {collector.stats.pauses} pauses")

    asyncio.run(asyncio.wait_for(scenario(), 100))
    assert engine.ones == set(range(NUMBERED))
    assert collector.stats.pauses > 0
    assert collector.stats.disconnects == 0
    assert buffer.count()["readings"] == FLOOD + NUMBERED
    buffer.close()


def test_a_pause_longer_than_the_keepalive_keeps_the_connection(
        broker: Mosquitto, tmp_path: Path) -> None:
    """The loop is blocked for 1.4 keepalives; paho still reads a little every half
    keepalive and pings, so it neither times out nor is dropped, and a stop while paused
    ends.

    Mosquitto 2.0 judges a keepalive on a clock of whole seconds (it drops a client when
    `now - last_msg_in > keepalive * 3 / 2`, integer arithmetic): at a keepalive of 1 s
    that can be 1.0 s after the client's last packet, just when paho's ping is due, which
    a busy machine misses. At 5 s it is 7 s at the earliest, 2 s after the ping."""
    engine = SlowEngine(per_reading=50e-6, stall=7.0)
    collector, pipeline, buffer = agent(broker, tmp_path, engine, keepalive=5)

    async def scenario() -> None:
        async with running(collector, pipeline):
            await asyncio.gather(asyncio.to_thread(flood, broker.port, tmp_path),
                                 asyncio.to_thread(numbered, broker.port))
            await until(lambda: len(engine.ones) == NUMBERED, "every QoS 1 message")
            await until(lambda: collector.stats.pauses > 1, "a second pause")  # stop paused

    asyncio.run(asyncio.wait_for(scenario(), 100))
    assert collector.stats.disconnects == 0
    assert "exceeded timeout" not in broker.log
    buffer.close()


def test_a_qos0_flood_costs_no_qos1_message_at_a_small_broker_queue(
        tmp_path: Path) -> None:
    """QoS 0 and QoS 1 subscriptions mixed, a broker whose per-client queue is small, a
    QoS 0 flood that keeps the pipeline behind (so reading pauses) and QoS 1 messages
    published meanwhile at a pace the disk keeps up with: every QoS 1 message arrives.

    On one connection the QoS 0 flood filled the broker's queue for the client while the
    collector paused, and Mosquitto dropped QoS 1 messages with it; the QoS 1
    subscriptions now have a connection (and a broker queue) of their own."""
    broker = Mosquitto(tmp_path / "mosquitto", max_queued_messages=QUEUE).start()
    engine = SlowEngine(per_reading=50e-6)
    config = MqttConfig(
        url=broker.url, client_id=f"mixed-{uuid.uuid4().hex[:8]}", qos=1,
        subscriptions=[Subscription(topic="zero/{asset}/{metric}", format="number", qos=0),
                       Subscription(topic="one/{asset}/{metric}", format="number", qos=1)])
    collector = MqttCollector(config, max_inbox=MAX_INBOX)
    buffer = Buffer(tmp_path / "buffer.db")
    pipeline = Pipeline(engine, buffer, high_water=HIGH, low_water=LOW)  # type: ignore[arg-type]
    pipeline.on_backlog.append(collector.pause)
    lines = write_lines(tmp_path / "zeros.txt", (str(n % 10) for n in range(5 * FLOOD)))

    def paced_ones() -> None:
        publisher = Publisher(broker.port)
        try:
            for start in range(0, PACED, PACE):
                publisher.publish([("one/a0/one", str(n))
                                   for n in range(start, start + PACE)], qos=1)
                time.sleep(0.1)
        finally:
            publisher.close()

    async def scenario() -> None:
        async with running(collector, pipeline):
            with Publishers(broker.port, 0, [("zero/a0/zero", lines)]):
                await until(lambda: engine.zeros > 0 and collector.stats.pauses > 0,
                            "the flood to pause reading")
                await asyncio.to_thread(paced_ones)
                with contextlib.suppress(AssertionError):
                    await until(lambda: len(engine.ones) == PACED, "every QoS 1 message", 30)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 100))
    finally:
        broker.close()
        buffer.close()
    dropped = "Outgoing messages are being dropped" in broker.log
    print(f"{engine.zeros} QoS 0 readings judged, {collector.stats.pauses} pauses, broker "
          f"dropped QoS 0: {dropped}")
    assert collector.stats.pauses > 0
    assert sorted(set(range(PACED)) - engine.ones) == []
