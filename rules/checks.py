"""Per-value check kinds: is this value a violation, and is it far enough back to recover.

Only kinds judged on one value at a time live here (range, equals); windowed, rate,
stale, budget and transitions kinds need history and are not implemented yet.
"""

from __future__ import annotations

from typing import Any

from rules.standard import EqualsCheck, RangeCheck, Standard

VALUE_KINDS = ("range", "equals")


def unsupported(standard: Standard) -> str | None:
    """Why this engine cannot evaluate `standard` yet, or None when it can."""
    if standard.check.kind not in VALUE_KINDS:
        return (f"check kind {standard.check.kind!r} is not supported by this version yet "
                f"(supported: {', '.join(VALUE_KINDS)})")
    if standard.expr is not None:
        return "expr is not supported by this version yet: use metric"
    if standard.active is not None:
        return "active schedules are not supported by this version yet"
    return None


class ValueCheck:
    """A compiled range or equals check with its deadband."""

    __slots__ = ("deadband", "equals", "high", "low")

    def __init__(self, standard: Standard) -> None:
        check = standard.check
        self.deadband = standard.deadband
        self.equals: float | None = None
        self.low = self.high = None
        if isinstance(check, RangeCheck):
            self.low, self.high = check.min, check.max
        elif isinstance(check, EqualsCheck):
            self.equals = check.value
        else:
            raise ValueError(unsupported(standard))

    def violated(self, value: float) -> bool:
        if self.equals is not None:
            return value != self.equals
        return (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        )

    def recovered(self, value: float) -> bool:
        """Inside the limits by at least the deadband: a violation may end."""
        if self.equals is not None:
            return value == self.equals
        margin = self.deadband
        return (self.low is None or value >= self.low + margin) and (
            self.high is None or value <= self.high - margin
        )

    def limit(self) -> dict[str, Any]:
        if self.equals is not None:
            return {"value": self.equals}
        limit: dict[str, Any] = {}
        if self.low is not None:
            limit["min"] = self.low
        if self.high is not None:
            limit["max"] = self.high
        return limit
