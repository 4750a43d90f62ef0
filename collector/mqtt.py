"""MQTT collector: subscribes with paho-mqtt and maps each message to readings.

paho runs its network loop in its own thread (`loop_start`), reading the socket through
`_Client` (a read buffer, and a short path for whole PUBLISH packets). Each message only
goes into an inbox and, when the inbox was idle, schedules one drain on the asyncio loop
(`DRAIN_DELAY` later); the drain maps everything queued and emits it in one call, so
thread hand-offs are per batch, not per message. Mapping, stats and `emit` all happen on
the loop's thread.

QoS 1 messages are acknowledged by hand (`manual_ack=True`): a message's PUBACK goes out
only when the pipeline calls the drain's `on_stored`, so a message the agent had not yet
stored when it stopped (or the broker restarted) is delivered again. PUBACKs leave in the
order the messages arrived (MQTT 3.1.1 4.6) and never on a later connection than the one
that brought the message (see `collector.mqtt_acks`).

Overlapping subscriptions: every subscription whose pattern matches a message maps it.
An MQTT 3.1.1 broker delivers such a message once; an MQTT 5 broker may deliver one copy
per matching filter, so under MQTT 5 each filter carries a subscription identifier and a
copy goes only to the subscriptions of the filters it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt._packet import MalformedPacket, decode_publish
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from collector.mqtt_acks import Acks
from collector.mqtt_config import MqttConfig
from collector.mqtt_flow import MAX_INBOX, STEP, Gate
from collector.payload import PayloadError, PayloadMapper, compile_subscriptions
from collector.reading import Emit, Reading
from common.secrets import read_secret

log = logging.getLogger(__name__)
paho_log = logging.getLogger(f"{__name__}.paho")


class _PahoErrors(logging.Filter):
    """Keeps paho's per-retry ERRORs at DEBUG: our own logs say it once, with the detail.

    "Client is not connected" comes on each retry and on a stop while offline. "failed to
    receive on socket: ..." says why a connection dropped (a TLS alert, a reset): it is
    kept, per paho network thread, for our disconnect log to quote.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR:
            return True
        text = str(record.msg)
        if text.startswith("failed to receive on socket"):
            self.local.error = str(record.args[0]) if record.args else text
        elif not text.startswith("Client is not conn"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return paho_log.isEnabledFor(logging.DEBUG)

    def take_error(self) -> str | None:
        """The last socket error seen on this (paho's) thread, once."""
        error, self.local.error = getattr(self.local, "error", None), None
        return error


_paho_errors = _PahoErrors()
paho_log.addFilter(_paho_errors)


class _Client(mqtt.Client):
    """paho's client with a read buffer and a short path for whole PUBLISH packets.

    paho 2.2 asks the socket for each packet's first byte, each byte of its length and
    then its body, reads one QoS 0 packet per select(), and wraps each message in an
    `MQTTMessage` that builds a `threading.Condition`: a bare paho client topped out at
    about 50,000 small messages a second on loopback (`bench.mqtt_ingest`), under the
    issue's target for our whole collector. So here:

    - `_sock_recv` hands out slices of one 64 KiB read, and `loop_read` goes on while they
      last (select() cannot see bytes already read);
    - `_packet_read`, when the buffer holds a whole QoS 0/1 PUBLISH, decodes it with paho's
      own `decode_publish` and hands it to `on_incoming` (topic, payload, QoS, packet id,
      MQTT 5 properties) instead of `on_message`. Everything else (CONNACK, SUBACK,
      PINGRESP, QoS 2, a packet split across reads) takes paho's path unchanged, so
      `on_message` must deliver the same way.

    With manual acks paho does nothing more for a QoS 0/1 PUBLISH than call `on_message`,
    which is why skipping it is safe. `_sock_recv` and `paho.mqtt._packet` are paho
    internals: pyproject pins paho below 3 and the tests drive both paths.
    """

    READ = 65536
    on_incoming: Callable[[str, bytes, int, int, Properties | None], None] | None = None
    gate: Gate | None = None  # closed: the agent is behind, do not read (collector.mqtt_flow)
    _rsock: object = None  # the socket `_rbuf` came from
    _rbuf = b""
    _rpos = 0

    def _fill(self, bufsize: int) -> None:
        self._rbuf = super()._sock_recv(max(bufsize, self.READ))  # b"": the peer closed
        self._rsock, self._rpos = self._sock, 0
        with self._msgtime_mutex:  # paho's keepalive looks here; the short path skips it
            self._last_bytes_received = mqtt.time_func()

    def _empty(self) -> bool:
        """Nothing left to hand out, or what is left came from a closed connection."""
        return self._rpos >= len(self._rbuf) or self._rsock is not self._sock

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._empty():
            self._fill(bufsize)
        pos = self._rpos
        self._rpos = min(pos + bufsize, len(self._rbuf))
        return self._rbuf[pos:pos + bufsize]

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        gate = self.gate
        # Paused: acks and pings first (back to paho's loop at once), else wait a little.
        if (gate is not None and not gate.is_open()
                and (self.want_write() or not gate.wait(self.want_write))
                and self._peer_alive()):
            return mqtt.MQTT_ERR_SUCCESS  # the broker holds the rest
        rc = super().loop_read(max_packets)
        while (rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and not self._empty()
               and (gate is None or gate.is_open())):
            rc = super().loop_read(max_packets)
        return rc

    def _loop(self, timeout: float = 1.0) -> mqtt.MQTTErrorCode:
        if not self._empty():  # read before a pause and not handled: select() cannot see it
            if self.gate is None or self.gate.is_open():
                rc = self.loop_read()
                if rc != mqtt.MQTT_ERR_SUCCESS or self._sock is None:
                    return rc
            else:
                timeout = min(timeout, STEP)  # look at the gate again soon
        return super()._loop(timeout)

    def _peer_alive(self) -> bool:
        """Paused, on a socket select() found readable: bytes from the broker are waiting,
        which is what paho's keepalive wants to know (it counts bytes received, not
        packets), so tell it. False when the broker closed the connection: read it."""
        sock = self._sock
        if sock is None:
            return False
        try:
            if not sock.recv(1, socket.MSG_PEEK):
                return False  # end of stream: paho's read notices and reconnects
        except ValueError:
            pass  # TLS cannot peek; select() said readable, that will do
        except BlockingIOError:
            return True  # nothing after all: paho's keepalive judges as usual
        except OSError:
            return False
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        return True

    def _packet_queue(self, *args: Any, **kwargs: Any) -> mqtt.MQTTErrorCode:
        rc = super()._packet_queue(*args, **kwargs)
        if self.gate is not None:  # an ack or a ping to send: a waiting reader goes back
            self.gate.poke()
        return rc

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        deliver = self.on_incoming
        if deliver is None or self._in_packet["command"] != 0:  # paho is inside a packet
            return super()._packet_read()
        if self._empty():
            try:
                self._fill(0)
            except BlockingIOError:
                return mqtt.MQTT_ERR_AGAIN
            except OSError as err:  # as paho words it (`_PahoErrors` quotes it)
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return mqtt.MQTT_ERR_CONN_LOST
        buf, pos = self._rbuf, self._rpos
        end = len(buf)
        # A PUBLISH (0x3_) of QoS 0 or 1 (dup and retain bits masked).
        if pos < end and buf[pos] & 0xF6 in (0x30, 0x32):
            length = shift = 0
            i = pos + 1
            while i < end and i <= pos + 4:  # remaining length: 1-4 bytes, 7 bits each
                byte = buf[i]
                i += 1
                length |= (byte & 127) << shift
                shift += 7
                if byte < 128:
                    if i + length <= end:  # whole in the buffer: else paho's path
                        self._rpos = i + length
                        try:
                            packet = decode_publish(buf[pos], buf[i:i + length], self._protocol)
                        except MalformedPacket as exc:
                            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s",
                                           exc)
                            return mqtt.MQTT_ERR_PROTOCOL
                        try:
                            deliver(packet.topic.decode("utf-8", "replace"), packet.payload,
                                    packet.qos, packet.mid, packet.properties)
                        except Exception as err:  # as paho guards on_message
                            self._easy_log(mqtt.MQTT_LOG_ERR,
                                           "Caught exception in on_message: %s", err)
                            if not self.suppress_exceptions:
                                raise
                        return mqtt.MQTT_ERR_SUCCESS
                    break
        return super()._packet_read()


WARN_EVERY = 60.0
"""Seconds between WARNING logs of bad payloads for one subscription; repeats go to DEBUG."""

DRAIN_DELAY = 0.001
"""Seconds from a message reaching an idle inbox to its drain, so a burst is mapped and
emitted in one batch: about a fifth less CPU per message under load, and 1 ms of latency
is nothing next to a sensor's period."""

DRAIN_MAX = 2000
"""Messages mapped per drain before the loop gets a turn (the pipeline, other collectors)."""

_SAMPLE_BYTES = 100
_SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5: a persistent session like 3.1.1's
# CONNACK codes that mean the credentials: 3.1.1 (4, 5) and MQTT 5 (134, 135).
_AUTH_REFUSED = {4, 5, 134, 135}

# topic, payload, arrival, MQTT 5 subscription ids, QoS 1 packet id (0: QoS 0), connection
_Message = tuple[str, bytes, float, list[int] | None, int, int]


@dataclass(slots=True)
class SubscriptionStats:
    """Counters for one subscription; `partial_payloads` mapped some metrics, not all."""

    messages: int = 0
    readings: int = 0
    bad_payloads: int = 0
    partial_payloads: int = 0
    unknown_assets: int = 0
    """Messages refused because their asset is not in site.yaml (see accept_unknown_assets)."""


@dataclass(slots=True)
class MqttStats:
    """Counters an operator (or a test) reads to see the collector is healthy."""

    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    unmatched: int = 0
    acked: int = 0
    """QoS 1 messages acknowledged to the broker (after their readings were stored)."""
    acks_dropped: int = 0
    """Stored after their connection was gone: not acked; the broker delivers them again."""
    pauses: int = 0
    """Times reading paused because the pipeline was behind (backpressure)."""
    connected: bool = False
    subscribed: bool = False
    """True once the broker acknowledged every subscription of the current connection."""
    subscriptions: dict[str, SubscriptionStats] = field(default_factory=dict)


@dataclass(slots=True)
class _Route:
    mapper: PayloadMapper
    stats: SubscriptionStats
    warned_at: float = float("-inf")
    suppressed: int = 0
    refuse_unknown: bool = False
    unknown_warned: bool = False


class MqttCollector:
    """The `Collector` for MQTT: one paho client, every subscription of the config.

    `clean_session: false` gives a persistent session only with a fixed `client_id` (MQTT 5:
    `clean_start=False` and a session that never expires); with a generated id the session
    is clean, or every restart would leave an orphan session queueing on the broker.
    `clock` stamps arrival times and is called on paho's thread. `assets`, when given, are
    the ids whose readings are kept (site.yaml's; see `accept_unknown_assets`); the caller
    may change the collection on the loop thread (a reload does).
    """

    name = "mqtt"

    def __init__(self, config: MqttConfig, clock: Callable[[], float] = time.time, *,
                 assets: Collection[str] | None = None, max_inbox: int = MAX_INBOX) -> None:
        self._config = config
        self._clock = clock
        # Read per message on the loop thread, not copied: a reload may update the set.
        self._assets = assets if isinstance(assets, set | frozenset) else frozenset(assets or ())
        self._max_inbox = max_inbox
        self._gate: Gate | None = None
        self._paused = False
        self._inbox: deque[_Message] = deque()
        # Compiled now so a bad path or a repeated topic fails at start, not per message.
        mappers = compile_subscriptions(config.subscriptions, max_payload=config.max_payload)
        # Without an asset list (a bench, a test) every asset is accepted.
        self._routes = [_Route(m, SubscriptionStats(), refuse_unknown=assets is not None
                               and not m.subscription.accept_unknown_assets) for m in mappers]
        self.stats = MqttStats(
            subscriptions={r.mapper.topic.pattern: r.stats for r in self._routes}
        )
        self.client_id = config.client_id or f"patrol-{uuid.uuid4().hex[:12]}"
        # A persistent session under a random id would pile up abandoned sessions on the broker.
        self.persistent = not config.clean_session and config.client_id is not None
        # Broker filters (several patterns may share one) and, by filter, their routes.
        qos: dict[str, int] = {}
        routes: dict[str, list[_Route]] = {}
        for route in self._routes:
            sub = route.mapper.subscription
            topic = route.mapper.subscribe_topic
            want = sub.qos if sub.qos is not None else config.qos
            qos[topic] = max(want, qos.get(topic, 0))
            routes.setdefault(topic, []).append(route)
        self._filters = list(qos.items())
        self._filter_routes = [routes[topic] for topic, _ in self._filters]
        self._connect_failures = 0  # since the last connect: only the first is a WARNING

    async def run(self, emit: Emit) -> None:
        """Connect (retrying forever) and emit readings until cancelled."""
        loop = asyncio.get_running_loop()
        client = self._client(loop, emit)
        cfg = self._config
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            if self.persistent:
                props.SessionExpiryInterval = _SESSION_NEVER_EXPIRES
            client.connect_async(
                cfg.host, cfg.port, int(cfg.keepalive),
                clean_start=not self.persistent, properties=props,
            )
        else:
            client.connect_async(cfg.host, cfg.port, int(cfg.keepalive))
        log.info(
            "mqtt: connecting to %s:%d as %r (MQTT %s, %s session, %d subscriptions)",
            cfg.host, cfg.port, self.client_id, cfg.protocol,
            "persistent" if self.persistent else "clean", len(self._filters),
        )
        client.loop_start()
        try:
            await loop.create_future()  # runs until cancelled
        finally:
            client.gate.stop()  # never wait at the gate again: paho reads to its DISCONNECT
            # Blocking on purpose: the network thread must be gone before the loop closes.
            client.disconnect()
            client.loop_stop()
            self._acks.closed()  # from now on an on_stored acks nothing
            while self._inbox:  # QoS 0 would be lost; QoS 1 comes again, unacked (at least once)
                self._drain(force=True)
            self.stats.connected = self.stats.subscribed = False
            log.info("mqtt: stopped")

    def _client(self, loop: asyncio.AbstractEventLoop, emit: Emit) -> _Client:
        cfg = self._config
        v5 = cfg.protocol == "5"
        client = _Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not self.persistent,
            manual_ack=True,
        )
        client.enable_logger(paho_log)
        # A bug in a callback is logged (ERROR) and the message dropped, instead of ending
        # paho's network thread and leaving this collector connected to nothing.
        client.suppress_exceptions = True
        client.reconnect_delay_set(1, 60)
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
        self._acks = acks = Acks(client, self.stats)
        self._loop, self._emit = loop, emit
        # paho's thread appends, the loop's thread drains; fresh for each run.
        self._inbox = deque()
        self._gate = client.gate = Gate(self._inbox, self._max_inbox)
        self._gate.pressed = self._paused  # the pipeline may be behind already
        self._drain_scheduled = False
        inbox, clock = self._inbox, self._clock

        def later(callback: Callable[..., None], *args: Any) -> None:
            # RuntimeError: the loop closed under us during shutdown.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

        pending: dict[int | None, list[str]] = {}  # SUBSCRIBE mid -> filters; paho thread only
        answered = [False]  # did the broker answer this connection's CONNECT? paho thread only

        def on_pre_connect(client: mqtt.Client, userdata: Any) -> None:
            acks.closed()  # paho has just cleared its outgoing queue: no ack may slip in
            answered[0] = False

        def on_connect(
            client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
            reason_code: ReasonCode, properties: Properties | None,
        ) -> None:
            answered[0] = True
            if reason_code.is_failure:
                later(self._refused, str(reason_code), reason_code.value)
                return
            acks.opened()
            log.info(
                "mqtt: connected to %s:%d (session present: %s); subscribing to %s",
                cfg.host, cfg.port, flags.session_present,
                ", ".join(f"{t} (qos {q})" for t, q in self._filters),
            )
            later(self._connected)
            pending.clear()
            if v5 and getattr(properties, "SubscriptionIdentifierAvailable", 1):
                for ident, (topic, qos) in enumerate(self._filters, start=1):
                    props = Properties(PacketTypes.SUBSCRIBE)
                    props.SubscriptionIdentifier = ident
                    pending[client.subscribe(topic, qos, properties=props)[1]] = [topic]
            elif self._filters:
                pending[client.subscribe(self._filters)[1]] = [t for t, _ in self._filters]
            if not pending:
                later(self._subscribed)

        def on_connect_fail(client: mqtt.Client, userdata: Any) -> None:
            # paho calls this inside its `except OSError`: the exception says why.
            later(self._connect_failed, sys.exc_info()[1])

        def on_disconnect(
            client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
            reason_code: ReasonCode, properties: Properties | None,
        ) -> None:
            acks.closed()
            error = _paho_errors.take_error()
            later(self._disconnected, str(reason_code), reason_code.value, error, answered[0])

        def on_subscribe(
            client: mqtt.Client, userdata: Any, mid: int,
            reason_codes: list[ReasonCode], properties: Properties | None,
        ) -> None:
            for topic, code in zip(pending.pop(mid, []), reason_codes, strict=False):
                if code.is_failure:
                    log.warning("mqtt: broker refused subscription %s: %s", topic, code)
            if not pending:
                later(self._subscribed)

        def incoming(topic: str, payload: bytes, qos: int, mid: int,
                     properties: Properties | None) -> None:
            ids = getattr(properties, "SubscriptionIdentifier", None) if v5 else None
            inbox.append((topic, payload, clock(), ids, mid if qos else 0, acks.connection))
            # The drain clears the flag before it reads the inbox, so a message appended
            # while it runs is either drained by it or schedules the next one.
            if not self._drain_scheduled:
                self._drain_scheduled = True
                later(loop.call_later, DRAIN_DELAY, self._drain)

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            # paho's own path: a PUBLISH split across reads (see `_Client`).
            incoming(msg.topic, msg.payload, msg.qos, msg.mid, msg.properties)

        client.on_connect = on_connect
        client.on_connect_fail = on_connect_fail
        client.on_pre_connect = on_pre_connect
        client.on_disconnect = on_disconnect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_incoming = incoming
        return client

    # --- on the event loop's thread ---------------------------------------------------

    @property
    def queued(self) -> int:
        """Messages read from the socket and not yet mapped (any thread may ask)."""
        return len(self._inbox)

    def pause(self, paused: bool) -> None:
        """The pipeline is behind (True) or caught up (False): stop or go on reading.

        While paused the inbox is not drained either, so neither it nor the pipeline's
        queue grows; the broker holds the rest (see collector.mqtt_flow)."""
        if paused and not self._paused:
            self.stats.pauses += 1
        self._paused = paused
        gate = self._gate
        if gate is None:
            return
        gate.press(paused)
        if not paused and self._inbox and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self, force: bool = False) -> None:
        """Map what the inbox holds and emit it at once; QoS 1 acks wait for `on_stored`."""
        self._drain_scheduled = False
        gate = self._gate
        if gate is not None and gate.pressed and not force:
            return  # `pause(False)` drains again
        inbox = self._inbox
        readings: list[Reading] = []
        ids: list[tuple[int, int]] = []
        for _ in range(min(len(inbox), DRAIN_MAX)):
            topic, payload, arrival, sub_ids, mid, connection = inbox.popleft()
            self._map(topic, payload, arrival, sub_ids, readings)
            if mid:
                ids.append((connection, mid))
        if readings:
            self._emit(readings, self._acks.hold(ids) if ids else None)
        elif ids:
            self._acks.nothing_to_store(ids)
        if gate is not None:
            gate.poke()  # room in the inbox: paho's thread may read again
        if inbox and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _connected(self) -> None:
        self.stats.connects += 1
        self.stats.connected = True
        self._connect_failures = 0

    def _connect_failed(self, error: BaseException | str | None) -> None:
        self.stats.connect_failures += 1
        self._connect_failures += 1
        level = logging.WARNING if self._connect_failures == 1 else logging.DEBUG
        hint = ""
        if isinstance(error, ssl.SSLCertVerificationError):
            hint = " (is ca_file the CA that signed the broker's certificate?)"
        elif "CERTIFICATE_REQUIRED" in str(error):
            hint = " (the broker wants a client certificate: set cert_file and key_file)"
        log.log(
            level, "mqtt: cannot reach %s:%d: %s%s (attempt %d); retrying every 1-60 s",
            self._config.host, self._config.port, error or "connection failed", hint,
            self._connect_failures,
        )

    def _refused(self, reason: str, code: int) -> None:
        self.stats.connect_failures += 1
        self._connect_failures += 1
        level = logging.WARNING if self._connect_failures == 1 else logging.DEBUG
        hint = ""
        if code in _AUTH_REFUSED:
            cfg = self._config
            source = (f"password_env {cfg.password_env}" if cfg.password_env else
                      f"password_file {cfg.password_file}" if cfg.password_file else "no password")
            hint = f"; check username {cfg.username!r} and the password ({source})"
        log.log(level, "mqtt: %s:%d refused the connection: %s (%d)%s; retrying",
                self._config.host, self._config.port, reason, code, hint)

    def _disconnected(self, reason: str, code: int, error: str | None, answered: bool) -> None:
        if not self.stats.connected:
            if not answered and code != 0:  # closed before CONNACK: a TLS refusal, say
                self._connect_failed(f"closed before the broker answered: {error or reason}")
            return  # else a refused CONNECT (logged by _refused) or our own stop
        self.stats.disconnects += 1
        self.stats.connected = self.stats.subscribed = False
        level = logging.INFO if code == 0 else logging.WARNING
        log.log(level, "mqtt: disconnected from %s:%d: %s (%d)%s; reconnecting",
                self._config.host, self._config.port, reason, code,
                f": {error}" if error else "")

    def _subscribed(self) -> None:
        self.stats.subscribed = True

    def _map(self, topic: str, payload: bytes, arrival: float, ids: list[int] | None,
             out: list[Reading]) -> None:
        routes = self._routes
        if ids:  # MQTT 5: only the subscriptions behind the filters this copy came through
            n = len(self._filter_routes)
            routes = [r for i in ids if 0 < i <= n for r in self._filter_routes[i - 1]]
        matched = False
        for route in routes:
            plan = route.mapper.plan(topic)
            if plan is None:
                continue
            matched = True
            stats = route.stats
            stats.messages += 1
            if route.refuse_unknown and plan.asset not in self._assets:
                self._unknown(route, topic, plan.asset)
                continue
            try:
                readings, problems = route.mapper.map_planned(plan, payload, arrival)
            except PayloadError as exc:
                stats.bad_payloads += 1
                self._warn(route, "bad payload", topic, exc.reason, payload)
                continue
            if problems:
                stats.partial_payloads += 1
                reason = "; ".join(p.reason for p in problems)
                self._warn(route, "some metrics did not map", topic, reason, payload)
            stats.readings += len(readings)
            out.extend(readings)
        if not matched:
            self.stats.unmatched += 1
            log.debug("mqtt: no subscription matches %s", topic)

    def _unknown(self, route: _Route, topic: str, asset: str) -> None:
        """Counted; one WARNING per subscription, the rest at DEBUG."""
        route.stats.unknown_assets += 1
        level = logging.DEBUG if route.unknown_warned else logging.WARNING
        route.unknown_warned = True
        log.log(level, "mqtt: refused a message on %s (subscription %s): asset %r is not in "
                "site.yaml's assets; set accept_unknown_assets: true on the subscription to "
                "keep such readings (further ones are counted in unknown_assets, logged at "
                "DEBUG)", topic, route.mapper.topic.pattern, asset)

    def _warn(self, route: _Route, what: str, topic: str, reason: str, payload: bytes) -> None:
        """WARNING at most once a minute per subscription, with a sample; repeats at DEBUG."""
        now = time.monotonic()
        sample = payload[:_SAMPLE_BYTES]
        if now - route.warned_at < WARN_EVERY:
            route.suppressed += 1
            log.debug("mqtt: %s on %s: %s; payload %r", what, topic, reason, sample)
            return
        more = f" ({route.suppressed} more since the last warning)" if route.suppressed else ""
        log.warning(
            "mqtt: %s on %s (subscription %s): %s; payload %r (%d bytes)%s",
            what, topic, route.mapper.topic.pattern, reason, sample, len(payload), more,
        )
        route.warned_at = now
        route.suppressed = 0
