"""Engine events from edge agents (`patrol agent`); idempotent by event id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from api.auth import Principal
from api.deps import get_db, require
from api.ingest import apply_events
from api.schemas import EventsIn, EventsResult, Refusal
from api.store import Database

router = APIRouter(tags=["events"])


@router.post("/events", response_model=EventsResult, responses={
    403: {"model": Refusal, "description": "role, or an event of a site the token does "
                                            "not reach (the whole batch)"},
    422: {"model": Refusal, "description": "invalid events, or `code: clock_skew`: an "
                                            "event dated ahead of the server's clock "
                                            "(the whole batch)"}})
def post_events(
    body: EventsIn,
    request: Request,
    db: Annotated[Database, Depends(get_db)],
    principal: Annotated[Principal, Depends(require("agent"))],
) -> EventsResult:
    if principal.sites is not None:
        foreign = sorted({event.site_id for event in body.events} - principal.sites)
        if foreign:
            raise HTTPException(403, f"this token does not reach site {foreign[0]!r} (it "
                                     f"reaches {', '.join(sorted(principal.sites))}): "
                                     "nothing in the batch was applied")
    result = apply_events(db.write, body.events, actor=(principal.name, principal.role),
                          recurrence=request.app.state.recurrence,
                          max_clock_skew=request.app.state.max_clock_skew)
    return EventsResult(applied=result.applied, duplicates=result.duplicates, ids=result.ids)
