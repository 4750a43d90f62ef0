"""Where every (asset, standard) stands now: ok, violating, no_data or inactive, and the
seconds it spent in each over a window of UTC days."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from api.compliance import DEFAULT_DAYS, MAX_DAYS, Window, compliance_page
from api.deps import CurrentPrincipal, SessionDep, get_principal
from api.schemas import ComplianceList, CompliancePublic, ComplianceWindow
from common.vocabulary import ComplianceState

router = APIRouter(prefix="/compliance", tags=["compliance"],
                   dependencies=[Depends(get_principal)])


@router.get("", response_model=ComplianceList,
            responses={400: {"description": "bad cursor"},
                       422: {"description": "bad window"}})
def get_compliance(
    session: SessionDep,
    principal: CurrentPrincipal,
    site_id: str | None = None,
    asset_id: str | None = None,
    standard_id: str | None = None,
    state: ComplianceState | None = None,
    from_: Annotated[date | None, Query(alias="from", description=(
        f"first UTC day of `seconds`; default {DEFAULT_DAYS} days before `to`"))] = None,
    to: Annotated[date | None, Query(description=(
        f"last UTC day, included; default today, at most {MAX_DAYS} days after `from`"
    ))] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=4000)] = None,
) -> ComplianceList:
    """Pairs in (site, asset, standard) order, `limit` at a time: pass `next_cursor` back
    as `cursor` for the next page."""
    window = Window.of(from_, to, datetime.now(UTC).date())
    page = compliance_page(session, window=window, limit=limit, cursor=cursor,
                           site_id=site_id, asset_id=asset_id, standard_id=standard_id,
                           state=state, sites=principal.sites)
    answer = ComplianceList(
        items=[CompliancePublic(**row._asdict(), seconds=seconds) for row, seconds in page.rows],
        next_cursor=page.next_cursor,
        window=ComplianceWindow(from_=window.first, to=window.last))
    # JSON straight from pydantic's serializer, as the NC list does: FastAPI would check
    # and convert the answer once more on the way out
    return Response(answer.model_dump_json(by_alias=True),  # type: ignore[return-value]
                    media_type="application/json")
