"""`collector.mqtt.fastpath.FastClient` against stock paho, byte for byte: the differential
tests of the only paho subclass (its docstring says what to delete if paho grows a fast path).

`FastClient` reads 64 KiB at a time and decodes whole QoS 0/1 PUBLISH packets itself (with
paho's `decode_publish`), leaving everything else to paho. These tests feed the same bytes,
cut into arbitrary chunks, to a stock paho client and to ours over a socket pair, and
require the same messages in the same order: whichever path each packet took.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.mqtt.fastpath import FastClient

Message = tuple[str, bytes, int, int, tuple[int, ...]]


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def publish(topic: str, payload: bytes, qos: int = 0, mid: int = 0, *, dup: bool = False,
            retain: bool = False, sub_ids: tuple[int, ...] | None = None) -> bytes:
    """A PUBLISH packet as a broker sends it (`sub_ids`: MQTT 5, with a property block)."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name
    if qos:
        body += mid.to_bytes(2, "big")
    if sub_ids is not None:
        props = Properties(PacketTypes.PUBLISH)
        if sub_ids:
            props.SubscriptionIdentifier = list(sub_ids)
        body += props.pack()
    body += payload
    header = 0x30 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    return bytes([header]) + _remaining_length(len(body)) + body


PINGRESP = b"\xd0\x00"


class Pair:
    """A client on one end of a socket pair, as if connected, and the broker's end."""

    def __init__(self, cls: type[mqtt.Client], protocol: int) -> None:
        self.ours, self.broker = socket.socketpair()
        self.ours.setblocking(False)
        self.client = cls(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol,
                          manual_ack=True)
        self.client._sock = self.ours
        self.client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
        self.got: list[Message] = []
        self.client.on_message = self._on_message
        if isinstance(self.client, FastClient):
            self.client.on_incoming = self._on_incoming

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_incoming(msg.topic, msg.payload, msg.qos, msg.mid, msg.properties)

    def _on_incoming(self, topic: str, payload: bytes, qos: int, mid: int,
                     properties: Properties | None) -> None:
        ids = tuple(getattr(properties, "SubscriptionIdentifier", ()) or ())
        self.got.append((topic, payload, qos, mid if qos else 0, ids))

    def feed(self, chunk: bytes) -> mqtt.MQTTErrorCode:
        """Send a chunk and let the client read until the socket is empty."""
        self.broker.sendall(chunk)
        rc = mqtt.MQTT_ERR_SUCCESS
        while rc == mqtt.MQTT_ERR_SUCCESS and select.select([self.ours], [], [], 0)[0]:
            rc = self.client.loop_read()
        return rc

    def close(self) -> None:
        self.ours.close()
        self.broker.close()


def cut(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos = 0
    for size in sizes:
        if pos >= len(data):
            return
        yield data[pos:pos + size]
        pos += size
    if pos < len(data):
        yield data[pos:]


def run(cls: type[mqtt.Client], protocol: int, data: bytes, sizes: list[int]) -> list[Message]:
    pair = Pair(cls, protocol)
    try:
        for chunk in cut(data, sizes):
            assert pair.feed(chunk) == mqtt.MQTT_ERR_SUCCESS
        return pair.got
    finally:
        pair.close()


topics = st.text(st.characters(codec="utf-8", exclude_characters="#+\x00"), min_size=1,
                 max_size=30)
messages = st.lists(
    st.tuples(topics, st.binary(max_size=300), st.integers(0, 1), st.integers(1, 65535),
              st.booleans(), st.booleans()),
    min_size=1, max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(messages, st.lists(st.integers(1, 400), max_size=40),
       st.sampled_from([mqtt.MQTTv311, mqtt.MQTTv5]),
       st.lists(st.integers(1, 2000), max_size=3))
def test_same_messages_as_stock_paho_however_the_stream_is_cut(
    packets: list[tuple[str, bytes, int, int, bool, bool]], sizes: list[int], protocol: int,
    sub_ids: list[int],
) -> None:
    v5 = protocol == mqtt.MQTTv5
    data = b"".join(
        publish(t, p, q, m, dup=d, retain=r, sub_ids=tuple(sub_ids) if v5 else None)
        + (PINGRESP if i % 7 == 3 else b"")  # other packets between, for paho's path
        for i, (t, p, q, m, d, r) in enumerate(packets)
    )
    want = [(t, p, q, m if q else 0, tuple(sub_ids) if v5 else ()) for t, p, q, m, _, _ in packets]
    assert run(mqtt.Client, protocol, data, sizes) == want
    assert run(FastClient, protocol, data, sizes) == want


def test_a_burst_in_one_read_takes_the_short_path_and_large_payloads_paho_s() -> None:
    pair = Pair(FastClient, mqtt.MQTTv311)
    paho_path: list[str] = []
    pair.client.on_message = lambda c, u, msg: (paho_path.append(msg.topic),
                                                 pair._on_message(c, u, msg))
    try:
        burst = b"".join(publish(f"s/{i}", b'{"t": %d}' % i, 1, i + 1) for i in range(200))
        big = publish("s/big", b"x" * (3 * FastClient.READ), 1, 999)
        assert pair.feed(burst) == mqtt.MQTT_ERR_SUCCESS
        assert pair.feed(big) == mqtt.MQTT_ERR_SUCCESS
        assert [m[0] for m in pair.got] == [f"s/{i}" for i in range(200)] + ["s/big"]
        assert pair.got[-1][1] == b"x" * (3 * FastClient.READ)
        assert paho_path == ["s/big"]  # the burst never built an MQTTMessage
    finally:
        pair.close()


def test_a_malformed_publish_is_a_protocol_error_as_in_paho() -> None:
    bad = b"\x30\x01\x00"  # says 1 byte follows: not even a topic length
    for cls in (mqtt.Client, FastClient):
        pair = Pair(cls, mqtt.MQTTv311)
        try:
            assert pair.feed(bad) != mqtt.MQTT_ERR_SUCCESS
            assert pair.got == []
        finally:
            pair.close()


def test_a_closed_connection_is_lost_as_in_paho() -> None:
    for cls in (mqtt.Client, FastClient):
        pair = Pair(cls, mqtt.MQTTv311)
        try:
            assert pair.feed(publish("s/a", b"1")) == mqtt.MQTT_ERR_SUCCESS
            pair.broker.close()
            assert pair.client.loop_read() == mqtt.MQTT_ERR_CONN_LOST
            assert [m[:2] for m in pair.got] == [("s/a", b"1")]
        finally:
            pair.close()


def test_a_callback_error_is_logged_and_the_next_message_still_comes(
        caplog: pytest.LogCaptureFixture) -> None:
    """With `suppress_exceptions` (the collector sets it) on either path, as paho does."""
    pair = Pair(FastClient, mqtt.MQTTv311)
    pair.client.suppress_exceptions = True
    pair.client.enable_logger()
    deliver = pair.client.on_incoming

    def fussy(topic: str, *args: Any) -> None:
        if topic == "s/bad":
            raise ValueError("no thanks")
        assert deliver is not None
        deliver(topic, *args)

    pair.client.on_incoming = fussy
    pair.client.on_message = lambda c, u, msg: fussy(msg.topic, msg.payload, msg.qos,
                                                      msg.mid, msg.properties)
    try:
        short = publish("s/bad", b"1") + publish("s/ok", b"2")
        split = publish("s/bad", b"3")
        assert pair.feed(short) == mqtt.MQTT_ERR_SUCCESS
        assert pair.feed(split[:3]) == mqtt.MQTT_ERR_SUCCESS  # paho's path
        assert pair.feed(split[3:] + publish("s/ok", b"4")) == mqtt.MQTT_ERR_SUCCESS
        assert [m[:2] for m in pair.got] == [("s/ok", b"2"), ("s/ok", b"4")]
        errors = [r for r in caplog.records if "Caught exception in on_message" in r.message]
        assert len(errors) == 2 and all("no thanks" in r.message for r in errors)
    finally:
        pair.close()


def test_bytes_read_in_bulk_still_count_for_keepalive() -> None:
    pair = Pair(FastClient, mqtt.MQTTv311)
    try:
        pair.client._last_bytes_received = 0.0
        assert pair.feed(publish("s/a", b"1")) == mqtt.MQTT_ERR_SUCCESS
        assert pair.client._last_bytes_received > 0.0
    finally:
        pair.close()


def test_a_new_connection_does_not_read_the_old_one_s_leftovers() -> None:
    pair = Pair(FastClient, mqtt.MQTTv311)
    try:
        # Half a packet from the old connection stays in the buffer when it drops.
        whole = publish("s/old", b"gone")
        assert pair.feed(whole[:5]) == mqtt.MQTT_ERR_SUCCESS
        pair.client._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [],
                                  "remaining_mult": 1, "remaining_length": 0,
                                  "packet": bytearray(b""), "to_process": 0, "pos": 0}
        pair.client._rpos = 1  # as if paho had taken only the first byte
        pair.ours.close()
        pair.broker.close()
        pair.ours, pair.broker = socket.socketpair()
        pair.ours.setblocking(False)
        pair.client._sock = pair.ours
        assert pair.feed(publish("s/new", b"here")) == mqtt.MQTT_ERR_SUCCESS
        assert [m[:2] for m in pair.got] == [("s/new", b"here")]
    finally:
        pair.close()


@pytest.mark.parametrize("qos", [0, 1])
def test_dup_and_retain_flags_do_not_change_the_path(qos: int) -> None:
    pair = Pair(FastClient, mqtt.MQTTv311)
    pair.client.on_message = lambda *_: pytest.fail("took paho's path")
    try:
        data = b"".join(publish("s/x", b"1", qos, 7, dup=d, retain=r)
                        for d in (False, True) for r in (False, True))
        assert pair.feed(data) == mqtt.MQTT_ERR_SUCCESS
        assert len(pair.got) == 4
    finally:
        pair.close()


@pytest.mark.parametrize("bad", [
    b"\x30\x02\x00\x00",  # MQTT 3.1.1 forbids an empty topic
    b"\x30\x04\x00\x05ab",  # the topic runs past the packet
    b"\x32\x04\x00\x02ab",  # QoS 1 without its packet id
], ids=["empty topic", "topic too long", "no packet id"])
def test_a_malformed_publish_after_good_ones_is_a_protocol_error_as_in_paho(bad: bytes) -> None:
    """In one read, as the burst decoder sees it: the good ones before it still come."""
    good = publish("s/a", b"1") + publish("s/b", b"2", 1, 5)
    for cls in (mqtt.Client, FastClient):
        pair = Pair(cls, mqtt.MQTTv311)
        try:
            assert pair.feed(good + bad) != mqtt.MQTT_ERR_SUCCESS
            assert [m[:2] for m in pair.got] == [("s/a", b"1"), ("s/b", b"2")]
        finally:
            pair.close()


def test_ack_many_writes_the_bytes_of_an_ack_each_at_once() -> None:
    def writes(acks: Callable[[FastClient], object]) -> list[bytes]:
        pair = Pair(FastClient, mqtt.MQTTv311)
        client: Any = pair.client
        out: list[bytes] = []
        send = client._sock_send
        client._sock_send = lambda data: (out.append(bytes(data)), send(data))[1]
        try:
            acks(client)
            return out
        finally:
            pair.close()

    mids = [1, 2, 300, 65535]
    one_by_one = writes(lambda c: [c.ack(mid, 1) for mid in mids])
    assert one_by_one == [b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids]
    assert writes(lambda c: c.ack_many(mids)) == [b"".join(one_by_one)]
    assert writes(lambda c: c.ack_many(mids[:1])) == one_by_one[:1]
    assert writes(lambda c: c.ack_many([])) == []
