"""The pairs an inspection selects, judged now from the compliance table (the state the
engines last reported), and the NCs failures open or add an occurrence to.

    ok -> pass   violating -> fail   no_data -> no_data   inactive -> na
    a snapshot older than `stale_after` -> no_data (a silent gateway passes nothing)
    an asset out of service now -> na

A failure goes through the lifecycle like an engine's violation: the pair's open NC gets
an occurrence (`occurrence`), or a new NC is raised with `source: inspection` (`raise`).
The inspection reads what the engines reported; it does not rewrite an NC's condition,
which their events own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Invalid
from api.inspections.config import matches_standard
from api.lifecycle import transition
from api.service import Actor, open_nc, public_fields
from api.store import Compliance, Nonconformance, OutOfService, format_nc_id
from rules.standard import Asset, Selector

MAX_PAIRS = 10_000
"""Pairs one inspection may judge: each is a row of its report (and maybe an NC)."""
JUDGEMENT = {"ok": "pass", "violating": "fail", "no_data": "no_data", "inactive": "na"}
RECENT_NCS = 20
"""NCs of a standard looked at for its summary when this site's files do not have it."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which pairs: standard ids or globs, and an asset selector."""

    standards: tuple[str, ...] = ("*",)
    assets: Selector = field(default_factory=Selector)

    def public(self) -> dict[str, Any]:
        return {"standards": list(self.standards), "assets": self.assets.model_dump()}


@dataclass(frozen=True, slots=True)
class Judged:
    """One pair as the inspection saw it."""

    asset_id: str
    standard_id: str
    standard_version: int
    state: str
    result: str
    value: float | None
    at: datetime | None
    note: str | None
    snapshot_at: datetime


def selected(session: Session, site_id: str, selection: Selection,
             catalog: Mapping[str, Asset]) -> list[Compliance]:
    """The site's compliance rows the selection picks, in (asset, standard) order;
    Invalid past MAX_PAIRS."""
    query = select(Compliance).where(Compliance.site_id == site_id)
    if selection.assets.assets:
        query = query.where(Compliance.asset_id.in_(sorted(set(selection.assets.assets))))
    if not any(ch in p for p in selection.standards for ch in "*?["):
        query = query.where(Compliance.standard_id.in_(sorted(set(selection.standards))))
    rows = []
    for row in session.scalars(query.order_by(Compliance.asset_id, Compliance.standard_id)):
        if matches_standard(selection.standards, row.standard_id) and \
                asset_matches(selection.assets, row.asset_id, catalog):
            rows.append(row)
            if len(rows) > MAX_PAIRS:
                raise Invalid(f"the selectors pick more than {MAX_PAIRS:,} (asset, "
                              "standard) pairs: narrow them")
    return rows


def asset_matches(selector: Selector, asset_id: str, catalog: Mapping[str, Asset]) -> bool:
    """As a standard's `applies_to`; an asset this site does not list (another site's,
    judged by a central API) matches only by id, never by type or tag."""
    asset = catalog.get(asset_id)
    if asset is not None:
        return selector.matches(asset)
    return not selector.asset_types and not selector.tags and (
        not selector.assets or asset_id in selector.assets)


def out_of_service(session: Session, site_id: str, now: datetime) -> dict[str, str]:
    """Assets inside a maintenance window now, and why."""
    rows = session.scalars(select(OutOfService).where(
        OutOfService.site_id == site_id, OutOfService.starts_at <= now,
        OutOfService.ends_at > now).order_by(OutOfService.id))
    return {row.asset_id: row.reason for row in rows}


def judge(row: Compliance, now: datetime, stale_after: timedelta,
          maintenance: Mapping[str, str]) -> Judged:
    """One pair's result from its compliance row."""
    result, note = JUDGEMENT.get(row.state, "no_data"), None
    if row.asset_id in maintenance:
        result, note = "na", f"out of service: {maintenance[row.asset_id]}"[:500]
    elif row.updated_at < now - stale_after:
        result, note = "no_data", f"no compliance snapshot since {row.updated_at.isoformat()}"
    elif row.state == "inactive":
        note = "outside the standard's active schedule"
    return Judged(row.asset_id, row.standard_id, row.standard_version, row.state, result,
                  row.last_value, row.last_at, note, row.updated_at)


def standard_summary(session: Session, standard_id: str,
                     known: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a new NC of the standard says (title, severity, department, due time): this
    site's standards file, else the standard as the engine last sent it with an NC, else
    a plain title."""
    if standard_id in known:
        return dict(known[standard_id])
    for info in session.scalars(select(Nonconformance.standard_info).where(
            Nonconformance.standard_id == standard_id, Nonconformance.source == "auto")
            .order_by(Nonconformance.pk.desc()).limit(RECENT_NCS)):
        if info:
            return dict(info)
    return {"title": f"{standard_id} failed an inspection", "severity": "major"}


def raise_or_add(session: Session, *, site_id: str, asset_id: str, standard_id: str,
                 info: Mapping[str, Any], actor: Actor, now: datetime,
                 evidence: dict[str, Any], note: str, standard_version: int | None = None,
                 asset_type: str | None = None, recurrence: timedelta = timedelta(days=90)
                 ) -> Nonconformance:
    """An occurrence on the open NC of (asset, standard), or a new NC from the inspection
    (recurring when one of the pair closed within `recurrence`)."""
    nc = open_nc(session, site_id, asset_id, standard_id, lock=True)
    if nc is not None:
        before = public_fields(nc)
        nc.occurrences += 1
        transition(session, nc, "occurrence", actor, now, before=before, note=note)
        return nc
    earlier = list(session.scalars(select(Nonconformance.pk).where(
        Nonconformance.site_id == site_id, Nonconformance.asset_id == asset_id,
        Nonconformance.standard_id == standard_id, Nonconformance.state == "closed",
        Nonconformance.closed_at >= now - recurrence).order_by(Nonconformance.pk)))
    within = info.get("rectify_within")
    nc = Nonconformance(
        site_id=site_id, asset_id=asset_id, standard_id=standard_id,
        standard_version=standard_version, metric=None,
        title=str(info.get("title") or standard_id)[:500], clause=info.get("clause") or "",
        category=info.get("category"), severity=info.get("severity") or "major",
        department=info.get("department"), condition="violating", detected_at=now,
        due_at=now + timedelta(seconds=within) if within else None, occurrences=1,
        reopen_count=0, source="inspection", evidence=evidence, recurring=bool(earlier),
        standard_info=dict(info), asset_type=asset_type, standard_kind=info.get("kind"))
    changes = {"recurs": [format_nc_id(pk) for pk in earlier]} if earlier else {}
    transition(session, nc, "raise", actor, now, changes=changes, note=note)
    return nc
