"""The rules engine: readings in, violation events out. Pure: no I/O, no clock of its own.

Timing, per (asset, standard), on the readings' own timestamps:
- `for` (on-delay): a violation must persist this long before `violation_started`;
  one compliant reading during the delay resets it.
- `deadband`: once violating, a value must be inside the limits by this margin to count
  as recovered.
- `clear_after` (off-delay): recovered values must persist this long before
  `violation_cleared`; a value outside the deadband during the delay resets it.
`tick(now)` fires delays that have run out when no new reading arrives.
Bad-quality readings count as missing: neither compliant nor violating.
A reading older than the last one seen for the same (asset, metric) is ignored: devices
and brokers replay, and a late value must not rewrite an episode that has been reported.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from collector.reading import Reading
from rules.checks import ValueCheck
from rules.events import Event, EventType
from rules.standard import Asset, Standard

EVIDENCE_READINGS = 50


class Status(Enum):
    OK = "ok"
    PENDING = "pending"  # violating, on-delay running
    VIOLATING = "violating"  # violation_started sent
    RECOVERING = "recovering"  # back in limits, off-delay running


@dataclass(slots=True)
class _Track:
    """One (asset, standard) pair and where it stands."""

    asset: Asset
    standard: Standard
    metric: str
    check: ValueCheck
    status: Status = Status.OK
    since: float = 0.0  # episode start: first violating reading
    recover_since: float = 0.0
    last_ts: float = float("-inf")
    last_value: float = float("nan")
    recent: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=EVIDENCE_READINGS)
    )


class Engine:
    """Evaluates a set of standards over a site's assets."""

    def __init__(self, site_id: str, assets: Sequence[Asset],
                 standards: Sequence[Standard]) -> None:
        self.site_id = site_id
        self.out_of_order = 0
        self._by_metric: dict[tuple[str, str], list[_Track]] = {}
        self._tracks: list[_Track] = []
        for standard in standards:
            check = ValueCheck(standard)
            metric = standard.metric or ""
            for asset in assets:
                if standard.applies_to.matches(asset):
                    track = _Track(asset, standard, metric, check)
                    self._tracks.append(track)
                    self._by_metric.setdefault((asset.id, metric), []).append(track)

    @property
    def pairs(self) -> int:
        """How many (asset, standard) pairs are evaluated."""
        return len(self._tracks)

    def observe(self, readings: Iterable[Reading]) -> list[Event]:
        """Feed readings in arrival order; returns the events they cause."""
        events: list[Event] = []
        for reading in readings:
            tracks = self._by_metric.get((reading.asset, reading.metric))
            if not tracks or not reading.good:
                continue
            if reading.ts < tracks[0].last_ts:  # every track of a metric sees the same readings
                self.out_of_order += 1
                continue
            for track in tracks:
                self._step(track, reading.ts, reading.value, events)
        return events

    def tick(self, now: float) -> list[Event]:
        """Fire on-delays and off-delays that ran out with no new reading."""
        events: list[Event] = []
        for track in self._tracks:
            status = track.status
            if status is Status.PENDING and now - track.since >= track.standard.for_:
                self._start(track, now, events)
            elif (status is Status.RECOVERING
                  and now - track.recover_since >= track.standard.clear_after):
                self._clear(track, now, events)
        return events

    def _step(self, track: _Track, ts: float, value: float, events: list[Event]) -> None:
        track.last_ts, track.last_value = ts, value
        track.recent.append((ts, value))
        check, standard = track.check, track.standard
        status = track.status
        if status is Status.OK:
            if check.violated(value):
                track.status, track.since = Status.PENDING, ts
                if standard.for_ <= 0:
                    self._start(track, ts, events)
        elif status is Status.PENDING:
            if not check.violated(value):
                track.status = Status.OK
            elif ts - track.since >= standard.for_:
                self._start(track, ts, events)
        elif status is Status.VIOLATING:
            if check.recovered(value):
                track.status, track.recover_since = Status.RECOVERING, ts
                if standard.clear_after <= 0:
                    self._clear(track, ts, events)
        elif not check.recovered(value):  # RECOVERING, and slipped back
            track.status = Status.VIOLATING
        elif ts - track.recover_since >= standard.clear_after:
            self._clear(track, ts, events)

    def _start(self, track: _Track, at: float, events: list[Event]) -> None:
        track.status = Status.VIOLATING
        evidence = tuple(r for r in track.recent if r[0] >= track.since)
        events.append(self._event("violation_started", track, at, evidence))

    def _clear(self, track: _Track, at: float, events: list[Event]) -> None:
        track.status = Status.OK
        events.append(self._event("violation_cleared", track, at, ()))

    def _event(self, kind: EventType, track: _Track, at: float,
               readings: tuple[tuple[float, float], ...]) -> Event:
        standard, asset = track.standard, track.asset
        summary = standard.summary()
        summary["department"] = standard.department or asset.department or None
        return Event(
            type=kind,
            site_id=self.site_id,
            asset_id=asset.id,
            standard_id=standard.id,
            standard_version=standard.version,
            metric=track.metric,
            episode_start=track.since,
            at=at,
            value=track.last_value,
            limit=track.check.limit(),
            readings=readings,
            standard=summary,
            asset={"type": asset.type, "name": asset.name, "location": asset.location},
        )
