"""The timing state machine of one pair: on-delay (`for`), off-delay (`clear_after`) and
chattering turn judgements into violation episodes, and episodes into events.

    ok --violating--> pending --for elapsed--> violating --compliant--> recovering
    recovering --clear_after elapsed--> ok; pending and recovering fall back on the
    opposite judgement (and when a schedule's active stretch ends: nothing ages outside).
"""

from __future__ import annotations

import math

from rules.checks import Judgement
from rules.compliance import account
from rules.events import Event, EventType
from rules.evidence import Evidence
from rules.track import OK, PENDING, RECOVERING, VIOLATING, Track

# Judgements under short names: `Judgement.X` is an enum lookup (~90 ns on CPython 3.11)
_VIOLATES, _COMPLIES, _NOTHING = Judgement.VIOLATING, Judgement.COMPLIANT, Judgement.NONE


class Episodes:
    """Moves pairs through the state machine and writes the events it raises; `armed`
    holds the pairs with a running delay or chattering (time alone may move them)."""

    __slots__ = ("armed", "evidence", "site_id")

    def __init__(self, site_id: str, evidence: Evidence) -> None:
        self.site_id = site_id
        self.evidence = evidence
        self.armed: set[Track] = set()

    def step(self, track: Track, judgement: Judgement, ts: float,
             events: list[Event]) -> None:
        """Apply one judgement dated `ts`."""
        before = track.status
        self._move(track, judgement, ts, events)
        if track.status != before:  # compliance time is exact at every change of state
            account(track, ts)

    def age(self, track: Track, judgement: Judgement, at: float, now: float,
            events: list[Event]) -> None:
        """A tick: apply its judgement (dated `at`), then fire delays that ran out by `now`
        and end chattering that has been quiet for `chattering.per`."""
        if judgement is not _NOTHING:
            self.step(track, judgement, at, events)
        standard = track.standard
        if track.status == PENDING and now - track.since >= standard.for_:
            self._start(track, now, events)
        elif track.status == RECOVERING and now - track.recover_since >= standard.clear_after:
            self._clear(track, now, events)
        if track.chattering and (not track.flips
                                 or track.flips[-1] <= now - standard.chattering.per):
            self._end_chattering(track, now, events)
        self.arm(track)

    def arm(self, track: Track) -> None:
        """Keep the set of pairs with a running delay or chattering up to date."""
        if track.status in (PENDING, RECOVERING) or track.chattering:
            self.armed.add(track)
        else:
            self.armed.discard(track)

    def outside_schedule(self, track: Track) -> None:
        """The pair left its schedule's active stretch: running delays are reset."""
        if track.status == PENDING:
            track.status = OK
        elif track.status == RECOVERING:
            track.status = VIOLATING
        else:
            return  # no delay was running: nothing to reset
        self.arm(track)

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

    def _event(self, kind: EventType, track: Track, at: float, start: float) -> Event:
        standard, asset = track.standard, track.asset
        summary = standard.summary()
        summary["department"] = standard.department or asset.department or None
        readings = tuple(r for r in self.evidence.recent(track) if r[0] >= start) \
            if kind != "violation_cleared" else ()
        value = track.checker.value
        return Event(
            type=kind, site_id=self.site_id, asset_id=asset.id, standard_id=standard.id,
            standard_version=standard.version, metric=track.metric, episode_start=start,
            at=at, value=None if math.isnan(value) else value, limit=track.checker.limit(),
            readings=readings, stats=track.checker.stats(), standard=summary,
            asset={"type": asset.type, "name": asset.name, "location": asset.location},
        )
