"""Engine events from edge agents (`patrol agent`); idempotent by event id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.auth import Principal
from api.deps import get_db, require
from api.ingest import apply_events
from api.schemas import EventsIn, EventsResult
from api.store import Database

router = APIRouter(tags=["events"])


@router.post("/events", response_model=EventsResult)
def post_events(
    body: EventsIn,
    request: Request,
    db: Annotated[Database, Depends(get_db)],
    principal: Annotated[Principal, Depends(require("agent"))],
) -> EventsResult:
    applied, duplicates = apply_events(db.write, body.events,
                                       actor=(principal.name, principal.role),
                                       recurrence=request.app.state.recurrence)
    return EventsResult(applied=applied, duplicates=duplicates)
