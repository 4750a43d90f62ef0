"""What the rules engine tells the rest of Patrol: violation events with stable ids.

An event's id is derived from what it is (site, asset, standard, episode start, type), so
replaying the same readings after a crash yields the same ids and the API can ignore the
ones it has already applied.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

EventType = Literal["violation_started", "violation_cleared", "chattering"]


def event_id(site_id: str, asset_id: str, standard_id: str, episode_start: float,
             kind: str) -> str:
    """Stable id of one event of one violation episode (millisecond resolution)."""
    key = f"{site_id}|{asset_id}|{standard_id}|{round(episode_start * 1000)}|{kind}"
    return "ev_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def iso(ts: float) -> str:
    """Epoch seconds -> `2026-11-25T08:00:00Z` (milliseconds kept when present)."""
    moment = datetime.fromtimestamp(ts, UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one (asset, standard): a violation began or ended."""

    type: EventType
    site_id: str
    asset_id: str
    standard_id: str
    standard_version: int
    metric: str
    episode_start: float
    at: float
    value: float | None = None
    limit: dict[str, Any] = field(default_factory=dict)
    readings: tuple[tuple[float, float], ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)
    standard: dict[str, Any] = field(default_factory=dict)
    asset: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return event_id(self.site_id, self.asset_id, self.standard_id, self.episode_start,
                        self.type)

    def to_dict(self) -> dict[str, Any]:
        """The wire form (POST /api/v1/events and the agent's outbox)."""
        return {
            "id": self.id,
            "type": self.type,
            "site_id": self.site_id,
            "asset_id": self.asset_id,
            "standard_id": self.standard_id,
            "standard_version": self.standard_version,
            "metric": self.metric,
            "episode_start": iso(self.episode_start),
            "at": iso(self.at),
            "evidence": {
                "value": _json_number(self.value),
                "limit": self.limit,
                "readings": [[iso(ts), value] for ts, value in self.readings],
                **({"stats": {k: _json_number(v) for k, v in self.stats.items()}}
                   if self.stats else {}),
            },
            "standard": self.standard,
            "asset": self.asset,
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Compliance of every (asset, standard) of a site, and time in each state since
    `since`: what compliance rates are computed from."""

    site_id: str
    since: float
    at: float
    items: list[dict[str, Any]]
    type: str = "compliance_snapshot"

    @property
    def id(self) -> str:
        return event_id(self.site_id, "*", "*", self.at, self.type)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "site_id": self.site_id,
                "since": iso(self.since), "at": iso(self.at), "items": self.items}


def _json_number(value: Any) -> Any:
    """NaN and infinities are not JSON: they travel as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
