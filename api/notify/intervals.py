"""Named time intervals (SPEC 7.2): whether one holds at an instant, and whether a route is
muted by them.

Pure: the instant is passed in. Times are wall-clock times in the interval's `location` or
the site's time zone, the way a rota is written:

- `HH:MM-HH:MM` holds from the start (included) to the end (excluded); `24:00` may end a
  range. An end at or before the start crosses midnight: `22:00-07:00` is one stretch
  that starts at 22:00 and ends at 07:00 the next morning.
- A stretch belongs to the weekday it starts on: with `weekdays: [fri]`, `22:00-07:00`
  holds from Friday 22:00 to Saturday 07:00, and not from Thursday 22:00 into Friday
  morning. That is how people say it ("Friday night"), and a weekday list keeps meaning
  the nights that begin on those days.
- Weekdays are `mon`...`sun` or ranges, `mon-fri`; a range may wrap, `fri-mon` is Friday to
  Monday. An empty list (of times or of weekdays) holds always; given lists must all hold.
- Daylight saving: the clock on the wall decides. In the spring the skipped hour is never
  held (a stretch over it is an hour shorter); in the autumn a repeated hour is held both
  times (a stretch over it is an hour longer).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from api.notify.config import WEEKDAYS, Route, TimeInterval

DAY = 24 * 60


def active(interval: TimeInterval, at: datetime, default_tz: str) -> bool:
    """Whether `interval` holds at `at` (an aware datetime)."""
    if at.tzinfo is None:
        raise ValueError("a time interval is judged at an aware datetime, not a naive one")
    local = at.astimezone(ZoneInfo(interval.location or default_tz))
    days = _weekdays(interval.weekdays)
    minute = local.hour * 60 + local.minute
    today, yesterday = local.date(), local.date() - timedelta(days=1)
    if not interval.times:
        return _on(today, days)
    for text in interval.times:
        start, end = _minutes(text)
        if start < end:
            if start <= minute < end and _on(today, days):
                return True
        elif (minute >= start and _on(today, days)) or (minute < end and _on(yesterday, days)):
            return True
    return False


def muted(route: Route, intervals: Mapping[str, TimeInterval], at: datetime,
          default_tz: str, severity: str | None) -> str | None:
    """Why `route` is muted at `at` ("mute night", "outside active workhours"), or None.
    A mute wins over an active interval; a severity in `mute_bypass` is never muted."""
    if severity is not None and severity in route.mute_bypass:
        return None
    for name in route.mute_time_intervals:
        if active(intervals[name], at, default_tz):
            return f"mute {name}"
    names = route.active_time_intervals
    if names and not any(active(intervals[name], at, default_tz) for name in names):
        return f"outside active {', '.join(names)}"
    return None


def _weekdays(entries: list[str]) -> frozenset[int] | None:
    """Weekday numbers (Monday 0) the entries name; None when there are none (any day)."""
    if not entries:
        return None
    days: set[int] = set()
    for entry in entries:
        first, _, last = entry.partition("-")
        start = WEEKDAYS.index(first)
        span = (WEEKDAYS.index(last) - start) % 7 if last else 0
        days.update((start + step) % 7 for step in range(span + 1))
    return frozenset(days)


def _on(day: date, days: frozenset[int] | None) -> bool:
    return days is None or day.weekday() in days


def _minutes(text: str) -> tuple[int, int]:
    """`22:00-07:00` -> (1320, 420): minutes since midnight of start and end."""
    start, end = text.split("-")
    return _minute(start), _minute(end)


def _minute(text: str) -> int:
    hours, minutes = text.split(":")
    return min(int(hours) * 60 + int(minutes), DAY)
