"""Liveness and readiness: the only route without a token."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, HTTPException

from api.deps import SessionDep
from api.schemas import Health
from api.service import database_fault

router = APIRouter(tags=["health"])

try:
    VERSION = version("facility-patrol")
except PackageNotFoundError:  # running from a source tree
    VERSION = "0+unknown"


@router.get("/health", response_model=Health)
def health(session: SessionDep) -> Health:
    fault = database_fault(session)
    if fault is not None:
        raise HTTPException(503, f"database unavailable: {fault}")
    return Health(status="ok", version=VERSION, database="ok")
