"""Item 9 of issue 12: 100,000 random topics through a real collector, pipeline, engine
and buffer (a private Mosquitto). Assets that site.yaml does not list are refused and
counted, unless the subscription accepts them; every per-topic and per-series cache stays
bounded either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent.buffer import SERIES_CACHE, Buffer
from agent.pipeline import Pipeline
from collector.mqtt import MqttCollector
from collector.mqtt.config import MqttConfig, Subscription
from collector.mqtt.payload import PayloadMapper
from rules.engine import Engine
from rules.standard import Asset, Standard
from tests.conftest import free_port
from tests.integration.conftest import PatrolProcess
from tests.integration.mosquitto import HOST, Mosquitto, Publisher, mosquitto_available

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
    pytest.mark.usefixtures("no_threads_left"),
]

RANDOM = 50_000  # random assets per subscription
KNOWN = 100  # messages for the one listed asset


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.close()


def publish(port: int, topics: list[str]) -> None:
    """QoS 0, as fast as paho goes; returns once everything has left."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex}")
    client.connect(HOST, port)
    client.loop_start()
    try:
        for topic in topics:
            client.publish(topic, b"21.5", qos=0)
        deadline = time.monotonic() + 30
        while client.want_write() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.disconnect()
        client.loop_stop()


async def until(condition: Callable[[], bool], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_random_topics_unknown_assets_refused_and_caches_bounded(
        broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = MqttConfig(url=broker.url, client_id=f"unknown-{uuid.uuid4().hex[:8]}", qos=0,
                        subscriptions=[
                            Subscription(topic="listed/{asset}/{metric}", format="number"),
                            Subscription(topic="open/{asset}/{metric}", format="number",
                                         accept_unknown_assets=True)])
    assets = [Asset(id="m-1", type="meter")]
    standard = Standard.model_validate({"id": "S", "title": "t", "metric": "power",
                                        "check": {"max": 100}})
    engine = Engine("site", assets, [standard])
    engine_series = len(engine._series)
    collector = MqttCollector(config, assets=[a.id for a in assets])
    buffer = Buffer(tmp_path / "buffer.db")
    pipeline = Pipeline(engine, buffer)
    pipeline.on_backlog.append(collector.pause)
    listed, accepting = (r.stats for r in collector._routes)
    topics = ([f"listed/{uuid.uuid4().hex[:12]}/power" for _ in range(RANDOM)]
              + ["listed/m-1/power"] * KNOWN
              + [f"open/{uuid.uuid4().hex[:12]}/power" for _ in range(RANDOM)])
    total = len(topics)

    async def scenario() -> None:
        tasks = [asyncio.create_task(collector.run(pipeline.emit)),
                 asyncio.create_task(pipeline.run())]
        try:
            await until(lambda: collector.stats.subscribed, "the SUBACK")
            await asyncio.to_thread(publish, broker.port, topics)
            await until(lambda: listed.messages + accepting.messages == total
                        and pipeline.readings == KNOWN + RANDOM, "every message stored")
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    with caplog.at_level(logging.WARNING, logger="collector.mqtt"):
        asyncio.run(asyncio.wait_for(scenario(), 100))

    # Refused and counted, not stored; the accepting subscription kept every one.
    assert (listed.unknown_assets, listed.readings) == (RANDOM, KNOWN)
    assert (accepting.unknown_assets, accepting.readings) == (0, RANDOM)
    db = buffer._db
    assert db.execute("SELECT count(*) FROM series WHERE source LIKE 'mqtt:listed/%'"
                      ).fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == KNOWN + RANDOM
    warnings = [r.getMessage() for r in caplog.records if "not in site.yaml" in r.getMessage()]
    assert len(warnings) == 1 and "subscription listed/{asset}/{metric}" in warnings[0]
    # Bounded: topic plans, the buffer's series ids; the engine made no entry at all.
    for route in collector._routes:
        assert len(route.mapper._topics) <= PayloadMapper.TOPIC_CACHE
    assert len(buffer._series) <= 2 * SERIES_CACHE
    assert len(buffer._series_by_id) <= 2 * SERIES_CACHE
    assert len(engine._series) == engine_series
    buffer.close()


AGENT_SITE = """\
site: {{id: plant}}
assets: [{assets}]
mqtt:
  url: {url}
  client_id: unknown-agent
  subscriptions:
    - {{topic: "meters/{{asset}}/{{metric}}", format: number}}
standards: []
buffer: {{path: data/buffer.sqlite}}
forward: {{url: "http://127.0.0.1:{dead}", token_env: PATROL_AGENT_TOKEN}}
"""


def stored_for(buffer: Path, asset: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM readings JOIN series ON series.id = "
                              "readings.series WHERE asset = ?", (asset,)).fetchone()[0])


def test_patrol_agent_refuses_unlisted_assets_until_a_reload_lists_them(
        broker: Mosquitto, tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    layout = {"url": broker.url, "dead": free_port()}
    site.write_text(AGENT_SITE.format(assets="{id: m-1}", **layout))
    agent = PatrolProcess("agent", "-c", site, cwd=tmp_path,
                          env={"PATROL_AGENT_TOKEN": "unused"})
    publisher = Publisher(broker.port)
    try:
        agent.wait_for_output("mqtt: connected")
        time.sleep(0.5)  # the SUBACK
        publisher.publish([("meters/m-2/power", "1"), ("meters/m-1/power", "2")])
        agent.wait_for_output("asset 'm-2' is not in site.yaml's assets")
        site.write_text(AGENT_SITE.format(assets="{id: m-1}, {id: m-2}", **layout))
        agent.wait_for_output("reloaded 0 standards over 2 assets")
        publisher.publish([("meters/m-2/power", "3"), ("meters/m-1/power", "4")])
        buffer = tmp_path / "data" / "buffer.sqlite"
        deadline = time.monotonic() + 20
        while stored_for(buffer, "m-1") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (stored_for(buffer, "m-1"), stored_for(buffer, "m-2")) == (2, 1)
    finally:
        publisher.close()
        assert agent.stop() == 0, agent.output
    assert agent.output.count("is not in site.yaml's assets") == 1
