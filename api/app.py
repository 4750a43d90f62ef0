"""The FastAPI application: routers under /api/v1, background jobs in its lifespan, and
errors that never leak a 500."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Collection
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.background import run_jobs
from api.routes import actions, compliance, events, feed, health, nonconformances, webhooks
from api.store import Database
from api.webhooks import dispatch, parse_allow

log = logging.getLogger("patrol.api")

MAX_BODY = 64 * 2**20
"""Bytes of a request body: a compliance snapshot of 200,000 (asset, standard) pairs, the
most `SnapshotIn` takes, is about 34 MB. Beyond it, 413 before the body is read, or as
soon as a body without a length runs past it, so one client cannot fill the memory."""


def create_app(db: Database, *, recurrence: timedelta = timedelta(days=90),
               site_id: str = "", assets: Collection[str] = (),
               allow_self_verify: bool = False, webhooks_allow_private: bool = False,
               jobs: bool = False, max_body: int = MAX_BODY,
               webhooks_allow: Collection[str] = ()) -> FastAPI:
    """An app over `db`; the caller owns the database's lifetime.

    `site_id` and `assets` are the local site's (`patrol run`): manual findings default to
    it and are checked against its assets. `jobs` runs the overdue and verification scans
    and the webhook dispatcher. `webhooks_allow` (CIDRs) are the loopback and private
    addresses webhooks may reach; `webhooks_allow_private` allows them all.
    """
    allow = parse_allow(webhooks_allow)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(run_jobs(db.write)),
                 asyncio.create_task(dispatch(db.write, allow=allow,
                                              allow_private=webhooks_allow_private))
                 ] if jobs else []
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="Patrol", version=health.VERSION, lifespan=lifespan,
                  description="Nonconformances raised by inspection standards, and the "
                              "closed loop that rectifies and verifies them.")
    app.state.db = db
    app.state.recurrence = recurrence
    app.state.site_id = site_id
    app.state.assets = frozenset(assets)
    app.state.allow_self_verify = allow_self_verify
    app.state.webhooks_allow_private = webhooks_allow_private
    app.state.webhooks_allow = allow
    for module in (health, nonconformances, actions, events, compliance, feed, webhooks):
        app.include_router(module.router, prefix="/api/v1")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own 422, made safe for inputs JSON cannot carry back (NaN, surrogates)."""
        return JSONResponse({"detail": _echoable(exc.errors())},
                            status_code=422)

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        """A value the validation let through but the database refuses (PostgreSQL and
        a NUL, say) is the request's fault: 422, logged so a gap in validation shows."""
        log.warning("database refused a value on %s %s: %s", request.method,
                    request.url.path, getattr(exc, "orig", None) or exc)
        # In FastAPI's shape for 422, so clients (and the published schema) read it alike.
        return JSONResponse({"detail": [{
            "type": "database_refused", "loc": ["request"],
            "msg": "a value in the request cannot be stored or compared by the database"}]},
            status_code=422)

    app.add_middleware(_Guard, max_body=max_body)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database error on %s %s: %s", request.method, request.url.path,
                    getattr(exc, "orig", None) or exc)
        return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    return app


class _Guard:
    """What is refused before any route: a NUL (`%00`) in the query string (no text
    column holds one and PostgreSQL refuses it outright, so it is a client's mistake on
    every database: 400), and a body over `max_body` (413)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = None
        if b"%00" in scope.get("query_string", b""):
            refusal = 400, "the query string holds a NUL character (%00)"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            refusal = 413, f"the body is over {self.max_body} bytes"
        if refusal is not None:
            status, detail = refusal
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # FastAPI re-raises an HTTPException from here
                    raise HTTPException(413, f"the body is over {self.max_body} bytes")
            return message

        await self.app(scope, limited, send)


ECHO_DEPTH = 8
"""How deep a 422 echoes the input it refuses; below that, "...": enough to recognise it,
and an input nested thousands deep does not turn the answer into a RecursionError."""


def _echoable(value: Any, depth: int = 0) -> Any:
    """FastAPI's error list as JSON can carry it back: NaN and infinities become null, a
    lone surrogate (a half pair sent as \\ud800) its escape as text, other objects (the
    exception in `ctx`) their text, and nesting stops at ECHO_DEPTH."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict | list | tuple) and depth >= ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {str(_echoable(key)): _echoable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_echoable(item, depth + 1) for item in value]
    return _echoable(str(value))
