"""Webhook endpoints (admin): register, list, remove, enable again, and see or redo
deliveries."""

from __future__ import annotations

import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select, update

from api.auth import Principal
from api.deps import SessionDep, get_db, require
from api.schemas import Text
from api.store import Database, Delivery, FeedEvent, Webhook
from api.webhooks import STOPPED, UnsafeUrl, check_url, describe, new_secret, secret_key

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
Admin = Annotated[Principal, Depends(require("admin"))]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]

FeedType = Literal["raised", "occurrence", "cleared", "acknowledged", "started", "assigned",
                   "rectified", "verified", "reopened", "closed", "cancelled", "overdue"]


class WebhookCreate(BaseModel):
    url: Text = Field(min_length=8, max_length=2000)
    event_types: list[FeedType] = Field(default_factory=list,
                                        description="empty: every type")
    secret: str | None = Field(None, pattern=r"^whsec_[A-Za-z0-9+/]{32,}={0,2}$",
                               description="generated when absent")
    site_id: Text | None = Field(None, max_length=64)

    @field_validator("secret")
    @classmethod
    def _base64(cls, secret: str | None) -> str | None:
        """A secret that does not decode would fail every delivery at signing."""
        if secret is not None:
            try:
                secret_key(secret)
            except binascii.Error:
                raise ValueError("the secret after whsec_ is not base64") from None
        return secret


class WebhookPublic(BaseModel):
    id: int
    url: str
    event_types: list[str]
    site_id: str | None
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


class WebhookCreated(WebhookPublic):
    secret: str


class DeliveryPublic(BaseModel):
    id: int
    seq: int
    message_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


def _hook(session: Any, hook_id: int, principal: Principal) -> Webhook:
    hook = session.get(Webhook, hook_id)
    if (hook is None or hook.disabled_reason == "deleted"
            or not principal.reaches(hook.site_id)):
        raise HTTPException(404, f"no webhook {hook_id}")
    return hook


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED,
             responses={403: {"description": "a site the token does not reach"},
                        422: {"description": "unsafe or invalid URL"}})
def create_webhook(body: WebhookCreate, request: Request, _admin: Admin,
                   db: Annotated[Database, Depends(get_db)]) -> dict[str, Any]:
    site_id = _site_of(body, _admin)
    try:
        check_url(body.url, allow_private=request.app.state.webhooks_allow_private)
    except UnsafeUrl as exc:
        raise HTTPException(422, str(exc)) from None
    with db.write() as session:
        # start at the feed's end: a new receiver gets changes from now on
        cursor = session.scalar(select(func.coalesce(func.max(FeedEvent.seq), 0)))
        hook = Webhook(url=body.url, event_types=list(body.event_types),
                       secret=body.secret or new_secret(), site_id=site_id,
                       cursor=cursor or 0)
        session.add(hook)
        session.commit()
        return {**describe(hook), "secret": hook.secret}


def _site_of(body: WebhookCreate, principal: Principal) -> str | None:
    """The new webhook's site: a site-scoped token's webhook serves one of its sites (its
    only one by default), never every site."""
    if principal.sites is None or (body.site_id is not None
                                   and principal.reaches(body.site_id)):
        return body.site_id
    reach = ", ".join(sorted(principal.sites))
    if body.site_id is not None:
        raise HTTPException(403, f"this token does not reach site {body.site_id!r} (it "
                                 f"reaches {reach})")
    if len(principal.sites) > 1:
        raise HTTPException(422, f"name a site_id: this token reaches only {reach}")
    return next(iter(principal.sites))


@router.get("", response_model=list[WebhookPublic])
def list_webhooks(session: SessionDep, _admin: Admin) -> list[dict[str, Any]]:
    hooks = session.scalars(select(Webhook).order_by(Webhook.id))
    return [describe(h) for h in hooks
            if h.disabled_reason != "deleted" and _admin.reaches(h.site_id)]


@router.get("/{hook_id}", response_model=WebhookPublic)
def get_webhook(hook_id: Id, session: SessionDep, _admin: Admin) -> dict[str, Any]:
    return describe(_hook(session, hook_id, _admin))


@router.delete("/{hook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(hook_id: Id, _admin: Admin,
                   db: Annotated[Database, Depends(get_db)]) -> Response:
    with db.write() as session:
        hook = _hook(session, hook_id, _admin)
        hook.disabled_at, hook.disabled_reason = datetime.now(UTC), "deleted"
        session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{hook_id}/enable", response_model=WebhookPublic,
             responses={422: {"description": "the URL is unsafe now"}})
def enable_webhook(hook_id: Id, request: Request, _admin: Admin,
                   db: Annotated[Database, Depends(get_db)]) -> dict[str, Any]:
    """Deliver again to a webhook that was disabled (a receiver that answered 410 Gone):
    the changes since then follow in order, and the deliveries its disabling stopped go
    out again, so the receiver misses nothing."""
    with db.write() as session:
        hook = _hook(session, hook_id, _admin)
        try:
            check_url(hook.url, allow_private=request.app.state.webhooks_allow_private)
        except UnsafeUrl as exc:
            raise HTTPException(422, str(exc)) from None
        if hook.disabled_at is not None:
            stopped_since = hook.disabled_at
            hook.disabled_at = hook.disabled_reason = None
            now = datetime.now(UTC)
            session.execute(update(Delivery).where(
                Delivery.webhook_id == hook_id, Delivery.status == "dead",
                (Delivery.last_status == 410) | (Delivery.created_at >= stopped_since)
                | (Delivery.last_error == STOPPED),
            ).values(status="pending", lease_until=None, next_attempt_at=now, created_at=now))
        session.commit()
        return describe(hook)


@router.get("/{hook_id}/deliveries", response_model=list[DeliveryPublic])
def list_deliveries(hook_id: Id, session: SessionDep, _admin: Admin,
                    status_filter: Annotated[Literal["pending", "delivered", "dead"] | None,
                                             Query(alias="status")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Delivery]:
    _hook(session, hook_id, _admin)
    query = select(Delivery).where(Delivery.webhook_id == hook_id)
    if status_filter is not None:
        query = query.where(Delivery.status == status_filter)
    return list(session.scalars(query.order_by(Delivery.id.desc()).limit(limit)))


@router.post("/{hook_id}/deliveries/{delivery_id}/redeliver", response_model=DeliveryPublic,
             status_code=status.HTTP_202_ACCEPTED)
def redeliver(hook_id: Id, delivery_id: Id, _admin: Admin,
              db: Annotated[Database, Depends(get_db)]) -> Delivery:
    with db.write() as session:
        _hook(session, hook_id, _admin)
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.webhook_id != hook_id:
            raise HTTPException(404, f"no delivery {delivery_id} for webhook {hook_id}")
        delivery.status, delivery.lease_until = "pending", None
        delivery.next_attempt_at = datetime.now(UTC)
        delivery.created_at = datetime.now(UTC)  # three more days of retries
        session.commit()
        return delivery
