"""MqttCollector against the real Mosquitto on 127.0.0.1:1883 (anonymous).

Each test uses its own topic prefix so parallel runs do not see each other's messages,
and fails if it leaves a thread (paho's network thread, an executor) behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest

from collector.mqtt import MqttCollector
from collector.mqtt.config import MqttConfig, Subscription
from collector.reading import Emit, Reading
from tests.conftest import free_port

HOST, PORT = "127.0.0.1", 1883


def _broker_up() -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, PORT), timeout=1):
        return True
    return False


pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not _broker_up(), reason=f"no MQTT broker on {HOST}:{PORT}"),
    pytest.mark.usefixtures("no_threads_left"),
]


@pytest.fixture
def prefix() -> str:
    return f"patrol-test/{uuid.uuid4().hex}"


class Publisher:
    """A plain paho client that publishes QoS 1 and waits for each PUBACK."""

    def __init__(self) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4()}")
        self.client.connect(HOST, PORT)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    pub = Publisher()
    yield pub
    pub.close()


async def until(condition: Callable[[], bool], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def storing(into: list[Reading]) -> Emit:
    """An emit that keeps the readings and reports them stored at once."""

    def emit(readings: Sequence[Reading], on_stored: Callable[[], None] | None = None) -> None:
        into.extend(readings)
        if on_stored is not None:
            on_stored()

    return emit


def run_collector(
    collector: MqttCollector,
    scenario: Callable[[list[Reading]], Awaitable[None]],
    timeout: float = 30,
) -> list[Reading]:
    """Run the collector and `scenario` under asyncio.run, then cancel the collector."""
    readings: list[Reading] = []

    async def main() -> None:
        task = asyncio.create_task(collector.run(storing(readings)))
        try:
            await until(lambda: collector.stats.subscribed, "every SUBACK")
            await scenario(readings)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert task.cancelled()

    asyncio.run(asyncio.wait_for(main(), timeout))
    return readings


def test_readings_from_json_with_asset_from_topic_and_timestamp_from_payload(
    prefix: str, publisher: Publisher
) -> None:
    config = MqttConfig(
        url=f"mqtt://{HOST}:{PORT}",
        subscriptions=[
            Subscription(
                topic=f"{prefix}/zigbee2mqtt/{{asset}}",
                metrics={"temperature": "$.temperature", "humidity": "$.humidity"},
                timestamp="$.ts",
                units={"temperature": "degC"},
            ),
            Subscription(
                topic=f"{prefix}/tele/{{asset}}/SENSOR",
                metrics={"power": "$.ENERGY.Power", "energy": "$.ENERGY.Total"},
                timestamp="$.Time",
                qos=0,
            ),
        ],
    )
    collector = MqttCollector(config, clock=lambda: 42.0)
    t = datetime(2026, 11, 25, 8, 0, tzinfo=UTC).timestamp()

    async def scenario(readings: list[Reading]) -> None:
        await asyncio.to_thread(
            publisher.publish,
            f"{prefix}/zigbee2mqtt/cold-room-1",
            f'{{"temperature": 4.5, "humidity": 81, "ts": {int(t * 1000)}}}',
        )
        await asyncio.to_thread(
            publisher.publish,
            f"{prefix}/tele/press-3/SENSOR",
            '{"Time": "2026-11-25T08:00:00", "ENERGY": {"Total": 123.4, "Power": 56}}',
        )
        await until(lambda: len(readings) >= 4, "4 readings")

    readings = run_collector(collector, scenario)

    got = {(r.asset, r.metric): (r.value, r.ts, r.unit, r.source) for r in readings}
    assert got == {
        ("cold-room-1", "temperature"): (4.5, t, "degC", f"mqtt:{prefix}/zigbee2mqtt/cold-room-1"),
        ("cold-room-1", "humidity"): (81.0, t, "", f"mqtt:{prefix}/zigbee2mqtt/cold-room-1"),
        ("press-3", "power"): (56.0, t, "", f"mqtt:{prefix}/tele/press-3/SENSOR"),
        ("press-3", "energy"): (123.4, t, "", f"mqtt:{prefix}/tele/press-3/SENSOR"),
    }
    stats = collector.stats
    # QoS 0 and QoS 1 subscriptions mixed: a connection each (see collector.mqtt.client).
    assert (stats.connects, stats.disconnects, stats.unmatched) == (2, 0, 0)
    assert stats.subscriptions[f"{prefix}/zigbee2mqtt/{{asset}}"].readings == 2
    assert stats.subscriptions[f"{prefix}/tele/{{asset}}/SENSOR"].messages == 1


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_malformed_payloads_are_counted_and_never_stop_the_collector(
    prefix: str, publisher: Publisher, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    pattern = f"{prefix}/{{asset}}/state"
    config = MqttConfig(
        url=f"mqtt://{HOST}:{PORT}",
        protocol=protocol,  # type: ignore[arg-type]
        subscriptions=[
            Subscription(topic=pattern, metrics={"t": "$.t", "h": "$.h"}),
            Subscription(topic=f"{prefix}/{{asset}}/{{metric}}", format="number"),
        ],
    )
    collector = MqttCollector(config)
    bad: list[bytes] = [
        b"not json",
        b'{"other": 1}',  # no metric path present
        b'{"t": NaN, "h": "NaN"}',
        b"x" * 1_000_000,
        b'{"t": "\xff\xfe"}',
    ]
    sequence: list[tuple[str, bytes]] = []
    for i, blob in enumerate(bad):
        sequence.append((f"{prefix}/m{i}/state", f'{{"t": {i}, "h": {i + 0.5}}}'.encode()))
        sequence.append((f"{prefix}/m{i}/state", blob))
    sequence.append((f"{prefix}/last/state", b'{"t": 99, "h": 1}'))
    sequence.append((f"{prefix}/last/state", b'{"t": 100}'))  # partial: h missing
    sequence.append((f"{prefix}/last/volts", b"230.1"))
    sequence.append((f"{prefix}/last/volts", b"high"))

    async def scenario(readings: list[Reading]) -> None:
        for topic, payload in sequence:
            await asyncio.to_thread(publisher.publish, topic, payload)
        # The number subscription matches every topic; QoS 1 from one publisher keeps order.
        numbers = collector.stats.subscriptions[f"{prefix}/{{asset}}/{{metric}}"]
        await until(lambda: numbers.messages == len(sequence), "every message")

    with caplog.at_level(logging.DEBUG, logger="collector.mqtt"):
        readings = run_collector(collector, scenario)

    good = {(r.asset, r.metric): r.value for r in readings}
    expected = {(f"m{i}", "t"): float(i) for i in range(5)}
    expected |= {(f"m{i}", "h"): i + 0.5 for i in range(5)}
    expected |= {("last", "t"): 100.0, ("last", "h"): 1.0, ("last", "volts"): 230.1}
    assert good == expected
    assert len(readings) == 14

    json_stats = collector.stats.subscriptions[pattern]
    assert (json_stats.messages, json_stats.readings) == (12, 13)
    assert (json_stats.bad_payloads, json_stats.partial_payloads) == (5, 1)
    number_stats = collector.stats.subscriptions[f"{prefix}/{{asset}}/{{metric}}"]
    # `{metric}` also matches `state`, so the number subscription sees those too (and refuses
    # them): overlapping subscriptions each map a message once, even when an MQTT 5 broker
    # sends one copy per matching filter.
    assert (number_stats.messages, number_stats.readings) == (14, 1)
    assert number_stats.bad_payloads == 13

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "payload" in r.msg]
    # One warning per subscription per minute, with a sample; the rest at DEBUG.
    assert len(warnings) == 2
    (first,) = [w.getMessage() for w in warnings if f"(subscription {pattern})" in w.getMessage()]
    assert f"bad payload on {prefix}/m0/state" in first
    assert "not JSON: Expecting value" in first
    assert "payload b'not json' (8 bytes)" in first
    blob = [r.getMessage() for r in caplog.records
            if r.name == "collector.mqtt" and "1000000 bytes" in r.getMessage()]
    assert len(blob) == 2  # once per subscription
    for message in blob:
        assert "is larger than max_payload 262144" in message
        assert f"payload {b'x' * 100!r}" in message  # the sample stops at 100 bytes


def test_password_is_never_logged(
    prefix: str, publisher: Publisher, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("PATROL_TEST_MQTT_PASSWORD", secret)
    config = MqttConfig(
        url=f"mqtt://{HOST}:{PORT}",
        username="patrol",
        password_env="PATROL_TEST_MQTT_PASSWORD",
        client_id=f"patrol-test-{uuid.uuid4().hex[:8]}",
        clean_session=True,
        protocol="5",
        subscriptions=[Subscription(topic=f"{prefix}/{{asset}}/{{metric}}", format="number")],
    )

    async def scenario(readings: list[Reading]) -> None:
        await asyncio.to_thread(publisher.publish, f"{prefix}/a/x", b"1")
        await until(lambda: len(readings) == 1, "a reading")

    with caplog.at_level(logging.DEBUG):
        readings = run_collector(MqttCollector(config), scenario)
    assert [(r.asset, r.metric, r.value) for r in readings] == [("a", "x", 1.0)]
    assert caplog.records
    assert not [r for r in caplog.records if secret in r.getMessage()]


def test_unreachable_broker_keeps_retrying_and_stops_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = MqttConfig(
        url=f"mqtt://127.0.0.1:{free_port()}",
        subscriptions=[Subscription(topic="x/{asset}/{metric}", format="number")],
    )
    collector = MqttCollector(config)

    async def main() -> None:
        task = asyncio.create_task(collector.run(storing([])))
        await until(lambda: collector.stats.connect_failures >= 2, "a second connection failure")
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.INFO, logger="collector.mqtt"):
        asyncio.run(asyncio.wait_for(main(), 20))
    assert collector.stats.connects == 0
    # The outage is logged once at WARNING, repeats at DEBUG; paho's own "Client is not
    # connected" ERROR on each retry is kept at DEBUG too.
    failures = [r for r in caplog.records if "cannot reach" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def take_over(client_id: str) -> None:
    """Connect briefly under `client_id`: the broker drops the client that held it."""
    intruder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    intruder.connect(HOST, PORT)
    intruder.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not intruder.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert intruder.is_connected()
    finally:
        intruder.disconnect()
        intruder.loop_stop()


def test_subscriptions_restored_after_a_reconnect(prefix: str, publisher: Publisher) -> None:
    # A session takeover stands in for a broker restart; a clean session makes the broker
    # forget the subscriptions, so only on_connect can bring them back.
    client_id = f"patrol-test-{uuid.uuid4().hex[:8]}"
    config = MqttConfig(
        url=f"mqtt://{HOST}:{PORT}",
        client_id=client_id,
        clean_session=True,
        subscriptions=[Subscription(topic=f"{prefix}/{{asset}}/{{metric}}", format="number")],
    )
    collector = MqttCollector(config)

    async def scenario(readings: list[Reading]) -> None:
        await asyncio.to_thread(publisher.publish, f"{prefix}/a/x", b"1")
        await until(lambda: len(readings) == 1, "the first reading")
        await asyncio.to_thread(take_over, client_id)
        await until(lambda: collector.stats.connects == 2 and collector.stats.subscribed,
                    "a reconnect and its SUBACK", within=20)
        await asyncio.to_thread(publisher.publish, f"{prefix}/a/x", b"2")
        await until(lambda: len(readings) == 2, "a reading after the reconnect")

    readings = run_collector(collector, scenario)
    assert [r.value for r in readings] == [1.0, 2.0]
    assert collector.stats.disconnects == 1


def test_an_error_in_the_network_thread_loses_one_message_not_the_collector(
    prefix: str, publisher: Publisher, caplog: pytest.LogCaptureFixture
) -> None:
    """Without paho's suppress_exceptions, an exception in a callback ends paho's thread and
    the collector would sit connected to nothing; here it costs the one message, loudly."""
    config = MqttConfig(url=f"mqtt://{HOST}:{PORT}",
                        subscriptions=[Subscription(topic=f"{prefix}/{{asset}}/t",
                                                    metrics={"t": "$.t"}, qos=0)])
    calls = [0]

    def clock() -> float:  # called on paho's thread for each message
        calls[0] += 1
        if calls[0] == 1:
            raise OSError("clock went away")
        return 42.0

    collector = MqttCollector(config, clock=clock)

    async def scenario(readings: list[Reading]) -> None:
        for value in (1, 2):
            await asyncio.to_thread(publisher.publish, f"{prefix}/a/t", f'{{"t": {value}}}')
        await until(lambda: len(readings) >= 1, "the second message")

    readings = run_collector(collector, scenario)
    assert [(r.value, r.ts) for r in readings] == [(2.0, 42.0)]
    assert collector.stats.connected is False and collector.stats.disconnects == 0
    assert any(r.levelno == logging.ERROR and "clock went away" in r.getMessage()
               for r in caplog.records)
