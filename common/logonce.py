"""One way to log a condition that repeats: the first time at WARNING, repeats at DEBUG
(or again at WARNING with a count once `every` seconds have passed), and the recovery once
at INFO. An unattended gateway's log must show each outage once, not once per retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class WarnOnce:
    """The log of one condition (a device down, a writer failing, bad payloads on a topic).

    `trouble(...)` logs at WARNING (or `level`) when the condition starts, at DEBUG while it
    lasts, and, with `every` set, at that level again with the number held back once that
    many seconds have passed. `recovered(...)` logs at INFO only if there was trouble, and
    resets.
    """

    def __init__(self, logger: logging.Logger, *, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 level: int = logging.WARNING) -> None:
        self.logger = logger
        self.every = every
        self.level = level
        """Of the reports that go out (WARNING; ERROR for what a person must fix)."""
        self.clock = clock
        self.troubled = False
        self.held_back = 0
        self._warned_at = float("-inf")

    def trouble(self, msg: str, *args: object) -> bool:
        """Log one occurrence; True when it went out at `level`."""
        now = self.clock()
        due = not self.troubled or (self.every is not None
                                    and now - self._warned_at >= self.every)
        self.troubled = True
        if not due:
            self.held_back += 1
            self.logger.debug(msg, *args)
            return False
        if self.held_back:
            msg += f" ({self.held_back} more since the last warning)"
        self.logger.log(self.level, msg, *args)
        self._warned_at = now
        self.held_back = 0
        return True

    def recovered(self, msg: str, *args: object) -> bool:
        """Log the end of the condition at INFO if there was one; True if there was."""
        if not self.troubled:
            return False
        self.logger.info(msg, *args)
        return self.reset()

    def reset(self) -> bool:
        """End the condition without a log line (another one said it); True if there was
        one."""
        had = self.troubled
        self.troubled = False
        self.held_back = 0
        self._warned_at = float("-inf")
        return had
