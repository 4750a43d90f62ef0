"""Edge agents' heartbeats and the fleet's gateways (SPEC 7.5). Agents post; any role
reads; a scoped token posts and reads its sites only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from api.auth import Principal
from api.deps import CurrentPrincipal, SessionDep, get_db, require
from api.errors import ClockSkew
from api.gateways import list_gateways, record_heartbeat
from api.schemas import GatewayList, HeartbeatAnswer, HeartbeatIn, Refusal
from api.store import Database, committed

router = APIRouter(tags=["gateways"])

REFUSALS: dict[int | str, dict[str, Any]] = {
    403: {"model": Refusal, "description": "role, or a site the token does not reach"},
    422: {"model": Refusal, "description": "invalid, or `code: clock_skew`: dated ahead of "
                                           "the server's clock"}}


@router.post("/heartbeats", response_model=HeartbeatAnswer, responses=REFUSALS)
def post_heartbeat(
    beat: HeartbeatIn,
    request: Request,
    db: Annotated[Database, Depends(get_db)],
    principal: Annotated[Principal, Depends(require("agent"))],
) -> HeartbeatAnswer:
    """An agent's heartbeat: kept as its gateway's last; closes the gateway-offline NC
    when the gateway was offline."""
    if principal.sites is not None and beat.site_id not in principal.sites:
        raise HTTPException(403, f"this token does not reach site {beat.site_id!r} (it "
                                 f"reaches {', '.join(sorted(principal.sites))})")
    now = datetime.now(UTC)
    skew = request.app.state.max_clock_skew
    if beat.at > now + skew:
        raise ClockSkew(f"heartbeat of {beat.gateway_id}", beat.at, now, skew)
    closed = committed(db.write, lambda session: record_heartbeat(session, beat, now))
    return HeartbeatAnswer(server_time=now, offline_closed=closed)


@router.get("/gateways", response_model=GatewayList)
def get_gateways(session: SessionDep, principal: CurrentPrincipal, request: Request,
                 site_id: str | None = None) -> GatewayList:
    """The last heartbeat of every gateway (offline ones first): version, uptime, clock
    offset, buffer, last reading per source."""
    after = request.app.state.gateway_offline_after
    return GatewayList(items=list_gateways(session, datetime.now(UTC), after,
                                           sites=principal.sites, site_id=site_id),
                       offline_after=after.total_seconds())
