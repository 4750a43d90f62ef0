"""Reports (SPEC 7.3): the compliance report as JSON, CSV or XLSX."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from api.deps import CurrentPrincipal, SessionDep, get_principal
from api.errors import Forbidden
from api.reports import (
    CSV_TYPE,
    DEFAULT_DAYS,
    MAX_DAYS,
    XLSX_TYPE,
    compliance_report,
    moment,
    to_csv,
    to_xlsx,
    window_of,
)
from api.reports.schemas import Report

router = APIRouter(prefix="/reports", tags=["reports"], dependencies=[Depends(get_principal)])

GroupBy = Literal["site", "asset", "asset_type", "standard", "category", "department",
                  "root_cause", "month"]




@router.get("/compliance", response_model=Report, responses={
    200: {"content": {CSV_TYPE: {}, XLSX_TYPE: {}}},
    403: {"description": "a site this token does not reach"},
    422: {"description": "a bad window or grouping"}})
def get_compliance_report(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    from_: Annotated[str | None, Query(alias="from", max_length=40, description=(
        "a date (its midnight) or datetime, site time without an offset; default "
        f"{DEFAULT_DAYS} days before `to`"))] = None,
    to: Annotated[str | None, Query(max_length=40, description=(
        f"a date (the last day included) or datetime (excluded); default today, at "
        f"most {MAX_DAYS} days after `from`"))] = None,
    group_by: GroupBy = "site",
    site_id: Annotated[str | None, Query(max_length=64)] = None,
    format: Literal["json", "csv", "xlsx"] = "json",
) -> Response:
    """Figures per group beside the previous period of the same length, with their KPI
    status (docs/reports.md); `format=csv` (UTF-8 with BOM) or `format=xlsx`."""
    sites = principal.sites
    if site_id is not None:
        if not principal.reaches(site_id):
            raise Forbidden(f"this token does not reach site {site_id!r}")
        sites = frozenset({site_id})
    state = request.app.state
    window = window_of(moment("from", from_), moment("to", to),
                       timezone=state.timezone)
    report = compliance_report(session, window=window, group_by=group_by, sites=sites,
                               targets=state.kpi_targets, asset_types=state.assets)
    if format == "csv":
        return Response(to_csv(report), media_type=CSV_TYPE, headers={
            "Content-Disposition": 'attachment; filename="compliance-report.csv"'})
    if format == "xlsx":
        return Response(to_xlsx(report), media_type=XLSX_TYPE, headers={
            "Content-Disposition": 'attachment; filename="compliance-report.xlsx"'})
    return Response(json.dumps(report, ensure_ascii=False), media_type="application/json")
