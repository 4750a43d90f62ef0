"""What every check shares: the judgements, the base Checker, and the engine's tick clock."""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from rules.standard import Standard


class Judgement(IntEnum):
    NONE = 0  # nothing to say (no data in the window, ...)
    COMPLIANT = 1  # inside the limits by at least the deadband: a violation may end
    INBAND = 2  # inside the limits, but within the deadband: nothing changes
    VIOLATING = 3


# Module-level names for the members: `Judgement.X` costs an enum attribute lookup (about
# 90 ns on CPython 3.11), and checkers return one for every reading.
NONE, COMPLIANT, INBAND, VIOLATING = (Judgement.NONE, Judgement.COMPLIANT, Judgement.INBAND,
                                      Judgement.VIOLATING)
INF = math.inf
EARLY = 1e-3
"""Seconds a `due` time is set before `t + duration`: the checks themselves compare
`t <= now - duration`, which may round the other way by an ulp (2.4e-7 s at today's epoch
seconds); waking a checker a little early is harmless, late would not be."""


def _unheard(due: float) -> None:
    """The alarm of a checker no engine listens to."""


def limits_of(low: float | None, high: float | None) -> dict[str, float]:
    return {k: v for k, v in (("min", low), ("max", high)) if v is not None}


class Checker:
    """Base: a check judging single values against limits; subclasses keep history.

    Checkers have `__slots__`: one per pair, touched at every reading, and a slotted object
    holds its attributes in itself (on CPython 3.11 other objects keep them in a separate
    block of memory: one more cache line to fetch).
    """

    __slots__ = ("above", "alarm", "below", "deadband", "due", "high", "low", "ok_high",
                 "ok_low", "value")

    timed = False
    """True when time alone can change the judgement (tick must be called)."""
    always = False
    """True when every tick must reach the checker, not only those from `due` on (a stale
    check under a schedule: see StaleChecker)."""
    keeps_readings = False
    """True when its `state()` is a history of readings (a window, a rate): saved with the
    evidence, less often than the rest (rules.saved)."""

    def __init__(self, standard: Standard) -> None:
        self.deadband = standard.deadband
        self.value = math.nan  # the judged quantity, for evidence
        self.low: float | None = None
        self.high: float | None = None
        # The earliest time at which `tick(now)` may say or change anything; the engine
        # ticks a timed checker only from then on. Kept up to date by the checker (a little
        # early is harmless); when it moves earlier outside `tick`, the checker calls
        # `alarm(due)`, which the engine sets: so `observe` need not ask every time.
        self.due = INF
        self.alarm: Callable[[float], None] = _unheard

    def _bounds(self) -> None:
        """Fold the limits and the deadband into four numbers (a missing limit is an
        infinity), so that `judge` is a few float comparisons."""
        low, high, deadband = self.low, self.high, self.deadband
        self.below = -INF if low is None else low
        self.above = INF if high is None else high
        self.ok_low = -INF if low is None else low + deadband
        self.ok_high = INF if high is None else high - deadband

    def judge(self, value: float) -> Judgement:
        """Violating outside the limits, compliant inside by the deadband, else in band;
        NONE for NaN. Needs `_bounds()` after the limits are set."""
        if value < self.below or value > self.above:
            return VIOLATING
        if self.ok_low <= value <= self.ok_high:
            return COMPLIANT
        return INBAND if value == value else NONE

    def observe(self, ts: float, value: float) -> Judgement:
        self.value = value
        return self.judge(value)

    def tick(self, now: float) -> tuple[Judgement, float]:
        """(judgement, when it became so); NONE when time alone changes nothing."""
        return NONE, now

    def outside(self, ts: float, value: float) -> None:
        """A reading outside the standard's schedule: not judged, but a baseline may move
        (the sensor is alive; a counter's night-time consumption is not the day's)."""
        return None

    def limit(self) -> dict[str, Any]:
        return limits_of(self.low, self.high)

    def stats(self) -> dict[str, Any]:
        return {}

    def state(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        return None



class TickClock:
    """The engine's latest tick, shared with the stale checks that read it lazily."""

    __slots__ = ("now", "ticks")

    def __init__(self) -> None:
        self.now = math.nan
        self.ticks = 0  # how many ticks so far

    def tick(self, now: float) -> None:
        self.now = now
        self.ticks += 1
