"""Refusals of the API's service layer: one root, no HTTP. The tree is drawn in the api
package's docstring (api/__init__.py); api/app.py maps each kind to its HTTP status and
the JSON error body in one place, so a service function says what went wrong and never
which status answers it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class PatrolError(Exception):
    """Root of the service layer's refusals: nothing was changed."""


class NotFound(PatrolError):
    """No such thing, or another site's (which, for a caller that does not reach that
    site, is not there)."""


class Forbidden(PatrolError):
    """The caller's role, reach or independence does not allow it."""


class Conflict(PatrolError):
    """Not allowed in the present state of the thing (a state the workflow does not take
    the action in, another NC holding the one open slot of its asset and standard)."""


class Invalid(PatrolError):
    """A value the request carries cannot be used (a missing field, an unknown asset, a
    time without a zone, an unsafe URL)."""


class BadCursor(PatrolError):
    """A pagination cursor this API did not give out."""


class ClockSkew(Invalid):
    """An event dated further ahead of the server's clock than allowed: the sender's clock
    is wrong. The whole batch is refused, and the sender keeps it to send again later."""

    def __init__(self, event_id: str, at: datetime, server_time: datetime,
                 max_skew: timedelta) -> None:
        ahead = (at - server_time).total_seconds()
        super().__init__(f"event {event_id!r} is dated {at.astimezone(UTC).isoformat()}, "
                         f"{ahead:.0f}s ahead of this server's clock (at most "
                         f"{max_skew.total_seconds():g}s allowed): check the sender's clock")
        self.server_time = server_time
        self.ahead = ahead


__all__ = ["BadCursor", "ClockSkew", "Conflict", "Forbidden", "Invalid", "NotFound",
           "PatrolError"]
