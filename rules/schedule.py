"""`active:` schedules of a standard, e.g. `Mon-Fri 08:00-18:00; Sat 09:00-13:00`.

Clauses are separated by `;`. Each is `[DAYS] HH:MM-HH:MM` where DAYS is a day
(`Mon`), a range (`Mon-Fri`), a list (`Sat,Sun`), or `daily` (the default). A range that
ends before it starts crosses midnight (`22:00-06:00`) and belongs to the day it starts.
Evaluated in the site's time zone, so a schedule keeps its wall-clock meaning across DST.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from zoneinfo import ZoneInfo

from rules.errors import ScheduleError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LAST_MICROSECOND = 59.999999  # from a minute's start: the last instant surely inside it
_CLAUSE = re.compile(r"^\s*(?:(?P<days>[A-Za-z,\- ]+?)\s+)?"
                     r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")


def _minutes(text: str) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise ScheduleError(f"{text!r} is not a time of day (HH:MM)")
    return hours * 60 + minutes


def _days(text: str | None) -> frozenset[int]:
    if text is None or text.strip().lower() in ("daily", "*", "every day"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.replace(" ", "").lower().split(","):
        first, _, last = part.partition("-")
        try:
            start = DAYS.index(first[:3])
            end = DAYS.index(last[:3]) if last else start
        except ValueError:
            raise ScheduleError(f"{part!r} is not a day or range like Mon-Fri") from None
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))
    return frozenset(days)


class Schedule:
    """When a standard applies; `active(ts)` in the zone given to `bind`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.clauses: list[tuple[frozenset[int], int, int]] = []
        for clause in text.split(";"):
            match = _CLAUSE.match(clause)
            if not match:
                raise ScheduleError(f"{clause.strip()!r} is not like 'Mon-Fri 08:00-18:00'")
            start, end = _minutes(match["start"]), _minutes(match["end"])
            if start == end:
                raise ScheduleError(f"{clause.strip()!r} is empty: start equals end")
            self.clauses.append((_days(match["days"]), start, end))
        self.zone = ZoneInfo("UTC")
        # The engine asks `active` about instants close together (every pair of a standard
        # at each tick, reading after reading) and `active_until` about instants of one
        # stretch: answers are remembered (see `active` and `active_until`).
        self._minute = (math.inf, -math.inf, False)  # instants surely in one local minute
        self._unsure = (math.nan, False)  # a UTC minute asked about once, and its answer
        self._stretch = (math.inf, math.inf)  # an instant and its `active_until` (finite)

    def bind(self, zone: ZoneInfo) -> Schedule:
        bound = Schedule(self.text)
        bound.zone = zone
        return bound

    def active_until(self, ts: float) -> float:
        """When the active period containing `ts` ends (inf if it never does within 8
        days); `ts` itself when inactive. Minute steps: schedules have minute resolution.

        The steps are the minute boundaries after `ts`, so an instant between an earlier
        question and its answer (the first inactive boundary) has the same answer."""
        if not self.active(ts):
            return ts
        asked, until = self._stretch
        if asked <= ts < until:
            return until
        step = 60 - ts % 60  # to the next minute boundary, then by minutes
        for minute in range(8 * 24 * 60):
            moment = ts + step + minute * 60
            if not self.active(moment):
                self._stretch = (ts, moment)
                return moment
        return float("inf")

    def active(self, ts: float) -> bool:
        """Whether `ts` is inside the schedule, by its local day and minute.

        A datetime conversion costs about a microsecond, and the engine asks about many
        instants of the same minute: the second time a UTC minute is asked about, its span
        [start, start + 59.999999] is checked to lie in one local minute (the same local
        minute and UTC offset at both ends: zone changes fall on whole seconds, and
        `fromtimestamp` rounds to microseconds), and then answered without conversions.
        """
        first, last, answer = self._minute
        if first <= ts <= last:
            return answer
        answer = self._active_at(datetime.fromtimestamp(ts, self.zone))
        start = ts - ts % 60
        if ts - start <= _LAST_MICROSECOND:
            if self._unsure[0] == start:
                self._remember_minute(start, answer)
            else:
                self._unsure = (start, answer)
        return answer

    def _remember_minute(self, start: float, answer: bool) -> None:
        end = start + _LAST_MICROSECOND
        first, last = (datetime.fromtimestamp(t, self.zone) for t in (start, end))
        if first.utcoffset() == last.utcoffset() and (first.date(), first.hour, first.minute) \
                == (last.date(), last.hour, last.minute):
            self._minute = (start, end, answer)

    def _active_at(self, local: datetime) -> bool:
        day, minute = local.weekday(), local.hour * 60 + local.minute
        for days, start, end in self.clauses:
            if start < end:
                if day in days and start <= minute < end:
                    return True
            elif (day in days and minute >= start) or ((day - 1) % 7 in days and minute < end):
                return True
        return False
