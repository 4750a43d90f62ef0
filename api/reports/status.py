"""KPI status: each figure against its target in `site.kpi_targets` (SPEC 7.3).

Green at or past `target`, amber up to `amber`, red beyond. "Past" depends on the
figure's direction: durations (`*_s`), the cancel, reopen and recurrence rates and the
counts of trouble (raised, cancelled, open at the end, overdue, the backlog, the alarm
load) are better when lower; every other rate (and `closed`) when higher. A target names
a figure as the answer does, nested ones with a dot (`backlog.30d+`,
`alarm_load.per_day`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

Status = Literal["green", "amber", "red"]

LOWER_IS_BETTER = frozenset({"cancel_rate", "reopen_rate", "recurrence_rate", "raised",
                             "cancelled", "open_at_end", "overdue"})
LOWER_IS_BETTER_SECTIONS = ("backlog.", "alarm_load.")


class Target(Protocol):
    """`agent.site.KpiTarget`, as the API reads it."""

    @property
    def target(self) -> float: ...

    @property
    def amber(self) -> float: ...


def lower_is_better(name: str) -> bool:
    return (name.endswith("_s") or name in LOWER_IS_BETTER
            or name.startswith(LOWER_IS_BETTER_SECTIONS))


def status_of(name: str, value: float, target: Target) -> Status:
    """The colour of one value against its target."""
    if lower_is_better(name):
        return "green" if value <= target.target else \
            "amber" if value <= target.amber else "red"
    return "green" if value >= target.target else "amber" if value >= target.amber else "red"


def statuses(figures: Mapping[str, Any], targets: Mapping[str, Target]) -> dict[str, Status]:
    """The status of every figure that has a target and a value (a rate over nothing
    has neither colour)."""
    found: dict[str, Status] = {}
    for name, target in targets.items():
        value: Any = figures
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = status_of(name, float(value), target)
    return found
