# ruff: noqa: RUF001  (the en dash of a period is meant)
"""Inspection schedules (SPEC 7.3) with a driven clock, mailing through a real SMTP server
(aiosmtpd, STARTTLS and AUTH): a template's report at its cron time in the site's zone, a
compliance summary at the month's start, each fire time once however many passes and
dispatchers, and the API's lifespan running them on its own."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from agent.site import KpiTarget
from api.app import create_app
from api.ingest import apply_events
from api.inspections.config import InspectionsConfig, InspectionSetup
from api.inspections.schedule import run_due_schedules
from api.notify.config import Channel, NotifyConfig
from api.store import Database, Inspection, ScheduleRun
from rules.events import EventIn, Snapshot, SnapshotIn
from tests.integration.mail_receiver import MailReceiver
from tests.test_api import engine_event

ZONE = "Asia/Shanghai"
MORNING = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
MINUTE = timedelta(minutes=1)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[MailReceiver]:
    server = MailReceiver(tmp_path / "smtp").start()
    yield server
    server.stop()


def mail(server: MailReceiver, monkeypatch: pytest.MonkeyPatch) -> Channel:
    monkeypatch.setenv("PATROL_TEST_SMTP_PASSWORD", server.users["patrol"])
    return Channel(name="quality-mail", kind="email", smtp=server.url, starttls=True,
                   ca_file=server.ca_file, username="patrol",
                   password_env="PATROL_TEST_SMTP_PASSWORD", from_="patrol@example.com",
                   to=["quality@example.com"])


def setup(channel: Channel, *schedules: dict[str, Any]) -> InspectionSetup:
    config = InspectionsConfig.model_validate({
        "templates": [{"name": "daily-patrol", "standards": ["HVAC-*"],
                       "items": [{"id": "logbook", "text": "Log book filled in"}]}],
        "schedules": list(schedules) or [{"name": "morning", "cron": "0 8 * * *",
                                          "template": "daily-patrol",
                                          "channels": ["quality-mail"]}]})
    return InspectionSetup(config, "tower-a", site_name="Tower A", timezone=ZONE,
                           notify=NotifyConfig(channels=[channel]))


def snapshot(at: datetime, *states: tuple[str, str, float]) -> SnapshotIn:
    items = [{"asset_id": asset, "standard_id": "HVAC-CHW-SUPPLY", "standard_version": 1,
              "state": state, "seconds": {"ok": 45.0, "violating": 15.0}, "readings": 4,
              "last_value": value, "last_at": (at - MINUTE).isoformat()}
             for asset, state, value in states]
    return SnapshotIn.model_validate(Snapshot("tower-a", (at - MINUTE).timestamp(),
                                              at.timestamp(), items).to_dict())


def plain(server: MailReceiver, n: int = 0) -> tuple[str, str]:
    message = server.messages[n].message
    body = message.get_body(("plain",))
    assert body is not None
    return str(message["Subject"]), body.get_content()


def run(db: Database, inspections: InspectionSetup, now: datetime) -> list[Any]:
    return asyncio.run(run_due_schedules(db, inspections, now))


def test_a_scheduled_inspection_mails_its_report_once_at_its_time(
        db: Database, smtp: MailReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    inspections = setup(mail(smtp, monkeypatch))
    apply_events(db.write, [snapshot(MORNING - 2 * MINUTE, ("CH-1", "ok", 7.1),
                                     ("CH-2", "violating", 9.4))], now=MORNING)
    assert run(db, inspections, MORNING - MINUTE) == []  # 07:59: yesterday's is too old
    assert smtp.messages == []
    [fired] = run(db, inspections, MORNING + timedelta(seconds=10))
    assert (fired.schedule, fired.fire_at, fired.status) == ("morning", MORNING, "sent")
    assert fired.outcome == {"quality-mail": None}
    assert len(smtp.messages) == 1 and smtp.messages[0].tls
    subject, text = plain(smtp)
    assert subject == "[Patrol] Inspection daily-patrol at Tower A: 1 failed, 0 no data"
    assert "Started: 2026-11-25 08:00 CST" in text
    assert "By: schedule morning" in text
    assert "✗ CH-2 · HVAC-CHW-SUPPLY: fail, 9.4 (2026-11-25 07:57 CST) [NC-000001]" in text
    assert "☐ logbook: Log book filled in: pending" in text
    assert "✓ CH-1 · HVAC-CHW-SUPPLY: pass, 7.1" in text
    # called again, later in the catch-up window, or by a restarted process: not again
    assert run(db, inspections, MORNING + timedelta(seconds=30)) == []
    restarted = Database(db.url)
    try:
        assert run(restarted, inspections, MORNING + 30 * MINUTE) == []
    finally:
        restarted.close()
    assert len(smtp.messages) == 1
    with db.session() as session:
        [row] = session.scalars(select(ScheduleRun)).all()
        assert (row.status, row.fire_at) == ("sent", MORNING)
        assert row.inspection_id == fired.inspection_id
        inspection = session.get(Inspection, fired.inspection_id)
        assert inspection is not None and inspection.by == "schedule morning"
    # the next morning is its own fire time
    [tomorrow] = run(db, inspections, MORNING + timedelta(days=1, seconds=5))
    assert tomorrow.fire_at == MORNING + timedelta(days=1) and len(smtp.messages) == 2
    _, text = plain(smtp, 1)  # the snapshot is a day old now: nothing passes
    assert "no data 2" in text and "NC-000001" not in text


def test_two_dispatchers_run_one_fire_time_once(db: Database, smtp: MailReceiver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two API replicas over one database, passing at the same moment."""
    inspections = setup(mail(smtp, monkeypatch))
    apply_events(db.write, [snapshot(MORNING - MINUTE, ("CH-2", "violating", 9.4))],
                 now=MORNING)
    other = Database(db.url)
    now = MORNING + timedelta(seconds=5)

    async def both() -> list[list[Any]]:
        return list(await asyncio.gather(run_due_schedules(db, inspections, now),
                                         run_due_schedules(other, inspections, now)))

    try:
        passes = asyncio.run(both())
    finally:
        other.close()
    assert sorted(len(fired) for fired in passes) == [0, 1]
    assert len(smtp.messages) == 1
    with db.session() as session:
        assert len(session.scalars(select(Inspection)).all()) == 1


def test_a_fire_time_missed_by_more_than_an_hour_is_skipped(
        db: Database, smtp: MailReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    inspections = setup(mail(smtp, monkeypatch))
    assert run(db, inspections, MORNING + timedelta(hours=1, seconds=1)) == []
    assert smtp.messages == []


def test_a_monthly_report_mails_the_months_summary(
        db: Database, smtp: MailReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    inspections = dataclasses.replace(setup(mail(smtp, monkeypatch), {
        "name": "monthly", "cron": "0 9 1 * *", "report": "compliance",
        "channels": ["quality-mail"]}), kpi_targets={
            "intactness_rate": KpiTarget(target=0.98, amber=0.95)})
    december = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    november = datetime(2026, 11, 10, tzinfo=UTC)
    events = [EventIn.model_validate(engine_event(asset=asset, start=november))
              for asset in ("CH-1", "CH-2")]
    october = EventIn.model_validate(engine_event(asset="CH-3", start=november
                                                  - timedelta(days=30)))
    apply_events(db.write, [*events, october, snapshot(november, ("CH-1", "violating", 9.4))],
                 now=december)
    [fired] = run(db, inspections, december + timedelta(seconds=5))
    assert fired.status == "sent" and fired.inspection_id is None
    subject, text = plain(smtp)
    assert subject == "[Patrol] Compliance report monthly at Tower A"
    assert "Period: 2026-11-01 09:00 CST – 2026-12-01 09:00 CST" in text
    assert "NCs raised: 2" in text  # October's is not this month's
    assert "NCs open now: 3 (of them overdue 3)" in text
    assert "Compliance rate: 75.0%" in text  # 45 s ok of 60 s judged
    assert "Pairs violating now: 1" in text
    # the KPI report's headline figures: nothing rectified yet, so no rates; CH-1 and
    # CH-2 (the assets with compliance seconds) were intact from Nov 1 01:00 UTC until
    # their NCs opened on Nov 10 00:00 UTC: 2 x 8 d 23 h of 2 x 30 d
    assert "On-time rectification rate: —" in text
    assert "Mean time to rectify: —" in text
    assert f"Intactness rate: {2 * (8 + 23 / 24) / 60:.1%} (off target)" in text


def test_the_api_runs_its_schedules_in_its_lifespan(db: Database, smtp: MailReceiver,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`jobs=True` starts the scheduler: an every-minute schedule is due at once."""
    inspections = setup(mail(smtp, monkeypatch), {
        "name": "minutely", "cron": "* * * * *", "template": "daily-patrol",
        "channels": ["quality-mail"]})
    with TestClient(create_app(db, site_id="tower-a", jobs=True, inspections=inspections)):
        deadline = time.monotonic() + 60
        while not smtp.messages and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(smtp.messages) >= 1
    assert "Inspection daily-patrol" in plain(smtp)[0]
