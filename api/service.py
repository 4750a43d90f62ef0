"""NC store operations: applying engine events and reading NCs. No HTTP here.

Every write is one transaction; engine events are applied at most once each (their ids
are recorded in the same transaction as their effect), so a replaying agent is harmless.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import EventIn, NonconformancePublic, SnapshotIn
from api.store import (
    ENDED_STATES,
    OPEN_STATES,
    AppliedEvent,
    Base,
    Compliance,
    ComplianceDay,
    HistoryEntry,
    Nonconformance,
    format_nc_id,
)

SYSTEM_ACTOR = ("patrol", "system")
RECURRENCE_WINDOW = timedelta(days=90)
COMPLIANCE_STATES = ("ok", "violating", "no_data", "inactive")


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


class BadCursor(ValueError):
    """The pagination cursor was not one this API gave out."""


def is_overdue(nc: Nonconformance, now: datetime) -> bool:
    return nc.due_at is not None and nc.state in OPEN_STATES and nc.due_at < now


def to_public(nc: Nonconformance, now: datetime | None = None) -> NonconformancePublic:
    now = now or datetime.now(UTC)
    return NonconformancePublic(
        id=format_nc_id(nc.pk), site_id=nc.site_id, asset_id=nc.asset_id,
        standard_id=nc.standard_id, standard_version=nc.standard_version, metric=nc.metric,
        title=nc.title, clause=nc.clause, category=nc.category, severity=nc.severity,
        department=nc.department, assignee=nc.assignee, state=nc.state,
        condition=nc.condition, detected_at=nc.detected_at, cleared_at=nc.cleared_at,
        due_at=nc.due_at, closed_at=nc.closed_at, overdue=is_overdue(nc, now),
        occurrences=nc.occurrences, reopen_count=nc.reopen_count, recurring=nc.recurring,
        source=nc.source, evidence=nc.evidence, rectification=nc.rectification,
        verification=nc.verification, external_ref=nc.external_ref,
    )


def apply_events(factory: sessionmaker[Session], events: Sequence[EventIn | SnapshotIn],
                 actor: tuple[str, str] = SYSTEM_ACTOR,
                 recurrence: timedelta = RECURRENCE_WINDOW) -> tuple[int, int]:
    """Apply events in order, one transaction each; returns (applied, duplicates)."""
    applied = duplicates = 0
    for event in events:
        for attempt in range(3):
            with factory() as session:
                try:
                    done = apply_event(session, event, actor, recurrence)
                    session.commit()
                except IntegrityError:
                    # a concurrent writer applied this event or opened this NC first
                    session.rollback()
                    if attempt == 2:
                        raise
                    continue
            applied += done
            duplicates += not done
            break
    return applied, duplicates


def apply_event(session: Session, event: EventIn | SnapshotIn, actor: tuple[str, str],
                recurrence: timedelta = RECURRENCE_WINDOW) -> bool:
    """Apply one engine event in the caller's transaction; False when already applied."""
    if session.get(AppliedEvent, event.id) is not None:
        return False
    if isinstance(event, SnapshotIn):
        _snapshot(session, event)
        session.add(AppliedEvent(event_id=event.id))
        return True
    nc = _open_nc(session, event.site_id, event.asset_id, event.standard_id)
    if event.type in ("violation_started", "chattering"):
        nc = _raise(session, event, nc, actor, recurrence)
    elif nc is not None:
        _clear(session, event, nc, actor)
    session.add(AppliedEvent(event_id=event.id, nc_pk=nc.pk if nc else None))
    return True


def _open_nc(session: Session, site_id: str, asset_id: str,
             standard_id: str) -> Nonconformance | None:
    return session.scalar(
        select(Nonconformance).where(
            Nonconformance.site_id == site_id,
            Nonconformance.asset_id == asset_id,
            Nonconformance.standard_id == standard_id,
            Nonconformance.open_slot == "open",
        )
    )


def _raise(session: Session, event: EventIn, nc: Nonconformance | None,
           actor: tuple[str, str], recurrence: timedelta) -> Nonconformance:
    at = event.at.astimezone(UTC)
    condition = "chattering" if event.type == "chattering" else "violating"
    if nc is not None:
        old, before = nc.occurrences, nc.condition
        nc.occurrences += 1
        nc.condition = condition
        nc.cleared_at = None
        _history(session, nc, actor, "occurrence", nc.state, nc.state, event.at,
                 {"occurrences": [old, nc.occurrences], "condition": [before, condition]},
                 event_id=event.id)
        return nc
    info = event.standard
    nc = Nonconformance(
        site_id=event.site_id, asset_id=event.asset_id, standard_id=event.standard_id,
        standard_version=event.standard_version, metric=event.metric, title=info.title,
        clause=info.clause, category=info.category, severity=info.severity,
        department=info.department, state="open", open_slot="open", condition=condition,
        detected_at=at,
        due_at=at + timedelta(seconds=info.rectify_within) if info.rectify_within else None,
        occurrences=1, reopen_count=0, source="auto", evidence=event.evidence,
        recurring=_recently_closed(session, event, recurrence) is not None,
        standard_info=info.model_dump(),
    )
    session.add(nc)
    session.flush()
    _history(session, nc, actor, "raised", None, "open", event.at, {}, event_id=event.id)
    return nc


def _recently_closed(session: Session, event: EventIn, window: timedelta) -> int | None:
    return session.scalar(
        select(Nonconformance.pk).where(
            Nonconformance.site_id == event.site_id,
            Nonconformance.asset_id == event.asset_id,
            Nonconformance.standard_id == event.standard_id,
            Nonconformance.state == "closed",
            Nonconformance.closed_at >= event.at - window,
        ).limit(1)
    )


def _snapshot(session: Session, event: SnapshotIn) -> None:
    """Current state of every pair, and seconds in each state added to the day's totals."""
    at = event.at.astimezone(UTC)
    day = at.date().isoformat()
    current = [{"site_id": event.site_id, "asset_id": item.asset_id,
                "standard_id": item.standard_id, "standard_version": item.standard_version,
                "state": item.state, "updated_at": at} for item in event.items]
    totals = [{"site_id": event.site_id, "asset_id": item.asset_id,
               "standard_id": item.standard_id, "day": day,
               **{state: item.seconds.get(state, 0.0) for state in COMPLIANCE_STATES}}
              for item in event.items]
    keys = ["site_id", "asset_id", "standard_id"]
    _upsert(session, Compliance, current, keys,
            lambda new: {"standard_version": new.standard_version, "state": new.state,
                         "updated_at": new.updated_at})
    _upsert(session, ComplianceDay, totals, [*keys, "day"],
            lambda new: {state: getattr(ComplianceDay, state) + getattr(new, state)
                         for state in COMPLIANCE_STATES})


def _upsert(session: Session, model: type[Base], rows: list[dict[str, Any]],
            keys: list[str], update: Callable[[Any], dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE, on SQLite and PostgreSQL alike, in chunks."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" \
        else sqlite_insert
    for start in range(0, len(rows), 1000):
        statement = insert(model).values(rows[start:start + 1000])
        session.execute(statement.on_conflict_do_update(index_elements=keys,
                                                        set_=update(statement.excluded)))


def list_compliance(session: Session, *, site_id: str | None, asset_id: str | None,
                    standard_id: str | None, state: str | None) -> list[Compliance]:
    query = select(Compliance)
    for name, value in (("site_id", site_id), ("asset_id", asset_id),
                        ("standard_id", standard_id), ("state", state)):
        if value is not None:
            query = query.where(getattr(Compliance, name) == value)
    query = query.order_by(Compliance.site_id, Compliance.asset_id, Compliance.standard_id)
    return list(session.scalars(query.limit(10_000)))


def _clear(session: Session, event: EventIn, nc: Nonconformance,
           actor: tuple[str, str]) -> None:
    changes: dict[str, Any] = {"condition": [nc.condition, "normal"]}
    nc.condition = "normal"
    nc.cleared_at = event.at.astimezone(UTC)
    before = nc.state
    if event.standard.on_recovery == "close" and nc.state != "pending_verification":
        nc.state, nc.open_slot, nc.closed_at = "closed", None, nc.cleared_at
        changes["state"] = [before, "closed"]
    _history(session, nc, actor, "cleared", before, nc.state, event.at, changes,
             event_id=event.id)


def _history(session: Session, nc: Nonconformance, actor: tuple[str, str], action: str,
             from_state: str | None, to_state: str | None, at: datetime,
             changes: dict[str, Any], note: str | None = None,
             event_id: str | None = None) -> None:
    session.add(HistoryEntry(nc_pk=nc.pk, at=at.astimezone(UTC), actor=actor[0],
                             role=actor[1], action=action, from_state=from_state,
                             to_state=to_state, changes=changes, note=note,
                             event_id=event_id))


def get_nc(session: Session, pk: int) -> Nonconformance | None:
    return session.get(Nonconformance, pk)


def list_ncs(session: Session, filters: Filters, *, limit: int, cursor: str | None,
             now: datetime) -> tuple[list[Nonconformance], str | None]:
    """Newest first by detected_at; keyset pagination so pages stay stable under inserts."""
    query = select(Nonconformance)
    for name in ("site_id", "state", "asset_id", "standard_id", "severity", "department",
                 "recurring"):
        value = getattr(filters, name)
        if value is not None:
            query = query.where(getattr(Nonconformance, name) == value)
    if filters.overdue is not None:
        late = and_(Nonconformance.due_at < now, Nonconformance.state.in_(OPEN_STATES))
        on_time = or_(~late, Nonconformance.due_at.is_(None))
        query = query.where(late if filters.overdue else on_time)
    if cursor:
        at, pk = decode_cursor(cursor)
        query = query.where(or_(Nonconformance.detected_at < at,
                                and_(Nonconformance.detected_at == at, Nonconformance.pk < pk)))
    query = query.order_by(Nonconformance.detected_at.desc(), Nonconformance.pk.desc())
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


__all__ = ["ENDED_STATES", "BadCursor", "Filters", "apply_events", "list_ncs", "to_public"]
