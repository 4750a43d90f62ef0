"""Check kinds: each turns a stream of (time, value) into a judgement.

A checker only judges; timing (`for`, `clear_after`, schedules, chattering) is the
engine's. `observe` is called with good readings in time order; `tick(now)` lets checks
that time alone can change (stale, windows, transitions, budget periods) say so.
`deadband` is applied here, because "far enough back inside the limits" depends on
what is measured (a value, a rate, an aggregate, a consumption).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any
from zoneinfo import ZoneInfo

from rules.standard import (
    BudgetCheck,
    EqualsCheck,
    RangeCheck,
    RateCheck,
    StaleCheck,
    Standard,
    TransitionsCheck,
    WindowCheck,
)


class Judgement(IntEnum):
    NONE = 0  # nothing to say (no data in the window, ...)
    COMPLIANT = 1  # inside the limits by at least the deadband: a violation may end
    INBAND = 2  # inside the limits, but within the deadband: nothing changes
    VIOLATING = 3


def _judge(value: float, low: float | None, high: float | None, deadband: float) -> Judgement:
    if math.isnan(value):
        return Judgement.NONE
    if (low is not None and value < low) or (high is not None and value > high):
        return Judgement.VIOLATING
    if (low is None or value >= low + deadband) and (high is None or value <= high - deadband):
        return Judgement.COMPLIANT
    return Judgement.INBAND


def _limits(low: float | None, high: float | None) -> dict[str, float]:
    return {k: v for k, v in (("min", low), ("max", high)) if v is not None}


class Checker:
    """Base: a check judging single values against limits; subclasses keep history."""

    low: float | None = None
    high: float | None = None

    def __init__(self, standard: Standard) -> None:
        self.deadband = standard.deadband
        self.value = math.nan  # the judged quantity, for evidence

    def observe(self, ts: float, value: float) -> Judgement:
        self.value = value
        return _judge(value, self.low, self.high, self.deadband)

    def tick(self, now: float) -> tuple[Judgement, float]:
        """(judgement, when it became so); NONE when time alone changes nothing."""
        return Judgement.NONE, now

    timed = False
    """True when time alone can change the judgement (tick must be called)."""

    def outside(self, ts: float, value: float) -> None:
        """A reading outside the standard's schedule: not judged, but a baseline may move
        (the sensor is alive; a counter's night-time consumption is not the day's)."""
        return None

    def limit(self) -> dict[str, Any]:
        return _limits(self.low, self.high)

    def stats(self) -> dict[str, Any]:
        return {}

    def state(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        return None


class RangeChecker(Checker):
    def __init__(self, standard: Standard, check: RangeCheck) -> None:
        super().__init__(standard)
        self.low, self.high = check.min, check.max


class EqualsChecker(Checker):
    def __init__(self, standard: Standard, check: EqualsCheck) -> None:
        super().__init__(standard)
        self.expected = check.value

    def observe(self, ts: float, value: float) -> Judgement:
        self.value = value
        return Judgement.COMPLIANT if value == self.expected else Judgement.VIOLATING

    def limit(self) -> dict[str, Any]:
        return {"value": self.expected}


class RateChecker(Checker):
    """Violated when the value moved more than `max` within `per` (either direction)."""

    def __init__(self, standard: Standard, check: RateCheck) -> None:
        super().__init__(standard)
        self.high, self.per = check.max, check.per
        self.history: deque[tuple[float, float]] = deque()
        # monotonic deques: the window's lowest and highest values in O(1) per reading
        self._low: deque[tuple[float, float]] = deque()
        self._high: deque[tuple[float, float]] = deque()
        self.reference = math.nan

    def observe(self, ts: float, value: float) -> Judgement:
        history, low, high = self.history, self._low, self._high
        history.append((ts, value))
        while low and low[-1][1] >= value:
            low.pop()
        low.append((ts, value))
        while high and high[-1][1] <= value:
            high.pop()
        high.append((ts, value))
        start = ts - self.per
        while history[0][0] < start:
            history.popleft()
        while low[0][0] < start:
            low.popleft()
        while high[0][0] < start:
            high.popleft()
        down, up = value - low[0][1], high[0][1] - value
        self.reference = low[0][1] if down >= up else high[0][1]
        self.value = max(down, up)
        return _judge(self.value, None, self.high, self.deadband)

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


class StaleChecker(Checker):
    """Violated when no good reading came for `after`, by reading time and wall clock."""

    timed = True

    def __init__(self, standard: Standard, check: StaleCheck, started: float) -> None:
        super().__init__(standard)
        self.after = check.after
        self.last = started  # a sensor silent since start-up goes stale too

    def observe(self, ts: float, value: float) -> Judgement:
        if ts <= self.last:
            return Judgement.NONE  # a replayed or late reading says nothing about now
        self.last = ts
        self.value = 0.0
        return Judgement.COMPLIANT

    def outside(self, ts: float, value: float) -> None:
        self.last = max(self.last, ts)

    def tick(self, now: float) -> tuple[Judgement, float]:
        self.value = now - self.last
        if now - self.last > self.after:
            return Judgement.VIOLATING, self.last + self.after
        return Judgement.NONE, now

    def limit(self) -> dict[str, Any]:
        return {"after": self.after}

    def stats(self) -> dict[str, Any]:
        return {"silent_for": self.value, "last_reading_ts": self.last}

    def state(self) -> Any:
        return self.last

    def restore(self, state: Any) -> None:
        self.last = float(state)


class WindowChecker(Checker):
    """An aggregate over the readings of the last `over` seconds, against limits."""

    timed = True

    def __init__(self, standard: Standard, check: WindowCheck) -> None:
        super().__init__(standard)
        self.low, self.high = check.min, check.max
        self.agg, self.over = check.agg, check.over
        self.times: deque[float] = deque()
        self.values: deque[float] = deque()
        self.total = 0.0
        # min, max and p95 read a sorted copy kept up to date by bisection
        self.ordered: list[float] | None = [] if check.agg in ("min", "max", "p95") else None

    def observe(self, ts: float, value: float) -> Judgement:
        self.times.append(ts)
        self.values.append(value)
        self.total += value
        if self.ordered is not None:
            insort(self.ordered, value)
        self._expire(ts)
        return self._judge_window()

    def tick(self, now: float) -> tuple[Judgement, float]:
        if self.times and self.times[0] > now - self.over:
            return Judgement.NONE, now  # nothing left the window
        self._expire(now)
        return self._judge_window(), now

    def _expire(self, now: float) -> None:
        times, values, ordered = self.times, self.values, self.ordered
        while times and times[0] <= now - self.over:
            times.popleft()
            gone = values.popleft()
            self.total -= gone
            if ordered is not None:
                del ordered[bisect_left(ordered, gone)]
        if not times:
            self.total = 0.0  # no float drift carried across an empty window

    def _judge_window(self) -> Judgement:
        self.value = self._aggregate()
        return _judge(self.value, self.low, self.high, self.deadband)

    def _aggregate(self) -> float:
        values, agg = self.values, self.agg
        if agg == "count":
            return float(len(values))
        if not values:
            return math.nan
        if agg == "sum":
            return self.total
        if agg == "mean":
            return self.total / len(values)
        if agg == "delta":
            return values[-1] - values[0]
        ordered = self.ordered or []
        if agg == "min":
            return ordered[0]
        if agg == "max":
            return ordered[-1]
        # p95 with linear interpolation between closest ranks (numpy's default method)
        rank = 0.95 * (len(ordered) - 1)
        below = int(rank)
        above = min(below + 1, len(ordered) - 1)
        return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)

    def limit(self) -> dict[str, Any]:
        return {**_limits(self.low, self.high), "agg": self.agg, "over": self.over}

    def stats(self) -> dict[str, Any]:
        values = self.values
        if not values:
            return {"agg": self.agg, "value": self.value, "count": 0}
        return {"agg": self.agg, "value": self.value, "count": len(values),
                "mean": self.total / len(values), "min": min(values), "max": max(values)}

    def state(self) -> Any:
        return [list(self.times), list(self.values)]

    def restore(self, state: Any) -> None:
        self.times, self.values = deque(state[0]), deque(state[1])
        self.total = math.fsum(self.values)
        if self.ordered is not None:
            self.ordered = sorted(self.values)


class BudgetChecker(Checker):
    """Consumption of a counter in the current calendar period (site time zone).

    A reading lower than the one before is a counter reset: its whole value is new
    consumption. Periods are local calendar days, ISO weeks or months, so DST days of 23
    and 25 hours are a day each.
    """

    timed = True

    def __init__(self, standard: Standard, check: BudgetCheck, zone: ZoneInfo) -> None:
        super().__init__(standard)
        self.high, self.period, self.zone = check.max, check.period, zone
        self.current: float | None = None  # start of the current period (epoch seconds)
        self.ends = -math.inf  # start of the next period: a cheap test for every tick
        self.previous: float | None = None  # the counter's last value
        self.value = 0.0

    def outside(self, ts: float, value: float) -> None:
        self._roll(ts)
        self.previous = value

    def period_start(self, ts: float) -> float:
        local = datetime.fromtimestamp(ts, self.zone).replace(hour=0, minute=0, second=0,
                                                               microsecond=0)
        if self.period == "week":
            local -= timedelta(days=local.weekday())
        elif self.period == "month":
            local = local.replace(day=1)
        # re-localise: midnight's UTC offset may differ from ts's (DST)
        return local.replace(tzinfo=None).replace(tzinfo=self.zone).timestamp()

    def _roll(self, ts: float) -> bool:
        """Start a new period when `ts` is past the current one; True when it did."""
        if self.current is not None and self.current <= ts < self.ends:
            return False
        start = self.period_start(ts)
        if start == self.current:
            return False
        self.current, self.value = start, 0.0
        self.ends = self.period_start(start + 32 * 86400 if self.period == "month" else
                                      start + (8 if self.period == "week" else 1.5) * 86400)
        return True

    def observe(self, ts: float, value: float) -> Judgement:
        self._roll(ts)
        if self.previous is not None:
            self.value += value - self.previous if value >= self.previous else value
        self.previous = value
        return _judge(self.value, None, self.high, self.deadband)

    def tick(self, now: float) -> tuple[Judgement, float]:
        if self.current is not None and now >= self.ends and self._roll(now):
            return Judgement.COMPLIANT, self.current
        return Judgement.NONE, now

    def limit(self) -> dict[str, Any]:
        return {"max": self.high, "period": self.period}

    def stats(self) -> dict[str, Any]:
        return {"consumption": self.value, "period_start_ts": self.current}

    def state(self) -> Any:
        return [self.current, self.previous, self.value]

    def restore(self, state: Any) -> None:
        current, self.previous, value = state
        if current is not None:
            self._roll(current)
        self.value = value


class TransitionsChecker(Checker):
    """More than `max` changes to the value `to` within `per` (short cycling, trips)."""

    timed = True

    def __init__(self, standard: Standard, check: TransitionsCheck) -> None:
        super().__init__(standard)
        self.to, self.high, self.per = check.to, check.max, check.per
        self.previous: float | None = None
        self.changes: deque[float] = deque()

    def observe(self, ts: float, value: float) -> Judgement:
        if value == self.to and self.previous is not None and self.previous != self.to:
            self.changes.append(ts)
        self.previous = value
        return self._count(ts)

    def tick(self, now: float) -> tuple[Judgement, float]:
        if self.changes and self.changes[0] <= now - self.per:
            return self._count(now), now
        return Judgement.NONE, now

    def outside(self, ts: float, value: float) -> None:
        self.previous = value

    def _count(self, now: float) -> Judgement:
        while self.changes and self.changes[0] <= now - self.per:
            self.changes.popleft()
        self.value = float(len(self.changes))
        return Judgement.VIOLATING if self.value > self.high else Judgement.COMPLIANT

    def limit(self) -> dict[str, Any]:
        return {"to": self.to, "max": self.high, "per": self.per}

    def stats(self) -> dict[str, Any]:
        return {"transitions": int(self.value), "at": list(self.changes)}

    def state(self) -> Any:
        return [self.previous, list(self.changes)]

    def restore(self, state: Any) -> None:
        self.previous, self.changes = state[0], deque(state[1])


def make_checker(standard: Standard, *, zone: ZoneInfo, started: float) -> Checker:
    """The checker for a standard's kind (every kind of SPEC section 4)."""
    check = standard.check
    if isinstance(check, RangeCheck):
        return RangeChecker(standard, check)
    if isinstance(check, EqualsCheck):
        return EqualsChecker(standard, check)
    if isinstance(check, RateCheck):
        return RateChecker(standard, check)
    if isinstance(check, StaleCheck):
        return StaleChecker(standard, check, started)
    if isinstance(check, WindowCheck):
        return WindowChecker(standard, check)
    if isinstance(check, BudgetCheck):
        return BudgetChecker(standard, check, zone)
    return TransitionsChecker(standard, check)
