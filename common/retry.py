"""How long to wait before trying again: one rule for every writer that retries (the NC
forwarder, the TSDB writer, webhook deliveries, Modbus devices, the MQTT connection).

Exponential backoff with jitter, a server's `Retry-After` honoured but floored and capped.
"""

from __future__ import annotations

import math
import random
import time
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta or HTTP date), capped at 10 minutes."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, 600.0))


MAX_BACKOFF = 60.0
"""The longest wait between retries unless a setting says otherwise (`forward.max_backoff`,
`influxdb.max_backoff`; a Modbus device that does not answer)."""

RETRY_AFTER_FLOOR = 1.0
"""A `Retry-After` below this is raised to it: `Retry-After: 0` taken literally made a
writer retry about 90 times a second, each attempt an fsynced write."""


def retry_delay(retry_after: str | float | None, attempt: int, *, base: float, cap: float,
                spread: tuple[float, float] = (0.5, 1.0)) -> float:
    """Seconds before retry `attempt` (1 = the first retry).

    A server's `Retry-After` (header text or seconds) wins, floored at RETRY_AFTER_FLOOR and
    capped at `cap`, plus up to a quarter more so waiting clients do not return together.
    Without one: `base` doubling per attempt up to `cap`, times a random factor in `spread`.
    """
    seconds = (retry_after_seconds(retry_after) if isinstance(retry_after, str)
               else retry_after)
    if seconds is not None and math.isfinite(seconds):
        wait = min(cap, max(seconds, 0.0) * random.uniform(1.0, 1.25))
        return max(RETRY_AFTER_FLOOR, wait)
    # the exponent is capped: 2 ** 1024 overflows a float after ~17 h of failures
    return min(cap, base * 2 ** min(max(attempt, 1) - 1, 30)) * random.uniform(*spread)


class Backoff:
    """Consecutive failures of one writer and the wait each one earns.

    `failed()` counts a failure and returns the seconds to wait; `succeeded()` starts over
    and says whether there had been failures (for an "again" log line).
    """

    def __init__(self, *, base: float, cap: float,
                 spread: tuple[float, float] = (0.5, 1.0)) -> None:
        self.base = base
        self.cap = cap
        self.spread = spread
        self.failures = 0

    def failed(self, retry_after: str | float | None = None) -> float:
        self.failures += 1
        return retry_delay(retry_after, self.failures, base=self.base, cap=self.cap,
                           spread=self.spread)

    def succeeded(self) -> bool:
        had = self.failures > 0
        self.failures = 0
        return had
