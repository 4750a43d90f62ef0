"""API tokens and roles (SPEC section 6).

Tokens are 256-bit random strings, so a plain SHA-256 is enough to store them: there is
nothing to brute-force, and a constant-time lookup by hash needs no per-token salt.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from api.store import ApiToken

Role = Literal["agent", "engineer", "quality", "tracker", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
TOKEN_PREFIX = "pat_"

# who may do what, beyond reading (which any role may)
IMPLIES: dict[str, set[str]] = {
    "agent": {"agent"},
    "engineer": {"engineer"},
    "quality": {"quality", "engineer"},
    "tracker": {"tracker"},
    "admin": set(ROLES),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id, name and role."""

    token_id: int
    name: str
    role: str

    def may(self, *roles: str) -> bool:
        return any(role in IMPLIES[self.role] for role in roles)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, name: str, role: str) -> str:
    """Store a new token's hash and return the token itself (shown once, never stored)."""
    if role not in ROLES:
        raise ValueError(f"{role!r} is not one of {', '.join(ROLES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, role=role, token_hash=hash_token(token)))
    session.commit()
    return token


def authenticate(db: Session | Connection, token: str) -> Principal | None:
    """The principal of a live token, or None. Columns on the session's connection, not an
    ORM query: it runs on every request."""
    connection = db.connection() if isinstance(db, Session) else db
    row = connection.execute(
        select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.revoked_at)
        .where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(row.id, row.name, row.role)


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(session: Session, *, name: str | None = None, token_id: int | None = None
                 ) -> list[ApiToken]:
    """Revoke live tokens by name or id; returns those revoked (already revoked: none)."""
    query = select(ApiToken).where(ApiToken.revoked_at.is_(None))
    query = query.where(ApiToken.id == token_id) if token_id is not None else \
        query.where(ApiToken.name == name)
    rows = list(session.scalars(query))
    for row in rows:
        row.revoked_at = datetime.now(UTC)
    session.commit()
    return rows
