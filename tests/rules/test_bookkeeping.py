"""The engine's cheap bookkeeping gives the answers the plain way would.

`tick` visits only the pairs that are due, a stale check's seconds of silence are worked
out when read, evidence sits in a ring of floats, and schedules remember their answers:
each is checked here against what it stands in for.
"""

from __future__ import annotations

import gc
import json
import weakref
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.reading import Reading
from rules import saved
from rules.checks import WindowChecker
from rules.engine import EVIDENCE_READINGS, Engine
from rules.schedule import Schedule
from rules.standard import Asset, Standard

T0 = 1_772_445_600.0  # 2026-03-02T10:00:00Z, a Monday
ASSET = Asset(id="CH-1")


def standard(check: dict[str, Any], **fields: Any) -> Standard:
    return Standard.model_validate({"id": "S", "title": "t", "metric": "x", "check": check,
                                    **fields})


def pair_state(engine: Engine) -> list[Any]:
    """The one pair's whole saved row (its core and its history, as `restore` joins them)."""
    state = engine.state()
    ((key, core),) = saved.cores(state).items()
    return saved.row(core, state["history"][key], state["history"])


def test_stale_silence_counts_ticks_that_did_not_visit_the_pair() -> None:
    engine = Engine("site", [ASSET], [standard({"kind": "stale", "after": "5m"})], started=T0)
    engine.observe([Reading("CH-1", "x", 1.0, T0 + 10)])
    for second in range(11, 71):
        assert engine.tick(T0 + second) == []
    assert pair_state(engine)[12] == 60.0  # the value: seconds silent at the last tick
    engine.observe([Reading("CH-1", "x", 1.0, T0 + 80)])
    assert pair_state(engine)[12] == 0.0  # a newer reading: not silent
    events = engine.tick(T0 + 80 + 301)
    assert [(e.type, e.stats["silent_for"]) for e in events] == [("violation_started", 301.0)]


def test_stale_silence_under_a_schedule_counts_only_ticks_inside_it() -> None:
    # Mon-Fri 08:00-18:00 UTC: 17:59 is inside, 18:01 outside
    engine = Engine("site", [ASSET], [standard({"kind": "stale", "after": "1h"},
                                               active="Mon-Fri 08:00-18:00")], started=T0)
    engine.observe([Reading("CH-1", "x", 1.0, T0)])
    engine.tick(T0 + 7 * 3600 + 59 * 60)
    engine.tick(T0 + 8 * 3600 + 60)
    assert pair_state(engine)[12] == 7 * 3600 + 59 * 60


def test_tick_leaves_pairs_alone_until_they_are_due(monkeypatch: pytest.MonkeyPatch) -> None:
    assets = [Asset(id=f"A{i}") for i in range(50)]
    window = standard({"kind": "window", "agg": "mean", "over": "1m", "max": 10})
    engine = Engine("site", assets, [window], started=T0)
    engine.observe([Reading(a.id, "x", 1.0, T0 + i / 10) for i, a in enumerate(assets)])
    ticked: list[float] = []
    original = WindowChecker.tick

    def counted(self: WindowChecker, now: float) -> Any:
        ticked.append(now)
        return original(self, now)

    monkeypatch.setattr(WindowChecker, "tick", counted)
    for second in range(1, 60):
        engine.tick(T0 + second)
    assert ticked == []  # every reading is still in its window
    engine.tick(T0 + 65)  # and now every one has left
    assert len(ticked) == 50


def test_evidence_wraps_round_and_survives_a_restart() -> None:
    rule = standard({"max": 8}, **{"for": "3h"})
    engine = Engine("site", [ASSET], [rule], started=T0)
    engine.observe([Reading("CH-1", "x", 9.0 + i / 100, T0 + 60 * i) for i in range(130)])
    saved = json.loads(json.dumps(engine.state()))
    recent = pair_state(engine)[6]
    assert len(recent) == EVIDENCE_READINGS
    assert [list(r) for r in recent] == [[T0 + 60 * i, 9.0 + i / 100] for i in range(80, 130)]
    again = Engine("site", [ASSET], [rule], started=T0 + 130 * 60)
    assert again.restore(saved) == 1
    assert json.loads(json.dumps(again.state())) == saved
    events = again.observe([Reading("CH-1", "x", 9.5, T0 + 60 * 180)])
    assert [e.type for e in events] == ["violation_started"]  # `for` ran out (from T0)
    assert events[0].readings == (*((T0 + 60 * i, 9.0 + i / 100) for i in range(81, 130)),
                                  (T0 + 60 * 180, 9.5))


def test_an_engine_left_behind_is_freed_without_the_cyclic_collector() -> None:
    """No reference cycles: a reload's old engine (all its pairs) goes at once."""
    rules = [standard({"kind": kind, **check}) for kind, check in [
        ("window", {"agg": "p95", "over": "1m", "max": 9}),
        ("budget", {"period": "day", "max": 100}),
        ("transitions", {"to": 1, "max": 2, "per": "1h"}),
        ("stale", {"after": "1m"}),
        ("rate", {"max": 1, "per": "1m"})]]
    rules = [r.model_copy(update={"id": f"S{n}"}) for n, r in enumerate(rules)]
    engine = Engine("site", [ASSET], rules, started=T0)
    engine.observe([Reading("CH-1", "x", float(i % 3), T0 + i) for i in range(30)])
    engine.tick(T0 + 100)
    newer = engine.reloaded([ASSET], rules, T0 + 101)
    left_behind = weakref.ref(engine)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del engine
        assert left_behind() is None
    finally:
        if enabled:
            gc.enable()
    assert newer.pairs == 5


# --- schedules ---------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]
TEXTS = ["Mon-Fri 08:00-18:00", "22:00-06:00", "daily 02:00-03:00",
         "Sun 01:59-02:01; Sat 23:00-02:30", "daily 02:30-02:31"]
# around 2026 DST changes: Berlin 29 Mar and 25 Oct, New York 8 Mar and 1 Nov, Lord Howe
# (half an hour) 5 Apr and 4 Oct
CENTRES = [1774746000.0, 1792890000.0, 1772953200.0, 1793512800.0, 1775314800.0,
           1791122400.0]
STEPS = st.one_of(
    st.sampled_from([0.0, 1e-7, 5e-7, 1e-6, 0.4999995]),  # the same instant, or nearly
    st.floats(0, 120),
    st.floats(-300, 0),
    st.sampled_from(["59.9999994", "59.9999996", "59.999999", "0", "60"]),  # near an edge
)


def plain_active(schedule: Schedule, ts: float) -> bool:
    return schedule._active_at(datetime.fromtimestamp(ts, schedule.zone))


def plain_active_until(schedule: Schedule, ts: float) -> float:
    if not plain_active(schedule, ts):
        return ts
    step = 60 - ts % 60
    for minute in range(8 * 24 * 60):
        if not plain_active(schedule, ts + step + minute * 60):
            return ts + step + minute * 60
    return float("inf")


@settings(max_examples=60, deadline=None)
@given(text=st.sampled_from(TEXTS), zone=st.sampled_from(ZONES),
       centre=st.sampled_from(CENTRES), steps=st.lists(STEPS, min_size=1, max_size=150))
def test_remembered_schedule_answers_are_the_plain_ones(text: str, zone: str, centre: float,
                                                         steps: list[float | str]) -> None:
    schedule = Schedule(text).bind(ZoneInfo(zone))
    ts = centre - 3600
    for n, step in enumerate(steps):
        ts = ts - ts % 60 + float(step) if isinstance(step, str) else ts + step
        assert schedule.active(ts) == plain_active(schedule, ts), ts
        if n % 7 == 0:
            assert schedule.active_until(ts) == plain_active_until(schedule, ts), ts


def test_an_instant_rounded_into_the_next_minute_is_judged_there() -> None:
    """`fromtimestamp` rounds to microseconds: 02:29:59.9999996 is 02:30:00 to the schedule,
    and a remembered 02:29 must not answer for it."""
    schedule = Schedule("daily 02:30-02:31").bind(ZoneInfo("UTC"))
    minute = 1_772_418_540.0  # 2026-03-02T02:29:00Z
    assert not schedule.active(minute + 10)
    assert not schedule.active(minute + 20)  # 02:29 is now remembered
    assert schedule.active(minute + 59.9999996)
    assert not schedule.active(minute + 59.999999)


@pytest.mark.parametrize(("before", "after", "fits"), [
    ({"kind": "window", "agg": "mean", "over": "1m", "max": 10}, {"max": 8}, True),
    ({"max": 8}, {"kind": "window", "agg": "mean", "over": "1m", "max": 10}, False),
    ({"kind": "window", "agg": "mean", "over": "1m", "max": 10},
     {"kind": "budget", "period": "day", "max": 100}, False),
    ({"kind": "transitions", "to": 1, "max": 3, "per": "1h"},
     {"kind": "window", "agg": "p95", "over": "5m", "max": 10}, False),
])
def test_a_standard_changed_without_a_new_version_starts_afresh_instead_of_crashing(
        before: dict[str, Any], after: dict[str, Any], fits: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    """Its saved state is that of another check: a restart or reload must not fail on it."""
    engine = Engine("site", [ASSET], [standard(before)], started=T0)
    engine.observe([Reading("CH-1", "x", float(i % 3), T0 + i) for i in range(30)])
    saved = json.loads(json.dumps(engine.state()))
    again = Engine("site", [ASSET], [standard(after)], started=T0 + 40)
    restored = again.restore(saved)
    events = again.observe([Reading("CH-1", "x", 50.0, T0 + 50)])
    events += again.tick(T0 + 120)
    assert restored == (1 if fits else 0)
    assert ("does not fit" in caplog.text) is not fits
    assert [e.type for e in events][:1] in ([], ["violation_started"])
