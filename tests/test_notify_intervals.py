"""Named time intervals (SPEC 7.2): midnight, weekdays, time zones and daylight saving, and
how mutes, active intervals and `mute_bypass` decide whether a route is muted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from api.notify.config import Route, TimeInterval
from api.notify.intervals import active, muted

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def interval(**keys: Any) -> TimeInterval:
    return TimeInterval.model_validate({"name": "i", **keys})


def local(text: str, zone: tzinfo = UTC) -> datetime:
    """An aware time from `2026-12-04 23:00` (2026-12-04 is a Friday)."""
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def minutes_held(spec: TimeInterval, start: datetime, hours: int, tz: str) -> int:
    """Minutes of real time, from `start` (UTC) on, in which `spec` holds."""
    return sum(active(spec, start + timedelta(minutes=m), tz) for m in range(hours * 60))


@pytest.mark.parametrize(("at", "held"), [
    ("2026-12-04 21:59", False), ("2026-12-04 22:00", True), ("2026-12-04 23:59", True),
    ("2026-12-05 00:00", True), ("2026-12-05 06:59", True), ("2026-12-05 07:00", False),
    ("2026-12-05 12:00", False),
])
def test_a_range_crosses_midnight_start_included_end_excluded(at: str, held: bool) -> None:
    assert active(interval(times=["22:00-07:00"]), local(at), "UTC") is held


@pytest.mark.parametrize(("at", "held"), [
    ("2026-12-03 23:00", False),  # Thursday night
    ("2026-12-04 03:00", False),  # Friday morning: still Thursday's night
    ("2026-12-04 23:00", True),   # Friday night...
    ("2026-12-05 03:00", True),   # ...until Saturday 07:00
    ("2026-12-05 23:00", False),  # Saturday night
])
def test_a_night_belongs_to_the_weekday_it_starts_on(at: str, held: bool) -> None:
    spec = interval(times=["22:00-07:00"], weekdays=["fri"])
    assert active(spec, local(at), "UTC") is held


def test_24_00_ends_a_range_at_midnight() -> None:
    spec = interval(times=["18:00-24:00"])
    assert active(spec, local("2026-12-04 23:59"), "UTC")
    assert not active(spec, local("2026-12-05 00:00"), "UTC")
    assert not active(spec, local("2026-12-04 17:59"), "UTC")


def test_several_ranges_any_of_them_holds() -> None:
    spec = interval(times=["08:00-12:00", "13:00-17:00"])
    assert [active(spec, local(f"2026-12-04 {t}"), "UTC") for t in
            ("07:59", "08:00", "12:00", "12:59", "13:00", "16:59", "17:00")] == [
        False, True, False, False, True, True, False]


def test_weekday_ranges_and_wrapping_ranges() -> None:
    days = [local(f"2026-12-{d:02d} 12:00") for d in range(7, 14)]  # Monday to Sunday
    workdays = interval(weekdays=["mon-fri"])
    weekend = interval(weekdays=["fri-mon"])
    mixed = interval(weekdays=["Wed", "sat-sun"])
    assert [active(workdays, d, "UTC") for d in days] == [True] * 5 + [False] * 2
    assert [active(weekend, d, "UTC") for d in days] == [True, False, False, False, True,
                                                         True, True]
    assert [active(mixed, d, "UTC") for d in days] == [False, False, True, False, False,
                                                       True, True]


def test_empty_lists_hold_always() -> None:
    at = local("2026-12-04 03:00")
    assert active(interval(), at, "UTC")
    assert active(interval(weekdays=["fri"]), at, "UTC")
    assert not active(interval(weekdays=["sat"]), at, "UTC")
    assert active(interval(times=["00:00-24:00"]), at, "UTC")


def test_an_end_equal_to_the_start_is_a_whole_day_from_it() -> None:
    spec = interval(times=["08:00-08:00"], weekdays=["fri"])
    assert active(spec, local("2026-12-04 08:00"), "UTC")
    assert active(spec, local("2026-12-05 07:59"), "UTC")
    assert not active(spec, local("2026-12-05 08:00"), "UTC")
    assert not active(spec, local("2026-12-04 07:59"), "UTC")


def test_the_site_time_zone_decides_the_day_and_hour() -> None:
    """Friday 15:30 UTC is Friday 23:30 in Shanghai: a Friday night there, not in UTC."""
    spec = interval(times=["22:00-07:00"], weekdays=["fri"])
    at = local("2026-12-04 15:30")
    assert active(spec, at, "Asia/Shanghai")
    assert not active(spec, at, "UTC")
    # Saturday 23:30 UTC is Sunday 07:30 in Shanghai: past the end of Saturday's night
    assert not active(interval(times=["22:00-07:00"], weekdays=["sat"]),
                      local("2026-12-05 23:30"), "Asia/Shanghai")
    assert active(interval(times=["22:00-07:00"], weekdays=["sat"]),
                  local("2026-12-05 22:30"), "Asia/Shanghai")


def test_the_intervals_own_location_wins_over_the_site() -> None:
    spec = interval(times=["22:00-07:00"], location="Asia/Shanghai")
    assert active(spec, local("2026-12-04 15:30"), "UTC")
    assert active(spec, local("2026-12-04 23:30", SHANGHAI), "Europe/Berlin")


def test_a_location_that_is_no_time_zone_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="'Asia' is not an IANA time zone"):
        interval(location="Asia")
    with pytest.raises(ValidationError, match="'Mars/Base' is not an IANA time zone"):
        interval(location="Mars/Base")


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        active(interval(), datetime(2026, 12, 4, 12, 0), "UTC")


def test_spring_forward_in_berlin_skips_the_missing_hour() -> None:
    """2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC)."""
    day = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 local
    assert minutes_held(interval(times=["02:00-03:00"]), day, 24, "Europe/Berlin") == 0
    assert minutes_held(interval(times=["01:00-03:30"]), day, 24, "Europe/Berlin") == 90
    assert active(interval(times=["01:00-03:30"]), local("2026-03-29 01:59", BERLIN),
                  "Europe/Berlin")
    assert active(interval(times=["03:00-04:00"]), datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
                  "Europe/Berlin")
    # the night across the switch is an hour short: 22:00 CET to 07:00 CEST is 8 hours
    night = interval(times=["22:00-07:00"], weekdays=["sat"])
    noon = datetime(2026, 3, 28, 11, 0, tzinfo=UTC)
    assert minutes_held(night, noon, 24, "Europe/Berlin") == 8 * 60


def test_fall_back_in_berlin_holds_the_repeated_hour_twice() -> None:
    """2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:xx happens twice."""
    day = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # 00:00 CEST
    assert minutes_held(interval(times=["02:00-03:00"]), day, 25, "Europe/Berlin") == 120
    assert active(interval(times=["02:00-03:00"]), datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
                  "Europe/Berlin")
    assert active(interval(times=["02:00-03:00"]), datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
                  "Europe/Berlin")
    night = interval(times=["22:00-07:00"], weekdays=["sat"])
    noon = datetime(2026, 10, 24, 10, 0, tzinfo=UTC)
    assert minutes_held(night, noon, 24, "Europe/Berlin") == 10 * 60


def test_shanghai_has_no_switch() -> None:
    night = interval(times=["22:00-07:00"], weekdays=["sat"])
    noon = datetime(2026, 3, 28, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    assert minutes_held(night, noon, 24, "Asia/Shanghai") == 9 * 60


# --- muted -------------------------------------------------------------------------------

INTERVALS = {
    "night": interval(times=["22:00-07:00"]).model_copy(update={"name": "night"}),
    "lunch": interval(times=["12:00-13:00"]).model_copy(update={"name": "lunch"}),
    "workhours": interval(times=["08:00-18:00"], weekdays=["mon-fri"]).model_copy(
        update={"name": "workhours"}),
    "weekend": interval(weekdays=["sat-sun"]).model_copy(update={"name": "weekend"}),
}


def route(**keys: Any) -> Route:
    return Route.model_validate({"channels": ["a"], **keys})


def test_a_mute_interval_mutes_while_it_holds() -> None:
    r = route(mute_time_intervals=["night"])
    assert muted(r, INTERVALS, local("2026-12-04 23:00"), "UTC", "major") == "mute night"
    assert muted(r, INTERVALS, local("2026-12-04 21:00"), "UTC", "major") is None


def test_outside_every_active_interval_is_muted() -> None:
    r = route(active_time_intervals=["workhours", "weekend"])
    assert muted(r, INTERVALS, local("2026-12-04 10:00"), "UTC", "minor") is None
    assert muted(r, INTERVALS, local("2026-12-05 03:00"), "UTC", "minor") is None
    assert muted(r, INTERVALS, local("2026-12-04 19:00"), "UTC", "minor") == (
        "outside active workhours, weekend")


def test_a_mute_wins_over_an_active_interval() -> None:
    r = route(mute_time_intervals=["lunch"], active_time_intervals=["workhours"])
    assert muted(r, INTERVALS, local("2026-12-04 12:30"), "UTC", "major") == "mute lunch"
    assert muted(r, INTERVALS, local("2026-12-04 11:30"), "UTC", "major") is None


def test_bypass_severities_are_never_muted() -> None:
    r = route(mute_time_intervals=["night"], active_time_intervals=["workhours"])
    at_night = local("2026-12-04 23:00")
    assert muted(r, INTERVALS, at_night, "UTC", "critical") is None  # the default bypass
    assert muted(r, INTERVALS, at_night, "UTC", "major") == "mute night"
    assert muted(r, INTERVALS, at_night, "UTC", None) == "mute night"
    strict = route(mute_time_intervals=["night"], mute_bypass=[])
    assert muted(strict, INTERVALS, at_night, "UTC", "critical") == "mute night"
    loose = route(mute_time_intervals=["night"], mute_bypass=["major", "critical"])
    assert muted(loose, INTERVALS, at_night, "UTC", "major") is None


def test_mutes_are_judged_in_the_sites_time_zone() -> None:
    r = route(mute_time_intervals=["night"])
    at = local("2026-12-04 15:30")  # 23:30 in Shanghai
    assert muted(r, INTERVALS, at, "Asia/Shanghai", "major") == "mute night"
    assert muted(r, INTERVALS, at, "UTC", "major") is None
