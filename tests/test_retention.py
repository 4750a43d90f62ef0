"""`server.retention` on SQLite and PostgreSQL: old settled deliveries, feed events and
notifications go; what is pending, what a webhook has still to fan out, the latest feed
event and every NC's history stay, and the feed's numbering never goes back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.app import create_app
from api.config import RetentionConfig
from api.retention import prune
from api.store import (
    Database,
    Delivery,
    FeedEvent,
    HistoryEntry,
    Notification,
    NotifyMessage,
    Webhook,
)
from tests.test_feed_webhooks import Patrol

DAY = timedelta(days=1)


@pytest.fixture
def patrol(db: Database) -> Iterator[Patrol]:
    with TestClient(create_app(db)) as client:
        yield Patrol(client, db)


def test_old_settled_rows_go_and_what_is_still_needed_stays(patrol: Patrol) -> None:
    db = patrol.db
    ncs = [patrol.raise_nc(asset=f"CH-{n}") for n in range(6)]
    now = datetime.now(UTC)
    long_ago = now - 400 * DAY
    with db.write() as session:
        seqs = list(session.scalars(select(FeedEvent.seq).order_by(FeedEvent.seq)))
        assert len(seqs) == 6
        session.execute(update(FeedEvent).values(at=long_ago))  # all of them old
        hook = Webhook(url="http://127.0.0.1:9/x", secret="s" * 32, cursor=seqs[3])
        session.add(hook)
        session.flush()
        statuses = ["delivered", "dead", "pending", "delivered"]
        for seq, status in zip(seqs, statuses, strict=False):
            session.add(Delivery(webhook_id=hook.id, seq=seq, nc_pk=1, message_id=f"m{seq}",
                                 status=status, next_attempt_at=long_ago,
                                 created_at=long_ago))
        message = NotifyMessage(channel="eng", group_key="g", kind="group", severity="major",
                                status="sent", next_attempt_at=long_ago, created_at=long_ago)
        session.add(message)
        session.flush()
        for status, created in (("sent", long_ago), ("pending", long_ago), ("sent", now)):
            session.add(Notification(site_id="tower-a", event="raised", channel="eng",
                                     route=0, group_key="g", severity="major", nc={},
                                     status=status, created_at=created,
                                     message_id=message.id if status == "sent" else None))
        session.commit()
        history = session.scalar(select(func.count()).select_from(HistoryEntry))

    gone = prune(db.write, RetentionConfig(feed=90 * 86400.0, deliveries=30 * 86400.0,
                                           notifications=90 * 86400.0), now)
    assert gone == {"deliveries": 3, "feed": 3, "notifications": 1, "messages": 0}
    with db.session() as session:
        left = {d.seq: d.status for d in session.scalars(select(Delivery))}
        assert left == {seqs[2]: "pending"}  # pending whatever its age
        feed = list(session.scalars(select(FeedEvent.seq).order_by(FeedEvent.seq)))
        # 0, 1 and 3 went with their deliveries; 2 has a pending one; 4 and 5 are past
        # the webhook's cursor (5, the latest, would stay anyway)
        assert feed == [seqs[2], seqs[4], seqs[5]]
        assert [n.status for n in session.scalars(select(Notification))] == ["pending", "sent"]
        assert session.scalar(select(func.count()).select_from(NotifyMessage)) == 1
        assert session.scalar(select(func.count()).select_from(HistoryEntry)) == history

    with db.write() as session:  # the webhook fans out and delivers everything
        session.execute(update(Webhook).values(cursor=seqs[5]))
        session.execute(update(Delivery).values(status="delivered"))
        session.execute(update(Notification).values(status="sent", created_at=long_ago))
        session.commit()
    again = prune(db.write, RetentionConfig(), now)
    assert again == {"deliveries": 1, "feed": 2, "notifications": 2, "messages": 1}
    with db.session() as session:
        assert list(session.scalars(select(FeedEvent.seq))) == [seqs[5]]  # the latest
    newer = patrol.raise_nc(asset="AHU-9")
    feed = patrol.client.get("/api/v1/feed?after=0", headers=patrol.headers("tracker"))
    events = feed.json()["events"]
    assert [e["nc"]["id"] for e in events] == [ncs[5], newer]
    assert events[-1]["seq"] > seqs[5]  # numbering goes on, never back
    for nc in ncs:  # every NC's history is whole
        answer = patrol.client.get(f"/api/v1/nonconformances/{nc}/history",
                                   headers=patrol.headers("tracker"))
        assert answer.json()["items"][0]["action"] == "raised"


def test_a_null_retention_keeps_everything(patrol: Patrol) -> None:
    patrol.raise_nc(asset="CH-1")
    patrol.raise_nc(asset="CH-2")
    with patrol.db.write() as session:
        session.execute(update(FeedEvent).values(at=datetime.now(UTC) - 4000 * DAY))
        session.commit()
    assert prune(patrol.db.write, RetentionConfig(feed=None, deliveries=None,
                                                  notifications=None)) == {}
    with patrol.db.session() as session:
        assert session.scalar(select(func.count()).select_from(FeedEvent)) == 2
