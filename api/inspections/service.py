"""Inspections without HTTP: run one (judge its pairs, lay out its checklist), answer a
checklist item, read and list them. Refusals are api.errors exceptions; every NC change
goes through api.lifecycle.transition (api.inspections.judge).

An inspection is finished when no checklist item is pending: at once for one without a
checklist, else at the answer to its last pending item. Answers may be changed later; a
`fail` opens (or adds an occurrence to) the NC of `INSPECTION-<template>-<item>` once per
item, and the NC then goes its own way through the lifecycle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import Principal
from api.errors import Forbidden, Invalid, NotFound
from api.inspections.config import RESULTS, InspectionSetup, Template
from api.inspections.judge import (
    Selection,
    judge,
    out_of_service,
    raise_or_add,
    selected,
    standard_summary,
)
from api.service import Actor, decode_id, encode_id
from api.store import Inspection, InspectionItem, SessionFactory, committed, format_nc_id

WRITERS = ("quality",)
"""Who runs inspections and answers checklists (admin implies it)."""


def checklist_standard(template: str, item: str) -> str:
    """The standard id a failed checklist item's NC is kept under (SPEC 7.3)."""
    return f"INSPECTION-{template}-{item}"


def start(factory: SessionFactory, setup: InspectionSetup, *, site_id: str, name: str,
          template: Template | None, selection: Selection, actor: Actor, now: datetime,
          recurrence: timedelta = timedelta(days=90)) -> dict[str, Any]:
    """`run` in a transaction of its own, committed; retried when an engine event or a
    person changed one of its NCs first. Returns the report (`describe`, every item)."""
    def work(session: Session) -> dict[str, Any]:
        inspection = run(session, setup, site_id=site_id, name=name, template=template,
                         selection=selection, actor=actor, now=now, recurrence=recurrence)
        return describe(inspection, items_of(session, inspection.id))

    return committed(factory, work)


def check_writer(principal: Principal, site_id: str) -> None:
    """Forbidden unless the caller may run inspections at `site_id`."""
    if not principal.may(*WRITERS):
        raise Forbidden(f"role {principal.role!r} may not run inspections; needs quality")
    if not principal.reaches(site_id):
        raise Forbidden(f"this token does not reach site {site_id!r}")


def run(session: Session, setup: InspectionSetup, *, site_id: str, name: str,
        template: Template | None, selection: Selection, actor: Actor, now: datetime,
        recurrence: timedelta = timedelta(days=90)) -> Inspection:
    """Judge every selected pair now and lay out the checklist, in the caller's
    transaction (which commits it, or retries it on a concurrent NC change)."""
    inspection = Inspection(site_id=site_id, name=name, by=actor[0], started_at=now,
                            template=template.name if template else None,
                            summary={"selection": selection.public()})
    session.add(inspection)
    session.flush()  # its id: the NCs' evidence names it
    maintenance = out_of_service(session, site_id, now)
    stale = timedelta(seconds=setup.config.stale_after)
    items: list[InspectionItem] = []
    for row in selected(session, site_id, selection, setup.assets):
        pair = judge(row, now, stale, maintenance)
        item = InspectionItem(inspection_id=inspection.id, kind="pair", asset_id=pair.asset_id,
                              standard_id=pair.standard_id, result=pair.result,
                              value=pair.value, at=pair.at, note=pair.note)
        if pair.result == "fail":
            asset = setup.assets.get(pair.asset_id)
            nc = raise_or_add(
                session, site_id=site_id, asset_id=pair.asset_id,
                standard_id=pair.standard_id, actor=actor, now=now,
                info=standard_summary(session, pair.standard_id, setup.standards),
                standard_version=pair.standard_version, recurrence=recurrence,
                asset_type=(asset.type or None) if asset else None,
                note=f"inspection {name} (#{inspection.id}): violating",
                evidence={"inspection": inspection.id, "state": pair.state,
                          "value": pair.value, "at": _iso(pair.at),
                          "snapshot_at": _iso(pair.snapshot_at)})
            item.nc_pk = nc.pk
        items.append(item)
    for entry in template.items if template else ():
        items.append(InspectionItem(inspection_id=inspection.id, kind="manual",
                                    asset_id=entry.asset or site_id, item_id=entry.id,
                                    text=entry.text, result="pending"))
    session.add_all(items)
    _settle(inspection, items, now)
    return inspection


def answer_committed(factory: SessionFactory, setup: InspectionSetup, inspection_id: int,
                     item_id: str, result: str, note: str | None, principal: Principal,
                     now: datetime, recurrence: timedelta = timedelta(days=90)
                     ) -> dict[str, Any]:
    """`answer` in a transaction of its own, committed (retried when another inspection's
    failure of the same item opened its NC first); returns the report."""
    def work(session: Session) -> dict[str, Any]:
        inspection = answer(session, setup, inspection_id, item_id, result, note,
                            principal, now, recurrence)
        return describe(inspection, items_of(session, inspection.id))

    return committed(factory, work)


def answer(session: Session, setup: InspectionSetup, inspection_id: int, item_id: str,
           result: str, note: str | None, principal: Principal, now: datetime,
           recurrence: timedelta = timedelta(days=90)) -> Inspection:
    """A person's answer to a checklist item (pass, fail, na); a fail opens the item's NC
    unless this item already did."""
    if not principal.may(*WRITERS):
        raise Forbidden(f"role {principal.role!r} may not answer checklists; needs quality")
    inspection = get(session, inspection_id, principal, lock=True)
    item = session.scalar(select(InspectionItem).where(
        InspectionItem.inspection_id == inspection.id, InspectionItem.kind == "manual",
        InspectionItem.item_id == item_id).with_for_update())
    if item is None:
        raise NotFound(f"inspection {inspection.id} has no checklist item {item_id!r}")
    item.result, item.note, item.at = result, note, now
    item.answered_by = principal.name
    if result == "fail" and item.nc_pk is None:
        assert inspection.template is not None  # only templates have checklists
        template = setup.config.template(inspection.template)
        entry = template.item(item_id) if template else None
        text = item.text or item_id
        info = {"title": text, "severity": entry.severity if entry else "major",
                "department": entry.department if entry else None, "kind": "checklist",
                "rectify_within": entry.rectify_within if entry else None}
        nc = raise_or_add(
            session, site_id=inspection.site_id, asset_id=item.asset_id,
            standard_id=checklist_standard(inspection.template, item_id), info=info,
            actor=(principal.name, principal.role), now=now, recurrence=recurrence,
            evidence={"inspection": inspection.id, "item": item_id, "text": text,
                      "note": note, "reported_by": principal.name},
            note=note or f"inspection {inspection.name} (#{inspection.id}): {text}")
        item.nc_pk = nc.pk
    _settle(inspection, items_of(session, inspection.id), now)
    return inspection


def _settle(inspection: Inspection, items: Collection[InspectionItem], now: datetime) -> None:
    """Counts per result into the summary; finished once nothing is pending."""
    counts = Counter(item.result for item in items)
    inspection.summary = {**inspection.summary,
                          "counts": {result: counts.get(result, 0) for result in RESULTS}}
    if inspection.finished_at is None and not counts.get("pending"):
        inspection.finished_at = now


def get(session: Session, inspection_id: int, principal: Principal, *,
        lock: bool = False) -> Inspection:
    """The inspection, when the caller's token reaches its site; NotFound otherwise."""
    query = select(Inspection).where(Inspection.id == inspection_id)
    found = session.scalar(query.with_for_update() if lock else query)
    if found is None or not principal.reaches(found.site_id):
        raise NotFound(f"no inspection {inspection_id}")
    return found


def items_of(session: Session, inspection_id: int) -> list[InspectionItem]:
    return list(session.scalars(select(InspectionItem).where(
        InspectionItem.inspection_id == inspection_id).order_by(InspectionItem.id)))


def list_inspections(session: Session, principal: Principal, *, site_id: str | None,
                     template: str | None, limit: int, cursor: str | None
                     ) -> tuple[list[Inspection], str | None]:
    """Newest first, the sites the caller reaches; keyset pages by id."""
    query = select(Inspection)
    if principal.sites is not None:
        query = query.where(Inspection.site_id.in_(sorted(principal.sites)))
    if site_id is not None:
        query = query.where(Inspection.site_id == site_id)
    if template is not None:
        query = query.where(Inspection.template == template)
    if cursor:
        query = query.where(Inspection.id < decode_id(cursor))
    rows = list(session.scalars(query.order_by(Inspection.id.desc()).limit(limit + 1)))
    return rows[:limit], encode_id(rows[limit - 1].id) if len(rows) > limit else None


def describe(inspection: Inspection, items: list[InspectionItem] | None = None
             ) -> dict[str, Any]:
    """The report's JSON: the header, counts per result and (when given) every item."""
    summary = inspection.summary or {}
    report: dict[str, Any] = {
        "id": inspection.id, "site_id": inspection.site_id, "name": inspection.name,
        "template": inspection.template, "by": inspection.by,
        "started_at": inspection.started_at, "finished_at": inspection.finished_at,
        "selection": summary.get("selection") or {},
        "counts": summary.get("counts") or dict.fromkeys(RESULTS, 0)}
    if items is not None:
        report["items"] = [{
            "kind": item.kind, "asset_id": item.asset_id, "standard_id": item.standard_id,
            "item_id": item.item_id, "text": item.text, "result": item.result,
            "value": item.value, "at": item.at, "note": item.note,
            "nc_id": format_nc_id(item.nc_pk) if item.nc_pk is not None else None,
            "answered_by": item.answered_by} for item in items]
    return report


def request_selection(setup: InspectionSetup, *, template: str | None,
                      standards: list[str] | None, assets: Any) -> tuple[Template | None,
                                                                          Selection]:
    """The template a request names and the selection it makes: the template's selectors,
    narrowed or replaced by the request's own; Invalid for a template that is not there."""
    found = None
    if template is not None:
        found = setup.config.template(template)
        if found is None:
            names = ", ".join(t.name for t in setup.config.templates) or "none"
            raise Invalid(f"no template {template!r} (templates: {names})")
    base = Selection(tuple(found.standards), found.assets) if found else Selection()
    return found, Selection(tuple(standards) if standards else base.standards,
                            assets if assets is not None else base.assets)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None
