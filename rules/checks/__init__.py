"""Check kinds: each turns a stream of (time, value) into a judgement.

A checker only judges; timing (`for`, `clear_after`, schedules, chattering) is the
engine's. `observe` is called with good readings in time order; `tick(now)` lets checks
that time alone can change (stale, windows, transitions, budget periods) say so.
`deadband` is applied here, because "far enough back inside the limits" depends on
what is measured (a value, a rate, an aggregate, a consumption).

One module per family: base (Judgement, Checker, TickClock), values (range, equals,
rate), stale, window, budget, transitions. A new kind is a Checker subclass in its own
module and one line in `make_checker`.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from rules.checks.base import Checker, Judgement, TickClock
from rules.checks.budget import BudgetChecker
from rules.checks.stale import StaleChecker
from rules.checks.transitions import TransitionsChecker
from rules.checks.values import EqualsChecker, RangeChecker, RateChecker
from rules.checks.window import WindowChecker
from rules.errors import UnknownCheck
from rules.standard import (
    BudgetCheck,
    EqualsCheck,
    RangeCheck,
    RateCheck,
    StaleCheck,
    Standard,
    TransitionsCheck,
    WindowCheck,
)

__all__ = [
    "BudgetChecker", "Checker", "EqualsChecker", "Judgement", "RangeChecker",
    "RateChecker", "StaleChecker", "TickClock", "TransitionsChecker", "WindowChecker",
    "make_checker",
]


def make_checker(standard: Standard, *, zone: ZoneInfo, started: float,
                 clock: TickClock | None = None) -> Checker:
    """The checker for a standard's kind (every kind of SPEC section 4); `clock` lets a
    stale check outside any schedule be ticked only when due. UnknownCheck for a kind
    with no checker: config loading admits none, so only a new kind added to the schema
    without its checker (or a Standard built without validation) gets here."""
    check = standard.check
    if isinstance(check, RangeCheck):
        return RangeChecker(standard, check)
    if isinstance(check, EqualsCheck):
        return EqualsChecker(standard, check)
    if isinstance(check, RateCheck):
        return RateChecker(standard, check)
    if isinstance(check, StaleCheck):
        return StaleChecker(standard, check, started,
                            clock if standard.active is None else None)
    if isinstance(check, WindowCheck):
        return WindowChecker(standard, check)
    if isinstance(check, BudgetCheck):
        return BudgetChecker(standard, check, zone)
    if isinstance(check, TransitionsCheck):
        return TransitionsChecker(standard, check)
    kind = getattr(check, "kind", type(check).__name__)
    raise UnknownCheck(f"standard {standard.id}: no checker judges a check of kind "
                       f"{kind!r}")
