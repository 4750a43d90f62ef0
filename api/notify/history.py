"""What the notifier decided, for people asking "why did nobody hear of NC-000123?":
every notification (one NC change for one channel) with its status and reason, and the
message that carried it. The reads behind GET /api/v1/notifications; no HTTP here.

Rows are written by the notifier in the NC change's own transaction and settled by the
dispatcher; this module only reads them, newest first, a page at a time.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import Invalid
from api.notify.config import NotifyEvent, TimerKind
from api.service import decode_id, encode_id
from api.store import Notification, NotifyMessage, format_nc_id, parse_nc_id

NotificationStatus = Literal["pending", "sent", "suppressed", "merged", "failed"]
"""What became of a notification (SPEC 7.2): waiting for its group; sent; held back by
a silence, an inhibition or a mute; merged into a digest by a channel's limit; failed
for good."""
NOTIFICATION_STATUSES: tuple[NotificationStatus, ...] = get_args(NotificationStatus)
NotificationEvent = Literal[NotifyEvent, TimerKind]
"""Why a notification was made: an NC change, or a timer (a reminder, an acknowledgement
timing out)."""


def list_notifications(session: Session, *, nc_id: str | None = None,
                       channel: str | None = None, status: str | None = None,
                       event: str | None = None, limit: int = 100,
                       cursor: str | None = None, sites: Collection[str] | None = None
                       ) -> tuple[list[dict[str, Any]], str | None]:
    """A page of notifications, newest first, each with its message (or None), and the
    cursor of the next page (None: the last). `sites` None: every site."""
    query = select(Notification, NotifyMessage).outerjoin(
        NotifyMessage, Notification.message_id == NotifyMessage.id)
    if nc_id is not None:
        pk = parse_nc_id(nc_id)
        if pk is None:
            raise Invalid(f"nc_id {nc_id[:40]!r} is not an NC id like NC-000123")
        query = query.where(Notification.nc_pk == pk)
    for column, value in ((Notification.channel, channel), (Notification.status, status),
                          (Notification.event, event)):
        if value is not None:
            query = query.where(column == value)
    if sites is not None:
        query = query.where(Notification.site_id.in_(sorted(sites)))
    if cursor:
        query = query.where(Notification.id < decode_id(cursor))
    rows = session.execute(query.order_by(Notification.id.desc()).limit(limit + 1)).all()
    page = [describe(note, message) for note, message in rows[:limit]]
    return page, encode_id(rows[limit - 1][0].id) if len(rows) > limit else None


def describe(note: Notification, message: NotifyMessage | None) -> dict[str, Any]:
    """A notification's public form (NotificationPublic)."""
    return {
        "id": note.id, "nc_id": format_nc_id(note.nc_pk) if note.nc_pk is not None else None,
        "site_id": note.site_id, "event": note.event, "channel": note.channel,
        "route": note.route, "status": note.status, "reason": note.reason,
        "created_at": note.created_at, "settled_at": note.settled_at,
        "message": None if message is None else {
            "id": message.id, "kind": message.kind, "status": message.status,
            "attempts": message.attempts, "sent_at": message.sent_at,
            "last_error": message.last_error},
    }
