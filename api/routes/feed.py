"""The change feed: every NC change in commit order, for trackers that pull."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from api.auth import Principal
from api.deps import get_db, require
from api.schemas import NonconformancePublic
from api.service import feed_after
from api.store import Database
from common.config_types import parse_duration
from common.wire_types import MAX_INT

router = APIRouter(tags=["feed"])

MAX_WAIT = 60.0
POLL = 0.25


class FeedItem(BaseModel):
    seq: int
    type: str
    at: str
    nc: NonconformancePublic


class Feed(BaseModel):
    events: list[FeedItem]
    next: int


@router.get("/feed", response_model=Feed, responses={400: {"description": "bad wait"}})
async def feed(
    db: Annotated[Database, Depends(get_db)],
    principal: Annotated[Principal, Depends(require("tracker"))],
    after: Annotated[int, Query(ge=0, le=MAX_INT, description="a feed seq (32-bit)")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[str | None, Query(max_length=16, description="long-poll, e.g. 30s")] = None,
    site_id: str | None = None,
) -> Feed:
    """Changes after `after`, oldest first; `next` is the checkpoint to pass next time."""
    try:
        seconds = min(parse_duration(wait), MAX_WAIT) if wait else 0.0
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    deadline = time.monotonic() + seconds
    while True:
        rows = await asyncio.to_thread(_read, db, after, limit, site_id, principal.sites)
        if rows or time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL)
    events = [FeedItem(seq=r["seq"], type=r["type"], at=r["at"], nc=r["nc"]) for r in rows]
    return Feed(events=events, next=rows[-1]["seq"] if rows else after)


def _read(db: Database, after: int, limit: int, site_id: str | None,
          sites: frozenset[str] | None) -> list[dict[str, Any]]:
    with db.session() as session:
        return [{"seq": r.seq, "type": r.type, "at": r.at.isoformat().replace("+00:00", "Z"),
                 "nc": r.nc} for r in feed_after(session, after, limit, site_id, sites)]
