"""What every request meets before FastAPI: the token, then limits on its body.

FastAPI reads and parses a body before it solves a route's dependencies, so a token
checked there comes after the work: one unauthenticated 60 MiB POST cost 1.5 GB before
its 401. Here the token is checked from the headers alone, and a request without a live
one is answered (and its connection closed) without the body ever being asked for.
Then each route gets its own limit (the agents' `POST /events` large, every other route
small), refused with 413 from the Content-Length or as soon as a chunked body passes it,
and bodies in flight share a byte budget per kind, refused with 503 and `Retry-After`
when it is spent. Refused, not queued: a waiting request still holds its connection and
the client's own timeout would send the same body again; agents retry a 503 anyway.

The route's role checks stay where they are (`api.deps.require`); the principal found
here is handed to them in the ASGI scope, so the token is looked up once per request.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from fastapi import HTTPException
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Principal, authenticate, note_legacy_use
from api.store import Database

log = logging.getLogger("patrol.api")

PRINCIPAL = "patrol.principal"
"""The ASGI scope key holding the request's `Principal`."""

OPEN_PATHS = frozenset({"/api/v1/health", "/openapi.json"})
"""API paths answered without a token: health checks and the API's own description."""
API_PREFIX = "/api/"
"""Tokens are asked for under this prefix only (and of `METRICS_PATH` off loopback). The
other paths are pages with their own
permission: the console's (api/console: a signed-in person, a CSRF token per form, its
static files and /docs open), and the alert links' page (api/routes/ack.py: the signed
link)."""

METRICS_PATH = "/metrics"
"""Prometheus text (SPEC 7.5): no token asked of a request from loopback (the machine's
own scraper), any valid token of one from elsewhere."""

LARGE_ROUTES = frozenset({("POST", "/api/v1/events")})
"""Routes whose bodies may be large: agents' event batches and compliance snapshots."""

MAX_BODY = 64 * 2**20
"""Bytes of a body on a large route: a compliance snapshot of 200,000 (asset, standard)
pairs, the most `SnapshotIn` takes, is about 34 MB."""
SMALL_BODY = 2**20
"""Bytes of a body on every other route: actions, findings and webhooks are a few KB."""
SMALL_BUDGET_BODIES = 16
"""Small bodies of the full size that may be in flight at once (thousands of real ones)."""


class BodyBudget:
    """Bytes of request bodies in flight, shared by concurrent requests (one event loop,
    so no lock): parsed JSON takes many times its size, so this bounds the memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    detail: str
    headers: dict[str, str]


def from_loopback(scope: Scope) -> bool:
    """The request came over loopback (127.0.0.0/8, ::1, ::ffff:127.x). Behind a reverse
    proxy on this machine every request does: such a proxy must not pass /metrics on."""
    client = scope.get("client")
    try:
        address = ipaddress.ip_address(client[0]) if client else None
    except ValueError:  # a unix socket's peer or a test client's name: not known to be local
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


class Door:
    """The ASGI middleware: NUL in the query (400), token (401), body limits (413) and
    budget (503), in that order, before the app sees the request."""

    def __init__(self, app: ASGIApp, db: Database, *, max_body: int = MAX_BODY,
                 small_body: int = SMALL_BODY) -> None:
        self.app = app
        self.db = db
        self.max_body = max_body
        self.small_body = small_body
        self.budgets = {True: BodyBudget(max_body),
                        False: BodyBudget(small_body * SMALL_BUDGET_BODIES)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        has_body = (length not in (b"", b"0")
                    or b"chunked" in headers.get(b"transfer-encoding", b"").lower())
        large = (scope["method"], scope["path"]) in LARGE_ROUTES
        limit = self.max_body if large else self.small_body
        refusal = None
        if b"%00" in scope.get("query_string", b""):
            refusal = _Refusal(400, "the query string holds a NUL character (%00)", {})
        elif ((scope["path"].startswith(API_PREFIX) and scope["path"] not in OPEN_PATHS)
              or (scope["path"] == METRICS_PATH and not from_loopback(scope))):
            principal = await self._authenticate(headers.get(b"authorization", b""))
            if isinstance(principal, _Refusal):
                refusal = principal
            else:
                scope[PRINCIPAL] = principal
        if refusal is None and length.isdigit() and int(length) > limit:
            refusal = _Refusal(413, f"the body is over {limit} bytes", {})
        budget = self.budgets[large]
        reserved = int(length) if refusal is None and length.isdigit() else 0
        if reserved and not budget.take(reserved):
            reserved = 0
            refusal = _Refusal(503, "too many request bodies in flight; retry later",
                               {"Retry-After": "1"})
        if refusal is not None:
            await self._refuse(refusal, has_body, scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen, reserved
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                seen += size
                # FastAPI answers an HTTPException raised from here; the rest of the body
                # is left unread, so the connection closes after the answer
                if seen > limit:
                    raise HTTPException(413, f"the body is over {limit} bytes",
                                        headers={"Connection": "close"})
                if seen > reserved:  # no Content-Length (or a false one): take as it comes
                    if not budget.take(seen - reserved):
                        raise HTTPException(503, "too many request bodies in flight; "
                                                 "retry later", headers={
                                                     "Retry-After": "1", "Connection": "close"})
                    reserved = seen
            return message

        try:
            await self.app(scope, limited, send)
        finally:
            budget.give(reserved)

    async def _authenticate(self, authorization: bytes) -> Principal | _Refusal:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token.strip():
            return _Refusal(401, "missing bearer token", challenge)
        try:
            principal = await run_in_threadpool(self._lookup, token.strip())
        except (OperationalError, PoolTimeout) as exc:
            log.warning("database error while checking a token: %s",
                        getattr(exc, "orig", None) or exc)
            return _Refusal(503, "database unavailable, retry later", {"Retry-After": "5"})
        if principal is None:
            return _Refusal(401, "invalid or revoked token", challenge)
        note_legacy_use(principal)
        return principal

    def _lookup(self, token: str) -> Principal | None:
        # its own short connection, as the routes' dependency had
        with self.db.engine.connect() as connection:
            return authenticate(connection, token)

    @staticmethod
    async def _refuse(refusal: _Refusal, has_body: bool, scope: Scope, receive: Receive,
                      send: Send) -> None:
        """Answer without reading the body; with one unread, close the connection after
        the answer (the server would otherwise read the rest to find the next request)."""
        headers = {**refusal.headers, **({"Connection": "close"} if has_body else {})}
        response = JSONResponse({"detail": refusal.detail}, status_code=refusal.status,
                                headers=headers)
        await response(scope, receive, send)
