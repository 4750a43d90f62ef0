"""Keeping the NC database small for a year (`server.retention`): what only serves
delivery is deleted once it is old and settled. The NCs, their history, the compliance
figures and the ids of applied events (an agent may replay an old outbox) are never
pruned.

- webhook deliveries delivered or given up (`dead`) before `deliveries` ago; pending ones
  stay whatever their age;
- feed events before `feed` ago that no webhook still has to fan out (every webhook's
  cursor is past them) and no remaining delivery points to;
- notifications settled (not pending) before `notifications` ago, then the messages no
  notification is left in.

Each pass deletes at most BATCH rows of each kind per transaction, so a first prune of a
year's backlog never holds the write lock for long; the next pass goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from api.config import RetentionConfig
from api.store import Delivery, FeedEvent, Notification, NotifyMessage, SessionFactory, Webhook

log = logging.getLogger("patrol.api.retention")

BATCH = 5000
EVERY = 3600.0
"""Seconds between passes in the running API."""


def prune(factory: SessionFactory, retention: RetentionConfig,
          now: datetime | None = None) -> dict[str, int]:
    """One pass; returns how many rows of each kind went (until none is left to go)."""
    now = now or datetime.now(UTC)
    gone: dict[str, int] = {}
    steps: list[tuple[str, float | None, Callable[[Session, datetime], Any]]] = [
        ("deliveries", retention.deliveries, _deliveries),
        ("feed", retention.feed, _feed),
        ("notifications", retention.notifications, _notifications),
        ("messages", retention.notifications, _messages)]
    for name, keep, step in steps:
        if keep is None:
            continue
        before = now - timedelta(seconds=keep)
        total = 0
        while True:
            with factory() as session:
                count = step(session, before)
                session.commit()
            total += count
            if count < BATCH:
                break
        gone[name] = total
    if any(gone.values()):
        log.info("retention: deleted %s", ", ".join(f"{n} {k}" for k, n in gone.items() if n))
    return gone


def _ids(session: Session, query: Any) -> list[int]:
    return list(session.scalars(query.limit(BATCH)))


def _deliveries(session: Session, before: datetime) -> int:
    ids = _ids(session, select(Delivery.id).where(
        Delivery.status.in_(("delivered", "dead")), Delivery.created_at < before)
        .order_by(Delivery.id))
    if ids:
        session.execute(delete(Delivery).where(Delivery.id.in_(ids)))
    return len(ids)


def _feed(session: Session, before: datetime) -> int:
    fanned_out = session.scalar(select(func.min(Webhook.cursor)))
    latest = session.scalar(select(func.max(FeedEvent.seq))) or 0
    query = select(FeedEvent.seq).where(
        FeedEvent.at < before,
        # the latest stays: SQLite would give a new event the seq after the highest
        # left, and a tracker's cursor must never see a seq again
        FeedEvent.seq < latest,
        ~exists().where(Delivery.seq == FeedEvent.seq)).order_by(FeedEvent.seq)
    if fanned_out is not None:  # a webhook still to fan out needs what is past its cursor
        query = query.where(FeedEvent.seq <= fanned_out)
    ids = _ids(session, query)
    if ids:
        session.execute(delete(FeedEvent).where(FeedEvent.seq.in_(ids)))
    return len(ids)


def _notifications(session: Session, before: datetime) -> int:
    ids = _ids(session, select(Notification.id).where(
        Notification.status != "pending", Notification.created_at < before)
        .order_by(Notification.id))
    if ids:
        session.execute(delete(Notification).where(Notification.id.in_(ids)))
    return len(ids)


def _messages(session: Session, before: datetime) -> int:
    ids = _ids(session, select(NotifyMessage.id).where(
        NotifyMessage.status != "pending", NotifyMessage.created_at < before,
        ~exists().where(Notification.message_id == NotifyMessage.id))
        .order_by(NotifyMessage.id))
    if ids:
        session.execute(delete(NotifyMessage).where(NotifyMessage.id.in_(ids)))
    return len(ids)
