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
a late value must not rewrite an episode that has been reported. Whatever judging one
reading (or ticking one pair) raises refuses only that for that pair: counted per
standard in `refused` and logged with a sample (rules.refusals); nothing one reading
holds stops the engine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any
from zoneinfo import ZoneInfo

from collector.reading import Reading
from common.vocabulary import COMPLIANCE_STATES
from rules.checks import Checker, Judgement, TickClock, make_checker
from rules.events import Event, EventType, Snapshot
from rules.expr import Expr
from rules.refusals import ANY_STANDARD, Refusals, when
from rules.schedule import Schedule
from rules.standard import Asset, Standard

log = logging.getLogger("patrol.rules")

EVIDENCE_READINGS = 50
ACCOUNT_EVERY = 10.0
"""Seconds between compliance-time bookkeeping of every pair (snapshots add it up)."""
STATE_VERSION = 2
OK, PENDING, VIOLATING, RECOVERING = "ok", "pending", "violating", "recovering"
INF = math.inf
# Judgements under short names: `Judgement.X` is an enum lookup (~90 ns on CPython 3.11)
_VIOLATES, _COMPLIES, _NOTHING = Judgement.VIOLATING, Judgement.COMPLIANT, Judgement.NONE
_RING = 2 * EVIDENCE_READINGS  # evidence slots of a pair: (ts, value) side by side


@dataclass(slots=True, eq=False)
class Track:
    """One (asset, standard) pair and where it stands.

    The pair's judged readings (evidence) sit in the engine's ring buffer of floats, slots
    `index * _RING` on, rather than in a deque of tuples: a million tuples held for evidence
    made every full garbage collection walk them (over 100 ms a pass at 20,000 pairs), and
    a buffer of floats holds no objects.
    """

    asset: Asset
    standard: Standard
    checker: Checker
    expr: Expr | None
    schedule: Schedule | None
    index: int  # in the engine's list of pairs (heap entries name the pair by it)
    status: str = OK
    since: float = 0.0  # episode start: first violating judgement
    recover_since: float = 0.0
    reported: bool = False  # the last event sent said "violating"
    chattering: bool = False
    flips: list[float] | tuple[()] = ()  # raised episodes within chattering.per (a list
    # once there is one: most pairs never raise, and an empty list is one more object)
    evidence_at: int = 0  # the engine's evidence slot the next judged reading goes to
    evidence_full: bool = False  # the ring has wrapped: every slot holds a reading
    due: float = INF  # earliest heap entry for this pair (-inf: ticked every time)
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


@dataclass(slots=True, eq=False)
class Series:
    """One (asset, metric) stream: the pairs that read it and its newest good timestamp
    (-inf: none yet), found with one dict lookup per reading."""

    tracks: tuple[Track, ...]
    last_ts: float = -INF
    expr: bool = False  # an expr reads this metric: the asset's latest values are kept


@dataclass(slots=True, eq=False)
class Stretches:
    """The pairs under one schedule, and bounds of the active stretches they saw last: a
    tick has no pair to look at while `latest_since <= now < earliest_until`."""

    tracks: list[Track] = field(default_factory=list)
    latest_since: float = INF  # no later than that, every pair's active_since
    earliest_until: float = -INF  # no earlier than that, every pair's active_until

    def widen(self, track: Track) -> None:
        """A pair has seen a new stretch: keep the bounds true."""
        self.latest_since = max(self.latest_since, track.active_since)
        self.earliest_until = min(self.earliest_until, track.active_until)

    def bound(self) -> None:
        """The tightest bounds, after the pairs' stretches were brought up to date."""
        self.latest_since = max(t.active_since for t in self.tracks)
        self.earliest_until = min(t.active_until for t in self.tracks)


class Alarm:
    """A checker's `alarm` (see Checker.due): notes (due, pair index) for the engine's next
    tick. It holds no reference to the engine or the pair, so an engine left behind by a
    reload is freed at once, not by the cyclic garbage collector."""

    __slots__ = ("index", "noted")

    def __init__(self, index: int, noted: list[tuple[float, int]]) -> None:
        self.index, self.noted = index, noted

    def __call__(self, due: float) -> None:
        self.noted.append((due, self.index))


class Engine:
    """Evaluates a set of standards over a site's assets."""

    def __init__(self, site_id: str, assets: Sequence[Asset], standards: Sequence[Standard],
                 *, timezone: str = "UTC", started: float = 0.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.site_id = site_id
        self.zone = ZoneInfo(timezone)
        self.out_of_order = 0
        self.refusals = Refusals(monotonic)  # `monotonic` only spaces its log lines
        self.refused = self.refusals.counts  # standard id -> readings refused
        self.assets = list(assets)
        self.standards = list(standards)
        self._tracks: list[Track] = []
        self._latest: dict[str, dict[str, float]] = {}  # for expr: asset -> metric -> value
        self._snapshot_at = started
        self._account_due = started
        self._armed: set[Track] = set()  # a delay running, or chattering
        self._clock = TickClock()
        self._always: list[Track] = []  # checkers that every tick concerns (stale)
        self._scheduled: dict[Schedule, Stretches] = {}  # pairs by schedule
        self._heap: list[tuple[float, int]] = []  # (due, pair index): when time-driven
        # checks next need a tick; a pair may have stale entries (see _due)
        self._alarms: list[tuple[float, int]] = []  # (due, pair index) noted by checkers
        self._orphan_ts: dict[tuple[str, str], float] = {}  # restored, no pair reads it
        readers: dict[tuple[str, str], list[Track]] = {}
        expr_series: set[tuple[str, str]] = set()
        for standard in standards:
            expr = Expr(standard.expr) if standard.expr else None
            schedule = Schedule(standard.active).bind(self.zone) if standard.active else None
            metrics = standard.metrics
            for asset in assets:
                if not standard.applies_to.matches(asset):
                    continue
                checker = make_checker(standard, zone=self.zone, started=started,
                                       clock=self._clock)
                track = Track(asset, standard, checker, expr, schedule, len(self._tracks),
                              compliance_since=started)
                self._tracks.append(track)
                if schedule is not None:
                    self._scheduled.setdefault(schedule, Stretches()).tracks.append(track)
                for metric in metrics:
                    readers.setdefault((asset.id, metric), []).append(track)
                    if expr is not None:
                        expr_series.add((asset.id, metric))
                if checker.always:
                    track.due = -INF  # never in the heap: ticked every time
                    self._always.append(track)
                elif checker.timed:
                    checker.alarm = Alarm(track.index, self._alarms)
                    if checker.due < INF:
                        self._wake(track, checker.due)
        self._series = {key: Series(tuple(tracks), expr=key in expr_series)
                        for key, tracks in readers.items()}
        # One buffer for every pair's evidence ring, written through a memoryview: a
        # memoryview stores a float in a third of the time an array's __setitem__ takes.
        self._evidence = memoryview(bytearray(8 * _RING * len(self._tracks))).cast("d")
        for track in self._tracks:
            track.evidence_at = track.index * _RING

    @property
    def pairs(self) -> int:
        """How many (asset, standard) pairs are evaluated."""
        return len(self._tracks)

    # --- readings and time --------------------------------------------------------------

    def observe(self, readings: Iterable[Reading]) -> list[Event]:
        """Feed readings in arrival order; returns the events they cause.

        The hot path of the agent: per reading one dict lookup, per pair the checker and a
        few attribute updates. The state machine is entered only when something can change
        (a violating judgement, or a pair not in the ok state).
        """
        events: list[Event] = []
        series_of, evidence = self._series, self._evidence
        for reading in readings:
            try:  # free in CPython 3.11 while nothing is raised, as is the one per pair
                value = reading.value
                if value != value or not reading.quality.good:  # NaN or bad: missing
                    continue
                series = series_of.get((reading.asset, reading.metric))
                if series is None:
                    continue
                ts = reading.ts
                if ts < series.last_ts:  # late: an episode is not rewritten
                    self.out_of_order += 1
                    continue
                series.last_ts = ts
                if series.expr:
                    self._latest.setdefault(reading.asset, {})[reading.metric] = value
            except Exception as exc:
                self.refusals.add(ANY_STANDARD, _sample(reading), exc)
                continue
            for track in series.tracks:
                try:
                    judged = value
                    if track.expr is not None:
                        judged = self._expr_value(track)
                        if judged != judged:
                            continue  # not every input seen yet
                    checker = track.checker
                    if track.schedule is not None and not (
                            track.active_since <= ts < track.active_until
                            or self._in_schedule(track, ts)):
                        checker.outside(ts, judged)
                        continue
                    judgement = checker.observe(ts, judged)  # first: if it raises, the
                    track.last_good = ts  # pair is left as it was
                    track.readings += 1
                    at = track.evidence_at
                    evidence[at] = ts
                    evidence[at + 1] = judged
                    at += 2
                    if at % _RING:
                        track.evidence_at = at
                    else:  # round the ring: from now on every slot holds a reading
                        track.evidence_at, track.evidence_full = at - _RING, True
                    if judgement is _VIOLATES or track.status != OK:
                        self._step(track, judgement, ts, events)
                        self._arm(track)
                except Exception as exc:
                    self._refuse(track, exc, reading)
        return events

    def _refuse(self, track: Track, error: Exception, reading: Reading | None = None,
                now: float = math.nan) -> None:
        """Count and (now and then) log what judging one reading or tick of a pair raised."""
        if reading is None:
            sample = f"asset {track.asset.id} at the tick of {when(now)}"
        else:
            sample = f"asset {track.asset.id}: {_sample(reading)}"
        if track.expr is not None:
            sample += f", expr {track.expr.text} over {self._latest.get(track.asset.id)}"
        self.refusals.add(track.standard.id, sample, error)

    def _expr_value(self, track: Track) -> float:
        """The track's expression over the asset's latest values; NaN while an input has
        not been seen yet (rules.expr.Undefined when there is no finite real result)."""
        expr = track.expr
        assert expr is not None
        values = self._latest.get(track.asset.id)
        if values is None or not expr.inputs <= values.keys():
            return math.nan
        return expr(values)

    def tick(self, now: float) -> list[Event]:
        """Let time pass: fire delays that ran out, judge time-driven checks.

        Only pairs that time can change now are visited: checks whose `due` has come (a
        heap of due times), stale checks, and pairs with a running delay or chattering.
        Compliance time is added up for every pair every ACCOUNT_EVERY seconds.
        """
        events: list[Event] = []
        self._clock.tick(now)
        armed = self._armed
        visit = self._due(now)
        visit.update(self._always)
        visit.update(armed)
        for schedule, stretches in self._scheduled.items():
            # The active stretch a pair saw last starts at its first look inside it, tick or
            # reading, and a later look dated before that resets the delays: kept up to
            # date for every pair, not only for those visited below. Nothing to do while
            # every pair's stretch holds `now`, or outside the schedule (a pair with no
            # delay running has none to reset; the others are visited).
            if stretches.latest_since <= now < stretches.earliest_until \
                    or not schedule.active(now):
                continue
            for track in stretches.tracks:
                if not track.active_since <= now < track.active_until and track not in visit:
                    self._in_schedule(track, now)
            stretches.bound()
        for track in visit:
            checker = track.checker
            try:
                if track.schedule is None or self._in_schedule(track, now):
                    judgement, at = checker.tick(now)
                    if judgement is _NOTHING and track not in armed:
                        pass  # nothing new, nothing running
                    elif (judgement is not _VIOLATES and track.status == OK
                          and not track.chattering):
                        pass  # in limits and ok: nothing moves (a window, most of the time)
                    else:
                        if judgement is not _NOTHING:
                            self._step(track, judgement, at, events)
                        standard = track.standard
                        if track.status == PENDING and now - track.since >= standard.for_:
                            self._start(track, now, events)
                        elif (track.status == RECOVERING
                              and now - track.recover_since >= standard.clear_after):
                            self._clear(track, now, events)
                        if track.chattering and (not track.flips or track.flips[-1]
                                                 <= now - standard.chattering.per):
                            self._end_chattering(track, now, events)
                        self._arm(track)
            except Exception as exc:
                self._refuse(track, exc, now=now)
            if checker.due < track.due:  # not ticked (out of schedule): still due
                self._wake(track, checker.due)
        if now >= self._account_due:
            self._account_due = now + ACCOUNT_EVERY
            account = self._account
            for track in self._tracks:
                account(track, now)
        return events

    def _wake(self, track: Track, due: float) -> None:
        """Have `tick` visit the pair from `due` on (earlier than any entry it has)."""
        track.due = due
        heappush(self._heap, (due, track.index))

    def _due(self, now: float) -> set[Track]:
        """Take the pairs due by `now` off the heap (after the alarms since the last tick
        are in it). An entry whose time is not the pair's `due` any more was superseded by
        an earlier one: skipped."""
        heap, tracks = self._heap, self._tracks
        for at, index in self._alarms:
            if at < tracks[index].due:
                self._wake(tracks[index], at)
        self._alarms.clear()
        due: set[Track] = set()
        while heap and heap[0][0] <= now:
            at, index = heappop(heap)
            track = tracks[index]
            if track.due == at:
                track.due = INF
                due.add(track)
        return due

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
        self._scheduled[schedule].widen(track)
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
            try:
                self._account(track, now)
                items.append({
                    "asset_id": track.asset.id, "standard_id": track.standard.id,
                    "standard_version": track.standard.version, "state": track.compliance,
                    "seconds": {k: round(v, 3) for k, v in track.seconds.items()},
                    "readings": track.readings,
                })
            except Exception as exc:  # this pair is left out of this snapshot only
                self._refuse(track, exc, now=now)
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
            if judgement is _VIOLATES:
                track.status, track.since = PENDING, ts
                if standard.for_ <= 0:
                    self._start(track, ts, events)
        elif status == PENDING:
            if judgement is not _VIOLATES:
                track.status = OK
            elif ts - track.since >= standard.for_:
                self._start(track, ts, events)
        elif status == VIOLATING:
            if judgement is _COMPLIES:
                track.status, track.recover_since = RECOVERING, ts
                if standard.clear_after <= 0:
                    self._clear(track, ts, events)
        elif judgement is not _COMPLIES:  # RECOVERING, and slipped back
            track.status = VIOLATING
        elif ts - track.recover_since >= standard.clear_after:
            self._clear(track, ts, events)

    def _outside_schedule(self, track: Track) -> None:
        if track.status == PENDING:
            track.status = OK
        elif track.status == RECOVERING:
            track.status = VIOLATING
        else:
            return  # no delay was running: nothing to reset
        self._arm(track)

    def _start(self, track: Track, at: float, events: list[Event]) -> None:
        track.status = VIOLATING
        limit = track.standard.chattering
        flips = track.flips
        if not isinstance(flips, list):
            flips = track.flips = []
        while flips and flips[0] <= at - limit.per:
            del flips[0]
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

    def _event(self, kind: EventType, track: Track, at: float, start: float) -> Event:
        standard, asset = track.standard, track.asset
        summary = standard.summary()
        summary["department"] = standard.department or asset.department or None
        readings = tuple(r for r in self._recent(track) if r[0] >= start) if kind != \
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
            try:
                tracks[t.key] = [t.status, t.since, t.recover_since, t.reported, t.chattering,
                                 list(t.flips), self._recent(t), t.last_good, t.compliance,
                                 t.compliance_since, t.seconds, t.checker.state(),
                                 _finite(t.checker.value)]
            except Exception as exc:  # not saved: this pair alone starts afresh
                self._refuse(t, exc, now=self._snapshot_at)
        return {
            "v": STATE_VERSION,
            "tracks": tracks,
            "last_ts": [[a, m, ts] for (a, m), ts in self._last_ts().items()],
            "latest": self._latest,
            "snapshot_at": self._snapshot_at,
            "out_of_order": self.out_of_order,
        }

    def restore(self, state: dict[str, Any]) -> int:
        """Resume from `state()`; pairs whose (asset, standard id, version) changed start
        afresh. Returns how many pairs were restored."""
        if state.get("v") != STATE_VERSION:
            return 0
        self._orphan_ts = {}
        for series in self._series.values():
            series.last_ts = -INF
        for a, m, ts in state.get("last_ts", []):
            series = self._series.get((a, m))
            if series is None:
                self._orphan_ts[(a, m)] = ts  # kept: a later reload may read it again
            else:
                series.last_ts = ts
        self._latest = {a: dict(v) for a, v in state.get("latest", {}).items()}
        self._snapshot_at = state.get("snapshot_at", self._snapshot_at)
        self.out_of_order = state.get("out_of_order", 0)
        saved = state.get("tracks", {})
        restored = 0
        for track in self._tracks:
            row = saved.get(track.key)
            if row is None:
                continue
            if not self._fits(track, row):
                log.warning("rules: the saved state of %s does not fit its check (was the "
                            "standard changed without a new version?): starting it afresh",
                            track.key)
                continue
            (track.status, track.since, track.recover_since, track.reported,
             track.chattering, flips, recent, track.last_good, track.compliance,
             track.compliance_since, seconds, checker_state, value) = row
            track.flips = list(flips)
            self._remember(track, recent)
            track.seconds = {**dict.fromkeys(COMPLIANCE_STATES, 0.0), **seconds}
            track.checker.restore(checker_state)
            track.checker.value = math.nan if value is None else value
            self._arm(track)
            if track.checker.timed and not track.checker.always:
                self._wake(track, -INF)  # look at the restored check at the next tick
            restored += 1
        return restored

    def _fits(self, track: Track, row: Any) -> bool:
        """Whether a saved row restores into the pair as it is configured now, tried on a
        checker of its own: a check whose kind or shape changed under the same version
        keeps a state the pair's checker cannot read."""
        try:
            if not isinstance(row, list) or len(row) != 13:
                return False
            probe = make_checker(track.standard, zone=self.zone, started=self._snapshot_at,
                                 clock=TickClock())
            probe.restore(row[11])
            return True
        except Exception:  # whatever a saved state holds, one pair must not stop a start
            return False

    def _recent(self, track: Track) -> list[tuple[float, float]]:
        """The pair's judged readings held as evidence, oldest first (at most
        EVIDENCE_READINGS)."""
        base, at, ring = track.index * _RING, track.evidence_at, self._evidence
        slots = [*range(at, base + _RING, 2), *range(base, at, 2)] if track.evidence_full \
            else range(base, at, 2)
        return [(ring[i], ring[i + 1]) for i in slots]

    def _remember(self, track: Track, readings: Iterable[Sequence[float]]) -> None:
        """Put back evidence saved by `_recent` (only the last EVIDENCE_READINGS fit)."""
        kept = list(readings)[-EVIDENCE_READINGS:]
        at = base = track.index * _RING
        for ts, value in kept:
            self._evidence[at], self._evidence[at + 1] = ts, value
            at += 2
        track.evidence_full = len(kept) == EVIDENCE_READINGS
        track.evidence_at = base if track.evidence_full else at

    def _last_ts(self) -> dict[tuple[str, str], float]:
        """The newest good timestamp of each (asset, metric) seen (and restored)."""
        seen = dict(self._orphan_ts)
        seen.update((key, series.last_ts) for key, series in self._series.items()
                    if series.last_ts != -INF)
        return seen

    def reloaded(self, assets: Sequence[Asset], standards: Sequence[Standard],
                 now: float) -> Engine:
        """A new engine for a new set of standards, keeping the state of unchanged pairs."""
        new = Engine(self.site_id, assets, standards, timezone=self.zone.key, started=now)
        new.restore(self.state())
        new.refusals, new.refused = self.refusals, self.refused  # counters keep counting
        return new


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _sample(reading: Reading) -> str:
    return f"{reading.metric}={reading.value!r} at {when(reading.ts)}"
