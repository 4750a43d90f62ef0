"""Liveness and readiness: the only route without a token.

503 when the database does not answer (nothing can be served); otherwise 200, `ok` or
`degraded` with the reasons the process's parts give (`common.health`: in `patrol run`
the agent's buffer, writers and sources; `patrol api` alone has none).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException

from api.deps import SessionDep
from api.schemas import Health, HealthReason
from api.service import database_fault
from common.health import reasons as degraded
from common.version import VERSION

router = APIRouter(tags=["health"])

@router.get("/health", response_model=Health)
def health(session: SessionDep) -> Health:
    fault = database_fault(session)
    if fault is not None:
        raise HTTPException(503, f"database unavailable: {fault}")
    reasons = [HealthReason(code=r.code, detail=r.detail) for r in degraded(time.time())]
    return Health(status="degraded" if reasons else "ok", version=VERSION, database="ok",
                  reasons=reasons)
