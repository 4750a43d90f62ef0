"""Checks on each value as it comes: range, equals, and rate of change."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from rules.checks.base import COMPLIANT, INBAND, NONE, VIOLATING, Checker, Judgement
from rules.standard import EqualsCheck, RangeCheck, RateCheck, Standard


class RangeChecker(Checker):
    __slots__ = ()

    def __init__(self, standard: Standard, check: RangeCheck) -> None:
        super().__init__(standard)
        self.low, self.high = check.min, check.max
        self._bounds()

    def observe(self, ts: float, value: float) -> Judgement:
        # `judge` written out: range is the commonest check, and a call costs as much
        self.value = value
        if value < self.below or value > self.above:
            return VIOLATING
        if self.ok_low <= value <= self.ok_high:
            return COMPLIANT
        return INBAND if value == value else NONE


class EqualsChecker(Checker):
    __slots__ = ("expected",)

    def __init__(self, standard: Standard, check: EqualsCheck) -> None:
        super().__init__(standard)
        self.expected = check.value

    def observe(self, ts: float, value: float) -> Judgement:
        self.value = value
        return COMPLIANT if value == self.expected else VIOLATING

    def limit(self) -> dict[str, Any]:
        return {"value": self.expected}


class RateChecker(Checker):
    """Violated when the value moved more than `max` within `per` (either direction)."""

    __slots__ = ("_high", "_low", "history", "per", "reference")
    keeps_readings = True

    def __init__(self, standard: Standard, check: RateCheck) -> None:
        super().__init__(standard)
        self.high, self.per = check.max, check.per
        self._bounds()
        self.history: deque[tuple[float, float]] = deque()
        # monotonic deques: the window's lowest and highest values in O(1) per reading
        self._low: deque[tuple[float, float]] = deque()
        self._high: deque[tuple[float, float]] = deque()
        self.reference = math.nan

    def observe(self, ts: float, value: float) -> Judgement:
        history, low, high = self.history, self._low, self._high
        reading = (ts, value)
        history.append(reading)
        while low and low[-1][1] >= value:
            low.pop()
        low.append(reading)
        while high and high[-1][1] <= value:
            high.pop()
        high.append(reading)
        start = ts - self.per
        while history[0][0] < start:
            history.popleft()
        while low[0][0] < start:
            low.popleft()
        while high[0][0] < start:
            high.popleft()
        lowest, highest = low[0][1], high[0][1]
        down, up = value - lowest, highest - value
        self.reference = lowest if down >= up else highest
        self.value = change = up if up > down else down  # max(down, up), without the call
        return self.judge(change)

    def limit(self) -> dict[str, Any]:
        return {"max": self.high, "per": self.per}

    def stats(self) -> dict[str, Any]:
        return {"change": self.value, "from": self.reference, "readings": len(self.history)}

    def state(self) -> Any:
        return list(self.history)

    def restore(self, state: Any) -> None:
        saved, self.history = list(state), deque()
        self._low.clear()
        self._high.clear()
        for ts, value in saved:  # replaying rebuilds the deques, the value and reference
            self.observe(float(ts), float(value))
