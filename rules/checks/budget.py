"""The budget check: a counter's consumption in the current calendar period."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rules.checks.base import COMPLIANT, INF, NONE, Checker, Judgement
from rules.standard import BudgetCheck, Standard


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
