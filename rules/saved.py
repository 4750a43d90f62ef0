"""A pair's state as plain JSON-able data, saved with each stored batch, so that a restart
or a reload resumes episodes, delays and checks where they were."""

from __future__ import annotations

import math
from typing import Any
from zoneinfo import ZoneInfo

from rules.checks import TickClock, make_checker
from rules.evidence import Evidence
from rules.track import Track, no_seconds

STATE_VERSION = 2
ROW_FIELDS = 13
"""Fields of a saved pair (see `row`)."""


def row(track: Track, evidence: Evidence) -> list[Any]:
    """The pair's saved form."""
    t = track
    return [t.status, t.since, t.recover_since, t.reported, t.chattering, list(t.flips),
            evidence.recent(t), t.last_good, t.compliance, t.compliance_since, t.seconds,
            t.checker.state(), _finite(t.checker.value)]


def fits(track: Track, saved: Any, zone: ZoneInfo, started: float) -> bool:
    """Whether a saved row restores into the pair as it is configured now, tried on a
    checker of its own: a check whose kind or shape changed under the same version
    keeps a state the pair's checker cannot read."""
    try:
        if not isinstance(saved, list) or len(saved) != ROW_FIELDS:
            return False
        probe = make_checker(track.standard, zone=zone, started=started, clock=TickClock())
        probe.restore(saved[11])
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
    track.checker.restore(checker_state)
    track.checker.value = math.nan if value is None else value


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
