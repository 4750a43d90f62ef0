"""Compliance bookkeeping: the state each pair is in now (ok, violating, no_data,
inactive) and the seconds spent in each, which snapshots carry to the API."""

from __future__ import annotations

import math
from typing import Any

from rules.events import iso
from rules.track import OK, Track

ACCOUNT_EVERY = 10.0
"""Seconds between compliance-time bookkeeping of every pair (snapshots add it up)."""


def account(track: Track, now: float) -> None:
    """Add the time since the last look to the pair's current compliance state."""
    since = track.compliance_since
    if now > since:
        track.seconds[track.compliance] += now - since
        track.compliance_since = now
    schedule, last_good = track.schedule, track.last_good
    if schedule is not None and not schedule.active(now):
        track.compliance = "inactive"
    elif track.status != OK:  # out of limits, raised or still in its on-delay
        track.compliance = "violating"
    elif last_good is None or now - last_good > track.standard.no_data_after:
        track.compliance = "no_data"
    else:
        track.compliance = "ok"


def snapshot_item(track: Track, now: float,
                  last: tuple[float, float] | None = None) -> dict[str, Any]:
    """The pair's line in a snapshot, its time accounted up to `now`; `last` is its last
    judged reading (ts, value), what an inspection shows beside the state."""
    account(track, now)
    value = last[1] if last is not None and math.isfinite(last[1]) else None
    return {
        "asset_id": track.asset.id, "standard_id": track.standard.id,
        "standard_version": track.standard.version, "state": track.compliance,
        "seconds": {k: round(v, 3) for k, v in track.seconds.items()},
        "readings": track.readings,
        "last_value": value, "last_at": iso(last[0]) if value is not None else None,
    }
