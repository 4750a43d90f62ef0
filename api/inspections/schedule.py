"""Schedules of `inspections:` (SPEC 7.3): at each cron time in the site's time zone, run
a template and send its report, or send a compliance summary, through notify channels.

`run_due_schedules(db, setup, now)` is one pass with the clock passed in (tests drive
it); `serve` calls it every EVERY seconds in the API's lifespan. A pass takes, for each
schedule, its latest fire time at or before `now`, and runs it if it is at most CATCH_UP
old and nobody has yet: the run is claimed by inserting its `schedule_runs` row, unique
per (site, schedule, fire time), before anything is done. So each fire time runs once,
however many passes, restarts and API replicas there are: the replica whose insert
commits first runs it, the others skip it.

Hence at most once: a process killed during a run leaves its row `running`, and the fire
time is not run again (the next one is). A send that fails is tried SEND_ATTEMPTS times
within the run, then recorded in the row's `outcome`; the inspection's report stays in
`GET /inspections` either way. Fire times missed by more than CATCH_UP (the API was
down) are skipped: a morning report sent in the evening would mislead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.inspections.config import InspectionSetup, Schedule
from api.inspections.judge import Selection
from api.inspections.render import Document, inspection_document, renderer, summary_document
from api.inspections.service import start
from api.inspections.summary import report_summary
from api.notify.message import Notice, Outcome
from api.store import Database, ScheduleRun, SessionFactory
from common.vocabulary import SYSTEM_ROLE

log = logging.getLogger("patrol.api.inspections")

CATCH_UP = timedelta(hours=1)
"""How late a fire time may still run (the API was restarting, a pass was slow)."""
EVERY = 20.0
"""Seconds between passes of `serve`."""
SEND_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Fired:
    """One fire time this process ran, and what became of each channel's message."""

    schedule: str
    fire_at: datetime
    status: str
    """sent (every channel took it) or failed."""
    outcome: dict[str, str | None]
    """channel -> None (sent) or why not."""
    inspection_id: int | None = None


def due(setup: InspectionSetup, now: datetime,
        catch_up: timedelta = CATCH_UP) -> Iterator[tuple[Schedule, datetime]]:
    """Each schedule's latest fire time at or before `now`, if at most `catch_up` old."""
    zone = ZoneInfo(setup.timezone)
    for schedule in setup.config.schedules:
        fire_at = schedule.parsed.latest(now, zone)
        if fire_at is not None and now - fire_at <= catch_up:
            yield schedule, fire_at


async def run_due_schedules(db: Database, setup: InspectionSetup, now: datetime, *,
                            catch_up: timedelta = CATCH_UP) -> list[Fired]:
    """Run every schedule due at `now` that no process has run yet; returns what ran."""
    fired = []
    for schedule, fire_at in due(setup, now, catch_up):
        run_id = await asyncio.to_thread(claim, db.write, setup.site_id, schedule.name,
                                         fire_at, now)
        if run_id is not None:
            fired.append(await _fire(db, setup, schedule, fire_at, now, run_id))
    return fired


def claim(factory: SessionFactory, site_id: str, schedule: str, fire_at: datetime,
          now: datetime) -> int | None:
    """Insert the fire time's run row; its id, or None when another pass has it."""
    with factory() as session:
        taken = session.scalar(select(ScheduleRun.id).where(
            ScheduleRun.site_id == site_id, ScheduleRun.schedule == schedule,
            ScheduleRun.fire_at == fire_at))
        if taken is not None:
            return None
        run = ScheduleRun(site_id=site_id, schedule=schedule, fire_at=fire_at,
                          started_at=now, status="running")
        session.add(run)
        try:
            session.commit()
        except IntegrityError:  # a replica inserted it between our look and our insert
            session.rollback()
            return None
        return run.id


async def _fire(db: Database, setup: InspectionSetup, schedule: Schedule,
                fire_at: datetime, now: datetime, run_id: int) -> Fired:
    inspection_id = None
    try:
        if schedule.template is not None:
            template = setup.config.template(schedule.template)
            assert template is not None  # checked at load (api.inspections.config.problems)
            report = await asyncio.to_thread(
                start, db.write, setup, site_id=setup.site_id, name=template.name,
                template=template, selection=Selection(tuple(template.standards),
                                                       template.assets),
                actor=(f"schedule {schedule.name}", SYSTEM_ROLE), now=now)
            inspection_id = report["id"]

            def document(locale: str) -> Document:
                return inspection_document(report, locale=locale, timezone=setup.timezone,
                                           site_name=setup.site_name)
        else:
            summary = await asyncio.to_thread(_summary, db, setup, schedule, fire_at, now)

            def document(locale: str) -> Document:
                return summary_document(summary, name=schedule.name, locale=locale,
                                        timezone=setup.timezone, site_name=setup.site_name)
        outcome = await send(setup, schedule.channels, document)
    except Exception as exc:  # one schedule's failure is recorded; the others still run
        log.exception("schedule %s (%s) failed", schedule.name, fire_at.isoformat())
        outcome = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    status = "sent" if all(error is None for error in outcome.values()) else "failed"
    if status == "failed":
        log.warning("schedule %s (%s): %s", schedule.name, fire_at.isoformat(),
                    "; ".join(f"{k}: {v}" for k, v in outcome.items() if v is not None))
    await asyncio.to_thread(_finish, db.write, run_id, status, outcome, inspection_id, now)
    return Fired(schedule.name, fire_at, status, outcome, inspection_id)


def _summary(db: Database, setup: InspectionSetup, schedule: Schedule, fire_at: datetime,
             now: datetime) -> dict[str, Any]:
    """The report's period ends at the fire time and begins `period` before it, or at the
    schedule's previous fire time (a daily report covers the day, a monthly the month)."""
    if schedule.period is not None:
        begin = fire_at - timedelta(seconds=schedule.period)
    else:
        previous = schedule.parsed.latest(fire_at - timedelta(microseconds=1),
                                          ZoneInfo(setup.timezone))
        begin = previous or fire_at - timedelta(days=1)
    with db.session() as session:
        return report_summary(session, site_id=setup.site_id, start=begin, end=fire_at,
                              now=now, timezone=setup.timezone, targets=setup.kpi_targets)


def _finish(factory: SessionFactory, run_id: int, status: str,
            outcome: dict[str, str | None], inspection_id: int | None, now: datetime) -> None:
    with factory() as session:
        run = session.get(ScheduleRun, run_id)
        assert run is not None
        run.status, run.outcome, run.finished_at = status, outcome, now
        run.inspection_id = inspection_id
        session.commit()


async def send(setup: InspectionSetup, channels: list[str],
               document: Callable[[str], Document]) -> dict[str, str | None]:
    """`document` (made in each channel's language) to each channel, through the channel's
    own sender; channel -> None (sent) or why not."""
    from api.notify.channels import make_sender

    known = {c.name: c for c in setup.notify.channels} if setup.notify else {}
    outcome: dict[str, str | None] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for name in channels:
            channel = known.get(name)
            if channel is None:
                outcome[name] = "no such channel in notify.channels"
                continue
            locale = channel.locale or setup.locale
            notice = Notice(channel=name, kind="report", entries=(), total=0, locale=locale,
                            timezone=setup.timezone, site_name=setup.site_name,
                            list_url=setup.public_url)
            try:
                sender = make_sender(channel, renderer(document(locale), locale),
                                     site_mqtt=setup.mqtt, http=http)
            except ValueError as exc:
                outcome[name] = str(exc)
                continue
            try:
                result = await _send(sender, notice)
            finally:
                await sender.close()
            outcome[name] = None if result.ok else result.error or "not sent"
    return outcome


async def _send(sender: Any, notice: Notice) -> Outcome:
    result = Outcome(False, "not sent")
    for attempt in range(SEND_ATTEMPTS):
        try:
            result = await sender.send(notice)
        except Exception as exc:  # a sender's own bug must not end the schedule
            result = Outcome(False, f"{type(exc).__name__}: {exc}")
        if result.ok or result.permanent or attempt == SEND_ATTEMPTS - 1:
            break
        await asyncio.sleep(min(result.retry_after or 2.0 ** attempt, 30.0))
    return result


async def serve(db: Database, setup: InspectionSetup, every: float = EVERY) -> None:
    """Run due schedules until cancelled; a failing pass is logged and tried again."""
    while True:
        try:
            await run_due_schedules(db, setup, datetime.now(UTC))
        except Exception:
            log.exception("inspection schedules failed; trying again in %.0fs", every)
        await asyncio.sleep(every)
