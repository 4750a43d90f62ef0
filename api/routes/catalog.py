"""The site catalogs' assets and standards (SPEC 7.3): what each site judges by, and every
version of every standard seen, with the NCs each version judged. Any role reads; a
scoped token reads its sites only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from api.catalog import list_assets, list_standards
from api.deps import CurrentPrincipal, SessionDep, get_principal
from api.schemas import AssetList, StandardList

router = APIRouter(tags=["catalog"], dependencies=[Depends(get_principal)])

BAD_CURSOR = {400: {"description": "a cursor this API did not give out"}}


@router.get("/assets", response_model=AssetList, responses=BAD_CURSOR)
def get_assets(
    session: SessionDep,
    principal: CurrentPrincipal,
    site_id: str | None = None,
    asset_type: Annotated[str | None, Query(alias="type", description="the asset type")] = None,
    department: str | None = None,
    retired: Annotated[bool | None, Query(description=(
        "true: only assets the newest catalog no longer lists; false: only listed ones; "
        "absent: both"))] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> AssetList:
    """Assets in (site, id) order, `limit` at a time: pass `next_cursor` back as `cursor`."""
    page = list_assets(session, limit=limit, cursor=cursor, site_id=site_id, asset_type=asset_type,
                       department=department, retired=retired, sites=principal.sites)
    answer = AssetList(items=page.items, next_cursor=page.next_cursor)
    return Response(answer.model_dump_json(),  # type: ignore[return-value]
                    media_type="application/json")


@router.get("/standards", response_model=StandardList, responses=BAD_CURSOR)
def get_standards(
    session: SessionDep,
    principal: CurrentPrincipal,
    site_id: str | None = None,
    standard_id: str | None = None,
    kind: Annotated[str | None, Query(description=(
        "standards with a version of this check kind (range, stale...)"))] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> StandardList:
    """Standards in (site, id) order, `limit` at a time, each with every version seen,
    newest first: its text, when it came into force and left, and the NCs it judged."""
    page = list_standards(session, limit=limit, cursor=cursor, site_id=site_id,
                          standard_id=standard_id, kind=kind, sites=principal.sites)
    answer = StandardList(items=page.items, next_cursor=page.next_cursor)
    return Response(answer.model_dump_json(),  # type: ignore[return-value]
                    media_type="application/json")
