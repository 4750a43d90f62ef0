"""API tokens and roles (SPEC section 6).

Tokens are 256-bit random strings, so a plain SHA-256 is enough to store them: there is
nothing to brute-force, and a constant-time lookup by hash needs no per-token salt.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from api.store import ApiToken
from common.vocabulary import ROLES, Role

TOKEN_PREFIX = "pat_"
SITE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
"""A site id as site.yaml spells it (`site.id`), at most 64 characters like the column."""

log = logging.getLogger("patrol.api.auth")

# who may do what, beyond reading (which any role may)
IMPLIES: dict[Role, set[Role]] = {
    "agent": {"agent"},
    "engineer": {"engineer"},
    "quality": {"quality", "engineer"},
    "tracker": {"tracker"},
    "admin": set(ROLES),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id, name, role and the sites it reaches (None: all)."""

    token_id: int
    name: str
    role: str
    sites: frozenset[str] | None = None

    def may(self, *roles: str) -> bool:
        return any(role in IMPLIES[self.role] for role in roles)

    def reaches(self, site_id: str | None) -> bool:
        """Whether the token reaches `site_id`; a scoped token reaches no "every site"
        (None), such as a webhook without a site."""
        return self.sites is None or site_id in self.sites

    @property
    def legacy(self) -> bool:
        """An agent token made before tokens had sites: it still reaches every site."""
        return self.role == "agent" and self.sites is None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, name: str, role: str,
                 sites: Collection[str] | None = None) -> str:
    """Store a new token's hash and return the token itself (shown once, never stored).
    With `sites` the token reaches only those sites; without, every site. (That new
    agent tokens need sites is the CLI's rule: tests and the demo make wide ones.)"""
    if role not in ROLES:
        raise ValueError(f"{role!r} is not one of {', '.join(ROLES)}")
    if sites is not None:
        bad = [site for site in sites if not SITE_ID.match(site)]
        if bad or not sites:
            raise ValueError(f"{bad[0] if bad else ''!r} is not a site id (lower-case "
                             "letters, digits and '-', at most 64)")
        sites = sorted(set(sites))
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, role=role, token_hash=hash_token(token),
                         sites=list(sites) if sites is not None else None))
    session.commit()
    return token


def authenticate(db: Session | Connection, token: str) -> Principal | None:
    """The principal of a live token, or None. Columns on the session's connection, not an
    ORM query: it runs on every request."""
    connection = db.connection() if isinstance(db, Session) else db
    row = connection.execute(
        select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.revoked_at,
               ApiToken.sites)
        .where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(row.id, row.name, row.role,
                     frozenset(row.sites) if row.sites is not None else None)


_legacy_seen: dict[tuple[int, str], date] = {}


def note_legacy_use(principal: Principal, today: date | None = None) -> bool:
    """Log, at most once a day per token, that a legacy agent token (every site) is in
    use, so an operator can replace it with a scoped one. True when it logged."""
    today = today or datetime.now(UTC).date()
    key = (principal.token_id, principal.name)
    if not principal.legacy or _legacy_seen.get(key) == today:
        return False
    _legacy_seen[key] = today
    log.warning("agent token %d (%r) reaches all sites (legacy): replace it with one made "
                "by `patrol token create --role agent --site ID`", principal.token_id,
                principal.name)
    return True


def describe_sites(row: ApiToken) -> str:
    """A token's reach as `patrol token list` shows it."""
    if row.sites is None:
        return "all sites (legacy)" if row.role == "agent" else "all sites"
    return ",".join(row.sites)


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
