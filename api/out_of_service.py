"""Out of service (SPEC 7.3): an asset taken down for planned or ad hoc maintenance, for a
window of time. Inside the window its engine events open no NC and add no occurrence
(each is kept in `suppressed_events` instead, and counts as applied), and the compliance
seconds its pairs report are moved to `inactive` in proportion to the overlap: a chiller
stripped for overhaul is neither violating nor compliant.

What a window does not do:
- rewrite the past: it starts no earlier than PAST_SLACK before it is made, so figures
  already summed stay as they were (a late event or snapshot dated inside it still meets
  it when it arrives);
- touch an NC already open for the asset: it stays open and is rectified as usual;
  `violation_cleared` events are applied normally;
- last for ever: at most MAX_WINDOW; ending one early (`end`) sets its end to now and
  keeps the row for audit.

No HTTP here (refusals are api.errors). A site-scoped token makes, reads and ends the
windows of its sites only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.auth import Principal
from api.errors import Forbidden, Invalid, NotFound
from api.service import decode_id, encode_id
from api.store import OutOfService, SuppressedEvent
from common.vocabulary import COMPLIANCE_STATES, WindowState
from rules.events import EventIn

WRITERS = ("quality",)
"""Roles that make and end windows: quality, and admin (which implies it)."""
MAX_WINDOW = timedelta(days=90)
"""The longest window: an asset out of service for longer is decommissioned, not serviced."""
PAST_SLACK = timedelta(minutes=5)
"""How far before now a window may start: a form filled in a few minutes late, no more."""


def create(session: Session, *, asset_id: str, site_id: str | None, starts_at: datetime | None,
           ends_at: datetime, reason: str, principal: Principal, now: datetime,
           local_site: str = "", assets: Collection[str] = ()) -> OutOfService:
    """A new window, added to the caller's transaction (the caller commits). `local_site`
    and `assets` are `patrol run`'s: the default site, and the asset ids a window there
    must name. Refuses with Forbidden (role, reach), NotFound (an asset the local site
    does not have) or Invalid (times, reason)."""
    if not principal.may(*WRITERS):
        raise Forbidden(f"role {principal.role!r} may not take assets out of service; "
                        "needs quality or admin")
    site = site_id or local_site
    if not site:
        raise Invalid("name site_id: this server has no local site")
    if not principal.reaches(site):
        raise Forbidden(f"this token does not reach site {site!r}")
    if site == local_site and assets and asset_id not in assets:
        raise NotFound(f"no asset {asset_id!r} at site {site!r}")
    starts_at = (starts_at or now).astimezone(UTC)
    ends_at = ends_at.astimezone(UTC)
    if starts_at < now - PAST_SLACK:
        raise Invalid(f"from {starts_at.isoformat()} is in the past: a window starts no "
                      f"earlier than {PAST_SLACK.total_seconds() / 60:g} minutes ago "
                      "(figures already summed stay as they are)")
    if ends_at <= starts_at:
        raise Invalid(f"until {ends_at.isoformat()} is not after from {starts_at.isoformat()}")
    if ends_at <= now:
        raise Invalid(f"until {ends_at.isoformat()} is not in the future")
    if ends_at - starts_at > MAX_WINDOW:
        raise Invalid(f"the window is longer than {MAX_WINDOW.days} days")
    text = reason.strip()
    if not text:
        raise Invalid("a window needs a reason: what maintenance, so the reports say why")
    window = OutOfService(site_id=site, asset_id=asset_id, starts_at=starts_at,
                          ends_at=ends_at, reason=text, author=principal.name, created_at=now)
    session.add(window)
    session.flush()  # its id, for the answer
    return window


def list_windows(session: Session, principal: Principal, *, asset_id: str,
                 site_id: str | None = None, limit: int = 100, cursor: str | None = None
                 ) -> tuple[list[OutOfService], str | None]:
    """The asset's windows at the sites the caller reaches (or at `site_id`), newest made
    first, `limit` at a time, and the cursor of the next page (None: the last)."""
    query = select(OutOfService).where(OutOfService.asset_id == asset_id)
    if site_id is not None:
        query = query.where(OutOfService.site_id == site_id)
    if principal.sites is not None:
        query = query.where(OutOfService.site_id.in_(sorted(principal.sites)))
    if cursor:
        query = query.where(OutOfService.id < decode_id(cursor))
    rows = list(session.scalars(query.order_by(OutOfService.id.desc()).limit(limit + 1)))
    return rows[:limit], encode_id(rows[limit - 1].id) if len(rows) > limit else None


def end(session: Session, window_id: int, principal: Principal, now: datetime
        ) -> OutOfService:
    """End the window now (one not started yet: never in force); the row stays for audit.
    Ending an ended window changes nothing (a second tap is not an error)."""
    if not principal.may(*WRITERS):
        raise Forbidden(f"role {principal.role!r} may not end out-of-service windows; "
                        "needs quality or admin")
    window = session.scalar(select(OutOfService).where(OutOfService.id == window_id)
                            .with_for_update())
    if window is None or not principal.reaches(window.site_id):
        raise NotFound(f"no out-of-service window {window_id}")
    if window.ends_at > now:
        window.ends_at = max(now, window.starts_at)
    return window


def state_of(window: OutOfService, now: datetime) -> WindowState:
    if window.ends_at <= now or window.ends_at <= window.starts_at:
        return "ended"
    return "pending" if window.starts_at > now else "active"


def suppressed_counts(session: Session, windows: Collection[OutOfService]) -> dict[int, int]:
    """Events each window held back, by window id (one grouped query over the page)."""
    ids = sorted(window.id for window in windows)
    if not ids:
        return {}
    query = (select(SuppressedEvent.window_id, func.count()).where(
        SuppressedEvent.window_id.in_(ids)).group_by(SuppressedEvent.window_id))
    return {window_id: count for window_id, count in session.execute(query)}


def describe(window: OutOfService, now: datetime, suppressed: int = 0) -> dict[str, Any]:
    """The window's public form (OutOfServicePublic)."""
    return {"id": window.id, "site_id": window.site_id, "asset_id": window.asset_id,
            "from": window.starts_at, "until": window.ends_at, "reason": window.reason,
            "author": window.author, "created_at": window.created_at,
            "state": state_of(window, now), "suppressed": suppressed}


# --- what a window does to engine events and compliance snapshots (api.ingest) ----------


def covering(session: Session, site_id: str, asset_id: str, at: datetime
             ) -> OutOfService | None:
    """The window (the earliest made) in force for the asset at `at`: [from, until)."""
    return session.scalar(select(OutOfService).where(
        OutOfService.site_id == site_id, OutOfService.asset_id == asset_id,
        OutOfService.ends_at > at, OutOfService.starts_at <= at,
    ).order_by(OutOfService.id).limit(1))


def suppress(session: Session, event: EventIn, window: OutOfService) -> None:
    """Keep the event the window held back (in the caller's transaction)."""
    session.add(SuppressedEvent(
        event_id=event.id, type=event.type, site_id=event.site_id, asset_id=event.asset_id,
        standard_id=event.standard_id, at=event.at.astimezone(UTC), reason=window.reason,
        window_id=window.id))


Span = tuple[datetime, datetime]


def spans_by_asset(session: Session, site_id: str, since: datetime, at: datetime
                   ) -> dict[str, list[Span]]:
    """The site's windows overlapping [since, at] (a snapshot's span), by asset."""
    spans: dict[str, list[Span]] = defaultdict(list)
    query = select(OutOfService.asset_id, OutOfService.starts_at, OutOfService.ends_at).where(
        OutOfService.site_id == site_id, OutOfService.ends_at > since,
        OutOfService.starts_at <= at, OutOfService.ends_at > OutOfService.starts_at)
    for asset_id, starts_at, ends_at in session.execute(query):
        spans[asset_id].append((starts_at, ends_at))
    return dict(spans)


def share_out(spans: list[Span], since: datetime, at: datetime) -> float:
    """The part (0..1) of [since, at) the spans cover, overlapping spans counted once; a
    snapshot of no length is wholly out when a span holds its moment."""
    if at <= since:
        return 1.0 if any(start <= at < end for start, end in spans) else 0.0
    covered = 0.0
    reach = since
    for start, end in sorted(spans):
        start, end = max(start, reach), min(end, at)
        if end > start:
            covered += (end - start).total_seconds()
            reach = end
    return min(1.0, covered / (at - since).total_seconds())


def to_inactive(seconds: Mapping[str, float], share: float) -> dict[str, float]:
    """`seconds` per state with `share` of every other state's time moved to inactive."""
    if share <= 0.0:
        return dict(seconds)
    moved = {state: seconds.get(state, 0.0) * share for state in COMPLIANCE_STATES
             if state != "inactive"}
    out = {state: seconds.get(state, 0.0) - moved[state] for state in moved}
    out["inactive"] = seconds.get("inactive", 0.0) + sum(moved.values())
    return out
