"""The FastAPI application: routers under /api/v1, background jobs in its lifespan, and
errors that never leak a 500."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api import console
from api.background import run_jobs
from api.config import RetentionConfig
from api.door import MAX_BODY, SMALL_BODY, Door
from api.errors import BadCursor, ClockSkew, Conflict, Forbidden, Invalid, NotFound, PatrolError
from api.inspections.config import InspectionsConfig, InspectionSetup
from api.inspections.schedule import serve as serve_schedules
from api.lifecycle import decide_with
from api.metrics import CountRequests
from api.notify.dispatch import NotifySetup, serve
from api.notify.outbox import Outbox
from api.reports import Target
from api.routes import (
    ack,
    actions,
    catalog,
    compliance,
    events,
    feed,
    gateways,
    health,
    nonconformances,
    notifications,
    out_of_service,
    reports,
    silences,
    webhooks,
)
from api.routes import inspections as inspection_routes
from api.routes import metrics as metrics_route
from api.store import Database
from api.webhooks import dispatch, parse_allow
from common.vocabulary import ROOT_CAUSE_CATEGORIES

log = logging.getLogger("patrol.api")

STATUS: dict[type[PatrolError], int] = {
    BadCursor: 400, Forbidden: 403, NotFound: 404, Conflict: 409, Invalid: 422,
    PatrolError: 400}
"""The HTTP answer to each kind of refusal of the service layer (api.errors): the one
place a refusal becomes a status."""


def create_app(db: Database, *, recurrence: timedelta = timedelta(days=90),
               site_id: str = "", assets: Collection[str] | Mapping[str, str | None] = (),
               allow_self_verify: bool = False, webhooks_allow_private: bool = False,
               jobs: bool = False, max_body: int = MAX_BODY, small_body: int = SMALL_BODY,
               max_clock_skew: timedelta = timedelta(minutes=5),
               webhooks_allow: Collection[str] = (),
               notifier: NotifySetup | None = None, locale: str | None = None,
               root_cause_categories: Sequence[str] = ROOT_CAUSE_CATEGORIES,
               inspections: InspectionSetup | None = None,
               kpi_targets: Mapping[str, Target] | None = None,
               timezone: str = "UTC",
               gateway_offline_after: timedelta = timedelta(minutes=5),
               retention: RetentionConfig | None = None) -> FastAPI:
    """An app over `db`; the caller owns the database's lifetime.

    `site_id` and `assets` are the local site's (`patrol run`): manual findings default to
    it and are checked against its assets (ids, or a map of id to asset type). `jobs` runs
    the overdue and verification scans and the webhook dispatcher. `max_body` limits
    bodies of `POST /events`, `small_body` those of every other route (api.door); events
    dated more than `max_clock_skew` ahead of this server's clock are refused.
    `webhooks_allow` (CIDRs) are the loopback and private addresses webhooks may reach;
    `webhooks_allow_private` allows them all. With `notifier`, NC changes are decided
    into notifications in their own transactions while the app runs, and (with `jobs`)
    sent. `locale` is the alert link page's language when the reader's browser asks for
    none it has (default: the notifier's `site.locale`, else en).
    `root_cause_categories` is `site.root_cause_categories`: what rectify accepts.
    `inspections` are the site's templates and schedules (default: none; ad hoc
    inspections at `site_id`); with `jobs`, its schedules run. `kpi_targets` colour the
    reports' figures (`site.kpi_targets`); `timezone` names their days and months.
    A gateway silent longer than `gateway_offline_after` raises the gateway-offline NC.
    With `jobs`, `retention` (`server.retention`) prunes what only served delivery.
    """
    allow = parse_allow(webhooks_allow)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(run_jobs(db.write, gateway_offline_after,
                                              retention=retention)),
                 asyncio.create_task(dispatch(db.write, allow=allow,
                                              allow_private=webhooks_allow_private))
                 ] if jobs else []
        stop_deciding = None
        if notifier is not None:
            stop_deciding = decide_with(db, Outbox(notifier.config).decide)
            if jobs:
                tasks.append(asyncio.create_task(serve(
                    db, notifier.config, notifier.site, mqtt=notifier.mqtt)))
        if jobs and inspections is not None and inspections.config.schedules:
            tasks.append(asyncio.create_task(serve_schedules(db, inspections)))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if stop_deciding is not None:
            stop_deciding()

    app = FastAPI(title="Patrol", version=health.VERSION, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # api.console serves /docs, from here
                  description="Nonconformances raised by inspection standards, and the "
                              "closed loop that rectifies and verifies them.")
    app.state.db = db
    app.state.recurrence = recurrence
    app.state.site_id = site_id
    app.state.assets = assets if isinstance(assets, Mapping) else dict.fromkeys(assets)
    app.state.allow_self_verify = allow_self_verify
    app.state.webhooks_allow_private = webhooks_allow_private
    app.state.max_clock_skew = max_clock_skew
    app.state.webhooks_allow = allow
    app.state.root_cause_categories = tuple(root_cause_categories)
    app.state.kpi_targets = dict(kpi_targets or {})
    app.state.timezone = timezone
    app.state.locale = locale or (notifier.site.locale if notifier is not None else "en")
    app.state.inspections = inspections or InspectionSetup(InspectionsConfig(), site_id)
    app.state.gateway_offline_after = gateway_offline_after
    for module in (health, nonconformances, actions, events, compliance, feed, webhooks,
                   notifications, silences, catalog, out_of_service, inspection_routes,
                   reports, gateways):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(ack.router)  # not under /api/v1: a page, its link is its token
    app.include_router(metrics_route.router)  # where scrapers look; api.door guards it
    console.mount(app)

    app.add_middleware(Door, db=db, max_body=max_body, small_body=small_body)
    app.add_middleware(CountRequests)  # outermost: the Door's refusals are counted too
    for kind, handler in ERROR_HANDLERS:
        app.add_exception_handler(kind, handler)
    return app


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422, made safe for inputs JSON cannot carry back (NaN, surrogates)."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _echoable(exc.errors())}, status_code=422)


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    """A refusal of the service layer as its status and `{"detail": ...}` (FastAPI's own
    shape); a clock skew adds `code` and `server_time`, which a sender acts on."""
    status = next(code for kind, code in STATUS.items() if isinstance(exc, kind))
    body: dict[str, Any] = {"detail": str(exc)}
    if isinstance(exc, ClockSkew):
        body["code"] = "clock_skew"
        body["server_time"] = exc.server_time.astimezone(UTC).isoformat().replace(
            "+00:00", "Z")
    return JSONResponse(body, status_code=status)


async def _unstorable(request: Request, exc: Exception) -> JSONResponse:
    """A value the validation let through but the database refuses (PostgreSQL and a NUL,
    say) is the request's fault: 422, logged so a gap in validation shows."""
    log.warning("database refused a value on %s %s: %s", request.method,
                request.url.path, getattr(exc, "orig", None) or exc)
    # In FastAPI's shape for 422, so clients (and the published schema) read it alike.
    return JSONResponse({"detail": [{
        "type": "database_refused", "loc": ["request"],
        "msg": "a value in the request cannot be stored or compared by the database"}]},
        status_code=422)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database error on %s %s: %s", request.method, request.url.path,
                getattr(exc, "orig", None) or exc)
    return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503,
                        headers={"Retry-After": "5"})


ERROR_HANDLERS: list[tuple[type[Exception], Callable[[Request, Exception],
                                                     Awaitable[JSONResponse]]]] = [
    (RequestValidationError, _invalid), (PatrolError, _refused), (DataError, _unstorable),
    (OperationalError, _database_down), (PoolTimeout, _database_down)]
"""Errors that never leak a 500: each kind and its answer."""


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
