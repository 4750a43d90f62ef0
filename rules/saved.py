"""A pair's state as plain JSON-able data, saved in two parts: the core (status, episode,
compliance, counters, a small check's state) with each stored batch that raises an event
and every `rules.save_every`, and the history (the pair's evidence readings, a window's or
a rate's readings: most of the bytes) every `rules.save_history_every`. So a restart or a
reload resumes episodes, delays and checks where they were, and the gateway does not
rewrite megabytes of readings it already stored every 30 s (docs/footprint.md)."""

from __future__ import annotations

import math
from typing import Any
from zoneinfo import ZoneInfo

from rules.checks import TickClock, make_checker
from rules.evidence import Evidence
from rules.track import Track, no_seconds

STATE_VERSION = 3
ROW_FIELDS = 13
"""Fields of a whole saved pair (see `row`)."""
RECENT, CHECKER = 6, 11
"""Where the evidence and the check's state sit in a whole row."""
IN_HISTORY = "history"
"""A core row's check state when the check keeps readings: saved in the history part (a
row still holding it after the join had no history saved: the check starts empty)."""


def core(track: Track) -> list[Any]:
    """The pair's state but its readings: the check's own state only when it is not a
    history of readings (`Checker.keeps_readings`), else IN_HISTORY."""
    t = track
    checker = IN_HISTORY if t.checker.keeps_readings else t.checker.state()
    return [t.status, t.since, t.recover_since, t.reported, t.chattering, list(t.flips),
            t.last_good, t.compliance, t.compliance_since, t.seconds, checker,
            _finite(t.checker.value)]


Shared = dict[tuple[str, str | None], tuple[str, list[Any]]]
"""Per series, the first pair saved with its evidence, and that evidence (`history`)."""


def history(track: Track, evidence: Evidence, shared: Shared) -> list[Any]:
    """The pair's readings: its evidence, and the check's state when that is readings.
    The range, window, rate and stale checks of one series judge the same readings: a
    pair whose evidence equals that of the series' first pair names that pair's key
    instead of repeating them (`shared`, one dict for one save)."""
    recent = evidence.recent(track)
    readings = track.checker.state() if track.checker.keeps_readings else None
    series = (track.asset.id, track.standard.metric)
    first = shared.get(series)
    if first is not None and first[1] == recent:
        return [first[0], readings]
    shared.setdefault(series, (track.key, recent))
    return [recent, readings]


def row(core_row: list[Any], history_row: list[Any] | None,
        histories: dict[str, list[Any]]) -> list[Any]:
    """A whole row from its parts (`histories`: the save's, for evidence another pair
    holds); without a history the pair keeps no evidence and its check, if it keeps
    readings, starts empty."""
    recent, readings = history_row if isinstance(history_row, list) and \
        len(history_row) == 2 else ([], None)  # none, or not one this version wrote
    if isinstance(recent, str):  # the evidence of the pair so named
        recent = histories.get(recent, [[]])[0]
        recent = recent if isinstance(recent, list) else []
    whole = list(core_row)
    whole.insert(RECENT, recent)
    if whole[CHECKER] == IN_HISTORY and readings is not None:
        whole[CHECKER] = readings
    return whole


def fits(track: Track, saved: Any, zone: ZoneInfo, started: float) -> bool:
    """Whether a saved row restores into the pair as it is configured now, tried on a
    checker of its own: a check whose kind or shape changed under the same version
    keeps a state the pair's checker cannot read."""
    try:
        if not isinstance(saved, list) or len(saved) != ROW_FIELDS:
            return False
        if saved[CHECKER] == IN_HISTORY:  # no history saved: fits a check that keeps one
            return track.checker.keeps_readings
        probe = make_checker(track.standard, zone=zone, started=started, clock=TickClock())
        probe.restore(saved[CHECKER])
        return True
    except Exception:  # whatever a saved state holds, one pair must not stop a start
        return False


def load(track: Track, saved: list[Any], evidence: Evidence) -> None:
    """Put a saved row (one that `fits`) back into the pair."""
    (track.status, track.since, track.recover_since, track.reported,
     track.chattering, flips, recent, track.last_good, track.compliance,
     track.compliance_since, seconds, checker_state, value) = saved
    track.flips = list(flips)
    evidence.remember(track, recent)
    track.seconds = {**no_seconds(), **seconds}
    if checker_state != IN_HISTORY:
        track.checker.restore(checker_state)
    track.checker.value = math.nan if value is None else value


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
