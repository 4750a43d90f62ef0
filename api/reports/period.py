"""Report windows: what `from` and `to` mean, the previous period, calendar months.

A window is the half-open interval [start, end) of aware UTC datetimes. People name it in
the site's timezone: a date `from` is that day's midnight; a date `to` is the last day
included (the window ends at the next midnight), as `GET /compliance` reads its days; a
datetime without an offset is site time. Compliance seconds are kept per UTC day, so the
time figures read whole UTC days: those whose date lies between the window's first and
last date in the site timezone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from api.errors import Invalid

DEFAULT_DAYS = 30
MAX_DAYS = 400


class BadPeriod(Invalid):
    """`from` not before `to`, a window over MAX_DAYS, or a date past the calendar."""


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) in UTC, and the timezone that names its days and months."""

    start: datetime
    end: datetime
    tz: ZoneInfo

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def previous(self) -> Window:
        """The window of the same length just before this one."""
        return Window(self.start - (self.end - self.start), self.start, self.tz)

    def days(self) -> tuple[str, str]:
        """The first and last UTC day (YYYY-MM-DD) whose compliance seconds count."""
        last = (self.end - timedelta(microseconds=1)).astimezone(self.tz).date()
        return self.start.astimezone(self.tz).date().isoformat(), last.isoformat()

    def months(self) -> list[tuple[str, Window]]:
        """The calendar months (site time) the window touches, each cut to the window."""
        months: list[tuple[str, Window]] = []
        local = self.start.astimezone(self.tz)
        first = date(local.year, local.month, 1)
        while True:
            following = next_month(first)
            start = max(self.start, _midnight(first, self.tz))
            end = min(self.end, _midnight(following, self.tz))
            if start >= self.end:
                return months
            if start < end:
                months.append((f"{first.year:04d}-{first.month:02d}",
                               Window(start, end, self.tz)))
            first = following


def next_month(day: date) -> date:
    """The first day of the month after `day`'s."""
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tz).astimezone(UTC)


def _bound(value: date | datetime, tz: ZoneInfo, *, end: bool) -> datetime:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=tz)).astimezone(UTC)
    try:
        return _midnight(value + timedelta(days=1) if end else value, tz)
    except OverflowError:
        raise BadPeriod(f"{value} is at the edge of the calendar") from None


def window_of(from_: date | datetime | None, to: date | datetime | None, *,
              timezone: str = "UTC", now: datetime | None = None) -> Window:
    """The window a request names; without `to` it ends tonight (site time), without
    `from` it starts DEFAULT_DAYS before its end."""
    tz = ZoneInfo(timezone)
    now = now or datetime.now(UTC)
    try:
        end = _bound(to, tz, end=True) if to is not None else \
            _bound(now.astimezone(tz).date(), tz, end=True)
        start = _bound(from_, tz, end=False) if from_ is not None else \
            end - timedelta(days=DEFAULT_DAYS)
        start.astimezone(tz) - (end - start)  # the previous period must exist too
    except OverflowError:
        raise BadPeriod("the window or the period before it reaches past the calendar") \
            from None
    if start.year < 2 or end.year > 9998:
        raise BadPeriod("the window reaches past the calendar")
    if start >= end:
        raise BadPeriod(f"from ({start.isoformat()}) is not before to ({end.isoformat()})")
    if end - start > timedelta(days=MAX_DAYS):
        raise BadPeriod(f"the window is over {MAX_DAYS} days")
    return Window(start, end, tz)


def moment(name: str, text: str | None) -> date | datetime | None:
    """A date (`2026-03-01`) or a datetime (`2026-03-01T08:00`, site time without an
    offset), as a report's window names them (`from`, `to`)."""
    if text is None or text == "":
        return None
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError:
        raise BadPeriod(f"{name} must be a date (2026-03-01) or a datetime "
                        f"(2026-03-01T08:00:00+08:00), not {text!r}") from None
