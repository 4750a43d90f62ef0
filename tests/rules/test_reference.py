"""Property: for random reading streams the engine's episodes equal a slow reference.

The reference below is written from the semantics in SPEC section 4 and docs/rules.md,
apart from the engine: it does not import rules.engine or rules.checks (only the schema).
Each judgement is recomputed from the whole history at the instant it is needed (which
readings lie in the window, which changes lie within `per`), and the timing is one
plain pass over the "looks" (accepted readings and ticks).

Values are multiples of 1/4, so sums and differences are exact in binary floating point
and a value that sits on a limit sits on it in the engine too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.reading import Reading, bad
from rules.standard import Standard

T0 = 1_772_445_600.0  # 2026-03-02T10:00:00Z
SITE, ASSET, METRIC = "tower-a", "CH-1", "x"

VIOLATING, COMPLIANT, INBAND = "violating", "compliant", "inband"
Judgement = str | None  # None: nothing to say (an empty window, a tick for a per-value check)

# --- the stream ----------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A reading (good, bad or NaN, possibly late) or a tick, in arrival order."""

    kind: str  # "reading" | "bad" | "nan" | "tick"
    ts: float
    value: float = math.nan


def to_readings(items: Sequence[Item]) -> list[Reading | float]:
    """Readings for the engine, and floats for ticks."""
    out: list[Reading | float] = []
    for item in items:
        if item.kind == "tick":
            out.append(item.ts)
        elif item.kind == "bad":
            out.append(Reading(ASSET, METRIC, item.value, item.ts, quality=bad("timeout")))
        elif item.kind == "nan":
            out.append(Reading(ASSET, METRIC, math.nan, item.ts))
        else:
            out.append(Reading(ASSET, METRIC, item.value, item.ts))
    return out


# --- the reference --------------------------------------------------------------------


def judge(value: float, low: float | None, high: float | None, deadband: float) -> Judgement:
    """Outside the limits: violating; inside by at least the deadband: compliant."""
    if math.isnan(value):
        return None
    if low is not None and value < low:
        return VIOLATING
    if high is not None and value > high:
        return VIOLATING
    if low is not None and value < low + deadband:
        return INBAND
    if high is not None and value > high - deadband:
        return INBAND
    return COMPLIANT


def aggregate(agg: str, values: list[float]) -> float:
    if agg == "count":
        return float(len(values))
    if not values:
        return math.nan
    if agg == "mean":
        return sum(values) / len(values)
    if agg == "sum":
        return float(sum(values))
    if agg == "min":
        return min(values)
    if agg == "max":
        return max(values)
    assert agg == "delta"
    return values[-1] - values[0]


def judge_at(standard: Standard, history: list[tuple[float, float]], t: float,
             at_reading: bool) -> Judgement:
    """The check's judgement at time t, given every accepted reading up to t."""
    check, deadband = standard.check, standard.deadband
    if check.kind == "range":
        return judge(history[-1][1], check.min, check.max, deadband) if at_reading else None
    if check.kind == "rate":
        if not at_reading:
            return None
        current = history[-1][1]
        change = max(abs(current - v) for ts, v in history if ts >= t - check.per)
        return judge(change, None, check.max, deadband)
    if check.kind == "window":
        inside = [v for ts, v in history if t - check.over < ts <= t]
        return judge(aggregate(check.agg, inside), check.min, check.max, deadband)
    assert check.kind == "transitions"
    starts = [history[i][0] for i in range(1, len(history))
              if history[i][1] == check.to and history[i - 1][1] != check.to]
    count = sum(1 for ts in starts if t - check.per < ts <= t)
    return VIOLATING if count > check.max else COMPLIANT


@dataclass
class Look:
    """One instant the engine looks at a pair: an accepted reading or a tick."""

    t: float
    judgement: Judgement
    tick: bool


def looks(standard: Standard, items: Sequence[Item]) -> tuple[list[Look], int]:
    """The looks of a stream, and how many good readings were dropped as late."""
    history: list[tuple[float, float]] = []
    out: list[Look] = []
    late = 0
    for item in items:
        if item.kind == "tick":
            if history or standard.check.kind == "window":
                out.append(Look(item.ts, judge_at(standard, history, item.ts, False), True))
            else:
                out.append(Look(item.ts, None, True))
        elif item.kind == "reading":
            if history and item.ts < history[-1][0]:
                late += 1  # older than the last accepted reading: ignored
                continue
            history.append((item.ts, item.value))
            out.append(Look(item.ts, judge_at(standard, history, item.ts, True), False))
        # bad quality and NaN: missing data, no look at all
    return out, late


def raw_episodes(standard: Standard, stream: list[Look]) -> list[tuple[str, float, Any]]:
    """("raise", at, start), ("clear", at, start) and ("tick", at, phase) in order.

    A violation begins at a violating judgement; it is raised once it has lasted `for`
    (at the first look at or after that) with no compliant or in-band judgement between.
    Once raised it recovers at a compliant judgement (outside the deadband) and clears once
    that has lasted `clear_after` with no violating or in-band judgement between.
    """
    wait_raise, wait_clear = standard.for_, standard.clear_after
    phase, start, recovered = "idle", 0.0, 0.0
    out: list[tuple[str, float, Any]] = []
    for look in stream:
        j = look.judgement
        if phase == "idle" and j == VIOLATING:
            phase, start = "pending", look.t
        elif phase == "pending" and j in (COMPLIANT, INBAND):
            phase = "idle"
        elif phase == "violating" and j == COMPLIANT:
            phase, recovered = "recovering", look.t
        elif phase == "recovering" and j in (VIOLATING, INBAND):
            phase = "violating"
        if phase == "pending" and look.t - start >= wait_raise:
            phase = "violating"
            out.append(("raise", look.t, start))
        elif phase == "recovering" and look.t - recovered >= wait_clear:
            phase = "idle"
            out.append(("clear", look.t, start))
        if look.tick:
            out.append(("tick", look.t, phase))
    return out


def reference_events(standard: Standard, items: Sequence[Item]
                     ) -> tuple[list[tuple[str, float, float]], int]:
    """(type, at, episode_start) of every event, and the count of late readings.

    Chattering: a raise that makes more than `max` raises within `per` is reported once as
    `chattering` (episode start: the first raise in that span); nothing more is reported
    until `per` has passed since the last raise, at a tick; then, if the pair is back in
    limits, the open violation is cleared (else when it clears).
    """
    stream, late = looks(standard, items)
    limit = standard.chattering
    events: list[tuple[str, float, float]] = []
    raises: list[float] = []
    chattering = is_open = False
    last_start = 0.0
    for kind, t, detail in raw_episodes(standard, stream):
        if kind == "raise":
            raises.append(t)
            last_start = detail
            if chattering:
                continue
            recent = [r for r in raises if r > t - limit.per]
            if len(recent) > limit.max:
                chattering = is_open = True
                events.append(("chattering", t, recent[0]))
            else:
                is_open = True
                events.append(("violation_started", t, detail))
        elif kind == "clear":
            if is_open and not chattering:
                is_open = False
                events.append(("violation_cleared", t, detail))
        elif chattering and raises[-1] <= t - limit.per:
            chattering = False
            if detail == "idle" and is_open:
                is_open = False
                events.append(("violation_cleared", t, last_start))
    return events, late


# --- the engine, and the property ----------------------------------------------------


def engine_events(standard: Standard, items: Sequence[Item]
                  ) -> tuple[list[tuple[str, float, float]], int]:
    from rules.engine import Engine  # the system under test, kept out of the reference
    from rules.standard import Asset

    engine = Engine(SITE, [Asset(id=ASSET)], [standard], started=T0)
    events = []
    for entry in to_readings(items):
        got = engine.tick(entry) if isinstance(entry, float) else engine.observe([entry])
        events += [(e.type, e.at, e.episode_start) for e in got]
    return events, engine.out_of_order


VALUES = [5.0, 5.75, 6.0, 6.25, 6.5, 7.0, 7.5, 7.75, 8.0, 8.25, 9.0]
STATES = [0.0, 1.0, 2.0]
GAPS = st.sampled_from([0, 0, 10, 30, 60]) | st.integers(0, 200)


@st.composite
def streams(draw: st.DrawFn, values: list[float]) -> list[Item]:
    """Time moves on by random gaps (often none); at each step a reading, a bad or NaN
    one, a tick, or a late reading (older than the last good one, so it must be dropped).

    Readings are never stamped before a tick that came earlier: how a window treats
    those is pinned by tests/rules/cases/window_reading_stamped_before_a_tick.
    """
    clock, last_good, items = T0, None, []
    for _ in range(draw(st.integers(0, 60))):
        clock += draw(GAPS)
        kind = draw(st.sampled_from(["reading"] * 6 + ["bad", "nan", "late", "tick", "tick"]))
        value = draw(st.sampled_from(values))
        if kind == "late":
            if last_good is not None:
                items.append(Item("reading", last_good - draw(st.integers(1, 120)), value))
            continue
        if kind == "reading":
            last_good = clock
        items.append(Item(kind, clock, value))
    items.append(Item("tick", clock + draw(st.integers(0, 900))))
    return items


TIMING = {
    "for": st.sampled_from(["0s", "30s", "1m", "5m"]),
    "clear_after": st.sampled_from(["0s", "1m", "3m"]),
    "deadband": st.sampled_from([0.0, 0.5]),
}
LIMITS = st.sampled_from([{"min": 6, "max": 8}, {"max": 8}, {"min": 6}])
WINDOW_LIMITS = {
    "mean": LIMITS, "min": LIMITS, "max": LIMITS,
    "sum": st.sampled_from([{"max": 30}, {"min": 12, "max": 30}]),
    "delta": st.sampled_from([{"min": -1.5, "max": 1.5}, {"max": 1}]),
    "count": st.sampled_from([{"min": 2}, {"min": 2, "max": 4}, {"max": 3}]),
}


@st.composite
def checks(draw: st.DrawFn) -> tuple[dict[str, Any], list[float]]:
    kind = draw(st.sampled_from(["range", "window", "rate", "transitions"]))
    if kind == "range":
        return {"kind": "range", **draw(LIMITS)}, VALUES
    if kind == "window":
        agg = draw(st.sampled_from(sorted(WINDOW_LIMITS)))
        over = draw(st.sampled_from(["1m", "5m"]))
        return {"kind": "window", "agg": agg, "over": over, **draw(WINDOW_LIMITS[agg])}, VALUES
    if kind == "rate":
        return {"kind": "rate", "max": 1.5, "per": draw(st.sampled_from(["1m", "5m"]))}, VALUES
    check = {"kind": "transitions", "to": 1, "max": draw(st.sampled_from([1, 2])),
             "per": draw(st.sampled_from(["2m", "10m"]))}
    return check, STATES


def make(check: dict[str, Any], timing: dict[str, Any], chattering: dict[str, Any]) -> Standard:
    return Standard.model_validate({"id": "S", "title": "random", "metric": METRIC,
                                    "check": check, **timing, "chattering": chattering})


@st.composite
def cases(draw: st.DrawFn, timing: dict[str, Any], chattering: dict[str, Any]
          ) -> tuple[Standard, list[Item]]:
    check, values = draw(checks())
    chosen = {key: draw(strategy) for key, strategy in timing.items()}
    return make(check, chosen, chattering), draw(streams(values))


NO_CHATTERING = {"max": 1000, "per": "1h"}


@settings(max_examples=300, deadline=None)
@given(cases(TIMING, NO_CHATTERING))
def test_engine_matches_reference(case: tuple[Standard, list[Item]]) -> None:
    standard, items = case
    assert engine_events(standard, items) == reference_events(standard, items)


# With an on-delay, chattering can end while a new violation is pending, which the engine
# gets wrong (tests/rules/cases/chattering_ends_while_pending_clears); without one, the
# reference and the engine must agree on chattering too.
TIGHT = {"for": st.just("0s"), "clear_after": TIMING["clear_after"],
         "deadband": TIMING["deadband"]}


CHATTERING = st.fixed_dictionaries({"max": st.sampled_from([1, 2]),
                                     "per": st.sampled_from(["5m", "10m"])})


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_engine_matches_reference_with_chattering(data: st.DataObject) -> None:
    standard, items = data.draw(cases(TIGHT, data.draw(CHATTERING)))
    assert engine_events(standard, items) == reference_events(standard, items)


def test_the_reference_sees_what_a_reader_sees() -> None:
    """A hand-checked stream, so the reference is not only compared with the engine."""
    standard = make({"kind": "range", "max": 8}, {"for": "1m", "clear_after": "1m"},
                    NO_CHATTERING)
    items = [Item("reading", T0, 9.0), Item("reading", T0 + 30, 9.0),
             Item("bad", T0 + 45, 7.0),  # missing, not compliant
             Item("tick", T0 + 60),  # raised: one minute of violation
             Item("reading", T0 + 20, 7.0),  # late (older than T0 + 30): ignored
             Item("reading", T0 + 90, 7.0), Item("reading", T0 + 120, 8.0),
             Item("tick", T0 + 150)]  # cleared: one minute back in limits
    expected = [("violation_started", T0 + 60, T0), ("violation_cleared", T0 + 150, T0)]
    assert reference_events(standard, items) == (expected, 1)
    assert engine_events(standard, items) == (expected, 1)
