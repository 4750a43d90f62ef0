"""Where every (asset, standard) stands now: ok, violating, no_data or inactive."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from sqlalchemy import select

from api.deps import CurrentPrincipal, SessionDep, get_principal
from api.schemas import ComplianceList, CompliancePublic
from api.service import COMPLIANCE_STATES, list_compliance
from api.store import ComplianceDay

router = APIRouter(prefix="/compliance", tags=["compliance"],
                   dependencies=[Depends(get_principal)])


@router.get("", response_model=ComplianceList)
def get_compliance(
    session: SessionDep,
    principal: CurrentPrincipal,
    site_id: str | None = None,
    asset_id: str | None = None,
    standard_id: str | None = None,
    state: Literal["ok", "violating", "no_data", "inactive"] | None = None,
) -> ComplianceList:
    rows = list_compliance(session, site_id=site_id, asset_id=asset_id,
                           standard_id=standard_id, state=state, sites=principal.sites)
    totals: dict[tuple[str, str, str], dict[str, float]] = {}
    if rows:
        for day in session.scalars(select(ComplianceDay).where(
                ComplianceDay.asset_id.in_({row.asset_id for row in rows}))):
            key = (day.site_id, day.asset_id, day.standard_id)
            bucket = totals.setdefault(key, dict.fromkeys(COMPLIANCE_STATES, 0.0))
            for name in COMPLIANCE_STATES:
                bucket[name] += getattr(day, name)
    return ComplianceList(items=[
        CompliancePublic(site_id=row.site_id, asset_id=row.asset_id,
                         standard_id=row.standard_id, standard_version=row.standard_version,
                         state=row.state, updated_at=row.updated_at,
                         seconds=totals.get((row.site_id, row.asset_id, row.standard_id),
                                            dict.fromkeys(COMPLIANCE_STATES, 0.0)))
        for row in rows])
