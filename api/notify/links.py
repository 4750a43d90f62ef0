"""Signed alert links (SPEC 7.2): an alert carries a link that acknowledges its NC, and
the link itself is the permission, so an engineer can act from a phone without signing in.

A token names one NC, one action (acknowledge) and an expiry (24 h by default), signed
with HMAC-SHA256 under a key the server makes once and keeps in the `settings` table, so
every replica and every restart verifies the links the others made:

    token = base64url(b"<nc pk>|<action>|<expiry epoch s>") "." base64url(HMAC-SHA256)

It is not encrypted (it names an NC id, which the alert shows anyway) and not single use:
acknowledging twice is refused by the NC's state machine. Opening a link changes nothing;
the page it opens asks who is acknowledging, and only that form's POST acts, through the
one lifecycle, with "via alert link" in the history. No HTTP here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from api.errors import Invalid, NotFound
from api.lifecycle import transition
from api.service import get_nc, public_fields, to_public
from api.store import Setting, format_nc_id
from api.workflow import ACTIONS

LinkAction = Literal["acknowledge"]
LINK_ACTIONS: tuple[LinkAction, ...] = get_args(LinkAction)
LINK_TTL = timedelta(hours=24)
KEY_SETTING = "alert_link_key"
VIA_LINK = "via alert link"
"""The history note of an action taken through a link."""
MAX_TOKEN = 256
"""Characters of a token: ours are about 80; anything much longer is not one."""
MAX_NAME = 128
_DOMAIN = b"patrol-alert-link.v1."
"""Prefixed to what is signed: the key signs nothing else that could pass for a link."""


class BadLink(Invalid):
    """A token that is malformed, or not signed by this server's key (changed, forged)."""


class LinkExpired(Invalid):
    """A genuine token past its expiry."""

    def __init__(self, expired_at: datetime) -> None:
        at = expired_at.isoformat().replace("+00:00", "Z")
        super().__init__(f"the link expired at {at}: links last "
                         f"{LINK_TTL.total_seconds() / 3600:g} h; use the latest alert or "
                         "the console")
        self.expired_at = expired_at


def link_key(session: Session) -> bytes:
    """The signing key, made (32 random bytes) on first use in the caller's transaction:
    the caller commits, or links signed with it will not verify. Safe when replicas make
    it at once: each inserts or ignores, then all read the one that won."""
    found = find_key(session)
    if found is not None:
        return found
    value = base64.b64encode(secrets.token_bytes(32)).decode()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(Setting).values(key=KEY_SETTING, value=value)
                    .on_conflict_do_nothing(index_elements=["key"]))
    found = find_key(session)
    assert found is not None, "the key was inserted or another's kept"
    return found


def find_key(session: Session) -> bytes | None:
    """The signing key when one was made, without making one (what verifying needs: no
    key, no genuine link)."""
    value = session.scalar(select(Setting.value).where(Setting.key == KEY_SETTING))
    return base64.b64decode(value) if value is not None else None


def sign(key: bytes, nc_pk: int, action: LinkAction = "acknowledge",
         expires_at: datetime | None = None) -> str:
    """A token for `action` on the NC `nc_pk`, valid until `expires_at` (default: 24 h
    from now)."""
    if action not in LINK_ACTIONS:
        raise ValueError(f"{action!r} is not an action a link takes")
    expires_at = expires_at or datetime.now(UTC) + LINK_TTL
    payload = _b64(f"{nc_pk}|{action}|{int(expires_at.timestamp())}".encode())
    return f"{payload}.{_b64(_mac(key, payload))}"


def verify(key: bytes | None, token: str, now: datetime) -> tuple[int, LinkAction]:
    """(nc pk, action) of a genuine, unexpired token; BadLink or LinkExpired, with the
    reason, otherwise. `key` None (none made yet): no token is genuine."""
    payload, dot, signature = token.partition(".")
    if not dot or len(token) > MAX_TOKEN or not payload or not signature:
        raise BadLink("the link is malformed: copy the whole link from the alert")
    try:
        given = _unb64(signature)
    except ValueError:
        raise BadLink("the link is malformed: copy the whole link from the alert") from None
    if key is None or not hmac.compare_digest(given, _mac(key, payload)):
        raise BadLink("the link's signature does not match: it was changed, or not made "
                      "by this server")
    try:
        pk_text, action, expiry = _unb64(payload).decode("ascii").split("|")
        nc_pk, expires = int(pk_text), int(expiry)
    except (ValueError, UnicodeDecodeError):
        raise BadLink("the link is malformed") from None
    if action not in LINK_ACTIONS or nc_pk <= 0:
        raise BadLink(f"the link names an action this server does not take ({action[:20]!r})")
    if now.timestamp() >= expires:
        raise LinkExpired(datetime.fromtimestamp(expires, UTC))
    return nc_pk, action  # type: ignore[return-value]  # checked against LINK_ACTIONS


def ack_url(public_url: str, token: str) -> str:
    """The link an alert shows (`server.public_url`)."""
    return f"{public_url.rstrip('/')}/ack/{token}"


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, _DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    """base64url without padding; ValueError for anything else."""
    if not text.isascii() or not all(c.isalnum() or c in "-_" for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


# --- what the page behind a link does --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    nc: dict[str, Any]
    """The NC's public JSON form, as the request left it."""
    done: bool
    """False: the NC was not open (acknowledged already, rectified, closed...): nothing
    changed."""


def linked_nc(session: Session, token: str, now: datetime) -> dict[str, Any]:
    """The public form of the NC a genuine, unexpired token names (BadLink, LinkExpired,
    NotFound otherwise). Reads only: opening a link changes nothing."""
    nc_pk, _action = verify(find_key(session), token, now)
    nc = get_nc(session, nc_pk)
    if nc is None:
        raise NotFound(f"no nonconformance {format_nc_id(nc_pk)}")
    return to_public(nc, now).model_dump(mode="json")


def acknowledge(session: Session, token: str, name: str, now: datetime) -> Acknowledgement:
    """Acknowledge the token's NC for the person `name`, through the lifecycle, in the
    caller's transaction (the caller commits): history says who, role engineer, and
    "via alert link". An NC no longer open is left as it is (`done` False)."""
    who = check_name(name)
    nc_pk, action = verify(find_key(session), token, now)
    nc = get_nc(session, nc_pk, lock=True)
    if nc is None:
        raise NotFound(f"no nonconformance {format_nc_id(nc_pk)}")
    if nc.state not in ACTIONS[action].sources:
        return Acknowledgement(to_public(nc, now).model_dump(mode="json"), False)
    public = transition(session, nc, action, (who, "engineer"), now,
                        before=public_fields(nc), note=VIA_LINK)
    return Acknowledgement(public, True)


def check_name(name: str) -> str:
    """The acknowledging person's name as the history keeps it; Invalid when empty, too
    long or holding control characters."""
    who = " ".join(name.split())
    if not who:
        raise Invalid("say who is acknowledging: your name is required")
    if len(who) > MAX_NAME or any(not c.isprintable() for c in who):
        raise Invalid(f"a name is 1 to {MAX_NAME} printable characters")
    return who
