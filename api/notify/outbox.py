"""Decisions written in the NC change's own transaction: for each change, one pending
notification per route and channel it reaches, and the timers its new state keeps
(reminders, escalation, acknowledgement timeout, due soon).

Because they commit with the change (api.lifecycle.decide_with), a change that happened
is notified exactly once in effect, across crashes and restarts: there is nothing to
replay and nothing to lose. What becomes of each notification (grouped, silenced,
inhibited, muted, merged, sent) is the dispatcher's (api.notify.dispatch).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from api.lifecycle import NCChanged
from api.notify.config import NotifyConfig, Route
from api.notify.events import ALIVE, events_of
from api.notify.routing import Hit, fields_of, group_key, routes_for
from api.store import Notification, NotifyTimer, parse_nc_id

OPENING = ("raised", "recurring", "reopened")
"""The events of an NC becoming open: the routes that heard one remind and escalate."""
DUE_SOON_SHARE = 0.2
"""`remind_before_due` by default: a fifth of the time from detection to the due date."""


class Outbox:
    """Turns NC changes into pending notifications and timers under one `notify:`."""

    def __init__(self, config: NotifyConfig) -> None:
        self.config = config

    def decide(self, session: Session, changes: tuple[NCChanged, ...]) -> None:
        """api.lifecycle's decider: runs just before the changes commit."""
        notifications: list[Notification] = []
        timers: list[NotifyTimer] = []
        for change in changes:
            pk = parse_nc_id(change.nc_id)
            if pk is None:
                continue
            notifications += self.notifications(pk, change)
            timers += self.update_timers(session, pk, change)
        # Core executemany: no unit-of-work bookkeeping for rows nobody reads back here.
        # A timer a later change of the same transaction ends is inserted after that
        # change's delete; harmless, since a timer fires only in the states ALIVE names.
        if notifications:
            session.execute(insert(Notification), [_values(n) for n in notifications])
        if timers:
            session.execute(insert(NotifyTimer), [_values(t) for t in timers])

    def notifications(self, pk: int, change: NCChanged) -> list[Notification]:
        fields = fields_of(change.nc)
        if change.change == "escalate":  # to the channels its route escalates to
            route = int(change.changes.get("route", -1))
            channels = [str(c) for c in change.changes.get("escalate_to", ())]
            return [self.row(pk, change.nc, "escalated", channel, route, None, fields,
                             change.at) for channel in channels]
        events = events_of(change)
        if not events:
            return []
        return [self.row(pk, change.nc, hit.event, channel, hit.index, hit.route, fields,
                         change.at)
                for hit in routes_for(self.config, fields, events) for channel in hit.channels]

    @staticmethod
    def row(pk: int, nc: dict[str, Any], event: str, channel: str, index: int,
            route: Route | None, fields: dict[str, Any], at: datetime) -> Notification:
        """One pending notification. Without a route (an escalation) it is its own group
        and goes at once."""
        key = f"{index}|{group_key(route, fields)}" if route else f"escalated|{nc['id']}"
        return Notification(
            nc_pk=pk, site_id=nc["site_id"], event=event, channel=channel, route=index,
            group_key=key[:512], group_wait=route.group_wait if route else 0.0,
            group_interval=route.group_interval if route else 0.0,
            severity=nc["severity"], nc=nc, status="pending", created_at=at)

    # --- timers ------------------------------------------------------------------

    def update_timers(self, session: Session, pk: int, change: NCChanged) -> list[NotifyTimer]:
        """Drop the timers the NC's new state ends; start those it begins. A change that
        keeps the state keeps them (an occurrence does not restart a reminder), except that
        a new due date moves `due_soon`."""
        old, new = change.from_state, change.to_state
        due_moved = "due_at" in change.changes and change.change != "raise"
        ended = [kind for kind, states in ALIVE.items()
                 if (old in states and new not in states) or (kind == "due_soon" and due_moved)]
        if ended:
            session.execute(delete(NotifyTimer).where(NotifyTimer.nc_pk == pk,
                                                      NotifyTimer.kind.in_(ended)))
        begun = {kind for kind, states in ALIVE.items()
                 if new in states and (old not in states or (kind == "due_soon" and due_moved))}
        return self.timers(pk, change, begun) if begun else []

    def timers(self, pk: int, change: NCChanged, kinds: Iterable[str]) -> list[NotifyTimer]:
        fields = fields_of(change.nc)
        at = change.at
        made: list[NotifyTimer] = []
        kinds = set(kinds)
        for hit in routes_for(self.config, fields, OPENING) if kinds - {"due_soon"} else ():
            route = hit.route
            if "reminder" in kinds and route.repeat_interval:
                made.append(_timer(pk, "reminder", hit, at, route.repeat_interval,
                                   every=route.repeat_interval))
            if "escalate" in kinds and route.escalate_after:
                made.append(_timer(pk, "escalate", hit, at, route.escalate_after,
                                   channels=route.escalate_to))
            if "ack_timeout" in kinds and route.ack_timeout:
                made.append(_timer(pk, "ack_timeout", hit, at, route.ack_timeout))
        due_at = _moment(change.nc.get("due_at"))
        if "due_soon" in kinds and due_at is not None and due_at > at:
            detected = _moment(change.nc.get("detected_at")) or at
            for hit in routes_for(self.config, fields, ("due_soon",)):
                before = hit.route.remind_before_due or \
                    DUE_SOON_SHARE * max((due_at - detected).total_seconds(), 0.0)
                when = due_at - timedelta(seconds=before)
                if when > at:
                    made.append(NotifyTimer(nc_pk=pk, kind="due_soon", route=hit.index,
                                            channels=list(hit.channels), due_at=when))
        return made


def _timer(pk: int, kind: str, hit: Hit, at: datetime, after: float, *,
           every: float | None = None, channels: Iterable[str] | None = None) -> NotifyTimer:
    return NotifyTimer(nc_pk=pk, kind=kind, route=hit.index,
                       channels=list(channels if channels is not None else hit.channels),
                       due_at=at + timedelta(seconds=after), every=every)


def _moment(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _values(row: Notification | NotifyTimer) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key != "id"}
