"""Which subscriptions map a message, and the counting and logging of what they refuse.

A `Route` is one subscription (its mapper, counters and logs); a `Router` holds the
routes of one broker connection. Overlapping subscriptions: every subscription whose
pattern matches a message maps it. An MQTT 3.1.1 broker delivers such a message once per
connection; an MQTT 5 broker may deliver one copy per matching filter, so under MQTT 5 each
filter carries a subscription identifier and a copy goes only to the subscriptions of the
filters it names. Runs on the event loop's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from collector.errors import PayloadError
from collector.mqtt.payload import PayloadMapper
from collector.mqtt.stats import MqttStats, SubscriptionStats
from collector.reading import Reading
from common.logonce import WarnOnce

log = logging.getLogger("collector.mqtt")

WARN_EVERY = 60.0
"""Seconds between WARNING logs of bad payloads for one subscription; repeats go to DEBUG."""

_SAMPLE_BYTES = 100


@dataclass(slots=True)
class Route:
    """One subscription: its mapper and counters, and its two conditions that repeat."""

    mapper: PayloadMapper
    stats: SubscriptionStats = field(default_factory=SubscriptionStats)
    refuse_unknown: bool = False
    payloads: WarnOnce = field(default_factory=lambda: WarnOnce(log, every=WARN_EVERY))
    """Bad payloads and metrics that did not map: once a minute, with a sample."""
    unknown: WarnOnce = field(default_factory=lambda: WarnOnce(log))
    """Assets not in site.yaml: once, then DEBUG (counted in `stats.unknown_assets`)."""


class Router:
    """The routes behind one connection's filters; `map` turns a message into readings.

    `filter_routes[i]` are the routes of the connection's filter i + 1 (its MQTT 5
    subscription identifier). `assets` is read per message, not copied: a reload may
    change the set.
    """

    def __init__(self, filter_routes: list[list[Route]], assets: Collection[str],
                 stats: MqttStats) -> None:
        self.filter_routes = filter_routes
        self.routes = [r for routes in filter_routes for r in routes]
        self._assets = assets
        self._stats = stats

    def map(self, topic: str, payload: bytes, arrival: float, ids: list[int] | None,
            out: list[Reading]) -> None:
        """Append the readings of one message to `out`; count and log what is refused."""
        routes = self.routes
        if ids:  # MQTT 5: only the subscriptions behind the filters this copy came through
            n = len(self.filter_routes)
            routes = [r for i in ids if 0 < i <= n for r in self.filter_routes[i - 1]]
        matched = False
        for route in routes:
            mapper = route.mapper
            plan = mapper.plan(topic)
            if plan is None:
                continue
            matched = True
            stats = route.stats
            stats.messages += 1
            if route.refuse_unknown and plan.asset not in self._assets:
                _unknown(route, topic, plan.asset)
                continue
            before = len(out)
            try:
                problems = mapper.map_into(plan, payload, arrival, out)
            except PayloadError as exc:
                stats.bad_payloads += 1
                _warn(route, "bad payload", topic, exc.reason, payload)
                continue
            if problems:
                stats.partial_payloads += 1
                reason = "; ".join(p.reason for p in problems)
                _warn(route, "some metrics did not map", topic, reason, payload)
            stats.readings += len(out) - before
            stats.last_reading = arrival  # one store a message: what health's silence needs
        if not matched:
            self._stats.unmatched += 1
            log.debug("mqtt: no subscription matches %s", topic)


def _unknown(route: Route, topic: str, asset: str) -> None:
    """Counted; one WARNING per subscription, the rest at DEBUG."""
    route.stats.unknown_assets += 1
    route.unknown.trouble(
        "mqtt: refused a message on %s (subscription %s): asset %r is not in site.yaml's "
        "assets; set accept_unknown_assets: true on the subscription to keep such readings "
        "(further ones are counted in unknown_assets, logged at DEBUG)",
        topic, route.mapper.topic.pattern, asset)


def _warn(route: Route, what: str, topic: str, reason: str, payload: bytes) -> None:
    """WARNING at most once a minute per subscription, with a sample; repeats at DEBUG."""
    route.payloads.trouble("mqtt: %s on %s (subscription %s): %s; payload %r (%d bytes)",
                           what, topic, route.mapper.topic.pattern, reason,
                           payload[:_SAMPLE_BYTES], len(payload))
