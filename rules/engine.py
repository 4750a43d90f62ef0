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
from heapq import heappop, heappush
from typing import Any
from zoneinfo import ZoneInfo

from collector.reading import Reading
from rules import saved
from rules.checks import Judgement, TickClock, make_checker
from rules.compliance import ACCOUNT_EVERY, account, snapshot_item
from rules.episodes import Episodes
from rules.events import Event, Snapshot
from rules.evidence import EVIDENCE_READINGS, RING, Evidence
from rules.expr import Expr
from rules.refusals import ANY_STANDARD, Refusals, when
from rules.saved import STATE_VERSION
from rules.schedule import Schedule
from rules.standard import Asset, Standard
from rules.stretches import Scheduled
from rules.track import COMPLIANCE_STATES, INF, OK, Alarm, Series, Track, no_seconds

__all__ = ["ACCOUNT_EVERY", "COMPLIANCE_STATES", "EVIDENCE_READINGS", "STATE_VERSION",
           "Engine"]

log = logging.getLogger("patrol.rules")

# Judgements under short names: `Judgement.X` is an enum lookup (~90 ns on CPython 3.11)
_VIOLATES, _NOTHING = Judgement.VIOLATING, Judgement.NONE


class Engine:
    """Evaluates a set of standards over a site's assets.

    The engine holds the pairs and routes readings and ticks to them; the concerns live
    beside it: rules.checks (judging), rules.episodes (timing and events), rules.stretches
    (schedules), rules.compliance (time in each state), rules.evidence (readings an event
    carries), rules.saved (restarts and reloads), rules.refusals (what could not be judged).
    """

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
        self._clock = TickClock()
        self._always: list[Track] = []  # checkers that every tick concerns (stale)
        self._heap: list[tuple[float, int]] = []  # (due, pair index): when time-driven
        # checks next need a tick; a pair may have stale entries (see _due)
        self._alarms: list[tuple[float, int]] = []  # (due, pair index) noted by checkers
        self._orphan_ts: dict[tuple[str, str], float] = {}  # restored, no pair reads it
        readers: dict[tuple[str, str], list[Track]] = {}
        expr_series: set[tuple[str, str]] = set()
        for standard in standards:
            metrics = standard.metrics
            for track in self._pairs(standard, assets, started):
                for metric in metrics:
                    key = (track.asset.id, metric)
                    readers.setdefault(key, []).append(track)
                    if track.expr is not None:
                        expr_series.add(key)
        self._series = {key: Series(tuple(tracks), expr=key in expr_series)
                        for key, tracks in readers.items()}
        self._evidence = Evidence(self._tracks)
        self._episodes = Episodes(site_id, self._evidence)
        self._scheduled = Scheduled(self._episodes)
        for track in self._tracks:
            if track.schedule is not None:
                self._scheduled.add(track, track.schedule)

    def _pairs(self, standard: Standard, assets: Sequence[Asset],
               started: float) -> list[Track]:
        """The standard's pairs, one per asset it applies to, each with its checker."""
        expr = Expr(standard.expr) if standard.expr else None
        schedule = Schedule(standard.active).bind(self.zone) if standard.active else None
        pairs = []
        for asset in assets:
            if not standard.applies_to.matches(asset):
                continue
            checker = make_checker(standard, zone=self.zone, started=started,
                                   clock=self._clock)
            track = Track(asset, standard, checker, expr, schedule, len(self._tracks),
                          compliance_since=started)
            self._tracks.append(track)
            pairs.append(track)
            if checker.always:
                track.due = -INF  # never in the heap: ticked every time
                self._always.append(track)
            elif checker.timed:
                checker.alarm = Alarm(track.index, self._alarms)
                if checker.due < INF:
                    self._wake(track, checker.due)
        return pairs

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
        series_of, evidence = self._series, self._evidence.ring
        step, arm, inside = self._episodes.step, self._episodes.arm, self._scheduled.inside
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
                            or inside(track, ts)):
                        checker.outside(ts, judged)
                        continue
                    judgement = checker.observe(ts, judged)  # first: if it raises, the
                    track.last_good = ts  # pair is left as it was
                    track.readings += 1
                    at = track.evidence_at
                    evidence[at] = ts
                    evidence[at + 1] = judged
                    at += 2
                    if at % RING:
                        track.evidence_at = at
                    else:  # round the ring: from now on every slot holds a reading
                        track.evidence_at, track.evidence_full = at - RING, True
                    if judgement is _VIOLATES or track.status != OK:
                        step(track, judgement, ts, events)
                        arm(track)
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
        armed = self._episodes.armed
        visit = self._due(now)
        visit.update(self._always)
        visit.update(armed)
        self._scheduled.refresh(now, visit)
        inside, age = self._scheduled.inside, self._episodes.age
        for track in visit:
            checker = track.checker
            try:
                if track.schedule is None or inside(track, now):
                    judgement, at = checker.tick(now)
                    if judgement is _NOTHING and track not in armed:
                        pass  # nothing new, nothing running
                    elif (judgement is not _VIOLATES and track.status == OK
                          and not track.chattering):
                        pass  # in limits and ok: nothing moves (a window, most of the time)
                    else:
                        age(track, judgement, at, now, events)
            except Exception as exc:
                self._refuse(track, exc, now=now)
            if checker.due < track.due:  # not ticked (out of schedule): still due
                self._wake(track, checker.due)
        if now >= self._account_due:
            self._account_due = now + ACCOUNT_EVERY
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

    def snapshot(self, now: float) -> Snapshot:
        """Compliance of every pair now, and seconds in each state since the last snapshot."""
        items = []
        for track in self._tracks:
            try:
                items.append(snapshot_item(track, now, self._evidence.last(track)))
            except Exception as exc:  # this pair is left out of this snapshot only
                self._refuse(track, exc, now=now)
            track.seconds = no_seconds()
            track.readings = 0
        snapshot = Snapshot(self.site_id, self._snapshot_at, now, items)
        self._snapshot_at = now
        return snapshot

    # --- restarts and reloads -------------------------------------------------------------

    def state(self, history: bool = True) -> dict[str, Any]:
        """Everything needed to resume after a restart, as plain JSON-able data: each
        pair's core under "pairs" (as columns), its readings under "history" (left out
        with `history=False`: the bulk of the bytes, saved less often; see rules.saved)."""
        cores: list[tuple[Track, list[Any]]] = []
        histories: dict[str, list[Any]] = {}
        shared: saved.Shared = {}
        for track in self._tracks:
            try:
                core = saved.core(track)
                if history:
                    histories[track.key] = saved.history(track, self._evidence, shared)
            except Exception as exc:  # not saved: this pair alone starts afresh
                histories.pop(track.key, None)
                self._refuse(track, exc, now=self._snapshot_at)
            else:
                cores.append((track, core))
        state = {
            "v": STATE_VERSION,
            "pairs": saved.columns(cores),
            "last_ts": saved.stream_columns(self._last_ts()),
            "latest": self._latest,
            "snapshot_at": self._snapshot_at,
            "out_of_order": self.out_of_order,
        }
        if history:
            state["history"] = histories
        return state

    def restore(self, state: dict[str, Any]) -> int:
        """Resume from `state()` (or a version 3 one, a row per pair, or 2, whose rows were
        whole); pairs whose (asset, standard id, version) changed start afresh, and a pair
        without a saved history keeps its status but starts its evidence and its readings'
        check empty. Returns how many pairs were restored."""
        version = state.get("v")
        if version not in (2, 3, STATE_VERSION):
            return 0
        self._restore_streams(state)
        rows, histories = saved.cores(state), state.get("history") or {}
        restored = 0
        for track in self._tracks:
            row = rows.get(track.key)
            if row is None:
                continue
            if version != 2 and isinstance(row, list):
                row = saved.row(row, histories.get(track.key), histories)
            if not saved.fits(track, row, self.zone, self._snapshot_at):
                log.warning("rules: the saved state of %s does not fit its check (was the "
                            "standard changed without a new version?): starting it afresh",
                            track.key)
                continue
            saved.load(track, row, self._evidence)
            self._episodes.arm(track)
            if track.checker.timed and not track.checker.always:
                self._wake(track, -INF)  # look at the restored check at the next tick
            restored += 1
        return restored

    def _restore_streams(self, state: dict[str, Any]) -> None:
        """What `state()` saved beside the pairs: the streams' last timestamps (kept for a
        stream no pair reads: a later reload may read it again), the latest values, the
        counters."""
        self._orphan_ts = {}
        for series in self._series.values():
            series.last_ts = -INF
        for a, m, ts in saved.streams(state):
            series = self._series.get((a, m))
            if series is None:
                self._orphan_ts[(a, m)] = ts
            else:
                series.last_ts = ts
        self._latest = {a: dict(v) for a, v in state.get("latest", {}).items()}
        self._snapshot_at = state.get("snapshot_at", self._snapshot_at)
        self.out_of_order = state.get("out_of_order", 0)

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


def _sample(reading: Reading) -> str:
    return f"{reading.metric}={reading.value!r} at {when(reading.ts)}"
