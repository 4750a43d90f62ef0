"""Out of service (SPEC 7.3): maintenance windows of an asset, in which its events open no
NC and its time counts as inactive. Quality and admin make and end them; any role reads.
A site-scoped token works within its sites (another site's window is 404)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status

from api import out_of_service
from api.auth import Principal
from api.deps import CurrentPrincipal, SessionDep, get_db, require
from api.schemas import OutOfServiceCreate, OutOfServiceList, OutOfServicePublic
from api.store import Database
from common.wire_types import Text

router = APIRouter(tags=["assets"])
Writer = Annotated[Principal, Depends(require(*out_of_service.WRITERS))]
AssetId = Annotated[Text, Path(min_length=1, max_length=128)]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("/assets/{asset_id}/out_of_service", response_model=OutOfServicePublic,
             status_code=status.HTTP_201_CREATED,
             responses={403: {"description": "a role that may not, or a site the token "
                                             "does not reach"},
                        404: {"description": "an asset the local site does not have"},
                        422: {"description": "times out of bounds, or no reason"}})
def take_out_of_service(asset_id: AssetId, body: OutOfServiceCreate, principal: Writer,
                        request: Request, db: Annotated[Database, Depends(get_db)]
                        ) -> dict[str, Any]:
    """From `from` (default now) until `until`, the asset's violations open no NC
    (recorded as suppressed) and its time counts as inactive."""
    now = datetime.now(UTC)
    with db.write() as session:
        window = out_of_service.create(
            session, asset_id=asset_id, site_id=body.site_id, starts_at=body.from_,
            ends_at=body.until, reason=body.reason, principal=principal, now=now,
            local_site=request.app.state.site_id, assets=request.app.state.assets)
        session.commit()
        return out_of_service.describe(window, now)


@router.get("/assets/{asset_id}/out_of_service", response_model=OutOfServiceList)
def list_out_of_service(asset_id: AssetId, session: SessionDep, principal: CurrentPrincipal,
                        site_id: Annotated[str | None, Query(max_length=64)] = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        cursor: Annotated[str | None, Query(max_length=200)] = None
                        ) -> dict[str, Any]:
    """The asset's windows, newest first, `limit` at a time: pass `next_cursor` back as
    `cursor`. Each says how many events it held back."""
    now = datetime.now(UTC)
    rows, next_cursor = out_of_service.list_windows(
        session, principal, asset_id=asset_id, site_id=site_id, limit=limit, cursor=cursor)
    counts = out_of_service.suppressed_counts(session, rows)
    return {"items": [out_of_service.describe(w, now, counts.get(w.id, 0)) for w in rows],
            "next_cursor": next_cursor}


@router.delete("/out_of_service/{window_id}", response_model=OutOfServicePublic,
               responses={404: {"description": "no such window, or another site's"}})
def end_out_of_service(window_id: Id, principal: Writer,
                       db: Annotated[Database, Depends(get_db)]) -> dict[str, Any]:
    """End the window now (the asset is back in service); kept for audit, answered as it
    now stands."""
    now = datetime.now(UTC)
    with db.write() as session:
        window = out_of_service.end(session, window_id, principal, now)
        counts = out_of_service.suppressed_counts(session, [window])
        session.commit()
        return out_of_service.describe(window, now, counts.get(window.id, 0))
