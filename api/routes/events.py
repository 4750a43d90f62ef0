"""Engine events from edge agents (`patrol agent`); idempotent by event id. Fields a
newer agent sends that this API does not know are accepted, and named in the answer."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from api.auth import Principal
from api.deps import get_db, require
from api.ingest import apply_events
from api.schemas import EventsResult, Refusal
from api.store import Database
from rules.events import EventsIn

router = APIRouter(tags=["events"])


REFUSALS: dict[int | str, dict[str, Any]] = {
    403: {"model": Refusal, "description": "role, or an event of a site the token does not "
                                           "reach (the whole batch)"},
    422: {"model": Refusal, "description": "invalid events, or `code: clock_skew`: an event "
                                           "dated ahead of the server's clock (the whole "
                                           "batch)"}}


@router.post("/events", response_model=EventsResult, response_model_exclude_none=True,
             responses=REFUSALS)
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
    return EventsResult(applied=result.applied, duplicates=result.duplicates, ids=result.ids,
                        unknown_fields=Counter(body.unknown_fields) or None)
