"""Patrol's central side: nonconformances, their lifecycle, the feed and webhooks, over
FastAPI and SQLAlchemy.

Every change of an NC goes through `api.lifecycle.transition`, over the tables of
`api.workflow`; routes (api/routes/) speak HTTP and call the service functions, which
never do. The service layer refuses with one family of exceptions (api/errors.py), which
api/app.py turns into an HTTP status and a `{"detail": ...}` body in one place:

    PatrolError                       (400: the root, not raised itself)
    ├── BadCursor                     400  a pagination cursor this API did not give out
    ├── Forbidden                     403  the caller's role, reach or independence
    ├── NotFound                      404  no such thing, or another site's
    ├── Conflict                      409  not in this state
    │   └── IllegalAction (workflow)       the action does not apply: names those that do
    └── Invalid                       422  a value the request carries cannot be used
        ├── BadWindow (compliance)         a compliance window backwards or too long
        └── ClockSkew                      events dated ahead of the server's clock
                                           (adds `code: clock_skew` and `server_time`)

HTTP-only refusals (no token, a body too large, a malformed query) stay HTTPException in
api/deps.py, api/door.py and the routes.
"""

from api.errors import BadCursor, ClockSkew, Conflict, Forbidden, Invalid, NotFound, PatrolError

__all__ = ["BadCursor", "ClockSkew", "Conflict", "Forbidden", "Invalid", "NotFound",
           "PatrolError"]
