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
from collections.abc import Callable
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


def _limits(low: float | None, high: float | None) -> dict[str, float]:
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
        return _limits(self.low, self.high)

    def stats(self) -> dict[str, Any]:
        return {}

    def state(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        return None


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


class TickClock:
    """The engine's latest tick, shared with the stale checks that read it lazily."""

    __slots__ = ("now", "ticks")

    def __init__(self) -> None:
        self.now = math.nan
        self.ticks = 0  # how many ticks so far

    def tick(self, now: float) -> None:
        self.now = now
        self.ticks += 1


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


class WindowChecker(Checker):
    """An aggregate over the readings of the last `over` seconds, against limits."""

    __slots__ = ("_aggregate", "agg", "ordered", "over", "times", "total", "values")
    timed = True

    def __init__(self, standard: Standard, check: WindowCheck) -> None:
        super().__init__(standard)
        self.low, self.high = check.min, check.max
        self._bounds()
        self.agg, self.over = check.agg, check.over
        self.times: deque[float] = deque()
        self.values: deque[float] = deque()
        self.total = 0.0
        # min, max and p95 read a sorted copy kept up to date by bisection
        self.ordered: list[float] | None = [] if check.agg in ("min", "max", "p95") else None
        # the aggregate's own function, chosen once rather than by `agg` at every reading
        # (the function, not a bound method: that would be a reference cycle per window)
        self._aggregate: Callable[[WindowChecker], float] = getattr(WindowChecker,
                                                                     f"_{check.agg}")
        self._set_due()

    def _set_due(self) -> None:
        """Due when the oldest reading leaves the window; an empty window changes no more,
        except a count (0, judged at every tick)."""
        if self.times:
            self.due = self.times[0] + self.over - EARLY
        else:
            self.due = -INF if self.agg == "count" else INF

    def observe(self, ts: float, value: float) -> Judgement:
        times = self.times
        if not times:  # the oldest reading is this one: due when it leaves
            self.due = due = ts + self.over - EARLY
            self.alarm(due)
        times.append(ts)
        self.values.append(value)
        self.total += value
        if self.ordered is not None:
            insort(self.ordered, value)
        if times[0] <= ts - self.over:
            self._expire(ts)
        self.value = aggregate = self._aggregate(self)
        return self.judge(aggregate)

    def tick(self, now: float) -> tuple[Judgement, float]:
        if self.times and self.times[0] > now - self.over:
            self._set_due()
            return NONE, now  # nothing left the window
        self._expire(now)
        self._set_due()
        self.value = aggregate = self._aggregate(self)
        return self.judge(aggregate), now

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

    # The aggregates; an empty window has a count (0) and nothing else (NaN: no judgement).

    def _count(self) -> float:
        return float(len(self.values))

    def _mean(self) -> float:
        values = self.values
        return self.total / len(values) if values else math.nan

    def _sum(self) -> float:
        return self.total if self.values else math.nan

    def _delta(self) -> float:
        values = self.values
        return values[-1] - values[0] if values else math.nan

    def _min(self) -> float:
        ordered = self.ordered
        return ordered[0] if ordered else math.nan

    def _max(self) -> float:
        ordered = self.ordered
        return ordered[-1] if ordered else math.nan

    def _p95(self) -> float:
        """Linear interpolation between closest ranks (numpy's default method)."""
        ordered = self.ordered
        if not ordered:
            return math.nan
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
        try:
            self.total = math.fsum(self.values)
        except OverflowError:  # values near the float limit: inf, as adding them up gave
            self.total = sum(self.values)
        if self.ordered is not None:
            self.ordered = sorted(self.values)
        self._set_due()


class BudgetChecker(Checker):
    """Consumption of a counter in the current calendar period (site time zone).

    A reading lower than the one before is a counter reset: its whole value is new
    consumption. Periods are local calendar days, ISO weeks or months, so DST days of 23
    and 25 hours are a day each.
    """

    __slots__ = ("current", "ends", "period", "previous", "zone")
    timed = True

    def __init__(self, standard: Standard, check: BudgetCheck, zone: ZoneInfo) -> None:
        super().__init__(standard)
        self.high, self.period, self.zone = check.max, check.period, zone
        self._bounds()
        self.current: float | None = None  # start of the current period (epoch seconds)
        self.ends = -math.inf  # start of the next period: a cheap test for every tick
        self.due = INF  # no period yet: a tick has nothing to close
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
        self.ends = self.due = self.period_start(
            start + 32 * 86400 if self.period == "month" else
            start + (8 if self.period == "week" else 1.5) * 86400)
        self.alarm(self.due)
        return True

    def observe(self, ts: float, value: float) -> Judgement:
        current = self.current
        if current is None or not current <= ts < self.ends:  # _roll's own first test
            self._roll(ts)
        previous = self.previous
        if previous is not None:
            self.value += value - previous if value >= previous else value
        self.previous = value
        return self.judge(self.value)

    def tick(self, now: float) -> tuple[Judgement, float]:
        if self.current is not None and now >= self.ends and self._roll(now):
            return COMPLIANT, self.current
        return NONE, now

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

    __slots__ = ("changes", "per", "previous", "to")
    timed = True

    def __init__(self, standard: Standard, check: TransitionsCheck) -> None:
        super().__init__(standard)
        self.to, self.high, self.per = check.to, check.max, check.per
        self.previous: float | None = None
        self.changes: deque[float] = deque()
        self.due = INF

    def observe(self, ts: float, value: float) -> Judgement:
        if value == self.to and self.previous is not None and self.previous != self.to:
            self.changes.append(ts)
        self.previous = value
        return self._count(ts)

    def tick(self, now: float) -> tuple[Judgement, float]:
        if self.changes and self.changes[0] <= now - self.per:
            return self._count(now), now
        self._set_due()
        return NONE, now

    def outside(self, ts: float, value: float) -> None:
        self.previous = value

    def _count(self, now: float) -> Judgement:
        while self.changes and self.changes[0] <= now - self.per:
            self.changes.popleft()
        self._set_due()
        self.value = float(len(self.changes))
        return VIOLATING if self.value > self.high else COMPLIANT

    def _set_due(self) -> None:
        """Due when the oldest change expires."""
        due = self.changes[0] + self.per - EARLY if self.changes else INF
        earlier, self.due = due < self.due, due
        if earlier:
            self.alarm(due)

    def limit(self) -> dict[str, Any]:
        return {"to": self.to, "max": self.high, "per": self.per}

    def stats(self) -> dict[str, Any]:
        return {"transitions": int(self.value), "at": list(self.changes)}

    def state(self) -> Any:
        return [self.previous, list(self.changes)]

    def restore(self, state: Any) -> None:
        self.previous, self.changes = state[0], deque(state[1])
        self._set_due()


def make_checker(standard: Standard, *, zone: ZoneInfo, started: float,
                 clock: TickClock | None = None) -> Checker:
    """The checker for a standard's kind (every kind of SPEC section 4); `clock` lets a
    stale check outside any schedule be ticked only when due."""
    check = standard.check
    if isinstance(check, RangeCheck):
        return RangeChecker(standard, check)
    if isinstance(check, EqualsCheck):
        return EqualsChecker(standard, check)
    if isinstance(check, RateCheck):
        return RateChecker(standard, check)
    if isinstance(check, StaleCheck):
        return StaleChecker(standard, check, started,
                            clock if standard.active is None else None)
    if isinstance(check, WindowCheck):
        return WindowChecker(standard, check)
    if isinstance(check, BudgetCheck):
        return BudgetChecker(standard, check, zone)
    return TransitionsChecker(standard, check)
