"""What the engine could not judge: counted per standard, logged at most once a minute.

A reading whose judgement raises (an `expr` without a finite real value, a fault in a
check) is refused for that (asset, standard) pair only: it counts as a bad-quality reading
there (never compliant, never violating) and every other pair and reading goes on. The
counts are the runtime's to expose as a metric; the log shows a sample, not every one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rules.events import iso
from rules.expr import Undefined

log = logging.getLogger("patrol.rules")

LOG_EVERY = 60.0
"""Seconds between two warnings about one standard's refused readings."""
ANY_STANDARD = "*"
"""The key of readings the engine could not look at at all (no standard got them)."""


class Refusals:
    """Refused readings and ticks by standard id (`counts`), with rate-limited warnings.

    Not common.logonce.WarnOnce, though the rate is the same: that one logs every held-back
    occurrence at DEBUG (here one an expr refuses at every reading would flood a debug
    log) and appends its count after the message, where this line keeps it beside the
    total ("3 refused in all; 1 more since the last warning").
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.counts: dict[str, int] = {}
        self._logged: dict[str, tuple[float, int]] = {}  # standard -> (when, count then)
        self._monotonic = monotonic

    def add(self, standard_id: str, sample: str, error: BaseException) -> None:
        """Count one refusal; warn with this one as the sample unless warned lately."""
        count = self.counts[standard_id] = self.counts.get(standard_id, 0) + 1
        now = self._monotonic()
        logged = self._logged.get(standard_id)
        if logged is not None and now - logged[0] < LOG_EVERY:
            return
        skipped = count - logged[1] - 1 if logged is not None else 0
        more = f"; {skipped} more since the last warning" if skipped else ""
        log.warning("rules: %s: cannot judge %s: %s: it counts as a bad-quality reading for "
                    "this standard (%d refused in all%s)", standard_id, sample,
                    reason(error), count, more)
        self._logged[standard_id] = (now, count)


def reason(error: BaseException) -> str:
    """Why, in a few words: the expression's own reason, else the exception."""
    if isinstance(error, Undefined):
        return error.reason
    return f"{type(error).__name__}: {error}"


def when(ts: object) -> str:
    """A timestamp for a log line, whatever it holds."""
    try:
        return iso(ts)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return repr(ts)
