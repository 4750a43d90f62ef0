"""People who sign in to the console (SPEC 7.4): their passwords, sign-in with lock-out,
and the sessions their browsers hold. No HTTP here: the CLI (`patrol user`), the admin
page and the sign-in page call these.

Passwords are hashed with scrypt (hashlib; N=2^15, r=8, p=1: 32 MiB and 0.12 s per try
on the 2-CPU VM the tests run on), each with its own salt. A session is a random
cookie of which only the SHA-256 is stored, like an API token. A console user acts as a
`Principal` whose id is the negative of the user's id, so a user and a token never pass
for each other (a rectifier may not verify their own rectification).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.auth import SITE_ID, Principal
from api.errors import Conflict, Invalid, NotFound
from api.store import ConsoleSession, User
from common.vocabulary import ROLES

USER_ROLES = tuple(role for role in ROLES if role != "agent")
"""What a person may be: an agent is a machine, with a token."""
LANGUAGES = ("en", "zh-CN")
MIN_PASSWORD = 10
"""Characters at least (NIST SP 800-63B asks for 8; a console reached from a phone on a
plant-room network asks for a little more)."""
MAX_PASSWORD = 256
LOCK_AFTER = 5
"""Failed sign-ins in a row that lock a user out for LOCK_FOR."""
LOCK_FOR = timedelta(minutes=15)
IDLE = timedelta(hours=2)
"""A session unused this long is over (an engineer's round, not a shift)."""
LONGEST = timedelta(hours=12)
"""A session is over this long after sign-in, used or not."""
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_DUMMY: str | None = None


class SignInRefused(Invalid):
    """The name and password do not sign in; the message never tells which was wrong."""


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash`, salt and hash in base64."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT["n"], SCRYPT["r"], SCRYPT["p"])
    return "$".join(["scrypt", *(str(SCRYPT[k]) for k in ("n", "r", "p")),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r, dklen=32)


def _valid(name: str | None = None, password: str | None = None, role: str | None = None,
           sites: Collection[str] | None = None, language: str | None = None) -> None:
    if name is not None and not (0 < len(name) <= 64 and name.isprintable()
                                 and name.strip() == name):
        raise Invalid("a user name is 1 to 64 printable characters, no space at either end")
    if password is not None:
        if len(password) < MIN_PASSWORD:
            raise Invalid(f"a password has at least {MIN_PASSWORD} characters")
        if len(password) > MAX_PASSWORD:
            raise Invalid(f"a password has at most {MAX_PASSWORD} characters")
    if role is not None and role not in USER_ROLES:
        raise Invalid(f"a user's role is one of {', '.join(USER_ROLES)}, not {role!r}")
    for site in sites or ():
        if not SITE_ID.match(site):
            raise Invalid(f"{site!r} is not a site id")
    if language is not None and language not in LANGUAGES:
        raise Invalid(f"a language is one of {', '.join(LANGUAGES)}, not {language!r}")


def add_user(session: Session, *, name: str, password: str, role: str,
             sites: Collection[str] | None = None, language: str = "en") -> User:
    _valid(name, password, role, sites, language)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} exists")
    user = User(name=name, password_hash=hash_password(password), role=role,
                sites=sorted(set(sites)) if sites else None, language=language)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def set_password(session: Session, name: str, password: str,
                 now: datetime | None = None) -> User:
    """A new password (an admin's reset, or `patrol user passwd`): it unlocks the user
    and ends their sessions, so a stolen cookie dies with the old password."""
    _valid(password=password)
    user = find_user(session, name)
    user.password_hash = hash_password(password)
    user.password_changed_at = now or datetime.now(UTC)
    user.failed_sign_ins = 0
    user.locked_until = None
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
    return user


def set_disabled(session: Session, name: str, disabled: bool) -> User:
    """Disable (ends the user's sessions) or enable a user; users are never deleted, as
    the NC history names them."""
    user = find_user(session, name)
    user.disabled = disabled
    if disabled:
        session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user.id))
    else:
        user.failed_sign_ins = 0
        user.locked_until = None
    return user


def sign_in(session: Session, name: str, password: str,
            now: datetime | None = None) -> User:
    """The user these credentials name, or SignInRefused. A locked, disabled or unknown
    user costs the same hash as a wrong password, so timing tells nothing; the fifth
    failure in a row locks the user out for LOCK_FOR."""
    global _DUMMY
    now = now or datetime.now(UTC)
    user = session.scalar(select(User).where(User.name == name)) if name else None
    if user is None:
        _DUMMY = _DUMMY or hash_password(secrets.token_hex(8))
        check_password(password, _DUMMY)
        raise SignInRefused("wrong name or password")
    right = check_password(password, user.password_hash)
    if user.disabled:
        raise SignInRefused("this user is disabled; ask an administrator")
    if user.locked_until is not None and user.locked_until > now:
        raise SignInRefused("too many failed sign-ins; try again later")
    if not right:
        user.failed_sign_ins += 1
        if user.failed_sign_ins >= LOCK_AFTER:
            user.locked_until = now + LOCK_FOR
            user.failed_sign_ins = 0
        raise SignInRefused("wrong name or password")
    user.failed_sign_ins = 0
    user.locked_until = None
    return user


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed-in browser: who, as the API's principal, and the CSRF token its forms
    carry."""

    user: User
    principal: Principal
    csrf: str


def principal_of(user: User) -> Principal:
    return Principal(token_id=-user.id, name=user.name, role=user.role,
                     sites=frozenset(user.sites) if user.sites is not None else None)


def open_session(session: Session, user: User, now: datetime | None = None) -> str:
    """A new session for `user`; returns the cookie's value (shown once, stored hashed)."""
    now = now or datetime.now(UTC)
    cookie = secrets.token_urlsafe(32)
    session.add(ConsoleSession(id_hash=_digest(cookie), user_id=user.id,
                               csrf=secrets.token_urlsafe(32), created_at=now,
                               last_seen_at=now))
    return cookie


def resume(session: Session, cookie: str | None, now: datetime | None = None
           ) -> Signed | None:
    """The signed-in user of this cookie, its use noted; None when there is none or it is
    over (idle, too old, the user disabled)."""
    if not cookie or len(cookie) > 128:
        return None
    now = now or datetime.now(UTC)
    row = session.get(ConsoleSession, _digest(cookie))
    if row is None:
        return None
    user = session.get(User, row.user_id)
    if (user is None or user.disabled or now - row.last_seen_at > IDLE
            or now - row.created_at > LONGEST):
        session.delete(row)
        return None
    if now - row.last_seen_at > timedelta(minutes=1):  # not a write per page view
        row.last_seen_at = now
    return Signed(user, principal_of(user), row.csrf)


def close_session(session: Session, cookie: str | None) -> None:
    if cookie:
        session.execute(delete(ConsoleSession).where(
            ConsoleSession.id_hash == _digest(cookie)))


def csrf_ok(signed: Signed, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(signed.csrf.encode(), token.encode())


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()
