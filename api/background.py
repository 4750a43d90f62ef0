"""Jobs the API runs on its own: overdue NCs, verifications that never started, and
gateways gone silent (api.gateways).

Each pass claims its rows with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several API
replicas can run the same jobs and each NC is handled once; on SQLite the write lock
serializes them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from api.config import RetentionConfig
from api.gateways import mark_offline
from api.ingest import reopen_unverified
from api.lifecycle import transition
from api.retention import EVERY as PRUNE_EVERY
from api.retention import prune
from api.service import SYSTEM_ACTOR
from api.store import Nonconformance, SessionFactory
from api.workflow import UNRECTIFIED

log = logging.getLogger("patrol.api.jobs")

BATCH = 200


def mark_overdue(factory: SessionFactory, now: datetime | None = None) -> int:
    """Record `overdue` once per NC whose due date has passed; returns how many."""
    now = now or datetime.now(UTC)
    with factory() as session:
        late = list(session.scalars(
            select(Nonconformance).where(
                Nonconformance.state.in_(UNRECTIFIED), Nonconformance.due_at < now,
                Nonconformance.overdue_notified.is_(False))
            .order_by(Nonconformance.due_at).limit(BATCH)
            .with_for_update(skip_locked=True)))
        for nc in late:
            nc.overdue_notified = True
            transition(session, nc, "overdue", SYSTEM_ACTOR, now,
                       changes={"overdue": [False, True]}, note=f"due {nc.due_at.isoformat()}")
        session.commit()
    return len(late)


def reopen_stalled_verifications(factory: SessionFactory,
                                 now: datetime | None = None) -> int:
    """Rectified, still violating after verify_for: the fix did not work; reopen."""
    now = now or datetime.now(UTC)
    with factory() as session:
        pending = session.scalars(
            select(Nonconformance).where(
                Nonconformance.state == "pending_verification",
                Nonconformance.condition != "normal",
                Nonconformance.source == "auto")
            .order_by(Nonconformance.rectified_at).limit(BATCH)
            .with_for_update(skip_locked=True))
        count = 0
        for nc in pending:
            verify_for = (nc.standard_info or {}).get("verify_for")
            if verify_for and nc.rectified_at and \
                    now >= nc.rectified_at + timedelta(seconds=verify_for):
                reopen_unverified(session, nc, now)
                count += 1
        session.commit()
    return count


async def run_jobs(factory: SessionFactory,
                   gateway_offline_after: timedelta = timedelta(minutes=5),
                   every: float | None = None,
                   retention: RetentionConfig | None = None) -> None:
    """Run the jobs until cancelled, every 15 s (or a quarter of `gateway_offline_after`
    when that is shorter, so an offline gateway is noticed within a quarter of its limit),
    and the retention's prune once an hour; a failing pass is logged and retried next
    time."""
    started = datetime.now(UTC)
    pruned = -math.inf
    every = every or min(15.0, max(0.25, gateway_offline_after.total_seconds() / 4))
    while True:
        try:
            overdue = await asyncio.to_thread(mark_overdue, factory)
            reopened = await asyncio.to_thread(reopen_stalled_verifications, factory)
            if overdue or reopened:
                log.info("%d NCs became overdue, %d reopened after verify_for", overdue,
                         reopened)
            await asyncio.to_thread(mark_offline, factory, gateway_offline_after, started)
            if retention is not None and time.monotonic() - pruned >= PRUNE_EVERY:
                pruned = time.monotonic()
                await asyncio.to_thread(prune, factory, retention)
        except Exception:
            log.exception("background jobs failed; retrying in %.0fs", every)
        await asyncio.sleep(every)
