"""NC and compliance reads, and the NC's public form. No HTTP here: a refusal is an
api.errors exception. Changes go through api/lifecycle.py."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select, text, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from api.auth import Principal
from api.errors import BadCursor, Invalid, NotFound
from api.schemas import NonconformancePublic
from api.store import Compliance, FeedEvent, HistoryEntry, Nonconformance, format_nc_id, parse_nc_id
from common.vocabulary import COMPLIANCE_STATES, SYSTEM_ROLE, UNRECTIFIED

SYSTEM_ACTOR = ("patrol", SYSTEM_ROLE)

Actor = tuple[str, str]
"""(name, role) of whoever made a change: a token's name and role, or the system."""


@dataclass(frozen=True, slots=True)
class Filters:
    site_id: str | None = None
    state: str | None = None
    asset_id: str | None = None
    standard_id: str | None = None
    severity: str | None = None
    department: str | None = None
    overdue: bool | None = None
    recurring: bool | None = None
    sites: frozenset[str] | None = None
    """The caller's token's sites (SPEC 7.1); None: every site."""
    detected_from: datetime | None = None
    """NCs detected at or after this time (`from`)."""
    detected_to: datetime | None = None
    """NCs detected before this time (`to`): [from, to) like every window of reports."""
    text: str | None = None
    """Words each found (case aside) in the NC's id, title, asset, standard or assignee:
    the console's search box."""


def is_overdue(nc: Nonconformance, now: datetime) -> bool:
    return nc.due_at is not None and nc.state in UNRECTIFIED and nc.due_at < now


def to_public(nc: Nonconformance, now: datetime | None = None) -> NonconformancePublic:
    now = now or datetime.now(UTC)
    return NonconformancePublic(
        id=format_nc_id(nc.pk), site_id=nc.site_id, asset_id=nc.asset_id,
        standard_id=nc.standard_id, standard_version=nc.standard_version, metric=nc.metric,
        title=nc.title, clause=nc.clause, category=nc.category, severity=nc.severity,
        department=nc.department, assignee=nc.assignee, asset_type=nc.asset_type,
        standard_kind=nc.standard_kind, state=nc.state,
        condition=nc.condition, detected_at=nc.detected_at, cleared_at=nc.cleared_at,
        due_at=nc.due_at, closed_at=nc.closed_at, overdue=is_overdue(nc, now),
        occurrences=nc.occurrences, reopen_count=nc.reopen_count, recurring=nc.recurring,
        source=nc.source, evidence=nc.evidence, rectification=nc.rectification,
        verification=nc.verification, external_ref=nc.external_ref,
    )


def public_fields(nc: Nonconformance) -> dict[str, Any]:
    """The NC as its JSON shows it, less the computed `overdue`: what history compares."""
    data = to_public(nc).model_dump(mode="json")
    data.pop("overdue")
    return data


def database_fault(session: Session) -> str | None:
    """None when the database answers; else the name of the error (never its text, which
    may hold the URL)."""
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return type(exc).__name__
    return None


def feed_after(session: Session, after: int, limit: int, site_id: str | None = None,
               sites: Collection[str] | None = None) -> list[FeedEvent]:
    query = select(FeedEvent).where(FeedEvent.seq > after)
    if site_id is not None:
        query = query.where(FeedEvent.site_id == site_id)
    if sites is not None:
        query = query.where(FeedEvent.site_id.in_(sorted(sites)))
    return list(session.scalars(query.order_by(FeedEvent.seq).limit(limit)))


def open_nc(session: Session, site_id: str, asset_id: str, standard_id: str,
            *, lock: bool = False) -> Nonconformance | None:
    """The one open NC of an (asset, standard), if any."""
    query = select(Nonconformance).where(
        Nonconformance.site_id == site_id, Nonconformance.asset_id == asset_id,
        Nonconformance.standard_id == standard_id, Nonconformance.open_slot == "open")
    return session.scalar(query.with_for_update() if lock else query)


def get_nc(session: Session, pk: int, *, lock: bool = False) -> Nonconformance | None:
    if lock:
        return session.scalar(select(Nonconformance).where(Nonconformance.pk == pk)
                              .with_for_update())
    return session.get(Nonconformance, pk)


def visible_nc(session: Session, nc_id: str, principal: Principal, *,
               lock: bool = False) -> Nonconformance:
    """The NC `nc_id` names, when the caller's token reaches its site; NotFound otherwise
    (another site's NC is not there for the caller)."""
    pk = parse_nc_id(nc_id)
    nc = get_nc(session, pk, lock=lock) if pk is not None else None
    if nc is None or not principal.reaches(nc.site_id):
        raise NotFound(f"no nonconformance {nc_id!r}")
    return nc


def history(session: Session, pk: int, *, limit: int | None = None,
            after: int | None = None) -> list[HistoryEntry]:
    """Oldest first; `after` is the id of the last entry of a page before."""
    query = select(HistoryEntry).where(HistoryEntry.nc_pk == pk)
    if after is not None:
        query = query.where(HistoryEntry.id > after)
    query = query.order_by(HistoryEntry.id)
    return list(session.scalars(query if limit is None else query.limit(limit)))


def history_page(session: Session, pk: int, *, limit: int, cursor: str | None
                 ) -> tuple[list[HistoryEntry], str | None]:
    """A page of an NC's history and the cursor of the next one (None: the last page)."""
    rows = history(session, pk, limit=limit + 1, after=decode_id(cursor) if cursor else None)
    return rows[:limit], encode_id(rows[limit - 1].id) if len(rows) > limit else None


def encode_id(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"id|{row_id}".encode()).decode().rstrip("=")


def decode_id(cursor: str) -> int:
    """The row id an `encode_id` cursor holds; BadCursor for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, _, number = raw.partition("|")
        row_id = int(number)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadCursor("cursor is not one this API gave out") from None
    if tag != "id" or not 0 < row_id < 2**63:
        raise BadCursor("cursor is not one this API gave out")
    return row_id


def filtered_ncs(filters: Filters, now: datetime) -> Select[tuple[Nonconformance]]:
    """The NCs `filters` select, newest first by (detected_at, pk): the JSON list's pages
    and the CSV register read the same rows. Invalid: `from` not before `to`."""
    if (filters.detected_from is not None and filters.detected_to is not None
            and filters.detected_from >= filters.detected_to):
        raise Invalid(f"from ({filters.detected_from.isoformat()}) is not before to "
                      f"({filters.detected_to.isoformat()})")
    query = select(Nonconformance)
    for name in ("site_id", "state", "asset_id", "standard_id", "severity", "department",
                 "recurring"):
        value = getattr(filters, name)
        if value is not None:
            query = query.where(getattr(Nonconformance, name) == value)
    if filters.sites is not None:
        query = query.where(Nonconformance.site_id.in_(sorted(filters.sites)))
    if filters.overdue is not None:
        late = and_(Nonconformance.due_at < now, Nonconformance.state.in_(UNRECTIFIED))
        on_time = or_(~late, Nonconformance.due_at.is_(None))
        query = query.where(late if filters.overdue else on_time)
    if filters.detected_from is not None:
        query = query.where(Nonconformance.detected_at >= filters.detected_from)
    if filters.detected_to is not None:
        query = query.where(Nonconformance.detected_at < filters.detected_to)
    for word in (filters.text or "").split()[:5]:
        pk = parse_nc_id(word)
        pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(*(column.ilike(pattern, escape="\\") for column in (
            Nonconformance.title, Nonconformance.asset_id, Nonconformance.standard_id,
            Nonconformance.assignee)), *([Nonconformance.pk == pk] if pk else [])))
    return query.order_by(Nonconformance.detected_at.desc(), Nonconformance.pk.desc())


def older_than(query: Select[tuple[Nonconformance]], at: datetime,
               pk: int) -> Select[tuple[Nonconformance]]:
    """`query`'s rows after the row (at, pk) in newest-first order: the next keyset page."""
    return query.where(or_(Nonconformance.detected_at < at,
                           and_(Nonconformance.detected_at == at, Nonconformance.pk < pk)))


def list_ncs(session: Session, filters: Filters, *, limit: int, cursor: str | None,
             now: datetime) -> tuple[list[Nonconformance], str | None]:
    """Newest first by detected_at; keyset pagination so pages stay stable under inserts."""
    query = filtered_ncs(filters, now)
    if cursor:
        query = older_than(query, *decode_cursor(cursor))
    rows = list(session.scalars(query.limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def encode_cursor(nc: Nonconformance) -> str:
    raw = f"{nc.detected_at.isoformat()}|{nc.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, pk = raw.partition("|")
        moment = datetime.fromisoformat(at).astimezone(UTC)
        number = int(pk)
        if at[-6] not in "+-" or not 0 < number < 2**63:
            raise ValueError("not ours")
        return moment, number
    except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
        raise BadCursor("cursor is not one this API gave out") from None


def compliance_query(*, site_id: str | None = None, asset_id: str | None = None,
                     standard_id: str | None = None, state: str | None = None,
                     after: tuple[str, str, str] | None = None,
                     sites: Collection[str] | None = None) -> Select[tuple[Compliance]]:
    """The pairs a compliance read is about, in (site, asset, standard) order; `sites`
    None: every site."""
    query = select(Compliance)
    if sites is not None:
        query = query.where(Compliance.site_id.in_(sorted(sites)))
    for name, value in (("site_id", site_id), ("asset_id", asset_id),
                        ("standard_id", standard_id), ("state", state)):
        if value is not None:
            query = query.where(getattr(Compliance, name) == value)
    if after is not None:
        query = query.where(tuple_(Compliance.site_id, Compliance.asset_id,
                                   Compliance.standard_id) > tuple_(*after))
    return query.order_by(Compliance.site_id, Compliance.asset_id, Compliance.standard_id)


__all__ = ["COMPLIANCE_STATES", "BadCursor", "Filters", "list_ncs", "to_public", "visible_nc"]
