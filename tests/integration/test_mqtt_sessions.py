"""Persistent sessions, held acknowledgements, passwords and TLS against a private Mosquitto.

Each test starts its own `mosquitto` (tests/integration/mosquitto.py) so it can restart it,
give it a password file or a TLS listener. Messages are numbered (`seq/n` carries n) so a
test can say exactly which arrived, and how many twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from collector.mqtt import MqttCollector, MqttStats
from collector.mqtt.acks import Acks
from collector.mqtt.config import MqttConfig, Subscription
from collector.reading import Reading
from tests.integration.mosquitto import Mosquitto, Publisher, TlsFiles, mosquitto_available

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
    pytest.mark.usefixtures("no_threads_left"),
]

TOPIC = "patrol-test/{asset}/{metric}"


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start private brokers (keyword arguments as `Mosquitto`); all killed at teardown."""
    started: list[Mosquitto] = []

    def start(**options: object) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(started)}", **options)  # type: ignore[arg-type]
        started.append(broker)
        return broker.start()

    yield start
    for broker in started:
        broker.close()


class Store:
    """Stands in for the pipeline: keeps readings and reports them stored a loop turn later.

    With `hold`, it never reports them stored, like a pipeline that had not committed yet;
    while `stall` is set, it reports them only on `release()`, like a slow disk.
    """

    def __init__(self, *, hold: bool = False) -> None:
        self.readings: list[Reading] = []
        self.hold = hold
        self.stall = False
        self._stalled: list[Callable[[], None]] = []

    def emit(self, readings: Sequence[Reading],
             on_stored: Callable[[], None] | None = None) -> None:
        self.readings.extend(readings)
        if on_stored is None or self.hold:
            return
        if self.stall:
            self._stalled.append(on_stored)
        else:
            asyncio.get_running_loop().call_soon(on_stored)

    def release(self) -> None:
        self.stall = False
        for on_stored in self._stalled:
            on_stored()
        self._stalled.clear()

    @property
    def numbers(self) -> list[int]:
        return [int(r.value) for r in self.readings]


def numbered(numbers: range) -> list[tuple[str, str]]:
    return [("patrol-test/seq/n", str(n)) for n in numbers]


def publish(port: int, numbers: range, **credentials: str) -> None:
    publisher = Publisher(port, **credentials)
    try:
        publisher.publish(numbered(numbers))
    finally:
        publisher.close()


async def until(condition: Callable[[], bool], what: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(collector: MqttCollector, store: Store) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(collector.run(store.emit))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled()


def config(url: str, protocol: str = "3.1.1", **options: object) -> MqttConfig:
    return MqttConfig(
        url=url,
        protocol=protocol,  # type: ignore[arg-type]
        qos=1,
        subscriptions=[Subscription(topic=TOPIC, format="number")],
        **options,  # type: ignore[arg-type]
    )


class AckRecorder:
    """Stands in for paho's client in `Acks`: records the PUBACKs it is asked to send."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        assert qos == 1
        self.acked.append(mid)


def test_acks_leave_in_arrival_order_and_never_on_a_later_connection() -> None:
    client, stats = AckRecorder(), MqttStats()
    acks = Acks(client, stats)  # type: ignore[arg-type]
    acks.opened()
    c = acks.connection
    first = acks.hold([(c, 1), (c, 2)])
    second = acks.hold([(c, 3)])
    acks.nothing_to_store([(c, 4)])  # a bad payload behind held messages waits its turn
    second()
    assert client.acked == []  # 1 and 2 came first and are not stored yet
    first()
    assert client.acked == [1, 2, 3, 4]
    acks.nothing_to_store([(c, 5)])  # nothing held: at once
    assert client.acked == [1, 2, 3, 4, 5]

    stale = acks.hold([(c, 6)])
    acks.closed()  # on_disconnect: paho is about to clear its queue and reconnect
    acks.opened()
    fresh = acks.hold([(acks.connection, 6)])  # the broker sends 6 again, same packet id
    stale()
    fresh()
    assert client.acked == [1, 2, 3, 4, 5, 6]
    assert (stats.acked, stats.acks_dropped) == (6, 1)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_no_message_lost_across_broker_and_agent_restarts(
    brokers: Callable[..., Mosquitto], protocol: str, caplog: pytest.LogCaptureFixture,
    record_property: Callable[[str, object], None],
) -> None:
    broker = brokers()
    cfg = config(broker.url, protocol, client_id=f"patrol-{uuid.uuid4().hex[:8]}",
                 clean_session=False)
    store = Store()

    async def agent_up_broker_restarts() -> None:
        collector = MqttCollector(cfg)
        async with running(collector, store):
            await until(lambda: collector.stats.subscribed, "the first SUBACK")
            await asyncio.to_thread(publish, broker.port, range(40))
            await until(lambda: set(range(40)) <= set(store.numbers), "messages 0..39")
            # 40..49 reach the collector but are not on disk yet when the broker stops.
            store.stall = True
            await asyncio.to_thread(publish, broker.port, range(40, 50))
            await until(lambda: set(range(50)) <= set(store.numbers), "messages 40..49")
            await asyncio.to_thread(broker.restart)  # SIGTERM: mosquitto saves the session
            await until(lambda: collector.stats.connects == 2 and collector.stats.subscribed,
                        "a reconnect after the broker restart")
            store.release()  # stored now, but their connection is gone: no ack for them
            assert collector.stats.acks_dropped >= 10
            await asyncio.to_thread(publish, broker.port, range(50, 100))
            await until(lambda: set(range(100)) <= set(store.numbers), "messages 0..99")

    async def agent_back() -> None:
        collector = MqttCollector(cfg)
        async with running(collector, store):
            await until(lambda: set(range(200)) <= set(store.numbers), "messages 0..199")

    with caplog.at_level(logging.INFO, logger="collector.mqtt"):
        asyncio.run(asyncio.wait_for(agent_up_broker_restarts(), 60))
        # The agent is down: the broker queues 100..199 for its session, across a restart.
        publish(broker.port, range(100, 150))
        broker.restart()
        publish(broker.port, range(150, 200))
        asyncio.run(asyncio.wait_for(agent_back(), 60))

    counts = Counter(store.numbers)
    assert set(counts) == set(range(200))
    duplicates = sum(counts.values()) - len(counts)
    record_property("duplicates", duplicates)
    # The broker delivers again what was not acknowledged before it stopped.
    assert all(counts[n] == 2 for n in range(40, 50))
    print(f"MQTT {protocol}: 200 messages, {duplicates} delivered twice")
    connected = [r.getMessage() for r in caplog.records if "mqtt: connected" in r.getMessage()]
    assert "session present: False" in connected[0]
    assert all("session present: True" in line for line in connected[1:])
    assert len(connected) == 3


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_messages_not_yet_stored_are_delivered_again(
    brokers: Callable[..., Mosquitto], protocol: str
) -> None:
    broker = brokers()
    cfg = config(broker.url, protocol, client_id=f"patrol-{uuid.uuid4().hex[:8]}")

    async def run(store: Store, numbers: range, count: int) -> MqttCollector:
        collector = MqttCollector(cfg)
        async with running(collector, store):
            await until(lambda: collector.stats.subscribed, "the SUBACK")
            await asyncio.to_thread(publish, broker.port, numbers)
            await until(lambda: len(store.readings) >= count, f"{count} readings")
        return collector

    unstored, stored, later = Store(hold=True), Store(), Store()
    first = asyncio.run(run(unstored, range(20), 20))
    assert first.stats.acked == 0
    # Never acknowledged, so the broker delivers 0..19 again to the next connection.
    second = asyncio.run(run(stored, range(0), 20))
    assert sorted(stored.numbers) == list(range(20))
    assert second.stats.acked == 20
    # Acknowledged this time: the next connection gets only the new message.
    asyncio.run(run(later, range(20, 21), 1))
    assert later.numbers == [20]


def test_a_message_that_maps_to_nothing_is_acked_at_once(
    brokers: Callable[..., Mosquitto],
) -> None:
    broker = brokers()
    cfg = config(broker.url, client_id=f"patrol-{uuid.uuid4().hex[:8]}")
    store = Store(hold=True)

    async def scenario() -> MqttCollector:
        collector = MqttCollector(cfg)
        async with running(collector, store):
            await until(lambda: collector.stats.subscribed, "the SUBACK")
            publisher = Publisher(broker.port)
            try:
                await asyncio.to_thread(
                    publisher.publish, [("patrol-test/seq/n", "not a number")])
            finally:
                publisher.close()
            await until(lambda: collector.stats.acked == 1, "the bad message's ack")
        return collector

    collector = asyncio.run(scenario())
    assert collector.stats.subscriptions[TOPIC].bad_payloads == 1
    assert store.readings == []


@pytest.mark.parametrize("source", ["password_env", "password_file"])
def test_password_from_env_or_file(
    brokers: Callable[..., Mosquitto], source: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    broker = brokers(users={"patrol": secret, "publisher": "pub"})
    if source == "password_env":
        monkeypatch.setenv("PATROL_TEST_MQTT_PASSWORD", secret)
        options: dict[str, object] = {"password_env": "PATROL_TEST_MQTT_PASSWORD"}
    else:
        (tmp_path / "mqtt-password").write_text(secret + "\n")
        options = {"password_file": tmp_path / "mqtt-password"}
    collector = MqttCollector(config(broker.url, username="patrol", **options))
    store = Store()

    async def scenario() -> None:
        async with running(collector, store):
            await until(lambda: collector.stats.subscribed, "the SUBACK")
            await asyncio.to_thread(publish, broker.port, range(3),
                                    username="publisher", password="pub")
            await until(lambda: len(store.readings) == 3, "3 readings")

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sorted(store.numbers) == [0, 1, 2]


def test_wrong_password_is_logged_without_it_and_retried(
    brokers: Callable[..., Mosquitto], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    broker = brokers(users={"patrol": "right", "publisher": "pub"})
    monkeypatch.setenv("PATROL_TEST_MQTT_PASSWORD", wrong)
    collector = MqttCollector(
        config(broker.url, username="patrol", password_env="PATROL_TEST_MQTT_PASSWORD")
    )
    store = Store()

    async def scenario() -> None:
        async with running(collector, store) as task:
            await until(lambda: collector.stats.connect_failures >= 2, "a second refusal")
            assert not task.done()
            # The operator fixes the broker's password file; the next retry gets in.
            await asyncio.to_thread(broker.set_password, "patrol", wrong)
            await until(lambda: collector.stats.subscribed, "a connection after the fix",
                        within=30)
            await asyncio.to_thread(publish, broker.port, range(1),
                                    username="publisher", password="pub")
            await until(lambda: len(store.readings) == 1, "a reading")

    with caplog.at_level(logging.DEBUG):
        asyncio.run(asyncio.wait_for(scenario(), 60))
    refused = [r for r in caplog.records if "refused the connection" in r.getMessage()]
    assert [r.levelno for r in refused][:2] == [logging.WARNING, logging.DEBUG]
    message = refused[0].getMessage()
    assert f"127.0.0.1:{broker.port} refused the connection: Not authorized" in message
    assert "check username 'patrol' and the password (password_env PATROL_TEST_MQTT_PASSWORD)" \
        in message
    assert not [r for r in caplog.records if wrong in r.getMessage()]


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return TlsFiles.make(tmp_path / "tls")


def test_tls_with_the_brokers_ca(brokers: Callable[..., Mosquitto], tls: TlsFiles) -> None:
    broker = brokers(tls=tls)
    collector = MqttCollector(config(broker.tls_url, ca_file=tls.ca))
    store = Store()

    async def scenario() -> None:
        async with running(collector, store):
            await until(lambda: collector.stats.subscribed, "the SUBACK over TLS")
            await asyncio.to_thread(publish, broker.port, range(2))
            await until(lambda: len(store.readings) == 2, "2 readings")

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sorted(store.numbers) == [0, 1]


def test_tls_with_a_client_certificate(
    brokers: Callable[..., Mosquitto], tls: TlsFiles
) -> None:
    broker = brokers(tls=tls, require_certificate=True)
    collector = MqttCollector(config(broker.tls_url, ca_file=tls.ca,
                                     cert_file=tls.client_cert, key_file=tls.client_key))
    store = Store()

    async def scenario() -> None:
        async with running(collector, store):
            await until(lambda: collector.stats.subscribed, "the SUBACK over mutual TLS")
            await asyncio.to_thread(publish, broker.port, range(1))
            await until(lambda: len(store.readings) == 1, "a reading")

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert store.numbers == [0]


@pytest.mark.parametrize("case", ["wrong CA", "no client certificate"])
def test_tls_failures_are_logged_clearly_and_retried(
    brokers: Callable[..., Mosquitto], tls: TlsFiles, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, case: str,
) -> None:
    if case == "wrong CA":
        broker = brokers(tls=tls)
        ca_file = TlsFiles.make(tmp_path / "other-tls").ca
        expected = ("[SSL: CERTIFICATE_VERIFY_FAILED]",
                    "(is ca_file the CA that signed the broker's certificate?)")
    else:
        broker = brokers(tls=tls, require_certificate=True)
        ca_file = tls.ca
        expected = ("closed before the broker answered: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED]",
                    "(the broker wants a client certificate: set cert_file and key_file)")
    collector = MqttCollector(config(broker.tls_url, ca_file=ca_file))

    async def scenario() -> None:
        async with running(collector, Store()) as task:
            await until(lambda: collector.stats.connect_failures >= 2, "a second failure")
            assert not task.done()

    with caplog.at_level(logging.DEBUG, logger="collector.mqtt"):
        asyncio.run(asyncio.wait_for(scenario(), 30))
    assert collector.stats.connects == 0
    failures = [r for r in caplog.records if "cannot reach" in r.getMessage()]
    assert [r.levelno for r in failures][:2] == [logging.WARNING, logging.DEBUG]
    message = failures[0].getMessage()
    assert f"cannot reach 127.0.0.1:{broker.tls_port}: " in message
    for text in expected:
        assert text in message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_session_from_one_connection_loses_its_qos0_filters_when_qos_is_split(
        brokers: Callable[..., Mosquitto]) -> None:
    """Before QoS 0 and QoS 1 subscriptions had a connection each, one persistent session
    under the configured id held both filters. The QoS 1 connection keeps that id (and
    what the broker queued for it), and unsubscribes the QoS 0 filter, or every QoS 0
    message would come on it too (mapped by nothing there: `unmatched`), and a QoS 0 flood
    would fill its broker queue again."""
    broker = brokers()
    client_id = f"patrol-{uuid.uuid4().hex[:8]}"
    old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                      clean_session=False)
    old.connect("127.0.0.1", broker.port)
    old.loop_start()
    try:
        old.subscribe([("zero/+/+", 0), ("one/+/+", 1)])
        time.sleep(0.5)  # the SUBACK
    finally:
        old.disconnect()
        old.loop_stop()
    cfg = MqttConfig(url=broker.url, client_id=client_id, subscriptions=[
        Subscription(topic="zero/{asset}/{metric}", format="number", qos=0),
        Subscription(topic="one/{asset}/{metric}", format="number", qos=1)])
    collector = MqttCollector(cfg)
    store = Store()

    async def scenario() -> None:
        async with running(collector, store):
            await until(lambda: collector.stats.subscribed, "both SUBACKs")
            publisher = Publisher(broker.port)
            try:
                publisher.publish([("zero/a/t", "1"), ("one/a/t", "2")], qos=1)
            finally:
                publisher.close()
            await until(lambda: {1, 2} <= set(store.numbers), "a reading of each", 5)
            await asyncio.sleep(0.5)  # a second copy would be here by now

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sorted(store.numbers) == [1, 2]
    assert (collector.stats.connects, collector.stats.unmatched) == (2, 0)
