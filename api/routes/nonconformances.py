"""Nonconformances: list with filters and cursor, one by id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from api.deps import CurrentPrincipal, SessionDep, get_principal
from api.schemas import NonconformanceList, NonconformancePublic
from api.service import Filters, list_ncs, to_public, visible_nc
from common.vocabulary import NcState, Severity

router = APIRouter(prefix="/nonconformances", tags=["nonconformances"],
                   dependencies=[Depends(get_principal)])

@router.get("", response_model=NonconformanceList)
def list_nonconformances(
    session: SessionDep,
    principal: CurrentPrincipal,
    state: NcState | None = None,
    asset_id: str | None = None,
    standard_id: str | None = None,
    severity: Severity | None = None,
    department: str | None = None,
    overdue: bool | None = None,
    recurring: bool | None = None,
    site_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> NonconformanceList:
    now = datetime.now(UTC)
    filters = Filters(site_id=site_id, state=state, asset_id=asset_id, standard_id=standard_id,
                      severity=severity, department=department, overdue=overdue,
                      recurring=recurring, sites=principal.sites)
    rows, next_cursor = list_ncs(session, filters, limit=limit, cursor=cursor, now=now)
    page = NonconformanceList(items=[to_public(nc, now) for nc in rows],
                              next_cursor=next_cursor)
    # JSON straight from pydantic's serializer: FastAPI would check and convert the page
    # once more on the way out, for as much CPU again as building it
    return Response(page.model_dump_json(), media_type="application/json")  # type: ignore[return-value]


@router.get("/{nc_id}", response_model=NonconformancePublic)
def get_nonconformance(nc_id: str, session: SessionDep,
                       principal: CurrentPrincipal) -> NonconformancePublic:
    return to_public(visible_nc(session, nc_id, principal))
