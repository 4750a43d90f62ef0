"""Counters an operator (or a test) reads to see the MQTT collector is healthy."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class SubscriptionStats:
    """Counters for one subscription; `partial_payloads` mapped some metrics, not all."""

    messages: int = 0
    readings: int = 0
    bad_payloads: int = 0
    partial_payloads: int = 0
    unknown_assets: int = 0
    """Messages refused because their asset is not in site.yaml (see accept_unknown_assets)."""
    last_reading: float = -math.inf
    """Arrival time (epoch seconds) of the last message that gave readings."""


@dataclass(slots=True)
class MqttStats:
    """Counters for the whole collector, summed over its connections (one, or two when
    QoS 0 and QoS 1 subscriptions are mixed: see `collector.mqtt.client`)."""

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
    """True while every connection is up."""
    subscribed: bool = False
    """True once the broker acknowledged every subscription of every current connection."""
    subscriptions: dict[str, SubscriptionStats] = field(default_factory=dict)
