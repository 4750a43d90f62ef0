"""Engine events into NC changes: raise, occurrence, clear, chattering, compliance
snapshots, and the automatic verification they drive.

Every event is applied at most once: its id is recorded in the same transaction as its
effect, so a replaying agent is harmless. Verification by sensor (ARCHITECTURE.md): after a
rectification at T, a new episode reported after T reopens the NC; `ok` time reported by
compliance snapshots after T (and after the condition cleared) closes it once it covers
the standard's `verify_for` with no data gap longer than its `no_data_after`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from api.catalog import apply_catalog
from api.errors import ClockSkew
from api.lifecycle import transition
from api.out_of_service import covering, share_out, spans_by_asset, suppress, to_inactive
from api.service import COMPLIANCE_STATES, SYSTEM_ACTOR, Actor, open_nc, public_fields
from api.store import (
    AppliedEvent,
    Base,
    Compliance,
    ComplianceDay,
    ComplianceMonth,
    Nonconformance,
    SessionFactory,
    committed,
    format_nc_id,
)
from rules.events import EventIn, SiteCatalogIn, SnapshotIn

RECURRENCE_WINDOW = timedelta(days=90)
DEFAULT_NO_DATA_AFTER = 900.0
TRACE = 500
"""Readings kept per NC during verification (one per compliance snapshot)."""
SLACK = 0.05
"""Seconds of violating time a snapshot may hold beyond the verification start before it
counts: event times are exact to the millisecond only, a real blip lasts a reading."""
MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of this server's clock an event may be dated (`server.max_clock_skew`)."""


def check_clock(events: Sequence[EventIn | SnapshotIn | SiteCatalogIn], now: datetime,
                max_skew: timedelta) -> None:
    """Raise ClockSkew for the first event with a time later than `now + max_skew`."""
    latest = now + max_skew
    for event in events:
        for moment in (event.at, getattr(event, "episode_start", None),
                       getattr(event, "since", None)):
            if moment is not None and moment > latest:
                raise ClockSkew(event.id, moment, now, max_skew)


@dataclass(slots=True)
class Applied:
    """What a batch did: counts, and the ids applied now or before, in request order."""

    applied: int = 0
    duplicates: int = 0
    ids: list[str] = field(default_factory=list)


def apply_events(factory: SessionFactory,
                 events: Sequence[EventIn | SnapshotIn | SiteCatalogIn],
                 actor: Actor = SYSTEM_ACTOR,
                 recurrence: timedelta = RECURRENCE_WINDOW, *,
                 max_clock_skew: timedelta = MAX_CLOCK_SKEW,
                 now: datetime | None = None) -> Applied:
    """Apply events in order, one transaction each, after checking their times against
    the clock (ClockSkew: none applied)."""
    check_clock(events, now or datetime.now(UTC), max_clock_skew)
    result = Applied()
    for event in events:
        # retried when a concurrent writer applied this event or changed this NC first
        done = committed(factory, lambda session, event=event: apply_event(
            session, event, actor, recurrence))
        result.applied += done
        result.duplicates += not done
        result.ids.append(event.id)
    return result


def apply_event(session: Session, event: EventIn | SnapshotIn | SiteCatalogIn, actor: Actor,
                recurrence: timedelta = RECURRENCE_WINDOW) -> bool:
    """Apply one engine event in the caller's transaction; False when already applied."""
    if session.get(AppliedEvent, event.id) is not None:
        return False
    if isinstance(event, SiteCatalogIn):  # assets and standard versions (api.catalog)
        apply_catalog(session, event)
        session.add(AppliedEvent(event_id=event.id))
        return True
    if isinstance(event, SnapshotIn):
        _snapshot(session, event, actor)
        session.add(AppliedEvent(event_id=event.id))
        return True
    if event.type in ("violation_started", "chattering"):
        window = covering(session, event.site_id, event.asset_id, event.at)
        if window is not None:  # out of service: kept apart, no NC, no occurrence
            suppress(session, event, window)
            session.add(AppliedEvent(event_id=event.id))
            return True
    nc = open_nc(session, event.site_id, event.asset_id, event.standard_id, lock=True)
    if event.type in ("violation_started", "chattering"):
        nc = _raise(session, event, nc, actor, recurrence)
    elif nc is not None:
        _clear(session, event, nc, actor)
    session.add(AppliedEvent(event_id=event.id, nc_pk=nc.pk if nc else None))
    return True


def _raise(session: Session, event: EventIn, nc: Nonconformance | None, actor: Actor,
           recurrence: timedelta) -> Nonconformance:
    at = event.at.astimezone(UTC)
    condition = "chattering" if event.type == "chattering" else "violating"
    if nc is not None:
        before = public_fields(nc)
        _adopt_new_version(nc, event)
        nc.occurrences += 1
        nc.condition, nc.cleared_at = condition, None
        if nc.state == "pending_verification" and nc.rectified_at and at > nc.rectified_at:
            _reopen_by_sensor(session, nc, at, event.evidence, event.id, before)
        else:
            transition(session, nc, "occurrence", actor, at, event_id=event.id,
                       before=before)
        return nc
    info = event.standard
    earlier = _recently_closed(session, event, recurrence)
    nc = Nonconformance(
        site_id=event.site_id, asset_id=event.asset_id, standard_id=event.standard_id,
        standard_version=event.standard_version, metric=event.metric, title=info.title,
        clause=info.clause, category=info.category, severity=info.severity,
        department=info.department, condition=condition, detected_at=at,
        due_at=at + timedelta(seconds=info.rectify_within) if info.rectify_within else None,
        occurrences=1, reopen_count=0, source="auto", evidence=event.evidence,
        recurring=bool(earlier), standard_info=info.model_dump(),
        asset_type=_text(event.asset.get("type"), 64), standard_kind=info.kind,
    )
    changes = {"recurs": [format_nc_id(pk) for pk in earlier]} if earlier else {}
    transition(session, nc, "raise", actor, at, changes=changes, event_id=event.id)
    return nc


def _recently_closed(session: Session, event: EventIn, window: timedelta) -> list[int]:
    """Earlier NCs of the same (asset, standard) closed within `window`: a recurrence."""
    return list(session.scalars(
        select(Nonconformance.pk).where(
            Nonconformance.site_id == event.site_id,
            Nonconformance.asset_id == event.asset_id,
            Nonconformance.standard_id == event.standard_id,
            Nonconformance.state == "closed",
            Nonconformance.closed_at >= event.at - window,
        ).order_by(Nonconformance.pk)))


def _clear(session: Session, event: EventIn, nc: Nonconformance, actor: Actor) -> None:
    at = event.at.astimezone(UTC)
    before = public_fields(nc)
    _adopt_new_version(nc, event)
    nc.condition, nc.cleared_at = "normal", at
    on_recovery = (nc.standard_info or {}).get("on_recovery", "keep_open")
    if on_recovery == "close" and nc.state != "pending_verification":
        transition(session, nc, "close_on_recovery", actor, at, event_id=event.id,
                   note="condition recovered (on_recovery: close)", before=before)
        return
    transition(session, nc, "clear", actor, at, event_id=event.id, before=before)


def _adopt_new_version(nc: Nonconformance, event: EventIn) -> None:
    """The NC keeps the lifecycle settings (on_recovery, verify_for, rectify_within) it was
    opened with until an event brings a newer version of its standard: a later event of
    the same version saying otherwise is not believed."""
    if nc.standard_version is not None and event.standard_version > nc.standard_version:
        nc.standard_version = event.standard_version
        nc.standard_info = event.standard.model_dump()
        nc.standard_kind = event.standard.kind or nc.standard_kind


def _text(value: object, limit: int) -> str | None:
    """A free-form field of the event's `asset` (JSON: any type) as a bounded text."""
    return str(value)[:limit] if isinstance(value, str | int) and value != "" else None


def _reopen_by_sensor(session: Session, nc: Nonconformance, at: datetime,
                      evidence: dict[str, Any], event_id: str | None,
                      before: dict[str, Any], note: str = "the violation recurred during "
                      "verification") -> None:
    nc.verification = {"method": "sensor", "result": "fail", "at": at.isoformat(),
                       "evidence": evidence, **traced(nc)}
    nc.verify_progress = None
    transition(session, nc, "reopen_by_sensor", SYSTEM_ACTOR, at, note=note,
               event_id=event_id, before=before)


def _snapshot(session: Session, event: SnapshotIn, actor: Actor) -> None:
    """Current state of every pair, seconds added to the day's totals, verification.
    The seconds of an asset out of service for part of the snapshot's span are moved to
    `inactive` in proportion (api.out_of_service), before totals and verification."""
    at = event.at.astimezone(UTC)
    day = at.date().isoformat()
    seconds = _in_service(session, event)
    current = [{"site_id": event.site_id, "asset_id": item.asset_id,
                "standard_id": item.standard_id, "standard_version": item.standard_version,
                "state": item.state, "updated_at": at, "last_value": item.last_value,
                "last_at": item.last_at} for item in event.items]
    totals = [{"site_id": event.site_id, "asset_id": item.asset_id,
               "standard_id": item.standard_id, "day": day,
               **{state: seconds[i].get(state, 0.0) for state in COMPLIANCE_STATES}}
              for i, item in enumerate(event.items)]
    keys = ["site_id", "asset_id", "standard_id"]
    _upsert(session, Compliance, current, keys,
            lambda new: {"standard_version": new.standard_version, "state": new.state,
                         "updated_at": new.updated_at,
                         # an agent older than the fields sends none: keep what was known
                         "last_value": func.coalesce(new.last_value, Compliance.last_value),
                         "last_at": func.coalesce(new.last_at, Compliance.last_at)})
    add_seconds(session, totals)
    pending = session.scalars(select(Nonconformance).where(
        Nonconformance.site_id == event.site_id,
        Nonconformance.state == "pending_verification").with_for_update())
    by_pair = {(nc.asset_id, nc.standard_id): nc for nc in pending}
    if by_pair:
        for i, item in enumerate(event.items):
            nc = by_pair.get((item.asset_id, item.standard_id))
            if nc is not None:
                _trace(nc, item.last_at, item.last_value)
                _verify_by_sensor(session, nc, event, seconds[i], item.readings)


def _in_service(session: Session, event: SnapshotIn) -> list[dict[str, float]]:
    """Each item's seconds, with the share of the span its asset was out of service
    moved to inactive; the items' own dicts when no window overlaps the span."""
    since, at = event.since.astimezone(UTC), event.at.astimezone(UTC)
    spans = spans_by_asset(session, event.site_id, since, at)
    if not spans:
        return [item.seconds for item in event.items]
    shares = {asset: share_out(found, since, at) for asset, found in spans.items()}
    return [to_inactive(item.seconds, shares.get(item.asset_id, 0.0))
            for item in event.items]


def _verify_by_sensor(session: Session, nc: Nonconformance, event: SnapshotIn,
                      seconds: dict[str, float], readings: int) -> None:
    info = nc.standard_info or {}
    verify_for = info.get("verify_for")
    gap_limit = info.get("no_data_after") or DEFAULT_NO_DATA_AFTER
    if not verify_for or nc.rectified_at is None or nc.condition != "normal":
        return  # a person verifies; or the condition has not cleared yet
    start = max(nc.rectified_at, nc.cleared_at or nc.rectified_at)
    since, at = event.since.astimezone(UTC), event.at.astimezone(UTC)
    if at <= start:
        return
    # progress is bookkeeping, not part of the NC's public record: no history per snapshot
    progress = dict(nc.verify_progress or {})
    if "from" not in progress:  # (it may hold the trace of readings alone)
        progress.update({"from": start.isoformat(), "covered": 0.0, "samples": 0,
                         "gap": 0.0})
    share = 1.0 if since >= start else (at - start) / max(at - since, timedelta(seconds=1))
    ok = seconds.get("ok", 0.0) * share
    # time outside the standard's schedule is neither compliant nor a gap in the data
    gap = progress["gap"] + seconds.get("no_data", 0.0) * share
    # A snapshot that began before the verification started may hold violating time from
    # before the fix (or the clear): only time that cannot fit before the start counts.
    # (times travel at millisecond resolution: SLACK keeps rounding from reopening a fix)
    before_start = max(0.0, (start - since).total_seconds())
    if seconds.get("violating", 0.0) > before_start + SLACK:
        # out of limits again (even within the standard's on-delay): the fix did not hold
        before = public_fields(nc)
        _reopen_by_sensor(session, nc, at, {"snapshot": {
            "since": since.isoformat(), "at": at.isoformat(), "seconds": seconds}},
            event.id, before, note="readings violated the standard during verification")
        return
    if gap > gap_limit:
        progress.update(covered=0.0, samples=0, gap=0.0, **{"from": at.isoformat()})
    else:
        progress.update(covered=progress["covered"] + ok,
                        samples=progress["samples"] + round(readings * share),
                        gap=0.0 if ok > 0 else gap)
    if progress["covered"] >= verify_for:
        before = public_fields(nc)
        nc.verification = {"method": "sensor", "result": "pass",
                           "window": {"from": progress["from"], "to": at.isoformat()},
                           "samples": progress["samples"], "verify_for": verify_for,
                           **traced(nc)}
        nc.verify_progress = None
        transition(session, nc, "verify_by_sensor", SYSTEM_ACTOR, at,
                   note=f"compliant readings covered verify_for ({verify_for:g}s)",
                   event_id=event.id, before=before)
    else:
        nc.verify_progress = progress


def _trace(nc: Nonconformance, at: datetime | None, value: float | None) -> None:
    """Keep a snapshot's last reading of a pair under verification (at most TRACE): the
    readings the console plots beside those around detection, one a snapshot."""
    if at is None or value is None or nc.rectified_at is None or at < nc.rectified_at:
        return
    progress = dict(nc.verify_progress or {})
    points = list(progress.get("readings") or [])
    stamp = at.astimezone(UTC).isoformat()
    if points and points[-1][0] == stamp:
        return  # the same reading as the last snapshot's: nothing read since
    progress["readings"] = [*points, [stamp, value]][-TRACE:]
    nc.verify_progress = progress


def traced(nc: Nonconformance) -> dict[str, Any]:
    """The readings traced during verification, as `verification` keeps them."""
    points = (nc.verify_progress or {}).get("readings")
    return {"readings": points} if points else {}


def reopen_unverified(session: Session, nc: Nonconformance, now: datetime) -> None:
    """verify_for passed after a rectification and the condition never cleared."""
    _reopen_by_sensor(session, nc, now, nc.evidence or {}, None, public_fields(nc),
                      note="still violating verify_for after the rectification")


def add_seconds(session: Session, days: Sequence[dict[str, Any]]) -> None:
    """Add each row's seconds (site_id, asset_id, standard_id, day, COMPLIANCE_STATES) to
    its day in compliance_days and to its month in compliance_months, the roll-up a
    year's report reads (api.reports.timeshare): both in the same transaction, so they
    always agree. Rows of the same day or month are summed first: one INSERT may not
    update a row twice on PostgreSQL."""
    pair = ["site_id", "asset_id", "standard_id"]
    for model, period, width in ((ComplianceDay, "day", 10), (ComplianceMonth, "month", 7)):
        totals: dict[tuple[str, ...], dict[str, Any]] = {}
        for row in days:
            key = (row["site_id"], row["asset_id"], row["standard_id"], row["day"][:width])
            found = totals.get(key)
            if found is None:
                totals[key] = {**dict(zip([*pair, period], key, strict=True)),
                               **{state: row[state] for state in COMPLIANCE_STATES}}
            else:
                for state in COMPLIANCE_STATES:
                    found[state] += row[state]
        _upsert(session, model, list(totals.values()), [*pair, period],
                lambda new, model=model: {state: getattr(model, state) + getattr(new, state)
                                          for state in COMPLIANCE_STATES})


def _upsert(session: Session, model: type[Base], rows: list[dict[str, Any]],
            keys: list[str], update: Callable[[Any], dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE, on SQLite and PostgreSQL alike: one statement
    executed for every row (compiled once; a statement of a thousand rows' values was
    compiled anew for each thousand, which made seeding a year of days twice slower)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    statement = (postgresql_insert if dialect == "postgresql" else sqlite_insert)(model)
    session.execute(statement.on_conflict_do_update(index_elements=keys,
                                                    set_=update(statement.excluded)), rows)
