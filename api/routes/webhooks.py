"""Webhook endpoints (admin): register, list, remove, enable again, and see or redo
deliveries."""

from __future__ import annotations

import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel, Field, field_validator

from api import webhook_admin
from api.auth import Principal
from api.deps import SessionDep, get_db, require
from api.store import Database, Delivery
from api.webhooks import describe, new_secret, secret_key
from common.vocabulary import FeedType
from common.wire_types import MAX_INT, Text

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
Admin = Annotated[Principal, Depends(require("admin"))]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


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


def _check(request: Request, url: str) -> None:
    webhook_admin.check_target(url, allow_private=request.app.state.webhooks_allow_private,
                               allow=request.app.state.webhooks_allow)


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED,
             responses={403: {"description": "a site the token does not reach"},
                        422: {"description": "unsafe or invalid URL"}})
def create_webhook(body: WebhookCreate, request: Request, _admin: Admin,
                   db: Annotated[Database, Depends(get_db)]) -> dict[str, Any]:
    site_id = webhook_admin.site_for(body.site_id, _admin)
    _check(request, body.url)
    with db.write() as session:
        hook = webhook_admin.create_webhook(
            session, url=body.url, event_types=list(body.event_types),
            secret=body.secret or new_secret(), site_id=site_id)
        session.commit()
        return {**describe(hook), "secret": hook.secret}


@router.get("", response_model=list[WebhookPublic])
def list_webhooks(session: SessionDep, _admin: Admin,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  after: Annotated[int | None, Query(ge=0, le=MAX_INT, description=(
                      "the last id of the page before"))] = None) -> list[dict[str, Any]]:
    """Oldest first, `limit` at a time."""
    return [describe(h) for h in webhook_admin.list_webhooks(session, limit=limit, after=after,
                                                             sites=_admin.sites)]


@router.get("/{hook_id}", response_model=WebhookPublic)
def get_webhook(hook_id: Id, session: SessionDep, _admin: Admin) -> dict[str, Any]:
    return describe(webhook_admin.get_webhook(session, hook_id, _admin))


@router.delete("/{hook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(hook_id: Id, _admin: Admin,
                   db: Annotated[Database, Depends(get_db)]) -> Response:
    with db.write() as session:
        hook = webhook_admin.get_webhook(session, hook_id, _admin)
        webhook_admin.delete_webhook(hook, datetime.now(UTC))
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
        hook = webhook_admin.get_webhook(session, hook_id, _admin)
        _check(request, hook.url)
        webhook_admin.enable_webhook(session, hook, datetime.now(UTC))
        session.commit()
        return describe(hook)


@router.get("/{hook_id}/deliveries", response_model=list[DeliveryPublic])
def list_deliveries(hook_id: Id, session: SessionDep, _admin: Admin,
                    status_filter: Annotated[Literal["pending", "delivered", "dead"] | None,
                                             Query(alias="status")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    before: Annotated[int | None, Query(ge=1, le=MAX_INT, description=(
                        "the last id of the page before"))] = None) -> list[Delivery]:
    """Newest first, `limit` at a time."""
    webhook_admin.get_webhook(session, hook_id, _admin)
    return webhook_admin.list_deliveries(session, hook_id, status=status_filter,
                                         limit=limit, before=before)


@router.post("/{hook_id}/deliveries/{delivery_id}/redeliver", response_model=DeliveryPublic,
             status_code=status.HTTP_202_ACCEPTED)
def redeliver(hook_id: Id, delivery_id: Id, _admin: Admin,
              db: Annotated[Database, Depends(get_db)]) -> Delivery:
    with db.write() as session:
        webhook_admin.get_webhook(session, hook_id, _admin)
        delivery = webhook_admin.get_delivery(session, hook_id, delivery_id)
        webhook_admin.redeliver(delivery, datetime.now(UTC))
        session.commit()
        return delivery
