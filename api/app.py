"""The FastAPI application: routers under /api/v1, and errors that never leak a 500."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from api.routes import compliance, events, health, nonconformances
from api.store import Database

log = logging.getLogger("patrol.api")


def create_app(db: Database, *, recurrence: timedelta = timedelta(days=90)) -> FastAPI:
    """An app over `db`; the caller owns the database's lifetime."""
    app = FastAPI(title="Patrol", version=health.VERSION,
                  description="Nonconformances raised by inspection standards.")
    app.state.db = db
    app.state.recurrence = recurrence
    for module in (health, nonconformances, events, compliance):
        app.include_router(module.router, prefix="/api/v1")

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database error on %s %s: %s", request.method, request.url.path,
                    exc.orig)
        return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    return app
