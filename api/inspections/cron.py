"""Five-field cron expressions (`minute hour day-of-month month day-of-week`) and their
fire times in a time zone, without a dependency: the schedules of `inspections:` need
only the standard fields, and their behaviour across daylight-saving changes is ours to
define and test.

    *  a  a-b  a-b/n  */n  a/n  lists with `,`   month names jan-dec, day names sun-sat
    day of week 0-7 (0 and 7: Sunday)           @yearly @monthly @weekly @daily @hourly

As Vixie cron: when both the day of month and the day of week are restricted (neither
starts with `*`), a day matching either fires. Times are wall-clock times in the zone: a
time that does not exist (the hour skipped in spring) fires at the first instant after
the gap; a time that occurs twice (the hour repeated in autumn) fires once, the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@hourly": "0 * * * *"}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
           ("month", 1, 12, MONTHS), ("day of week", 0, 7, DAYS))
SEARCH_DAYS = 8 * 366 + 1
"""How far a search for the next fire time looks: 29 February comes within 8 years."""


class CronError(ValueError):
    """An expression that is not cron; the message names the field and the value."""


def _number(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    word = text.lower()
    if word in names:
        return names.index(word) + (1 if name == "month" else 0)
    if not text.isdigit():
        raise CronError(f"{name}: {text!r} is not a number"
                        + (f" or a name ({names[0]}-{names[-1]})" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name}: {value} is out of range {low}-{high}")
    return value


def _field(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        spread, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: step {step_text!r} is not a positive number")
            step = int(step_text)
        if spread == "*":
            first, last = low, high
        else:
            first_text, dash, last_text = spread.partition("-")
            first = _number(first_text, name, low, high, names)
            last = _number(last_text, name, low, high, names) if dash else \
                (high if step_text else first)
            if last < first:
                raise CronError(f"{name}: range {part!r} ends before it starts")
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression; `next_after` and `latest` give fire times in a zone."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 Sunday .. 6 Saturday
    any_day: bool  # day of month is `*`
    any_weekday: bool  # day of week is `*`

    @classmethod
    def parse(cls, text: str) -> Cron:
        """CronError naming the field and value for anything that is not cron."""
        source = MACROS.get(text.strip().lower(), text)
        parts = source.split()
        if len(parts) != 5:
            raise CronError(f"{text!r} has {len(parts)} fields; cron has 5 (minute hour "
                            "day-of-month month day-of-week), e.g. '0 8 * * *'")
        minutes, hours, days, months, weekdays = (
            _field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True))
        cron = cls(text, tuple(sorted(minutes)), tuple(sorted(hours)), days, months,
                   frozenset(d % 7 for d in weekdays), parts[2].startswith("*"),
                   parts[4].startswith("*"))
        if cron.next_after(datetime(2000, 1, 1, tzinfo=UTC), ZoneInfo("UTC")) is None:
            raise CronError(f"{text!r} never fires (no such day in any month)")
        return cron

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def _fires_on(self, day: date, zone: ZoneInfo) -> list[datetime]:
        """The instants the expression fires on a local day, in order, once each."""
        if not self._day_matches(day):
            return []
        instants = {_instant(datetime.combine(day, time(hour, minute)), zone)
                    for hour in self.hours for minute in self.minutes}
        return sorted(instants)

    def next_after(self, moment: datetime, zone: ZoneInfo) -> datetime | None:
        """The first fire time strictly after `moment` (aware), in UTC; None if none
        comes within SEARCH_DAYS."""
        day = moment.astimezone(zone).date() - timedelta(days=1)  # a gap may pull back
        for _ in range(SEARCH_DAYS):
            for instant in self._fires_on(day, zone):
                if instant > moment:
                    return instant
            day += timedelta(days=1)
        return None

    def latest(self, moment: datetime, zone: ZoneInfo) -> datetime | None:
        """The last fire time at or before `moment` (aware), in UTC; None if none within
        SEARCH_DAYS."""
        day = moment.astimezone(zone).date() + timedelta(days=1)
        for _ in range(SEARCH_DAYS):
            for instant in reversed(self._fires_on(day, zone)):
                if instant <= moment:
                    return instant
            day -= timedelta(days=1)
        return None


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall-clock time in `zone` as a UTC instant: the first of two in a repeated
    hour, the end of the gap for a time the clocks skipped."""
    first = local.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == local:
        return first.astimezone(UTC)
    # skipped: fold=1 reads the time with the offset after the change, an instant before
    # the change; the change itself lies between it and fold=0's reading
    low = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    low, high = min(low, high), max(low, high)
    after = high.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)
