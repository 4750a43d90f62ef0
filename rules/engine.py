"""The rules engine: readings in, events out. Pure: no I/O, and the clock is passed in.

Per (asset, standard) a checker judges each good reading (rules.checks) and a small
state machine applies the timing, on the readings' own timestamps:
- `for` (on-delay): a violation must persist this long before `violation_started`;
  one compliant reading during the delay resets it.
- `deadband`: once violating, the judged value must be inside the limits by this margin
  to count as recovered (INBAND readings change nothing).
- `clear_after` (off-delay): recovered judgements must persist this long before
  `violation_cleared`; a judgement outside the deadband during the delay resets it.
- `active` schedule (site time zone): outside it readings are not judged, a running
  on-delay is reset and a running off-delay starts again: nothing raises or ages.
- chattering: more than `chattering.max` episodes within `chattering.per` are reported
  once (`chattering`), and nothing more until the pair has been quiet for `per`.
`tick(now)` fires delays that ran out with no new reading, and lets time-driven checks
(stale, windows, transitions, budget periods) judge. Bad-quality readings count as
missing: never compliant, never violating. A reading older than the last one seen for its
(asset, metric) is ignored and counted in `out_of_order`: devices and brokers replay, and
a late value must not rewrite an episode that has been reported.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from collector.reading import Reading
from rules.checks import Checker, Judgement, make_checker
from rules.events import Event, EventType, Snapshot
from rules.expr import Expr
from rules.schedule import Schedule
from rules.standard import Asset, Standard

EVIDENCE_READINGS = 50
ACCOUNT_EVERY = 10.0
"""Seconds between compliance-time bookkeeping of every pair (snapshots add it up)."""
STATE_VERSION = 2
OK, PENDING, VIOLATING, RECOVERING = "ok", "pending", "violating", "recovering"
COMPLIANCE_STATES = ("ok", "violating", "no_data", "inactive")


@dataclass(slots=True, eq=False)
class Track:
    """One (asset, standard) pair and where it stands."""

    asset: Asset
    standard: Standard
    checker: Checker
    expr: Expr | None
    schedule: Schedule | None
    status: str = OK
    since: float = 0.0  # episode start: first violating judgement
    recover_since: float = 0.0
    reported: bool = False  # the last event sent said "violating"
    chattering: bool = False
    flips: deque[float] = field(default_factory=deque)
    recent: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=EVIDENCE_READINGS))
    last_good: float | None = None
    readings: int = 0  # good readings judged since the last snapshot
    compliance: str = "no_data"
    compliance_since: float = 0.0
    active_since: float = 0.0  # the schedule's active stretch seen last (tick or reading)
    active_until: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COMPLIANCE_STATES,
                                                                             0.0))

    @property
    def key(self) -> str:
        return f"{self.asset.id}|{self.standard.id}|{self.standard.version}"

    @property
    def metric(self) -> str:
        return self.standard.metric or (self.expr.text if self.expr else "")


class Engine:
    """Evaluates a set of standards over a site's assets."""

    def __init__(self, site_id: str, assets: Sequence[Asset], standards: Sequence[Standard],
                 *, timezone: str = "UTC", started: float = 0.0) -> None:
        self.site_id = site_id
        self.zone = ZoneInfo(timezone)
        self.out_of_order = 0
        self.assets = list(assets)
        self.standards = list(standards)
        self._tracks: list[Track] = []
        self._by_metric: dict[tuple[str, str], list[Track]] = {}
        self._last_ts: dict[tuple[str, str], float] = {}
        self._latest: dict[str, dict[str, float]] = {}  # for expr: asset -> metric -> value
        self._expr_metrics: set[tuple[str, str]] = set()
        self._snapshot_at = started
        self._account_due = started
        self._armed: set[Track] = set()  # a delay running, or chattering
        for standard in standards:
            expr = Expr(standard.expr) if standard.expr else None
            schedule = Schedule(standard.active).bind(self.zone) if standard.active else None
            for asset in assets:
                if not standard.applies_to.matches(asset):
                    continue
                checker = make_checker(standard, zone=self.zone, started=started)
                track = Track(asset, standard, checker, expr, schedule,
                              compliance_since=started)
                self._tracks.append(track)
                for metric in standard.metrics:
                    self._by_metric.setdefault((asset.id, metric), []).append(track)
                    if expr is not None:
                        self._expr_metrics.add((asset.id, metric))

        self._watched = {t for t in self._tracks if t.checker.timed or t.schedule is not None}

    @property
    def pairs(self) -> int:
        """How many (asset, standard) pairs are evaluated."""
        return len(self._tracks)

    # --- readings and time --------------------------------------------------------------

    def observe(self, readings: Iterable[Reading]) -> list[Event]:
        """Feed readings in arrival order; returns the events they cause."""
        events: list[Event] = []
        last_ts, by_metric = self._last_ts, self._by_metric
        for reading in readings:
            value = reading.value
            if not reading.quality.good or value != value:  # bad or NaN: missing
                continue
            key = (reading.asset, reading.metric)
            ts = reading.ts
            tracks = by_metric.get(key)
            if tracks is None:
                continue
            previous = last_ts.get(key)
            if previous is not None and ts < previous:  # late: an episode is not rewritten
                self.out_of_order += 1
                continue
            last_ts[key] = ts
            if key in self._expr_metrics:
                self._latest.setdefault(reading.asset, {})[reading.metric] = value
            for track in tracks:
                judged = value
                if track.expr is not None:
                    values = self._latest.get(track.asset.id, {})
                    if len(values) < len(track.expr.metrics) or any(
                            m not in values for m in track.expr.metrics):
                        continue  # not every input seen yet
                    judged = track.expr(values)
                    if judged != judged:
                        continue
                if track.schedule is not None and not self._in_schedule(track, ts):
                    track.checker.outside(ts, judged)
                    continue
                track.last_good = ts
                track.readings += 1
                track.recent.append((ts, judged))
                self._step(track, track.checker.observe(ts, judged), ts, events)
                self._arm(track)
        return events

    def tick(self, now: float) -> list[Event]:
        """Let time pass: fire delays that ran out, judge time-driven checks.

        Only pairs that time can change are visited (time-driven checks, running delays,
        chattering, schedules); compliance time is added up every ACCOUNT_EVERY seconds.
        """
        events: list[Event] = []
        account = now >= self._account_due
        if account:
            self._account_due = now + ACCOUNT_EVERY
        armed = self._armed
        tracks = self._tracks if account else (self._watched | armed)
        for track in tracks:
            if track.schedule is not None and not self._in_schedule(track, now):
                pass
            else:
                judgement, at = track.checker.tick(now)
                if judgement is not Judgement.NONE:
                    self._step(track, judgement, at, events)
                elif track not in armed:
                    if account:
                        self._account(track, now)
                    continue  # nothing running, nothing new: the common case
                standard = track.standard
                if track.status == PENDING and now - track.since >= standard.for_:
                    self._start(track, now, events)
                elif (track.status == RECOVERING
                      and now - track.recover_since >= standard.clear_after):
                    self._clear(track, now, events)
                if track.chattering and (not track.flips
                                         or track.flips[-1] <= now - standard.chattering.per):
                    self._end_chattering(track, now, events)
                self._arm(track)
            if account:
                self._account(track, now)
        return events

    def _in_schedule(self, track: Track, ts: float) -> bool:
        """Whether `ts` is inside the track's schedule; leaving it, or coming back after an
        inactive stretch nobody saw, resets running delays (nothing raises or ages)."""
        schedule = track.schedule
        if schedule is None:
            return True
        if track.active_since <= ts < track.active_until:
            return True
        self._outside_schedule(track)
        if not schedule.active(ts):
            return False
        track.active_since, track.active_until = ts, schedule.active_until(ts)
        return True

    def _arm(self, track: Track) -> None:
        """Keep the set of pairs with a running delay or chattering up to date."""
        if track.status in (PENDING, RECOVERING) or track.chattering:
            self._armed.add(track)
        else:
            self._armed.discard(track)

    def snapshot(self, now: float) -> Snapshot:
        """Compliance of every pair now, and seconds in each state since the last snapshot."""
        items = []
        for track in self._tracks:
            self._account(track, now)
            items.append({
                "asset_id": track.asset.id, "standard_id": track.standard.id,
                "standard_version": track.standard.version, "state": track.compliance,
                "seconds": {k: round(v, 3) for k, v in track.seconds.items()},
                "readings": track.readings,
            })
            track.seconds = dict.fromkeys(COMPLIANCE_STATES, 0.0)
            track.readings = 0
        snapshot = Snapshot(self.site_id, self._snapshot_at, now, items)
        self._snapshot_at = now
        return snapshot

    # --- the state machine --------------------------------------------------------------

    def _step(self, track: Track, judgement: Judgement, ts: float,
              events: list[Event]) -> None:
        before = track.status
        self._move(track, judgement, ts, events)
        if track.status != before:  # compliance time is exact at every change of state
            self._account(track, ts)

    def _move(self, track: Track, judgement: Judgement, ts: float,
              events: list[Event]) -> None:
        status, standard = track.status, track.standard
        if status == OK:
            if judgement is Judgement.VIOLATING:
                track.status, track.since = PENDING, ts
                if standard.for_ <= 0:
                    self._start(track, ts, events)
        elif status == PENDING:
            if judgement is not Judgement.VIOLATING:
                track.status = OK
            elif ts - track.since >= standard.for_:
                self._start(track, ts, events)
        elif status == VIOLATING:
            if judgement is Judgement.COMPLIANT:
                track.status, track.recover_since = RECOVERING, ts
                if standard.clear_after <= 0:
                    self._clear(track, ts, events)
        elif judgement is not Judgement.COMPLIANT:  # RECOVERING, and slipped back
            track.status = VIOLATING
        elif ts - track.recover_since >= standard.clear_after:
            self._clear(track, ts, events)

    def _outside_schedule(self, track: Track) -> None:
        if track.status == PENDING:
            track.status = OK
        elif track.status == RECOVERING:
            track.status = VIOLATING
        self._arm(track)

    def _start(self, track: Track, at: float, events: list[Event]) -> None:
        track.status = VIOLATING
        limit = track.standard.chattering
        flips = track.flips
        while flips and flips[0] <= at - limit.per:
            flips.popleft()
        flips.append(at)
        if track.chattering:
            return  # reported once already
        if len(flips) > limit.max:
            track.chattering, track.reported = True, True
            events.append(self._event("chattering", track, at, flips[0]))
            return
        if not track.reported:
            track.reported = True
            events.append(self._event("violation_started", track, at, track.since))

    def _clear(self, track: Track, at: float, events: list[Event]) -> None:
        track.status = OK
        if track.reported and not track.chattering:
            track.reported = False
            events.append(self._event("violation_cleared", track, at, track.since))

    def _end_chattering(self, track: Track, now: float, events: list[Event]) -> None:
        track.chattering = False
        if track.status in (OK, PENDING) and track.reported:  # a pending run is not raised
            track.reported = False
            events.append(self._event("violation_cleared", track, now, track.since))

    def _account(self, track: Track, now: float) -> None:
        """Add the time since the last look to the pair's current compliance state."""
        if now > track.compliance_since:
            track.seconds[track.compliance] += now - track.compliance_since
            track.compliance_since = now
        if track.schedule is not None and not track.schedule.active(now):
            track.compliance = "inactive"
        elif track.status != OK:  # out of limits, raised or still in its on-delay
            track.compliance = "violating"
        elif track.last_good is None or now - track.last_good > track.standard.no_data_after:
            track.compliance = "no_data"
        else:
            track.compliance = "ok"

    def _event(self, kind: EventType, track: Track, at: float, start: float) -> Event:
        standard, asset = track.standard, track.asset
        summary = standard.summary()
        summary["department"] = standard.department or asset.department or None
        readings = tuple(r for r in track.recent if r[0] >= start) if kind != \
            "violation_cleared" else ()
        value = track.checker.value
        return Event(
            type=kind, site_id=self.site_id, asset_id=asset.id, standard_id=standard.id,
            standard_version=standard.version, metric=track.metric, episode_start=start,
            at=at, value=None if math.isnan(value) else value, limit=track.checker.limit(),
            readings=readings, stats=track.checker.stats(), standard=summary,
            asset={"type": asset.type, "name": asset.name, "location": asset.location},
        )

    # --- restarts and reloads -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything needed to resume after a restart, as plain JSON-able data."""
        tracks = {}
        for t in self._tracks:
            tracks[t.key] = [t.status, t.since, t.recover_since, t.reported, t.chattering,
                             list(t.flips), list(t.recent), t.last_good, t.compliance,
                             t.compliance_since, t.seconds, t.checker.state(),
                             _finite(t.checker.value)]
        return {
            "v": STATE_VERSION,
            "tracks": tracks,
            "last_ts": [[a, m, ts] for (a, m), ts in self._last_ts.items()],
            "latest": self._latest,
            "snapshot_at": self._snapshot_at,
            "out_of_order": self.out_of_order,
        }

    def restore(self, state: dict[str, Any]) -> int:
        """Resume from `state()`; pairs whose (asset, standard id, version) changed start
        afresh. Returns how many pairs were restored."""
        if state.get("v") != STATE_VERSION:
            return 0
        self._last_ts = {(a, m): ts for a, m, ts in state.get("last_ts", [])}
        self._latest = {a: dict(v) for a, v in state.get("latest", {}).items()}
        self._snapshot_at = state.get("snapshot_at", self._snapshot_at)
        self.out_of_order = state.get("out_of_order", 0)
        saved = state.get("tracks", {})
        restored = 0
        for track in self._tracks:
            row = saved.get(track.key)
            if row is None:
                continue
            (track.status, track.since, track.recover_since, track.reported,
             track.chattering, flips, recent, track.last_good, track.compliance,
             track.compliance_since, seconds, checker_state, value) = row
            track.flips = deque(flips)
            track.recent = deque((tuple(r) for r in recent), maxlen=EVIDENCE_READINGS)
            track.seconds = {**dict.fromkeys(COMPLIANCE_STATES, 0.0), **seconds}
            track.checker.restore(checker_state)
            track.checker.value = math.nan if value is None else value
            self._arm(track)
            restored += 1
        return restored

    def reloaded(self, assets: Sequence[Asset], standards: Sequence[Standard],
                 now: float) -> Engine:
        """A new engine for a new set of standards, keeping the state of unchanged pairs."""
        new = Engine(self.site_id, assets, standards, timezone=self.zone.key, started=now)
        new.restore(self.state())
        return new


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
