"""`MqttCollector`: every subscription of the config, over one broker connection or two.

One connection carries everything when the subscriptions share a QoS (the usual case: the
default QoS is 1), under the configured `client_id`. When QoS 0 and QoS 1 subscriptions are
mixed, the QoS 0 ones get a connection of their own, so a QoS 0 flood can never cost a QoS 1
message at the broker:

- Mosquitto keeps one outgoing queue per client (`max_queued_messages`, default 1000). While
  the agent is behind, the collector stops reading (`collector.mqtt.flow`) and that queue
  fills; a single connection's QoS 0 flood filled it and the broker dropped QoS 1 messages
  published meanwhile. On two connections each has its own queue.
- The QoS 0 connection (`{client_id}-qos0`, clean session: the broker keeps nothing for an
  offline QoS 0 subscriber anyway) pauses while the pipeline is behind, as the single
  connection does. The QoS 1 connection keeps the configured id and its persistent
  session, so what the broker queued for it before an upgrade is still delivered. It does
  not pause for the pipeline: it keeps reading, bounded by what it has handed on and not
  yet seen stored (`max_inbox` messages, with its inbox) and by the broker's in-flight
  window (its acks wait for the disk). So its queue at the broker drains as fast as the
  disk takes QoS 1 readings, whatever QoS 0 traffic does.

A QoS 0 message published on a topic a QoS 1 subscription matches arrives at QoS 0 on the
QoS 1 connection (MQTT delivers the lower of the two), and counts in that bound.

`clean_session: false` gives a persistent session only with a fixed `client_id` (MQTT 5:
`clean_start=False` and a session that never expires); with a generated id the session is
clean, or every restart would leave an orphan session queueing on the broker. `clock`
stamps arrival times and is called on paho's thread. `assets`, when given, are the ids
whose readings are kept (site.yaml's; see `accept_unknown_assets`); the caller may change
the collection on the loop thread (a reload does).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Collection

from collector.mqtt.config import MqttConfig
from collector.mqtt.connection import Connection, Plan
from collector.mqtt.flow import MAX_INBOX
from collector.mqtt.payload import compile_subscriptions
from collector.mqtt.routing import Route, Router
from collector.mqtt.stats import MqttStats
from collector.reading import Emit

log = logging.getLogger("collector.mqtt")

QOS0_SUFFIX = "-qos0"
"""Appended to the client id for the QoS 0 connection when QoS 0 and 1 are mixed."""


class MqttCollector:
    """The `Collector` for MQTT; see the module docstring."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, clock: Callable[[], float] = time.time, *,
                 assets: Collection[str] | None = None, max_inbox: int = MAX_INBOX) -> None:
        self._config = config
        self._clock = clock
        # Read per message on the loop thread, not copied: a reload may update the set.
        self._assets = assets if isinstance(assets, set | frozenset) else frozenset(assets or ())
        self._max_inbox = max_inbox
        self._paused = False
        # Compiled now so a bad path or a repeated topic fails at start, not per message.
        mappers = compile_subscriptions(config.subscriptions, max_payload=config.max_payload)
        # Without an asset list (a bench, a test) every asset is accepted.
        self._routes = [Route(m, refuse_unknown=assets is not None
                              and not m.subscription.accept_unknown_assets) for m in mappers]
        self.stats = MqttStats(
            subscriptions={r.mapper.topic.pattern: r.stats for r in self._routes}
        )
        self.client_id = config.client_id or f"patrol-{uuid.uuid4().hex[:12]}"
        # A persistent session under a random id would pile up abandoned sessions on the broker.
        self.persistent = not config.clean_session and config.client_id is not None
        self._plans = self._plan()
        self._connections: list[Connection] = []

    def _plan(self) -> list[tuple[Plan, list[list[Route]]]]:
        """The connections to open, each with its filters' routes (see the docstring)."""
        cfg = self._config
        by_filter: dict[str, list[Route]] = {}  # several patterns may share one filter
        qos: dict[str, int] = {}
        for route in self._routes:
            sub = route.mapper.subscription
            topic = route.mapper.subscribe_topic
            want = sub.qos if sub.qos is not None else cfg.qos
            qos[topic] = max(want, qos.get(topic, 0))
            by_filter.setdefault(topic, []).append(route)
        groups = {level: [t for t in by_filter if qos[t] == level] for level in (1, 0)}
        if not groups[0] or not groups[1]:
            topics = list(by_filter)
            return [(Plan(self.client_id, self.persistent, [(t, qos[t]) for t in topics]),
                     [by_filter[t] for t in topics])]
        ones = Plan(self.client_id, self.persistent, [(t, 1) for t in groups[1]],
                    follows_pipeline=False, stale=groups[0])
        zeros = Plan(self.client_id + QOS0_SUFFIX, False, [(t, 0) for t in groups[0]])
        return [(ones, [by_filter[t] for t in groups[1]]),
                (zeros, [by_filter[t] for t in groups[0]])]

    async def run(self, emit: Emit) -> None:
        """Connect (retrying forever) and emit readings until cancelled."""
        loop = asyncio.get_running_loop()
        self._connections = [
            Connection(self._config, plan, Router(routes, self._assets, self.stats),
                       self.stats, clock=self._clock, max_inbox=self._max_inbox,
                       on_change=self._changed)
            for plan, routes in self._plans
        ]
        for connection in self._connections:
            connection.start(loop, emit, self._paused)
        try:
            await loop.create_future()  # runs until cancelled
        finally:
            for connection in self._connections:
                connection.disconnect()
            for connection in self._connections:
                connection.stop()
            log.info("mqtt: stopped")

    def _changed(self) -> None:
        connections = self._connections
        self.stats.connected = bool(connections) and all(
            c.status.is_connected for c in connections)
        self.stats.subscribed = bool(connections) and all(
            c.status.is_subscribed for c in connections)

    def stalled(self, now: float, limit: float) -> str:
        """For the systemd watchdog (agent.sdnotify): a connection whose paho thread is
        stuck; a silent broker or topic is not stalled."""
        return "; ".join(why for c in self._connections if (why := c.stalled(now, limit)))

    @property
    def queued(self) -> int:
        """Messages read from the socket and not yet mapped (any thread may ask)."""
        return sum(len(c.inbox) for c in self._connections)

    def pause(self, paused: bool) -> None:
        """The pipeline is behind (True) or caught up (False): the connections that follow
        it stop or go on reading (see `Connection.press`)."""
        if paused and not self._paused:
            self.stats.pauses += 1
        self._paused = paused
        for connection in self._connections:
            connection.press(paused)
