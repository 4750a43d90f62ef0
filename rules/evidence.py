"""The readings an event carries as evidence: the last EVIDENCE_READINGS judged readings of
each pair, in one ring buffer of floats for the whole engine (see rules.track.Track)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rules.track import Track

EVIDENCE_READINGS = 50
RING = 2 * EVIDENCE_READINGS
"""Evidence slots of a pair: (ts, value) side by side."""


class Evidence:
    """Every pair's evidence ring; `ring` is written by the engine's observe loop itself."""

    __slots__ = ("ring",)

    def __init__(self, tracks: Sequence[Track]) -> None:
        # Written through a memoryview: it stores a float in a third of the time an
        # array's __setitem__ takes.
        self.ring = memoryview(bytearray(8 * RING * len(tracks))).cast("d")
        for track in tracks:
            track.evidence_at = track.index * RING

    def recent(self, track: Track) -> list[tuple[float, float]]:
        """The pair's judged readings, oldest first (at most EVIDENCE_READINGS)."""
        base, at, ring = track.index * RING, track.evidence_at, self.ring
        slots = [*range(at, base + RING, 2), *range(base, at, 2)] if track.evidence_full \
            else range(base, at, 2)
        return [(ring[i], ring[i + 1]) for i in slots]

    def last(self, track: Track) -> tuple[float, float] | None:
        """The pair's last judged reading (ts, value); None before its first."""
        base, at = track.index * RING, track.evidence_at
        if at == base and not track.evidence_full:
            return None
        slot = at - 2 if at > base else base + RING - 2
        return self.ring[slot], self.ring[slot + 1]

    def remember(self, track: Track, readings: Iterable[Sequence[float]]) -> None:
        """Put back evidence saved from `recent` (only the last EVIDENCE_READINGS fit)."""
        kept = list(readings)[-EVIDENCE_READINGS:]
        at = base = track.index * RING
        for ts, value in kept:
            self.ring[at], self.ring[at + 1] = ts, value
            at += 2
        track.evidence_full = len(kept) == EVIDENCE_READINGS
        track.evidence_at = base if track.evidence_full else at
