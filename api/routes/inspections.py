"""Inspections (SPEC 7.3): quality and admin run them (a template, or ad hoc selectors)
and answer their checklists; any role reads them. A site-scoped token runs and sees only
its sites' (another site's inspection is 404)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, status

from api.auth import Principal
from api.deps import CurrentPrincipal, SessionDep, get_db, require
from api.errors import Invalid
from api.inspections import service
from api.inspections.config import InspectionSetup
from api.inspections.schemas import (
    AssetSelection,
    InspectionCreate,
    InspectionList,
    InspectionPublic,
    ItemAnswer,
)
from api.store import Database
from rules.standard import Selector

router = APIRouter(prefix="/inspections", tags=["inspections"])
Writer = Annotated[Principal, Depends(require(*service.WRITERS))]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
ItemId = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


def _setup(request: Request) -> InspectionSetup:
    return request.app.state.inspections


@router.post("", response_model=InspectionPublic, status_code=status.HTTP_201_CREATED,
             responses={403: {"description": "a role that may not, or a site the token "
                                             "does not reach"},
                        422: {"description": "no such template, no site, or selectors "
                                             "picking too many pairs"}})
def create_inspection(body: InspectionCreate, principal: Writer, request: Request,
                      db: Annotated[Database, Depends(get_db)]) -> dict[str, Any]:
    """Judge every selected (asset, standard) now from the engines' latest compliance
    state; failures open NCs (`source: inspection`) or add occurrences to open ones. The
    template's checklist items start `pending`."""
    setup = _setup(request)
    site_id = body.site_id or setup.site_id
    if not site_id:
        raise Invalid("site_id is needed: this API serves no site of its own")
    service.check_writer(principal, site_id)
    assets = body.assets
    selector = (Selector(assets=list(assets)) if isinstance(assets, list)
                else Selector(**assets.model_dump()) if isinstance(assets, AssetSelection)
                else None)
    template, selection = service.request_selection(
        setup, template=body.template, standards=body.standards, assets=selector)
    name = body.name or (template.name if template else "")
    return service.start(db.write, setup, site_id=site_id, name=name, template=template,
                         selection=selection, actor=(principal.name, principal.role),
                         now=datetime.now(UTC), recurrence=request.app.state.recurrence)


@router.get("", response_model=InspectionList)
def list_inspections(session: SessionDep, principal: CurrentPrincipal,
                     site_id: Annotated[str | None, Query(max_length=64)] = None,
                     template: Annotated[str | None, Query(max_length=40)] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     cursor: Annotated[str | None, Query(max_length=200)] = None
                     ) -> dict[str, Any]:
    """Newest first, without their items, `limit` at a time: pass `next_cursor` back as
    `cursor`."""
    rows, next_cursor = service.list_inspections(session, principal, site_id=site_id,
                                                 template=template, limit=limit,
                                                 cursor=cursor)
    return {"items": [service.describe(row) for row in rows], "next_cursor": next_cursor}


@router.get("/{inspection_id}", response_model=InspectionPublic,
            responses={404: {"description": "no such inspection, or another site's"}})
def get_inspection(inspection_id: Id, session: SessionDep,
                   principal: CurrentPrincipal) -> dict[str, Any]:
    inspection = service.get(session, inspection_id, principal)
    return service.describe(inspection, service.items_of(session, inspection.id))


@router.put("/{inspection_id}/items/{item_id}", response_model=InspectionPublic,
            responses={404: {"description": "no such inspection or checklist item, or "
                                            "another site's"}})
def answer_item(inspection_id: Id, item_id: ItemId, body: ItemAnswer, principal: Writer,
                request: Request, db: Annotated[Database, Depends(get_db)]
                ) -> dict[str, Any]:
    """A checklist answer: pass, fail or na, with a note. A fail opens an NC under the
    standard id `INSPECTION-<template>-<item>` (or adds an occurrence to its open one)."""
    return service.answer_committed(db.write, _setup(request), inspection_id, item_id,
                                    body.result, body.note, principal, datetime.now(UTC),
                                    recurrence=request.app.state.recurrence)
