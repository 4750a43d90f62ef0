"""Pairs under an `active:` schedule: which active stretch each saw last, so that a
reading or a tick inside it costs two comparisons, and leaving it (or coming back after an
inactive stretch nobody saw) resets running delays: nothing raises or ages outside."""

from __future__ import annotations

from dataclasses import dataclass, field

from rules.episodes import Episodes
from rules.schedule import Schedule
from rules.track import INF, Track


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


class Scheduled:
    """Every scheduled pair, by schedule."""

    __slots__ = ("by_schedule", "episodes")

    def __init__(self, episodes: Episodes) -> None:
        self.episodes = episodes
        self.by_schedule: dict[Schedule, Stretches] = {}

    def add(self, track: Track, schedule: Schedule) -> None:
        self.by_schedule.setdefault(schedule, Stretches()).tracks.append(track)

    def inside(self, track: Track, ts: float) -> bool:
        """Whether `ts` is inside the track's schedule; leaving it, or coming back after an
        inactive stretch nobody saw, resets running delays (nothing raises or ages)."""
        schedule = track.schedule
        if schedule is None:
            return True
        if track.active_since <= ts < track.active_until:
            return True
        self.episodes.outside_schedule(track)
        if not schedule.active(ts):
            return False
        track.active_since, track.active_until = ts, schedule.active_until(ts)
        self.by_schedule[schedule].widen(track)
        return True

    def refresh(self, now: float, visit: set[Track]) -> None:
        """At a tick, bring the stretch of every pair not about to be visited up to date.

        The active stretch a pair saw last starts at its first look inside it, tick or
        reading, and a later look dated before that resets the delays: kept up to date for
        every pair, not only for those visited. Nothing to do while every pair's stretch
        holds `now`, or outside the schedule (a pair with no delay running has none to
        reset; the others are visited).
        """
        for schedule, stretches in self.by_schedule.items():
            if stretches.latest_since <= now < stretches.earliest_until \
                    or not schedule.active(now):
                continue
            for track in stretches.tracks:
                if not track.active_since <= now < track.active_until and track not in visit:
                    self.inside(track, now)
            stretches.bound()
