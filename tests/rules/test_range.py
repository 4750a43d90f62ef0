"""The rules engine on per-value checks (range, equals): on-delay, off-delay, deadband, events.

Readings carry explicit timestamps (seconds from T0); the engine has no clock of its own,
so every expectation below is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.reading import Reading, bad
from rules.engine import EVIDENCE_READINGS, Engine
from rules.events import CONTRACT_VERSION, Event, iso
from rules.standard import Asset, Standard

T0 = 1_795_593_600.0  # 2026-11-25T08:00:00Z
MIN = 60.0
SITE = "tower-a"
CHILLER = Asset(id="CH-1", type="chiller", name="Chiller 1", location="B2",
                department="engineering", tags={"building": "A"})


def make_standard(**fields: Any) -> Standard:
    """A range 6..8 on chw_supply_temp unless `fields` say otherwise (`for` spelled `for_`)."""
    data: dict[str, Any] = {"id": "HVAC-CHW", "title": "CHW supply 6-8 degC",
                            "metric": "chw_supply_temp", "check": {"min": 6, "max": 8}}
    if "for_" in fields:
        fields["for"] = fields.pop("for_")
    data.update(fields)
    return Standard.model_validate(data)


def make_engine(*standards: Standard, assets: Sequence[Asset] = (CHILLER,)) -> Engine:
    return Engine(SITE, assets, standards or (make_standard(),))


def reading(minute: float, value: float, *, asset: str = "CH-1",
            metric: str = "chw_supply_temp", good: bool = True) -> Reading:
    quality = {} if good else {"quality": bad("timeout")}
    return Reading(asset, metric, value, T0 + minute * MIN, **quality)


def feed(engine: Engine, values: Sequence[float | None], *, first_minute: float = 0,
         **kwargs: Any) -> list[Event]:
    """One reading a minute from `first_minute`; None is a bad-quality reading."""
    readings = [
        reading(first_minute + i, math.nan if v is None else v, good=v is not None, **kwargs)
        for i, v in enumerate(values)
    ]
    return engine.observe(readings)


def timeline(events: Sequence[Event]) -> list[tuple[str, float, float]]:
    """(type, episode start minute, event minute) of each event."""
    return [(e.type, (e.episode_start - T0) / MIN, (e.at - T0) / MIN) for e in events]


# --- on-delay (`for`) ------------------------------------------------------------------


def test_without_for_the_first_violating_reading_starts_a_violation() -> None:
    events = feed(make_engine(), [7, 7.5, 9.4, 9.5])
    assert timeline(events) == [("violation_started", 2, 2)]


def test_for_waits_until_the_violation_has_persisted() -> None:
    engine = make_engine(make_standard(for_="10m"))
    assert feed(engine, [9.0] * 10) == []  # minutes 0..9: 9 minutes of violation
    assert timeline(feed(engine, [9.0], first_minute=10)) == [("violation_started", 0, 10)]


def test_one_compliant_reading_resets_the_on_delay() -> None:
    engine = make_engine(make_standard(for_="10m"))
    events = feed(engine, [9.0] * 6 + [7.0] + [9.0] * 11)  # compliant at minute 6
    assert timeline(events) == [("violation_started", 7, 17)]


def test_tick_fires_the_on_delay_without_a_new_reading() -> None:
    engine = make_engine(make_standard(for_="10m"))
    feed(engine, [7.0, 9.0])
    assert engine.tick(T0 + 10.5 * MIN) == []
    assert timeline(engine.tick(T0 + 11 * MIN)) == [("violation_started", 1, 11)]
    assert engine.tick(T0 + 12 * MIN) == []


def test_one_event_per_episode() -> None:
    engine = make_engine()
    events = feed(engine, [9.0] * 30)
    assert timeline(events) == [("violation_started", 0, 0)]
    assert engine.tick(T0 + 60 * MIN) == []


def test_below_min_is_a_violation_too() -> None:
    assert timeline(feed(make_engine(), [5.9])) == [("violation_started", 0, 0)]


def test_limits_themselves_comply() -> None:
    assert feed(make_engine(), [6.0, 8.0, 6.0]) == []


# --- recovery: deadband and off-delay (`clear_after`) ----------------------------------


def test_back_in_range_clears() -> None:
    events = feed(make_engine(), [9.0, 9.2, 7.0, 7.1])
    assert timeline(events) == [("violation_started", 0, 0), ("violation_cleared", 0, 2)]


def test_deadband_keeps_the_violation_inside_its_margin() -> None:
    engine = make_engine(make_standard(deadband=0.5))
    events = feed(engine, [9.0, 8.0, 7.6, 7.5, 7.0])  # 8.0 and 7.6 are within the margin
    assert timeline(events) == [("violation_started", 0, 0), ("violation_cleared", 0, 3)]


def test_deadband_applies_to_min_as_well() -> None:
    engine = make_engine(make_standard(deadband=0.5))
    events = feed(engine, [5.0, 6.4, 6.5])
    assert timeline(events) == [("violation_started", 0, 0), ("violation_cleared", 0, 2)]


def test_clear_after_waits_for_recovery_to_persist() -> None:
    engine = make_engine(make_standard(clear_after="5m"))
    events = feed(engine, [9.0] + [7.0] * 7)  # recovered from minute 1
    assert timeline(events) == [("violation_started", 0, 0), ("violation_cleared", 0, 6)]


def test_slipping_back_resets_the_off_delay() -> None:
    engine = make_engine(make_standard(clear_after="5m"))
    values = [9.0, 7.0, 7.0, 7.0, 9.0] + [7.0] * 6  # slipped back at minute 4
    assert timeline(feed(engine, values)) == [
        ("violation_started", 0, 0), ("violation_cleared", 0, 10)]


def test_slipping_into_the_deadband_resets_the_off_delay() -> None:
    engine = make_engine(make_standard(clear_after="5m", deadband=0.5))
    values = [9.0, 7.0, 7.0, 7.9] + [7.0] * 6  # 7.9: in limits, not by the deadband
    assert timeline(feed(engine, values)) == [
        ("violation_started", 0, 0), ("violation_cleared", 0, 9)]


def test_tick_fires_the_off_delay() -> None:
    engine = make_engine(make_standard(clear_after="5m"))
    feed(engine, [9.0, 7.0])
    assert engine.tick(T0 + 5 * MIN) == []
    assert timeline(engine.tick(T0 + 6 * MIN)) == [("violation_cleared", 0, 6)]


def test_a_new_episode_after_clearing() -> None:
    events = feed(make_engine(), [9.0, 7.0, 7.0, 9.5])
    assert timeline(events) == [("violation_started", 0, 0), ("violation_cleared", 0, 1),
                                ("violation_started", 3, 3)]


# --- readings the engine must not judge -------------------------------------------------


def test_bad_quality_and_nan_readings_are_ignored() -> None:
    engine = make_engine(make_standard(for_="2m"))
    events = engine.observe([
        reading(0, 9.0),
        reading(1, 7.0, good=False),  # bad quality: would have reset the on-delay
        reading(1.5, math.nan),
        reading(2, 9.0),
    ])
    assert timeline(events) == [("violation_started", 0, 2)]
    assert feed(make_engine(), [None, None]) == []


def test_out_of_order_readings_are_ignored_and_counted() -> None:
    engine = make_engine()
    engine.observe([reading(5, 7.0)])
    assert engine.observe([reading(4, 9.0), reading(3, 9.5)]) == []
    assert engine.out_of_order == 2
    assert timeline(engine.observe([reading(5, 9.0)])) == [("violation_started", 5, 5)]
    assert engine.out_of_order == 2


def test_out_of_order_counts_readings_not_standards() -> None:
    # Two standards on the same metric: one late reading is still one late reading.
    engine = make_engine(make_standard(), make_standard(id="HVAC-CHW-HIGH", check={"max": 10}))
    engine.observe([reading(5, 7.0), reading(4, 7.0)])
    assert engine.out_of_order == 1


def test_other_metrics_and_assets_are_not_judged() -> None:
    engine = make_engine()
    assert feed(engine, [99.0], metric="chw_return_temp") == []
    assert feed(engine, [99.0], asset="CH-2") == []


# --- which assets a standard applies to ------------------------------------------------

PUMP = Asset(id="P-1", type="pump", tags={"building": "A"})
CHILLER_B = Asset(id="CH-2", type="chiller", tags={"building": "B"})
ASSETS = (CHILLER, PUMP, CHILLER_B)


def violating_assets(standard: Standard) -> list[str]:
    engine = make_engine(standard, assets=ASSETS)
    events = engine.observe([reading(0, 9.0, asset=a.id) for a in ASSETS])
    return [e.asset_id for e in events]


def test_applies_to_every_asset_without_selectors() -> None:
    assert violating_assets(make_standard()) == ["CH-1", "P-1", "CH-2"]


def test_applies_to_named_assets() -> None:
    assert violating_assets(make_standard(applies_to={"assets": ["P-1", "CH-2"]})) == [
        "P-1", "CH-2"]


def test_applies_to_asset_types() -> None:
    assert violating_assets(make_standard(applies_to={"asset_types": ["chiller"]})) == [
        "CH-1", "CH-2"]


def test_applies_to_tags() -> None:
    assert violating_assets(make_standard(applies_to={"tags": {"building": "A"}})) == [
        "CH-1", "P-1"]


def test_every_selector_must_match() -> None:
    selectors = {"asset_types": ["chiller"], "tags": {"building": "B"}}
    assert violating_assets(make_standard(applies_to=selectors)) == ["CH-2"]
    engine = make_engine(make_standard(applies_to=selectors), assets=ASSETS)
    assert engine.pairs == 1


# --- equals ----------------------------------------------------------------------------


def test_equals_check() -> None:
    engine = make_engine(make_standard(metric="running", check={"kind": "equals", "value": 1}))
    events = feed(engine, [1, 1, 0, 0, 1], metric="running")
    assert timeline(events) == [("violation_started", 2, 2), ("violation_cleared", 2, 4)]
    assert events[0].limit == {"value": 1}
    assert events[0].value == 0


# --- evidence, ids and the wire form ---------------------------------------------------


def test_evidence_holds_value_limit_and_readings_of_the_episode() -> None:
    engine = make_engine(make_standard(for_="2m"))
    events = feed(engine, [7.0, 8.5, 8.9, 9.4])
    assert timeline(events) == [("violation_started", 1, 3)]
    started = events[0]
    assert started.value == 9.4
    assert started.limit == {"min": 6, "max": 8}
    assert started.readings == ((T0 + MIN, 8.5), (T0 + 2 * MIN, 8.9), (T0 + 3 * MIN, 9.4))


def test_evidence_keeps_at_most_the_latest_readings() -> None:
    engine = make_engine(make_standard(for_="2h"))
    events = feed(engine, [9.0 + i / 1000 for i in range(121)])
    assert len(events) == 1
    readings = events[0].readings
    assert len(readings) == EVIDENCE_READINGS == 50
    assert readings[-1] == (T0 + 120 * MIN, 9.12)
    assert readings[0][0] == T0 + 71 * MIN


def test_limit_with_only_a_max() -> None:
    events = feed(make_engine(make_standard(check={"max": 30})), [31.0])
    assert events[0].limit == {"max": 30}


def replay(values: Sequence[float]) -> list[Event]:
    return feed(make_engine(make_standard(clear_after="1m")), values)


def test_event_ids_are_stable_when_the_same_readings_are_replayed() -> None:
    values = [9.0, 9.1, 7.0, 7.0, 9.3, 7.0, 7.0]
    first, second = replay(values), replay(values)
    assert len(first) == 4
    assert [e.id for e in first] == [e.id for e in second]


def test_event_ids_differ_between_episodes_and_types() -> None:
    events = replay([9.0, 9.1, 7.0, 7.0, 9.3, 7.0, 7.0])
    assert len({e.id for e in events}) == 4
    started, cleared = events[0], events[1]
    assert started.episode_start == cleared.episode_start


def test_to_dict_is_the_wire_form() -> None:
    standard = make_standard(version=3, clause="O&M 4.2", severity="critical",
                             rectify_within="24h", verify_for="1h", on_recovery="close")
    event = feed(make_engine(standard), [7.0, 9.4])[0]
    wire = event.to_dict()
    assert set(wire) == {"id", "type", "schema_version", "site_id", "asset_id", "standard_id",
                         "standard_version", "metric", "episode_start", "at", "evidence",
                         "standard", "asset"}
    assert wire["schema_version"] == CONTRACT_VERSION
    assert wire["id"] == event.id and wire["id"].startswith("ev_")
    assert (wire["type"], wire["site_id"], wire["asset_id"]) == (
        "violation_started", "tower-a", "CH-1")
    assert (wire["standard_id"], wire["standard_version"], wire["metric"]) == (
        "HVAC-CHW", 3, "chw_supply_temp")
    assert wire["episode_start"] == wire["at"] == iso(T0 + MIN) == "2026-11-25T08:01:00Z"
    assert wire["evidence"] == {"value": 9.4, "limit": {"min": 6, "max": 8},
                                "readings": [["2026-11-25T08:01:00Z", 9.4]]}
    assert wire["standard"] == {
        "title": "CHW supply 6-8 degC", "clause": "O&M 4.2", "category": "equipment",
        "severity": "critical", "department": "engineering",  # the asset's
        "rectify_within": 86400, "verify_for": 3600, "on_recovery": "close",
        "no_data_after": 900, "kind": "range",
    }
    assert wire["asset"] == {"type": "chiller", "name": "Chiller 1", "location": "B2"}


def test_standard_department_overrides_the_assets() -> None:
    event = feed(make_engine(make_standard(department="quality")), [9.4])[0]
    assert event.to_dict()["standard"]["department"] == "quality"


# --- property: the engine against a slow reference --------------------------------------

LOW, HIGH = 6.0, 8.0
STEPS = st.sampled_from([0, 10, 30, 60]) | st.integers(0, 150)  # seconds; often exact
VALUES = [5.0, 6.0, 6.3, 7.0, 7.8, 8.0, 8.2, 9.0, math.nan, None]  # None: bad quality


def reference(stream: Sequence[tuple[float, float]], for_: float, clear_after: float,
              deadband: float, now: float) -> list[tuple[str, float, float]]:
    """Episodes found by scanning runs of readings, written apart from the engine.

    An episode starts at the first reading of a run of violating readings that lies `for_`
    after the run began (or at `now` if the run lasts that long with no more readings);
    it clears at the first reading of a run of recovered readings (inside the limits by
    `deadband`) that lies `clear_after` after that run began (or at `now`).
    """

    def violating(v: float) -> bool:
        return v < LOW or v > HIGH

    def recovered(v: float) -> bool:
        return LOW + deadband <= v <= HIGH - deadband

    def run_end(i: int, test: Any, delay: float) -> tuple[int, float | None]:
        """From run start i: (index where the run stops or the delay is met, time met)."""
        j = i
        while j < len(stream) and test(stream[j][1]):
            if stream[j][0] - stream[i][0] >= delay:
                return j, stream[j][0]
            j += 1
        if j == len(stream) and now - stream[i][0] >= delay:
            return j, now
        return j, None

    def next_recovered(i: int) -> int:
        while i < len(stream) and not recovered(stream[i][1]):
            i += 1
        return i

    out: list[tuple[str, float, float]] = []
    i = 0
    while i < len(stream):
        if not violating(stream[i][1]):
            i += 1
            continue
        episode = stream[i][0]
        i, started = run_end(i, violating, for_)
        if started is None:
            continue  # reset by a compliant reading, or still pending at the end
        out.append(("violation_started", episode, started))
        cleared = None
        while cleared is None and (i := next_recovered(i)) < len(stream):
            i, cleared = run_end(i, recovered, clear_after)
        if cleared is None:
            break  # still violating at the end
        out.append(("violation_cleared", episode, cleared))
    return out


@settings(max_examples=1000, deadline=None)
@given(
    steps=st.lists(st.tuples(STEPS, st.sampled_from(VALUES)), max_size=60),
    for_=st.sampled_from([0, 30, 60, 300]),
    clear_after=st.sampled_from([0, 60, 180]),
    deadband=st.sampled_from([0.0, 0.5]),
    idle=st.integers(0, 400),
)
def test_engine_matches_reference(steps: list[tuple[int, float | None]], for_: int,
                                  clear_after: int, deadband: float, idle: int) -> None:
    # chattering has its own cases; here every episode is reported as it is
    standard = make_standard(for_=for_, clear_after=clear_after, deadband=deadband,
                             chattering={"max": 10**6})
    engine = make_engine(standard)
    ts, readings = T0, []
    for step, value in steps:
        ts += step
        good = value is not None
        readings.append(Reading("CH-1", "chw_supply_temp", value if good else math.nan, ts,
                                **({} if good else {"quality": bad("timeout")})))
    now = ts + idle
    events = engine.observe(readings) + engine.tick(now)
    judged = [(r.ts, r.value) for r in readings if r.good]
    got = [(e.type, e.episode_start, e.at) for e in events]
    assert got == reference(judged, for_, clear_after, deadband, now)
