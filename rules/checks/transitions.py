"""The transitions check: too many changes to one value within a period."""

from __future__ import annotations

from collections import deque
from typing import Any

from rules.checks.base import COMPLIANT, EARLY, INF, NONE, VIOLATING, Checker, Judgement
from rules.standard import Standard, TransitionsCheck


class TransitionsChecker(Checker):
    """More than `max` changes to the value `to` within `per` (short cycling, trips)."""

    __slots__ = ("changes", "per", "previous", "to")
    timed = True

    def __init__(self, standard: Standard, check: TransitionsCheck) -> None:
        super().__init__(standard)
        self.to, self.high, self.per = check.to, check.max, check.per
        self.previous: float | None = None
        self.changes: deque[float] = deque()
        self.due = INF

    def observe(self, ts: float, value: float) -> Judgement:
        if value == self.to and self.previous is not None and self.previous != self.to:
            self.changes.append(ts)
        self.previous = value
        return self._count(ts)

    def tick(self, now: float) -> tuple[Judgement, float]:
        if self.changes and self.changes[0] <= now - self.per:
            return self._count(now), now
        self._set_due()
        return NONE, now

    def outside(self, ts: float, value: float) -> None:
        self.previous = value

    def _count(self, now: float) -> Judgement:
        while self.changes and self.changes[0] <= now - self.per:
            self.changes.popleft()
        self._set_due()
        self.value = float(len(self.changes))
        return VIOLATING if self.value > self.high else COMPLIANT

    def _set_due(self) -> None:
        """Due when the oldest change expires."""
        due = self.changes[0] + self.per - EARLY if self.changes else INF
        earlier, self.due = due < self.due, due
        if earlier:
            self.alarm(due)

    def limit(self) -> dict[str, Any]:
        return {"to": self.to, "max": self.high, "per": self.per}

    def stats(self) -> dict[str, Any]:
        return {"transitions": int(self.value), "at": list(self.changes)}

    def state(self) -> Any:
        return [self.previous, list(self.changes)]

    def restore(self, state: Any) -> None:
        self.previous, self.changes = state[0], deque(state[1])
        self._set_due()
