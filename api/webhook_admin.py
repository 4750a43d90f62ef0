"""What an admin does to webhooks and their deliveries: register, list a page, remove,
enable again, redeliver. The queries and checks behind /api/v1/webhooks; no HTTP here
(refusals are api.errors; the outbox and the sending are api/webhooks.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.auth import Principal
from api.errors import Forbidden, Invalid, NotFound
from api.store import Delivery, FeedEvent, Webhook
from api.webhooks import STOPPED, Network, UnsafeUrl, check_url

DELETED = "deleted"
"""`disabled_reason` of a removed webhook: kept (its deliveries refer to it), never shown."""


def check_target(url: str, *, allow_private: bool, allow: Sequence[Network]) -> None:
    """Invalid, with the reason, when webhooks created through the API may not reach
    `url` (`server.webhooks_allow`, `webhooks_allow_private`)."""
    try:
        check_url(url, allow_private=allow_private, allow=allow)
    except UnsafeUrl as exc:
        raise Invalid(str(exc)) from None


def site_for(site_id: str | None, principal: Principal) -> str | None:
    """A new webhook's site: a site-scoped token's webhook serves one of its sites (its
    only one by default), never every site."""
    if principal.sites is None or (site_id is not None and principal.reaches(site_id)):
        return site_id
    reach = ", ".join(sorted(principal.sites))
    if site_id is not None:
        raise Forbidden(f"this token does not reach site {site_id!r} (it reaches {reach})")
    if len(principal.sites) > 1:
        raise Invalid(f"name a site_id: this token reaches only {reach}")
    return next(iter(principal.sites))


def create_webhook(session: Session, *, url: str, event_types: list[str], secret: str,
                   site_id: str | None) -> Webhook:
    """A new webhook starting at the feed's end: a new receiver gets changes from now on."""
    cursor = session.scalar(select(func.coalesce(func.max(FeedEvent.seq), 0)))
    hook = Webhook(url=url, event_types=event_types, secret=secret, site_id=site_id,
                   cursor=cursor or 0)
    session.add(hook)
    return hook


def list_webhooks(session: Session, *, limit: int, after: int | None = None,
                  sites: Collection[str] | None = None) -> list[Webhook]:
    """Live webhooks by id; `after` is the last id of a page before; `sites` None: every
    site (a scoped reader sees only its sites' webhooks, none of every site's)."""
    query = select(Webhook).where(Webhook.disabled_reason.is_distinct_from(DELETED))
    if sites is not None:
        query = query.where(Webhook.site_id.in_(sorted(sites)))
    if after is not None:
        query = query.where(Webhook.id > after)
    return list(session.scalars(query.order_by(Webhook.id).limit(limit)))


def get_webhook(session: Session, hook_id: int, principal: Principal) -> Webhook:
    """The live webhook `hook_id`, when the caller reaches its site; NotFound otherwise."""
    hook = session.get(Webhook, hook_id)
    if hook is None or hook.disabled_reason == DELETED or not principal.reaches(hook.site_id):
        raise NotFound(f"no webhook {hook_id}")
    return hook


def delete_webhook(hook: Webhook, now: datetime) -> None:
    hook.disabled_at, hook.disabled_reason = now, DELETED


def enable_webhook(session: Session, hook: Webhook, now: datetime) -> None:
    """Deliver again to a disabled webhook: the deliveries its disabling stopped (and the
    410 that disabled it) go out again, so the receiver misses nothing."""
    if hook.disabled_at is None:
        return
    stopped_since = hook.disabled_at
    hook.disabled_at = hook.disabled_reason = None
    session.execute(update(Delivery).where(
        Delivery.webhook_id == hook.id, Delivery.status == "dead",
        (Delivery.last_status == 410) | (Delivery.created_at >= stopped_since)
        | (Delivery.last_error == STOPPED),
    ).values(status="pending", lease_until=None, next_attempt_at=now, created_at=now))


def list_deliveries(session: Session, hook_id: int, *, status: str | None, limit: int,
                    before: int | None = None) -> list[Delivery]:
    """Newest first; `before` is the last (smallest) id of a page before."""
    query = select(Delivery).where(Delivery.webhook_id == hook_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    if before is not None:
        query = query.where(Delivery.id < before)
    return list(session.scalars(query.order_by(Delivery.id.desc()).limit(limit)))


def get_delivery(session: Session, hook_id: int, delivery_id: int) -> Delivery:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.webhook_id != hook_id:
        raise NotFound(f"no delivery {delivery_id} for webhook {hook_id}")
    return delivery


def redeliver(delivery: Delivery, now: datetime) -> None:
    """Send again from now, with three more days of retries."""
    delivery.status, delivery.lease_until = "pending", None
    delivery.next_attempt_at = delivery.created_at = now
