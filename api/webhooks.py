"""Webhooks after the Standard Webhooks scheme, delivered from a transactional outbox.

The feed row of every NC change is written in the change's own transaction; the
dispatcher fans new feed rows out into one delivery per webhook (a cursor per webhook),
then sends due deliveries:

    webhook-id         msg_<seq>_<webhook>: the same on every retry, so receivers dedupe
    webhook-timestamp  seconds since the epoch, at this attempt
    webhook-signature  v1,<base64 HMAC-SHA256 over "id.timestamp.body", key = whsec_ secret>

2xx delivers; 410 disables the webhook; 429/503 wait for Retry-After (at least 1 s, at most
an hour); anything else, a redirect too (never followed), backs off exponentially with
jitter, for up to 3 days. Logs show a receiver's URL without its query or secret-looking
path segments (chat robots carry their key there). Per NC and webhook, a delivery is sent
only when the earlier ones are done, so a receiver sees each NC's changes in order.
Claims are leases taken with FOR UPDATE SKIP LOCKED: several API replicas deliver each
event once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy import and_, exists, insert, select, update
from sqlalchemy.orm import Session, aliased

from api.store import Delivery, FeedEvent, SessionFactory, Webhook
from common.logonce import WarnOnce
from common.metrics import WEBHOOK_DELIVERIES, write_error_kind
from common.retry import retry_after_seconds, retry_delay
from common.urls import location_host, url_for_log

log = logging.getLogger("patrol.api.webhooks")

GIVE_UP_AFTER = timedelta(days=3)
LEASE = timedelta(seconds=60)
BATCH = 100
TIMEOUT = 10.0
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
            ipaddress.ip_address("100.100.100.200")}


STOPPED = "webhook disabled or deleted"
"""`last_error` of a delivery found dead at its claim: enabling the webhook sends it again."""


class UnsafeUrl(ValueError):
    """The webhook URL is not http(s) or resolves to an address webhooks may not reach."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret; `=` padding optional, as in the reference
    implementation. binascii.Error when it is not base64."""
    return base64.b64decode(secret.removeprefix("whsec_") + "==")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<signature>` over `id.timestamp.body` (Standard Webhooks)."""
    key = secret_key(secret)
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

FORBIDDEN: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), kind) for net, kind in (
        ("127.0.0.0/8", "loopback"), ("::1/128", "loopback"),
        ("0.0.0.0/8", "this-host"), ("::/128", "this-host"),  # connects to this machine
        ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"), ("fc00::/7", "private"), ("fec0::/10", "private"),
        ("169.254.0.0/16", "link-local"), ("fe80::/10", "link-local"),
        ("100.64.0.0/10", "CGNAT"),
        ("64:ff9b::/96", "NAT64-mapped"), ("64:ff9b:1::/48", "NAT64-mapped")))
"""Where webhooks created through the API may not connect unless `server.webhooks_allow`
lists the address: this machine and the networks behind the API's own firewall."""


def parse_allow(networks: Iterable[str | Network]) -> tuple[Network, ...]:
    """`server.webhooks_allow` as networks; ValueError names an entry that is not a CIDR."""
    return tuple(net if isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network)
                 else ipaddress.ip_network(net, strict=False) for net in networks)


def refusal(host: str, allow: Sequence[Network] = ()) -> str | None:
    """Why a webhook may not connect to the address `host`, or None when it may."""
    address: Address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 connects over IPv4
    if any(address in net for net in allow):
        return None
    if address in METADATA:
        return f"{address}, a cloud metadata address"
    for net, kind in FORBIDDEN:
        if address in net:
            return f"{address}, a {kind} address"
    return None


def check_url(url: str, *, allow_private: bool = False,
              allow: Sequence[Network] = ()) -> None:
    """Refuse URLs that are not http(s) or resolve to an address `refusal` forbids;
    `allow_private` allows every address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl(f"{url!r} is not an http(s) URL")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise UnsafeUrl(f"{parts.hostname!r} does not resolve: {exc.strerror or exc}") from None
    for info in infos:
        reason = refusal(str(info[4][0]), allow)
        if reason is not None:
            raise UnsafeUrl(f"{parts.hostname!r} resolves to {reason} (allow it with "
                            "server.webhooks_allow)")


class SafeResolver(AbstractResolver):
    """aiohttp's resolver, less the addresses `refusal` forbids: the address a delivery
    connects to is the one checked, so a DNS answer that changes after `check_url` (DNS
    rebinding) cannot reach them."""

    def __init__(self, inner: AbstractResolver | None = None, *,
                 allow: Sequence[Network] = ()) -> None:
        self._inner = inner or aiohttp.ThreadedResolver()
        self._allow = tuple(allow)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        reasons = [refusal(answer["host"], self._allow) for answer in answers]
        safe = [answer for answer, reason in zip(answers, reasons, strict=True)
                if reason is None]
        if not safe:
            raise OSError(f"{host} resolves only to refused addresses: "
                          f"{'; '.join(str(r) for r in reasons)} (allow with "
                          "server.webhooks_allow)")
        return safe

    async def close(self) -> None:
        await self._inner.close()


def fan_out(session: Session) -> int:
    """New feed rows -> one pending delivery per interested webhook; returns how many."""
    created = 0
    hooks = session.scalars(select(Webhook).where(Webhook.disabled_at.is_(None))
                            .with_for_update(skip_locked=True))
    now = datetime.now(UTC)
    for hook in hooks:
        query = select(FeedEvent.seq, FeedEvent.nc_pk, FeedEvent.type).where(
            FeedEvent.seq > hook.cursor)  # not the NC body: only a delivery needs that
        if hook.site_id:
            query = query.where(FeedEvent.site_id == hook.site_id)
        rows = session.execute(query.order_by(FeedEvent.seq).limit(1000)).all()
        new = [{"webhook_id": hook.id, "seq": seq, "nc_pk": nc_pk,
                "message_id": f"msg_{seq}_{hook.id}", "next_attempt_at": now,
                "created_at": now}
               for seq, nc_pk, type_ in rows
               if not hook.event_types or type_ in hook.event_types]
        if new:
            session.execute(insert(Delivery), new)
            created += len(new)
        if rows:
            hook.cursor = rows[-1].seq
    session.commit()
    return created


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery_id: int
    url: str
    secret: str
    message_id: str
    body: bytes


def claim(session: Session, now: datetime) -> list[Claimed]:
    """Lease due deliveries whose NC has no earlier undelivered one for the same webhook."""
    earlier = aliased(Delivery)
    blocked = exists().where(and_(earlier.webhook_id == Delivery.webhook_id,
                                  earlier.nc_pk == Delivery.nc_pk, earlier.id < Delivery.id,
                                  earlier.status == "pending"))
    rows = session.execute(
        select(Delivery.id, Delivery.webhook_id, Delivery.seq, Delivery.message_id).where(
            Delivery.status == "pending", Delivery.next_attempt_at <= now,
            (Delivery.lease_until.is_(None)) | (Delivery.lease_until < now), ~blocked)
        .order_by(Delivery.id).limit(BATCH).with_for_update(skip_locked=True)).all()
    if not rows:
        session.commit()
        return []
    hooks = {hook.id: hook for hook in session.scalars(
        select(Webhook).where(Webhook.id.in_({row.webhook_id for row in rows})))}
    events = {event.seq: event for event in session.scalars(
        select(FeedEvent).where(FeedEvent.seq.in_({row.seq for row in rows})))}
    claimed, dead = [], []
    for row in rows:
        hook, event = hooks.get(row.webhook_id), events.get(row.seq)
        if hook is None or event is None or hook.disabled_at is not None:
            dead.append(row.id)
            continue
        claimed.append(Claimed(row.id, hook.url, hook.secret, row.message_id, payload(event)))
    if claimed:
        session.execute(update(Delivery).where(Delivery.id.in_([c.delivery_id for c in claimed]))
                        .values(lease_until=now + LEASE))
    if dead:
        session.execute(update(Delivery).where(Delivery.id.in_(dead))
                        .values(status="dead", last_error=STOPPED))
    session.commit()
    return claimed


def payload(event: FeedEvent) -> bytes:
    body = {"type": f"nonconformance.{event.type}",
            "timestamp": event.at.isoformat().replace("+00:00", "Z"),
            "data": {"seq": event.seq, "type": event.type, "nc": event.nc}}
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None
    error: str | None = None
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class UrlChecks:
    """`check_url` answers kept for a minute: a receiver's address is looked up once a
    minute, not once per delivery (and a changed DNS answer is seen within a minute)."""

    def __init__(self, allow_private: bool, ttl: float = 60.0, *,
                 allow: Sequence[Network] = ()) -> None:
        self.allow_private = allow_private
        self.allow = tuple(allow)
        self.ttl = ttl
        self._answers: dict[str, tuple[float, str | None]] = {}

    async def check(self, url: str) -> None:
        now = asyncio.get_running_loop().time()
        cached = self._answers.get(url)
        if cached is None or cached[0] < now:
            try:
                await asyncio.to_thread(check_url, url, allow_private=self.allow_private,
                                        allow=self.allow)
                cached = (now + self.ttl, None)
            except UnsafeUrl as exc:
                cached = (now + self.ttl, str(exc))
            self._answers[url] = cached
        if cached[1] is not None:
            raise UnsafeUrl(cached[1])


async def send(client: aiohttp.ClientSession, claimed: Claimed, checks: UrlChecks) -> Outcome:
    """One attempt, counted in `patrol_webhook_deliveries_total` by its outcome."""
    outcome = await _attempt(client, claimed, checks)
    WEBHOOK_DELIVERIES.labels("delivered" if outcome.delivered
                              else write_error_kind(outcome.status)).inc()
    return outcome


async def _attempt(client: aiohttp.ClientSession, claimed: Claimed, checks: UrlChecks
                   ) -> Outcome:
    """aiohttp, not httpx: about a tenth of the CPU per request (measured 0.12 ms against
    1.4 ms), which is what bounds deliveries per second."""
    timestamp = int(datetime.now(UTC).timestamp())
    try:
        await checks.check(claimed.url)
        async with client.post(claimed.url, data=claimed.body, allow_redirects=False, headers={
                "content-type": "application/json", "webhook-id": claimed.message_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(claimed.secret, claimed.message_id, timestamp,
                                          claimed.body)}) as response:
            outcome = Outcome(response.status)
            if 300 <= response.status < 400:
                where = location_host(response.headers.get("location"))
                outcome = Outcome(response.status, f"a redirect to {where}: not followed")
            elif not outcome.delivered:
                text = (await response.content.read(300)).decode("utf-8", "replace")
                retry_after = retry_after_seconds(response.headers.get("retry-after")) \
                    if response.status in (429, 503) else None
                outcome = Outcome(response.status, text, retry_after)
    except UnsafeUrl as exc:
        return Outcome(None, str(exc))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")
    return outcome


def settle(session: Session, outcomes: list[tuple[int, Outcome]], now: datetime) -> None:
    """Record the outcomes of a batch of attempts (caller commits): the delivered ones
    (nearly all) in one UPDATE per status, each other one retried later, disabled or
    given up."""
    delivered: dict[int | None, list[int]] = {}
    for delivery_id, outcome in outcomes:
        if outcome.delivered:
            delivered.setdefault(outcome.status, []).append(delivery_id)
        else:
            _settle_failed(session, delivery_id, outcome, now)
    for status, ids in delivered.items():
        session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(
            status="delivered", delivered_at=now, attempts=Delivery.attempts + 1,
            lease_until=None, last_status=status, last_error=None))
    if delivered and _FAILING:
        ids = [i for group in delivered.values() for i in group]
        for hook_id in session.scalars(select(Delivery.webhook_id).where(
                Delivery.id.in_(ids)).distinct()):
            state = _FAILING.pop(hook_id, None)
            if state is not None:
                state.recovered("webhook %d: delivering again", hook_id)


_FAILING: dict[int, WarnOnce] = {}
"""The webhooks failing now, each with its spell: one WARNING when its deliveries start
failing, DEBUG while they fail, one INFO when one is delivered again (a receiver down for a
day is one line, not one per attempt). An entry lives only while its webhook fails."""


def _failing(hook_id: int) -> WarnOnce:
    return _FAILING.setdefault(hook_id, WarnOnce(log))


def _settle_failed(session: Session, delivery_id: int, outcome: Outcome, now: datetime
                   ) -> None:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        return
    delivery.attempts += 1
    delivery.lease_until = None
    delivery.last_status, delivery.last_error = outcome.status, outcome.error
    answer = f"answered {outcome.status}" if outcome.status is not None else "unreachable"
    _failing(delivery.webhook_id).trouble(
        "webhook %d: delivery %s %s%s; retrying with backoff (further failures at DEBUG)",
        delivery.webhook_id, delivery.message_id, answer,
        f", {outcome.error}" if outcome.error else "")
    if outcome.status == 410:
        delivery.status = "dead"
        hook = session.get(Webhook, delivery.webhook_id)
        if hook is not None and hook.disabled_at is None:
            hook.disabled_at, hook.disabled_reason = now, "the receiver answered 410 Gone"
            log.warning("webhook %d disabled: %s answered 410 Gone", hook.id,
                        url_for_log(hook.url))
    elif now - delivery.created_at > GIVE_UP_AFTER:
        delivery.status = "dead"
        log.error("gave up delivering %s after %d attempts over 3 days",
                  delivery.message_id, delivery.attempts)
    else:
        delivery.next_attempt_at = now + timedelta(seconds=backoff(delivery.attempts,
                                                                   outcome.retry_after))


RETRY_BASE = 5.0
RETRY_CAP = 3600.0
"""A delivery's waits: 5 s doubling to 1 h; a Retry-After is capped at the hour too."""


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before a delivery's next attempt (`common.retry.retry_delay`: Retry-After
    when given, at least 1 s; else RETRY_BASE doubling to RETRY_CAP), with jitter either
    way so a recovering receiver is not hit by every retry at once. Per delivery, not per
    receiver: its attempts are counted in its row, so a `Backoff` object would not
    survive the restart or the next claim."""
    return retry_delay(retry_after, attempts, base=RETRY_BASE, cap=RETRY_CAP,
                       spread=(0.75, 1.25))


async def dispatch(factory: SessionFactory, *, allow_private: bool = False,
                   every: float = 0.5, concurrency: int = 32,
                   allow: Sequence[Network] = ()) -> None:
    """Fan out and deliver until cancelled: claim a batch, send it concurrently, record
    every outcome of the batch in one transaction."""
    limit = asyncio.Semaphore(concurrency)
    checks = UrlChecks(allow_private, allow=allow)
    connector = aiohttp.TCPConnector(
        limit=concurrency, resolver=None if allow_private else SafeResolver(allow=allow))
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as client:

        async def deliver(claimed: Claimed) -> tuple[int, Outcome]:
            async with limit:
                return claimed.delivery_id, await send(client, claimed, checks)

        while True:
            try:
                await asyncio.to_thread(_fan_out, factory)
                claimed = await asyncio.to_thread(_claim, factory)
                if claimed:
                    outcomes = await asyncio.gather(*(deliver(c) for c in claimed))
                    await asyncio.to_thread(_settle_all, factory, outcomes)
                    continue
            except Exception:
                log.exception("webhook dispatch failed; retrying")
            await asyncio.sleep(every)


def _fan_out(factory: SessionFactory) -> int:
    with factory() as session:
        return fan_out(session)


def _claim(factory: SessionFactory) -> list[Claimed]:
    with factory() as session:
        return claim(session, datetime.now(UTC))


def _settle_all(factory: SessionFactory, outcomes: list[tuple[int, Outcome]]) -> None:
    with factory() as session:
        settle(session, outcomes, datetime.now(UTC))
        session.commit()


def describe(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "url": hook.url, "event_types": hook.event_types,
            "site_id": hook.site_id, "created_at": hook.created_at,
            "disabled_at": hook.disabled_at, "disabled_reason": hook.disabled_reason}
