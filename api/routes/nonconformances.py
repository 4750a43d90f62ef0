"""Nonconformances: list with filters and cursor (or the whole register as CSV), one by id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse

from api import register
from api.deps import CurrentPrincipal, SessionDep, get_db, get_principal
from api.schemas import NonconformanceList, NonconformancePublic, Refusal
from api.service import Filters, list_ncs, to_public, visible_nc
from api.store import Database
from common.vocabulary import NcState, Severity
from common.wire_types import Moment

router = APIRouter(prefix="/nonconformances", tags=["nonconformances"],
                   dependencies=[Depends(get_principal)])

LIST_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "a page of NCs (JSON), or with `format=csv` every matching NC as "
                         "the register: UTF-8 with BOM, a header row, times in UTC",
          "content": {"text/csv": {"schema": {"type": "string"}}}},
    422: {"model": Refusal, "description": "a bad filter, `from` not before `to`, or (csv) "
                                           "more rows than one file holds"}}


@router.get("", response_model=NonconformanceList, responses=LIST_ANSWERS)
def list_nonconformances(
    session: SessionDep,
    principal: CurrentPrincipal,
    db: Annotated[Database, Depends(get_db)],
    state: NcState | None = None,
    asset_id: str | None = None,
    standard_id: str | None = None,
    severity: Severity | None = None,
    department: str | None = None,
    overdue: bool | None = None,
    recurring: bool | None = None,
    site_id: str | None = None,
    detected_from: Annotated[Moment | None, Query(
        alias="from", description="detected at or after (with a time zone)")] = None,
    detected_to: Annotated[Moment | None, Query(
        alias="to", description="detected before (with a time zone)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    format_: Annotated[Literal["json", "csv"], Query(
        alias="format", description="csv: every matching NC (up to 100,000; `limit` and "
        "`cursor` do not apply) as a file to download")] = "json",
) -> NonconformanceList:
    now = datetime.now(UTC)
    filters = Filters(site_id=site_id, state=state, asset_id=asset_id, standard_id=standard_id,
                      severity=severity, department=department, overdue=overdue,
                      recurring=recurring, sites=principal.sites,
                      detected_from=detected_from, detected_to=detected_to)
    if format_ == "csv":
        register.check_size(db.session, filters, now)  # refused before the first byte
        name = register.filename(filters, now.date())
        return StreamingResponse(  # type: ignore[return-value]
            register.lines(db.session, filters, now), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'})
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
