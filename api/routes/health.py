"""Liveness and readiness: the only route without a token."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, HTTPException
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import SessionDep
from api.schemas import Health

router = APIRouter(tags=["health"])

try:
    VERSION = version("facility-patrol")
except PackageNotFoundError:  # running from a source tree
    VERSION = "0+unknown"


@router.get("/health", response_model=Health)
def health(session: SessionDep) -> Health:
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"database unavailable: {type(exc).__name__}") from None
    return Health(status="ok", version=VERSION, database="ok")
