"""What the notifier decided for each NC change and channel (SPEC 7.2): sent, held back
(and why), merged into a digest, failed. Any role reads; a site-scoped token sees its
sites' notifications only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import CurrentPrincipal, SessionDep
from api.notify import history
from api.notify.history import NotificationEvent, NotificationStatus
from api.schemas import NotificationList

router = APIRouter(prefix="/notifications", tags=["notifications"])


@router.get("", response_model=NotificationList,
            responses={422: {"description": "an nc_id that is no NC id"}})
def list_notifications(
    session: SessionDep,
    principal: CurrentPrincipal,
    nc_id: Annotated[str | None, Query(max_length=40, description="NC-000123")] = None,
    channel: Annotated[str | None, Query(max_length=64)] = None,
    status: NotificationStatus | None = None,
    event: NotificationEvent | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Newest first, `limit` at a time: pass `next_cursor` back as `cursor`."""
    items, next_cursor = history.list_notifications(
        session, nc_id=nc_id, channel=channel, status=status, event=event, limit=limit,
        cursor=cursor, sites=principal.sites)
    return {"items": items, "next_cursor": next_cursor}
