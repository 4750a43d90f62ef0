"""Counters an operator (or a test) reads to see each Modbus device is healthy: plain
integers, counted once per poll cycle, read by the agent's metrics at the scrape."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from common.metrics import BAD_REASONS


@dataclass(slots=True)
class DeviceStats:
    """One device's readings, bad ones by reason (`common.metrics.BAD_REASONS`), and when
    it last answered (epoch seconds; -inf: not yet)."""

    interval: float
    """Its most frequent polling, seconds: how soon its silence shows."""
    readings: int = 0
    bad: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_REASONS, 0))
    answered_at: float = -math.inf
