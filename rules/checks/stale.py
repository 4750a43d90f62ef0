"""The stale check: a sensor silent too long, by reading time and the engine's clock."""

from __future__ import annotations

import math
from typing import Any

from rules.checks.base import COMPLIANT, EARLY, NONE, VIOLATING, Checker, Judgement, TickClock
from rules.standard import StaleCheck, Standard


class StaleChecker(Checker):
    """Violated when no good reading came for `after`, by reading time and wall clock.

    Its `value` (seconds silent) is `now - last` as of the latest tick, or 0 after a newer
    reading. Given the engine's clock it is worked out when read, so that the engine need
    only tick the check once it may be stale (`due`); without one (a check under a
    schedule, whose ticks outside it do not count) every tick must refresh it.
    """

    __slots__ = ("_ticks", "_value", "after", "always", "clock", "last")
    timed = True

    def __init__(self, standard: Standard, check: StaleCheck, started: float,
                 clock: TickClock | None = None) -> None:
        self.clock = clock
        self.always = clock is None
        self._value, self._ticks = math.nan, 0  # `value` as set, and when (clock ticks)
        super().__init__(standard)
        self.after = check.after
        self.last = started  # a sensor silent since start-up goes stale too
        self.due = started + self.after - EARLY

    @property
    def value(self) -> float:
        clock = self.clock
        if clock is not None and clock.ticks != self._ticks:
            return clock.now - self.last  # what the ticks since would have set
        return self._value

    @value.setter
    def value(self, value: float) -> None:
        self._value = value
        self._ticks = self.clock.ticks if self.clock is not None else 0

    def observe(self, ts: float, value: float) -> Judgement:
        if ts <= self.last:
            return NONE  # a replayed or late reading says nothing about now
        self.last = ts
        self.value = 0.0
        self.due = ts + self.after - EARLY
        return COMPLIANT

    def outside(self, ts: float, value: float) -> None:
        self.last = max(self.last, ts)
        self.due = self.last + self.after - EARLY

    def tick(self, now: float) -> tuple[Judgement, float]:
        self.value = now - self.last
        if now - self.last > self.after:
            return VIOLATING, self.last + self.after
        return NONE, now

    def limit(self) -> dict[str, Any]:
        return {"after": self.after}

    def stats(self) -> dict[str, Any]:
        return {"silent_for": self.value, "last_reading_ts": self.last}

    def state(self) -> Any:
        return self.last

    def restore(self, state: Any) -> None:
        self.last = float(state)
        self.due = self.last + self.after - EARLY
