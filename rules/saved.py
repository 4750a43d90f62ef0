"""A pair's state as plain JSON-able data, saved in two parts: the core (status, episode,
compliance, counters, a small check's state) with each stored batch that raises an event
and every `rules.save_every`, and the history (the pair's evidence readings, a window's or
a rate's readings: most of the bytes) every `rules.save_history_every`. So a restart or a
reload resumes episodes, delays and checks where they were, and the gateway does not
rewrite megabytes of readings it already stored every 30 s (docs/footprint.md).

The core is saved as columns (`columns`), the pairs named by standard: zlib finds a
column's long runs (most pairs ok, no episode, the same seconds) where a row per pair put
a key and a few unique times between them, so a save is a third of the bytes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from common.vocabulary import COMPLIANCE_STATES
from rules.checks import TickClock, make_checker
from rules.evidence import Evidence
from rules.track import Track, no_seconds

STATE_VERSION = 4
"""4: the cores as columns (`columns`); 3: a core row per pair under "tracks", the history
beside it (the same history as 4's); 2: whole rows, no history (all still restore)."""
HISTORY_VERSIONS = {3: (3,), STATE_VERSION: (3, STATE_VERSION)}
"""The history versions a core of each version joins (`joins`): 4 changed only the core."""
ROW_FIELDS = 13
"""Fields of a whole saved pair (see `row`)."""
CORE_FIELDS = ROW_FIELDS - 1
"""Fields of a core row (`core`): a whole row less its evidence, which the history holds."""
RECENT, CHECKER = 6, 11
"""Where the evidence and the check's state sit in a whole row."""
SECONDS = 9
"""Where the compliance seconds sit in a core row."""
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


def columns(pairs: Sequence[tuple[Track, list[Any]]]) -> dict[str, Any]:
    """The pairs' core rows (`core`) as columns, for a state's "pairs": the pairs grouped by
    standard ([id, version, [asset ids]] each, in the columns' order), the seconds as a
    column per compliance state, rounded to the millisecond (snapshots send them so)."""
    groups: dict[tuple[str, int], list[tuple[Track, list[Any]]]] = {}
    for pair in pairs:
        groups.setdefault((pair[0].standard.id, pair[0].standard.version), []).append(pair)
    rows = [row for group in groups.values() for _, row in group]
    fields: list[Any] = [list(field) for field in zip(*rows, strict=True)] or \
        [[] for _ in range(CORE_FIELDS)]
    seconds = fields[SECONDS]
    fields[SECONDS] = {name: [round(s.get(name, 0.0), 3) for s in seconds]
                       for name in COMPLIANCE_STATES}
    return {"standards": [[sid, version, [track.asset.id for track, _ in group]]
                          for (sid, version), group in groups.items()],
            "fields": fields}


def cores(state: dict[str, Any]) -> dict[str, list[Any]]:
    """Each pair's core row (a whole row for version 2) by its key, from a saved state of
    any version `Engine.restore` reads."""
    if state.get("v") != STATE_VERSION:
        tracks = state.get("tracks")
        return tracks if isinstance(tracks, dict) else {}
    pairs = state.get("pairs") or {"standards": [], "fields": []}
    fields = list(pairs["fields"])
    if fields:
        seconds = fields[SECONDS]
        fields[SECONDS] = [dict(zip(seconds, values, strict=True))
                           for values in zip(*seconds.values(), strict=True)]
    keys = [f"{asset}|{sid}|{version}" for sid, version, assets in pairs["standards"]
            for asset in assets]
    return {key: list(row) for key, row in zip(keys, zip(*fields, strict=True), strict=True)}


def stream_columns(last_ts: dict[tuple[str, str], float]) -> list[list[Any]]:
    """The streams' newest timestamps as [assets, metrics, times]: a column of times
    compresses to a third of triples."""
    return [[a for a, _ in last_ts], [m for _, m in last_ts], list(last_ts.values())]


def streams(state: dict[str, Any]) -> Iterable[tuple[str, str, float]]:
    """(asset, metric, newest timestamp) of each stream a saved state names."""
    saved = state.get("last_ts", [])
    if state.get("v") == STATE_VERSION:
        return zip(*saved, strict=True) if saved else []
    return ((a, m, ts) for a, m, ts in saved)


def joins(core_version: Any, history_version: Any) -> bool:
    """Whether a saved history belongs with a saved core of this version."""
    return history_version in HISTORY_VERSIONS.get(core_version, ())


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
