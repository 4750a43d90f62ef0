"""People acting on NCs: the actions of SPEC section 5, manual findings, history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import Principal
from api.deps import (
    BearerToken,
    CurrentPrincipal,
    SessionDep,
    get_db,
    principal_of,
    require,
)
from api.door import PRINCIPAL
from api.lifecycle import create_manual, perform, set_external_ref
from api.schemas import ActionBody, HistoryList, HistoryPublic, ManualNonconformance
from api.schemas import NonconformancePublic as NC
from api.service import history_page, to_public, visible_nc
from api.store import Database, parse_nc_id
from common.vocabulary import ActionName
from common.wire_types import Text

router = APIRouter(prefix="/nonconformances", tags=["nonconformances"])

REFUSALS = {403: {"description": "role or independence refused"},
            404: {"description": "no such NC"},
            409: {"description": "not allowed in this state; names the allowed actions"},
            422: {"description": "a required field is missing, or a root_cause_category "
                                 "not in the site's list (named in the answer)"}}


def _pk(nc_id: str) -> int:
    pk = parse_nc_id(nc_id)
    if pk is None:
        raise HTTPException(404, f"no nonconformance {nc_id!r}")
    return pk


@router.post("/{nc_id}/{action}", response_model=NC, responses=REFUSALS)
def act(nc_id: str, action: ActionName, request: Request, token: BearerToken,
        db: Annotated[Database, Depends(get_db)], body: ActionBody | None = None) -> NC:
    """The busiest write: one pooled connection and one thread-pool hop for the action (the
    door found the token's principal; without the door, it is looked up right here)."""
    pk = _pk(nc_id)
    with db.write() as session:
        found = request.scope.get(PRINCIPAL)
        principal = found if isinstance(found, Principal) else principal_of(session, token)
        # a refusal (api.errors) leaves the block: the session rolls back as it closes
        public = perform(session, pk, action, body or ActionBody(), principal,
                         allow_self_verify=request.app.state.allow_self_verify,
                         root_cause_categories=request.app.state.root_cause_categories)
        session.commit()
    # the form the history and feed got, already JSON: not validated and dumped again
    return JSONResponse(public)  # type: ignore[return-value]


@router.post("", response_model=NC, status_code=status.HTTP_201_CREATED,
             responses={403: {"description": "needs role quality"}})
def create(body: ManualNonconformance, request: Request, principal: CurrentPrincipal,
           db: Annotated[Database, Depends(get_db)]) -> NC:
    with db.write() as session:
        nc = create_manual(session, body, principal, site_id=request.app.state.site_id,
                           assets=request.app.state.assets)
        session.commit()
        return to_public(nc)


class ExternalRef(BaseModel):
    external_ref: Text | None = Field(max_length=256)


@router.put("/{nc_id}/external_ref", response_model=NC,
            responses={403: {"description": "needs role tracker"}})
def put_external_ref(nc_id: str, body: ExternalRef,
                     principal: Annotated[Principal, Depends(require("tracker"))],
                     db: Annotated[Database, Depends(get_db)]) -> NC:
    """The tracker's own ticket id; it appears in later feed events and webhooks."""
    with db.write() as session:
        nc = set_external_ref(session, nc_id, body.external_ref, principal)
        session.commit()
        return to_public(nc)


@router.get("/{nc_id}/history", response_model=HistoryList)
def get_history(nc_id: str, session: SessionDep, principal: CurrentPrincipal,
                limit: Annotated[int, Query(ge=1, le=1000)] = 500,
                cursor: Annotated[str | None, Query(max_length=200)] = None) -> HistoryList:
    """Oldest first, `limit` at a time: pass `next_cursor` back as `cursor`."""
    nc = visible_nc(session, nc_id, principal)
    rows, next_cursor = history_page(session, nc.pk, limit=limit, cursor=cursor)
    return HistoryList(items=[
        HistoryPublic(at=h.at, actor=h.actor, role=h.role, action=h.action,
                      from_state=h.from_state, to_state=h.to_state, changes=h.changes,
                      note=h.note, channel=h.channel) for h in rows],
        next_cursor=next_cursor)


__all__ = ["Principal", "router"]
