"""The window check: an aggregate (mean, min, max, sum, delta, count, p95) over a time
window, against limits."""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable
from typing import Any

from rules.checks.base import EARLY, INF, NONE, Checker, Judgement, limits_of
from rules.standard import Standard, WindowCheck


class WindowChecker(Checker):
    """An aggregate over the readings of the last `over` seconds, against limits."""

    __slots__ = ("_aggregate", "agg", "ordered", "over", "times", "total", "values")
    timed = True
    keeps_readings = True

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
        return {**limits_of(self.low, self.high), "agg": self.agg, "over": self.over}

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
