"""Why this process serves degraded, asked of its parts when someone asks.

A part that can tell (the agent of `patrol run` or `patrol agent`: its buffer, writers
and sources) adds a check while it runs; `GET /api/v1/health` and the `patrol_degraded`
metric ask every check registered in the process. A process with no agent (`patrol api`)
has none: its health is its database's. Checks run at the question, on the asker's thread,
so they read plain attributes and their own connections only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

log = logging.getLogger("patrol")

HealthStatus = Literal["ok", "degraded"]
"""`ok`: every part serves as it should; `degraded`: still serving, see the reasons."""
ReasonCode = Literal["buffer_unwritable", "tsdb_lag", "forward_lag", "source_silent"]
"""What makes a process degraded (docs/metrics.md, "Health")."""
REASON_CODES: tuple[ReasonCode, ...] = get_args(ReasonCode)


@dataclass(frozen=True, slots=True)
class Reason:
    """One cause of degradation: its code, and what a person reads."""

    code: ReasonCode
    detail: str


Check = Callable[[float], list[Reason]]
"""Given the time now (epoch seconds), the reasons found; none when all is well."""

_checks: list[Check] = []
_lock = threading.Lock()


def add_check(check: Check) -> Callable[[], None]:
    """Register `check` for the life of a part; returns what removes it."""
    with _lock:
        _checks.append(check)

    def remove() -> None:
        with _lock:
            if check in _checks:
                _checks.remove(check)

    return remove


def reasons(now: float) -> list[Reason]:
    """Every registered check's reasons; a check that fails is logged and skipped (health
    must answer whatever one part does)."""
    with _lock:
        checks = list(_checks)
    found: list[Reason] = []
    for check in checks:
        try:
            found += check(now)
        except Exception:
            log.exception("a health check failed")
    return found
