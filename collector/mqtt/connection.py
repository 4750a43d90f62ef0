"""One client connection to the broker: a paho client, its filters, inbox, gate and acks.

paho runs its network loop in its own thread (`loop_start`), reading the socket through
`FastClient`. Each message only goes into the inbox and, when the inbox was idle, schedules
one drain on the asyncio loop (`DRAIN_DELAY` later); the drain maps everything queued and
emits it in one call, so thread hand-offs are per batch, not per message. Mapping, stats
and `emit` all happen on the loop's thread; paho's callbacks hand their news to it with
`call_soon_threadsafe`.

QoS 1 messages are acknowledged by hand (`manual_ack=True`): a message's PUBACK goes out
only when the pipeline calls the drain's `on_stored`, so a message the agent had not yet
stored when it stopped (or the broker restarted) is delivered again. PUBACKs leave in the
order the messages arrived (MQTT 3.1.1 4.6) and never on a later connection than the one
that brought the message (see `collector.mqtt.acks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from collector.mqtt.acks import Acks
from collector.mqtt.config import MqttConfig
from collector.mqtt.fastpath import FastClient
from collector.mqtt.flow import Gate
from collector.mqtt.paholog import paho_errors, paho_log
from collector.mqtt.routing import Router
from collector.mqtt.stats import MqttStats
from collector.mqtt.status import Status
from collector.reading import Emit, Reading
from common.secrets import read_secret

log = logging.getLogger("collector.mqtt")

DRAIN_DELAY = 0.001
"""Seconds from a message reaching an idle inbox to its drain, so a burst is mapped and
emitted in one batch: about a fifth less CPU per message under load, and 1 ms of latency
is nothing next to a sensor's period."""

DRAIN_MAX = 2000
"""Messages mapped per drain before the loop gets a turn (the pipeline, other collectors)."""

RECONNECT_MAX = 60
"""Seconds paho waits at most between reconnection attempts (from 1 s, doubling)."""

AWAY_MAX = 2 * RECONNECT_MAX
"""Longest paho's thread honestly stays out of its loop: a reconnect wait and one
connect (DNS, TCP and TLS, each with its own timeout). Longer, it is stuck."""

_SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5: a persistent session like 3.1.1's

# topic, payload, arrival, MQTT 5 subscription ids, QoS 1 packet id (0: QoS 0), connection
_Message = tuple[str, bytes, float, list[int] | None, int, int]


@dataclass(slots=True)
class Plan:
    """What one connection is: its client id, session, filters, and whether the pipeline's
    backlog pauses it (`follows_pipeline`) or only what it has handed on and not yet seen
    stored does (see `collector.mqtt.client`)."""

    client_id: str
    persistent: bool
    filters: list[tuple[str, int]]
    follows_pipeline: bool = True
    stale: list[str] = field(default_factory=list)
    """Filters an older session under this id may still hold: unsubscribed when the broker
    says the session is present (a filter that moved to the other connection)."""


def secure(client: mqtt.Client, cfg: MqttConfig) -> None:
    """The site's credentials and TLS files on a paho client (the collector's and the
    notification channel's connections alike)."""
    password = read_secret(cfg.password_env, cfg.password_file)
    if cfg.username is not None or password is not None:
        client.username_pw_set(cfg.username or "", password)
    if cfg.tls:
        client.tls_set(
            ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
            certfile=str(cfg.cert_file) if cfg.cert_file else None,
            keyfile=str(cfg.key_file) if cfg.key_file else None,
        )
    elif cfg.ca_file or cfg.cert_file or cfg.key_file:
        log.warning("mqtt: %s is not mqtts:// so ca/cert/key files are ignored", cfg.url)


class Connection:
    """One paho client, from `start` to `stop`; made fresh for each run of the collector."""

    def __init__(self, config: MqttConfig, plan: Plan, router: Router, stats: MqttStats, *,
                 clock: Callable[[], float], max_inbox: int,
                 on_change: Callable[[], None]) -> None:
        self.plan = plan
        self._config = config
        self._router = router
        self._clock = clock
        self._v5 = config.protocol == "5"
        # paho's thread appends, the loop's thread drains.
        self.inbox: deque[_Message] = deque()
        self.gate = Gate(self.inbox, max_inbox)
        self.status = Status(config, stats, on_change)
        self._client = self._make_client()
        self.acks = Acks(self._client, stats)
        self._pending: dict[int | None, list[str]] = {}  # SUBSCRIBE mid -> filters (paho's)
        self._answered = False  # did the broker answer this CONNECT? (paho's thread)
        self._drain_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._emit: Emit | None = None

    # --- from the event loop -------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, emit: Emit, paused: bool) -> None:
        """Connect in the background (paho retries forever) and start paho's thread."""
        self._loop, self._emit = loop, emit
        self.gate.pressed = paused and self.plan.follows_pipeline
        cfg, plan = self._config, self.plan
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            if plan.persistent:
                props.SessionExpiryInterval = _SESSION_NEVER_EXPIRES
            self._client.connect_async(cfg.host, cfg.port, int(cfg.keepalive),
                                       clean_start=not plan.persistent, properties=props)
        else:
            self._client.connect_async(cfg.host, cfg.port, int(cfg.keepalive))
        log.info("mqtt: connecting to %s:%d as %r (MQTT %s, %s session, %d subscriptions)",
                 cfg.host, cfg.port, plan.client_id, cfg.protocol,
                 "persistent" if plan.persistent else "clean", len(plan.filters))
        self._client.looped = time.monotonic()
        self._client.loop_start()

    def stalled(self, now: float, limit: float) -> str:
        """paho's network thread out of its loop past `limit` and `AWAY_MAX`; "" while it
        loops (each second at least, messages or not)."""
        away = now - self._client.looped
        if away > max(limit, AWAY_MAX):
            return (f"mqtt: paho's network thread for {self.plan.client_id!r} has not run "
                    f"its loop for {away:.0f}s")
        return ""

    def disconnect(self) -> None:
        """Ask paho to leave; the gate opens for good so it reads its way to DISCONNECT."""
        self.gate.stop()
        self._client.disconnect()

    def stop(self) -> None:
        """After `disconnect`: wait for paho's thread, then map what the inbox still holds.

        Blocking on purpose: the network thread must be gone before the loop closes. QoS 0
        messages would be lost otherwise; QoS 1 ones come again, unacked (at least once)."""
        self._client.loop_stop()
        self.acks.closed()  # from now on an on_stored acks nothing
        while self.inbox:
            self._drain(force=True)
        self.status.stopped()

    def press(self, paused: bool) -> None:
        """The pipeline is behind (True) or caught up (False): stop or go on reading.

        While pressed the inbox is not drained either, so neither it nor the pipeline's
        queue grows; the broker holds the rest (see `collector.mqtt.flow`)."""
        if not self.plan.follows_pipeline:
            return
        self.gate.press(paused)
        if not paused and self.inbox and not self._drain_scheduled and self._loop:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self, force: bool = False) -> None:
        """Map what the inbox holds and emit it at once; QoS 1 acks wait for `on_stored`."""
        self._drain_scheduled = False
        gate, inbox = self.gate, self.inbox
        if gate.pressed and not force:
            return  # `press(False)` drains again
        readings: list[Reading] = []
        ids: list[tuple[int, int]] = []
        count = min(len(inbox), DRAIN_MAX)
        for _ in range(count):
            topic, payload, arrival, sub_ids, mid, connection = inbox.popleft()
            self._router.map(topic, payload, arrival, sub_ids, readings)
            if mid:
                ids.append((connection, mid))
        if readings:
            on_stored = self.acks.hold(ids) if ids else None
            if not self.plan.follows_pipeline:
                on_stored = self._counted(count, on_stored)
            assert self._emit is not None
            self._emit(readings, on_stored)
        elif ids:
            self.acks.nothing_to_store(ids)
        gate.poke()  # room in the inbox: paho's thread may read again
        if inbox and not self._drain_scheduled and self._loop:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _counted(self, count: int, then: Callable[[], None] | None) -> Callable[[], None]:
        """`on_stored` that also gives `count` messages back to the gate's bound."""
        gate = self.gate
        gate.unstored += count

        def on_stored() -> None:
            gate.unstored = max(0, gate.unstored - count)
            gate.poke()
            if then is not None:
                then()

        return on_stored

    # --- paho's client and its callbacks (paho's network thread) ---------------------------

    def _make_client(self) -> FastClient:
        cfg = self._config
        v5 = cfg.protocol == "5"
        client = FastClient(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.plan.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not self.plan.persistent,
            manual_ack=True,
        )
        client.enable_logger(paho_log)
        # A bug in a callback is logged (ERROR) and the message dropped, instead of ending
        # paho's network thread and leaving this collector connected to nothing.
        client.suppress_exceptions = True
        client.reconnect_delay_set(1, RECONNECT_MAX)
        secure(client, cfg)
        client.gate = self.gate
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_pre_connect = self._on_pre_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_incoming = self._incoming
        return client

    def _later(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` on the loop's thread."""
        if self._loop is not None:
            # RuntimeError: the loop closed under us during shutdown.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(callback, *args)

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self.acks.closed()  # paho has just cleared its outgoing queue: no ack may slip in
        self._answered = False

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        self._answered = True
        if reason_code.is_failure:
            self._later(self.status.refused, str(reason_code), reason_code.value)
            return
        self.acks.opened()
        self._later(self.status.connected, flags.session_present, self.plan.filters)
        self._pending.clear()
        filters = self.plan.filters
        if flags.session_present and self.plan.stale:
            client.unsubscribe(self.plan.stale)
        if self._v5 and getattr(properties, "SubscriptionIdentifierAvailable", 1):
            for ident, (topic, qos) in enumerate(filters, start=1):
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = ident
                self._pending[client.subscribe(topic, qos, properties=props)[1]] = [topic]
        elif filters:
            self._pending[client.subscribe(filters)[1]] = [t for t, _ in filters]
        if not self._pending:
            self._later(self.status.subscribed)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError`: the exception says why.
        self._later(self.status.connect_failed, sys.exc_info()[1])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self.acks.closed()
        self._later(self.status.disconnected, str(reason_code), reason_code.value,
                    paho_errors.take_error(), self._answered)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        for topic, code in zip(self._pending.pop(mid, []), reason_codes, strict=False):
            if code.is_failure:
                log.warning("mqtt: broker refused subscription %s: %s", topic, code)
        if not self._pending:
            self._later(self.status.subscribed)

    def _incoming(self, topic: str, payload: bytes, qos: int, mid: int,
                  properties: Properties | None) -> None:
        ids = getattr(properties, "SubscriptionIdentifier", None) if self._v5 else None
        self.inbox.append((topic, payload, self._clock(), ids, mid if qos else 0,
                           self.acks.connection))
        # The drain clears the flag before it reads the inbox, so a message appended
        # while it runs is either drained by it or schedules the next one.
        if not self._drain_scheduled:
            self._drain_scheduled = True
            assert self._loop is not None
            self._later(self._loop.call_later, DRAIN_DELAY, self._drain)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # paho's own path: a PUBLISH split across reads (see `FastClient`).
        self._incoming(msg.topic, msg.payload, msg.qos, msg.mid, msg.properties)
