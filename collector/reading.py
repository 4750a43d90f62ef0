"""The one currency of the pipeline: a `Reading`.

A slotted dataclass rather than a pydantic model because millions pass through an agent
and each is built by a collector's hot loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Quality:
    """Good, or bad with a reason a person can act on."""

    good: bool
    reason: str = ""

    def __str__(self) -> str:
        return "good" if self.good else f"bad: {self.reason}"


GOOD = Quality(True)


def bad(reason: str) -> Quality:
    """A bad quality naming why (device, address, exception...)."""
    return Quality(False, reason)


@dataclass(slots=True)
class Reading:
    """One value of one metric of one asset at one instant.

    `ts` is seconds since the epoch in UTC (a float, cheap to compare and store);
    `value` is NaN when the quality is bad and there is no value at all.
    """

    asset: str
    metric: str
    value: float
    ts: float
    quality: Quality = GOOD
    unit: str = ""
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def good(self) -> bool:
        return self.quality.good and not math.isnan(self.value)

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)


class Emit(Protocol):
    """How a collector hands readings on; called on the event loop's thread.

    `on_stored`, when given, is called (on the loop's thread) once the readings are on
    disk: an MQTT collector acknowledges its QoS1 messages to the broker only then.
    """

    def __call__(self, readings: Sequence[Reading],
                 on_stored: Callable[[], None] | None = None) -> None: ...


@runtime_checkable
class Pausable(Protocol):
    """A collector that can stop taking input while the pipeline is behind (MQTT: the
    broker holds the rest); a polled one (Modbus) simply goes at its own pace."""

    def pause(self, paused: bool) -> None: ...


class Collector(Protocol):
    """A protocol adapter: turns bytes from devices into readings, knows nothing else."""

    name: str

    async def run(self, emit: Emit) -> None:
        """Collect until cancelled; never raise for a device or payload fault."""
        ...
