"""The notifier's loop: timers fire, due groups become messages, messages are sent.

Each pass takes a `now`, so tests drive the clock. Per channel and pass:

1. **Timers** (api.notify.outbox made them): a reminder or an acknowledgement timeout
   adds a notification to its route's group; an escalation is an NC change (`escalate`,
   in the history) whose decision notifies the route's `escalate_to`.
2. **Groups:** a group's pending notifications are due `group_wait` after its first one,
   and no sooner than `group_interval` after its last message. Each is judged when due:
   an active silence, an open NC that inhibits it, or its route's mute (named time
   intervals; severities in `mute_bypass` pass) suppresses it, recorded with the reason.
   The rest become one message per group; past `limits.max_per_10m` messages in any 10
   minutes the channel's last slot carries a digest of everything due, and nothing more
   goes until the window frees.
3. **Sending:** messages are leased (FOR UPDATE SKIP LOCKED: replicas send each once),
   rendered for their tool, paced by the tool's token bucket, and settled: sent (their
   notifications `sent`, or `merged` in a digest), retried with backoff (Retry-After and
   the tools' rate-limit codes mean wait), or failed. A failing channel delays only
   itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter, defaultdict
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.lifecycle import transition
from api.notify.config import Channel, InhibitRule, NotifyConfig, Route
from api.notify.events import ALIVE
from api.notify.intervals import muted
from api.notify.links import ack_url, link_key, sign
from api.notify.message import Entry, Notice, Outcome
from api.notify.outbox import Outbox
from api.notify.render import render
from api.notify.routing import fields_of, matches
from api.service import SYSTEM_ACTOR, to_public
from api.store import (
    Database,
    Nonconformance,
    Notification,
    NotifyGroup,
    NotifyMessage,
    NotifyTimer,
    Silence,
)
from api.workflow import OPEN_STATES
from common.config_types import format_duration
from common.logonce import WarnOnce
from common.metrics import NOTIFICATIONS
from common.retry import retry_delay

if TYPE_CHECKING:
    from api.notify.channels import Sender
    from collector.mqtt.config import MqttConfig

log = logging.getLogger("patrol.api.notify")

BATCH = 200
LEASE = timedelta(seconds=60)
WINDOW = timedelta(minutes=10)
GIVE_UP_AFTER = timedelta(hours=24)
"""A message older than this is failed: an alert a day late misleads more than it helps."""
LINK_LIFETIME = timedelta(hours=24)
SEVERITY_ORDER = {"critical": 0, "major": 1, "minor": 2}


@dataclass(frozen=True, slots=True)
class SiteContext:
    """What messages say about where they come from."""

    name: str = ""
    timezone: str = "UTC"
    locale: str = "en"
    public_url: str | None = None


@dataclass(frozen=True, slots=True)
class NotifySetup:
    """What an API process needs to notify: `notify:`, the site, and its broker (for
    mqtt channels)."""

    config: NotifyConfig
    site: SiteContext = SiteContext()
    mqtt: MqttConfig | None = None


class Dispatcher:
    """Timers, groups and sending for one `notify:` over one database."""

    def __init__(self, db: Database, config: NotifyConfig, site: SiteContext,
                 senders: Mapping[str, Sender], *, buckets: Any = None) -> None:
        self.db = db
        self.config = config
        self.site = site
        self.senders = dict(senders)
        self.buckets = buckets
        self.outbox = Outbox(config)
        self.intervals = {i.name: i for i in config.time_intervals}
        self._failing: dict[str, WarnOnce] = {}
        self._key: bytes | None = None
        self._no_links = WarnOnce(log)
        self._busy: Counter[str] = Counter()
        """Channels with sends in flight, and how many."""
        self._tasks: set[asyncio.Task[Outcome]] = set()

    # --- 1. timers -------------------------------------------------------------------

    def fire_timers(self, now: datetime) -> int:
        """Fire the timers due by `now`; returns how many fired."""
        fired = 0
        with self.db.write() as session:
            timers = list(session.scalars(
                select(NotifyTimer).where(NotifyTimer.due_at <= now)
                .order_by(NotifyTimer.due_at).limit(BATCH).with_for_update(skip_locked=True)))
            for timer in timers:
                nc = session.get(Nonconformance, timer.nc_pk)
                if nc is None or nc.state not in ALIVE[timer.kind]:
                    session.delete(timer)  # the NC moved on; nothing to say
                    continue
                fired += 1
                self._fire(session, timer, nc, now)
            session.commit()
        return fired

    def _fire(self, session: Session, timer: NotifyTimer, nc: Nonconformance,
              now: datetime) -> None:
        if timer.kind == "escalate":
            waited = (timer.due_at - nc.detected_at).total_seconds()
            transition(session, nc, "escalate", SYSTEM_ACTOR, now,
                       changes={"escalate_to": timer.channels, "route": timer.route},
                       note=f"not acknowledged within {format_duration(max(waited, 0))}")
            session.delete(timer)
            return
        public = to_public(nc, now).model_dump(mode="json")
        route = self._route(timer.route)
        fields = fields_of(public)
        for channel in timer.channels:
            session.add(Outbox.row(nc.pk, public, timer.kind, channel, timer.route, route,
                                   fields, now))
        if timer.every:
            timer.due_at = now + timedelta(seconds=timer.every)
        else:
            session.delete(timer)

    def _route(self, index: int) -> Route | None:
        return self.config.routes[index] if 0 <= index < len(self.config.routes) else None

    # --- 2. groups -------------------------------------------------------------------

    def flush(self, now: datetime) -> int:
        """Turn the groups due by `now` into messages; returns how many messages."""
        with self.db.write() as session:
            due = self._due_groups(session, now)
            if not due:
                session.commit()
                return 0
            judge = _Judge(session, self.config, self.intervals, self.site.timezone, now)
            made = sum(self._flush_channel(session, channel, keys, judge, now)
                       for channel, keys in due.items())
            session.commit()
        return made

    def _due_groups(self, session: Session, now: datetime) -> dict[str, list[str]]:
        """{channel: [group keys]} of the groups whose wait is over."""
        groups = session.execute(
            select(Notification.channel, Notification.group_key,
                   func.min(Notification.created_at), func.max(Notification.group_wait),
                   func.min(Notification.group_interval))
            .where(Notification.status == "pending", Notification.message_id.is_(None))
            .group_by(Notification.channel, Notification.group_key)).all()
        if not groups:
            return {}
        last = dict(session.execute(select(NotifyGroup.key, NotifyGroup.last_flush_at).where(
            NotifyGroup.key.in_([f"{c}|{k}" for c, k, *_ in groups]))).all())
        due: dict[str, list[str]] = defaultdict(list)
        for channel, key, first, wait, interval in groups:
            first = _aware(first)
            ready = first + timedelta(seconds=wait or 0)
            flushed = last.get(f"{channel}|{key}")
            if flushed is not None:
                ready = max(ready, _aware(flushed) + timedelta(seconds=interval or 0))
            if ready <= now:
                due[channel].append(key)
        return due

    def _flush_channel(self, session: Session, channel: str, keys: Sequence[str],
                       judge: _Judge, now: datetime) -> int:
        sent = session.scalar(select(func.count()).select_from(NotifyMessage).where(
            NotifyMessage.channel == channel, NotifyMessage.kind != "test",
            NotifyMessage.created_at > now - WINDOW)) or 0
        limit = self.config.limits.max_per_10m
        if sent >= limit:  # still pending and due: the pass after the window frees sends
            return 0
        rows = list(session.scalars(
            select(Notification).where(
                Notification.status == "pending", Notification.message_id.is_(None),
                Notification.channel == channel, Notification.group_key.in_(keys))
            .order_by(Notification.id).with_for_update(skip_locked=True)))
        groups: dict[str, list[Notification]] = defaultdict(list)
        for row in rows:
            reason = judge.suppression(row)
            if reason is not None:
                row.status, row.reason, row.settled_at = "suppressed", reason, now
            else:
                groups[row.group_key].append(row)
        _flushed(session, [f"{channel}|{key}" for key in groups], now)
        ordered = sorted(groups.values(), key=_most_severe)
        slots = len(ordered) if sent + len(ordered) < limit else limit - 1 - sent
        made = [self._message(channel, members[0].group_key, "group", members, now)
                for members in ordered[:slots]]
        rest = [row for members in ordered[slots:] for row in members]
        if rest:
            made.append(self._message(channel, "digest", "digest", rest, now))
        session.add_all([message for message, _ in made])
        session.flush()  # one INSERT for them all: their ids
        for message, members in made:
            for member in members:
                member.message_id = message.id
        return len(made)

    @staticmethod
    def _message(channel: str, key: str, kind: str, members: list[Notification],
                 now: datetime) -> tuple[NotifyMessage, list[Notification]]:
        return NotifyMessage(channel=channel, group_key=key, kind=kind,
                             severity=min((m.severity for m in members), key=_rank),
                             count=len(members), status="pending", next_attempt_at=now,
                             created_at=now), members

    # --- 3. sending ------------------------------------------------------------------

    async def send_due(self, now: datetime, *, wait: bool = True) -> int:
        """Send the messages due by `now`; returns how many were delivered. With `wait`
        False (the running loop) the sends go on in the background and a channel still
        sending is left out of the next claims: a channel that hangs until its timeout
        delays only its own messages."""
        claimed = await asyncio.to_thread(self._claim, now, frozenset(self._busy))
        if not claimed:
            return 0
        ready, later = [], []
        for message, notice in claimed:
            pause = self.buckets.wait_time(self.config.channel(message.channel),
                                           message.severity, now.timestamp()) \
                if self.buckets is not None and message.channel in self.senders else 0.0
            (later if pause > 0 else ready).append((message, notice, pause))
        if later:
            await asyncio.to_thread(self._settle, [], [(m.id, w) for m, _, w in later], now)

        async def send_and_settle(message: NotifyMessage, notice: Notice) -> Outcome:
            # settled as soon as it is answered, not with the pass's slowest channel: a
            # crash in between would send a delivered message again
            outcome = await self._send(message.channel, notice)
            await asyncio.to_thread(self._settle, [(message.id, outcome)], [], now)
            return outcome

        tasks = [self._track(m.channel, send_and_settle(m, n)) for m, n, _ in ready]
        if not wait:
            return 0
        outcomes = await asyncio.gather(*tasks)
        return sum(o.ok for o in outcomes)

    def _track(self, channel: str, send: Coroutine[Any, Any, Outcome]) -> asyncio.Task[Outcome]:
        """A send as a task, counted as its channel's until done."""
        task = asyncio.create_task(send)
        self._busy[channel] += 1
        self._tasks.add(task)

        def done(finished: asyncio.Task[Outcome]) -> None:
            self._tasks.discard(finished)
            self._busy[channel] -= 1
            if not self._busy[channel]:
                del self._busy[channel]
            if not finished.cancelled() and finished.exception() is not None:
                log.error("notify channel %s: settling a message failed: %s", channel,
                          finished.exception())

        task.add_done_callback(done)
        return task

    async def _send(self, channel: str, notice: Notice) -> Outcome:
        sender = self.senders.get(channel)
        if sender is None:  # not counted: no such channel, so no label for it either
            return Outcome(False, f"no channel named {channel!r} in notify.channels",
                           permanent=True)
        try:
            outcome = await sender.send(notice)
        except Exception as exc:  # a sender's bug must not stop the loop or other channels
            log.exception("channel %s failed to send", channel)
            outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
        NOTIFICATIONS.labels(channel, "sent" if outcome.ok else
                             "failed" if outcome.permanent else "retry").inc()
        return outcome

    def _claim(self, now: datetime, busy: frozenset[str] = frozenset()
               ) -> list[tuple[NotifyMessage, Notice]]:
        with self.db.write() as session:
            query = select(NotifyMessage).where(
                NotifyMessage.status == "pending", NotifyMessage.next_attempt_at <= now,
                NotifyMessage.lease_until.is_(None) | (NotifyMessage.lease_until < now))
            if busy:
                query = query.where(NotifyMessage.channel.not_in(sorted(busy)))
            messages = list(session.scalars(
                query.order_by(NotifyMessage.id).limit(BATCH).with_for_update(skip_locked=True)))
            if not messages:
                session.commit()
                return []
            members: dict[int, list[Notification]] = defaultdict(list)
            for row in session.scalars(select(Notification).where(
                    Notification.message_id.in_([m.id for m in messages]))
                    .order_by(Notification.id)):
                members[row.message_id or 0].append(row)
            claimed = []
            for message in messages:
                message.lease_until = now + LEASE
                claimed.append((message, self.notice(session, message,
                                                     members[message.id], now)))
            session.commit()
            return claimed

    def notice(self, session: Session, message: NotifyMessage, rows: Sequence[Notification],
               now: datetime) -> Notice:
        """What a message says: one entry per NC and event (the latest form of the NC),
        most severe first."""
        latest: dict[tuple[str, str], Notification] = {}
        for row in rows:
            latest[(row.nc["id"], row.event)] = row
        ordered = sorted(latest.values(), key=lambda r: (_rank(r.severity), r.id))
        url = self.site.public_url
        entries = tuple(Entry(event=row.event, nc=row.nc,
                              # the console's page of the NC (a sign-in first, if needed)
                              nc_url=f"{url}/ncs/{row.nc['id']}" if url else None,
                              ack_url=self._ack_url(session, row, now) if url else None)
                        for row in ordered)
        counts = Counter(row.event for row in ordered)
        return Notice(channel=message.channel, kind=message.kind,  # type: ignore[arg-type]
                      entries=entries, total=len(entries), locale=self._locale(message),
                      timezone=self.site.timezone, site_name=self.site.name,
                      list_url=f"{url}/" if url else None, window=WINDOW.total_seconds(),
                      counts=tuple(counts.most_common()))

    def _locale(self, message: NotifyMessage) -> Any:
        channel = next((c for c in self.config.channels if c.name == message.channel), None)
        return (channel.locale if channel and channel.locale else None) or self.site.locale

    def _ack_url(self, session: Session, row: Notification, now: datetime) -> str | None:
        """The NC's acknowledgement link, while it is open; None (and a warning) when it
        cannot be made: the alert matters more than its link."""
        if row.nc.get("state") != "open" or row.nc_pk is None or not self.site.public_url:
            return None
        try:
            if self._key is None:
                self._key = link_key(session)
            token = sign(self._key, row.nc_pk, "acknowledge", now + LINK_LIFETIME)
        except Exception as exc:
            self._no_links.trouble("cannot sign alert links (%s: %s); sending alerts "
                                   "without them", type(exc).__name__, exc)
            return None
        return ack_url(self.site.public_url, token)

    def _settle(self, outcomes: list[tuple[int, Outcome]], postponed: list[tuple[int, float]],
                now: datetime) -> None:
        with self.db.write() as session:
            for message_id, wait in postponed:  # the tool's rate: no attempt spent
                session.execute(update(NotifyMessage).where(NotifyMessage.id == message_id)
                                .values(lease_until=None,
                                        next_attempt_at=now + timedelta(seconds=wait)))
            self._settle_sent([m for m, outcome in outcomes if outcome.ok], session, now)
            for message_id, outcome in outcomes:
                message = None if outcome.ok else session.get(NotifyMessage, message_id)
                if message is not None:
                    self._settle_one(session, message, outcome, now)
            session.commit()

    def _settle_sent(self, ids: list[int], session: Session, now: datetime) -> None:
        """The delivered messages of a batch (nearly all) in a few set-wide statements."""
        if not ids:
            return
        rows = session.execute(select(NotifyMessage.id, NotifyMessage.kind,
                                      NotifyMessage.channel)
                               .where(NotifyMessage.id.in_(ids))).all()
        session.execute(update(NotifyMessage).where(NotifyMessage.id.in_(ids))
                        .values(status="sent", sent_at=now, last_error=None, lease_until=None,
                                attempts=NotifyMessage.attempts + 1)
                        .execution_options(synchronize_session=False))
        groups = [i for i, kind, _ in rows if kind != "digest"]
        if groups:
            session.execute(update(Notification).where(Notification.message_id.in_(groups))
                            .values(status="sent", reason=None, settled_at=now)
                            .execution_options(synchronize_session=False))
        for message_id in (i for i, kind, _ in rows if kind == "digest"):
            session.execute(update(Notification).where(Notification.message_id == message_id)
                            .values(status="merged", reason=f"in digest message {message_id}",
                                    settled_at=now)
                            .execution_options(synchronize_session=False))
        for channel in {channel for _, _, channel in rows}:
            failing = self._failing.get(channel)
            if failing is not None:
                failing.recovered("notify channel %s: delivering again", channel)

    def _settle_one(self, session: Session, message: NotifyMessage, outcome: Outcome,
                    now: datetime) -> None:
        message.attempts += 1
        message.lease_until = None
        failing = self._failing.setdefault(message.channel, WarnOnce(log))
        if outcome.ok:
            message.status, message.sent_at, message.last_error = "sent", now, None
            status = "merged" if message.kind == "digest" else "sent"
            reason = f"in digest message {message.id}" if message.kind == "digest" else None
            session.execute(update(Notification).where(Notification.message_id == message.id)
                            .values(status=status, reason=reason, settled_at=now))
            failing.recovered("notify channel %s: delivering again", message.channel)
            return
        message.last_error = outcome.error
        failing.trouble("notify channel %s: message %d not delivered: %s; retrying "
                        "(further failures at DEBUG)", message.channel, message.id,
                        outcome.error)
        if outcome.permanent or now - _aware(message.created_at) > GIVE_UP_AFTER:
            message.status = "failed"
            log.error("notify channel %s: gave up on message %d: %s", message.channel,
                      message.id, outcome.error)
            session.execute(update(Notification).where(Notification.message_id == message.id)
                            .values(status="failed", reason=outcome.error, settled_at=now))
            return
        message.next_attempt_at = now + timedelta(seconds=retry_delay(
            outcome.retry_after, message.attempts, base=5.0, cap=3600.0, spread=(0.75, 1.25)))

    # --- the loop --------------------------------------------------------------------

    async def run_once(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        await asyncio.to_thread(self.fire_timers, now)
        await asyncio.to_thread(self.flush, now)
        await self.send_due(now, wait=False)

    async def run(self, every: float = 1.0) -> None:
        """Until cancelled; a failing pass is logged and retried. Sends still in flight
        are cancelled with it (their leases lapse: the next start sends them)."""
        try:
            while True:
                try:
                    await self.run_once()
                except Exception:
                    log.exception("notification pass failed; retrying in %.0fs", every)
                await asyncio.sleep(every)
        finally:
            for task in list(self._tasks):
                task.cancel()


def template_key(channel: Channel) -> str:
    """The `notify.templates` entry a channel's messages use."""
    return channel.format if channel.kind == "webhook" else channel.kind


def build_senders(config: NotifyConfig, http: aiohttp.ClientSession,
                  mqtt: MqttConfig | None) -> dict[str, Sender]:
    """One sender per channel, each rendering with its site templates (if any)."""
    from api.notify.channels import make_sender

    return {channel.name: make_sender(
        channel, functools.partial(render, templates=config.templates.get(
            template_key(channel))), site_mqtt=mqtt, http=http)
        for channel in config.channels}


async def serve(db: Database, config: NotifyConfig, site: SiteContext, *,
                mqtt: MqttConfig | None = None, every: float = 1.0) -> None:
    """The notifier of `patrol run` / `patrol api`, until cancelled."""
    from api.notify.limits import Buckets

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        senders = build_senders(config, http, mqtt)
        try:
            await Dispatcher(db, config, site, senders, buckets=Buckets()).run(every)
        finally:
            for sender in senders.values():
                with contextlib.suppress(Exception):
                    await sender.close()


async def send_test(config: NotifyConfig, name: str, site: SiteContext, *,
                    mqtt: MqttConfig | None = None) -> Outcome:
    """One test message to the channel `name` (`patrol notify test`), sent now, outside
    the outbox: it proves the address, the secret and the format."""
    channel = config.channel(name)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        sender = build_senders(
            NotifyConfig(channels=[channel], templates=config.templates), http, mqtt)[name]
        try:
            return await sender.send(Notice(
                channel=name, kind="test", entries=(), total=0,
                locale=channel.locale or site.locale,  # type: ignore[arg-type]
                timezone=site.timezone, site_name=site.name, list_url=site.public_url))
        finally:
            await sender.close()


class _Judge:
    """Why a notification is not sent now (silence, inhibition, mute), with what it needs
    loaded once per pass."""

    def __init__(self, session: Session, config: NotifyConfig,
                 intervals: Mapping[str, Any], timezone: str, now: datetime) -> None:
        self.session = session
        self.config = config
        self.intervals = intervals
        self.timezone = timezone
        self.now = now
        self.silences = list(session.scalars(select(Silence).where(
            Silence.starts_at <= now, Silence.ends_at > now).order_by(Silence.id)))
        self._inhibitors: dict[tuple[int, tuple[Any, ...]], str | None] = {}

    def suppression(self, row: Notification) -> str | None:
        fields = fields_of(row.nc)
        for silence in self.silences:
            if matches(_as_match(silence.matchers), fields):
                return f"silenced by silence {silence.id}"
        for number, rule in enumerate(self.config.inhibit):
            source = self._inhibitor(number, rule, fields, row.nc_pk)
            if source is not None:
                return f"inhibited by {source} (notify.inhibit[{number}])"
        route = self.config.routes[row.route] if 0 <= row.route < len(self.config.routes) \
            else None
        if route is not None:
            reason = muted(route, self.intervals, self.now, self.timezone, row.severity)
            if reason is not None:
                return reason
        return None

    def _inhibitor(self, number: int, rule: InhibitRule, fields: Mapping[str, Any],
                   nc_pk: int | None) -> str | None:
        """The open NC inhibiting one with `fields` under `rule`, or None. An NC matching
        the source itself is never inhibited by the rule (two silent sensors on one asset
        do not hide each other)."""
        if not matches(rule.target, fields) or matches(rule.source, fields):
            return None
        equal = tuple(fields.get(key) for key in rule.equal)
        if any(value is None for value in equal):
            return None
        cache_key = (number, equal)
        if cache_key not in self._inhibitors:
            query = select(Nonconformance.pk).where(Nonconformance.state.in_(OPEN_STATES))
            for key, values in rule.source.items():
                query = query.where(getattr(Nonconformance, key).in_(values))
            for key, value in zip(rule.equal, equal, strict=True):
                query = query.where(getattr(Nonconformance, key) == value)
            pk = self.session.scalar(query.order_by(Nonconformance.pk).limit(1))
            self._inhibitors[cache_key] = f"NC-{pk:06d}" if pk is not None else None
        found = self._inhibitors[cache_key]
        return found if found != (f"NC-{nc_pk:06d}" if nc_pk else None) else None


def _as_match(matchers: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    return {key: (value,) if isinstance(value, str) else tuple(value)
            for key, value in matchers.items()}


def _flushed(session: Session, keys: list[str], now: datetime) -> None:
    known = {group.key: group for group in session.scalars(
        select(NotifyGroup).where(NotifyGroup.key.in_(keys)))} if keys else {}
    for key in keys:
        group = known.get(key)
        if group is None:
            session.add(NotifyGroup(key=key, last_flush_at=now))
        else:
            group.last_flush_at = now


def _rank(severity: str) -> int:
    return SEVERITY_ORDER.get(severity, 3)


def _most_severe(members: list[Notification]) -> tuple[int, int]:
    return (min(_rank(m.severity) for m in members), members[0].id)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
