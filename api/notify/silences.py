"""Silences (SPEC 7.2): people saying "not now" for the notifications of some NCs, for a
while. A silence holds a route's kind of match (`{"asset_id": ["CH-1"]}`) and a time
span; the dispatcher asks `active_silence` before it sends, and records what it held back
as suppressed. Expiring a silence ends it now and keeps the row: who silenced what, when
and why stays readable.

No HTTP here (refusals are api.errors). A site-scoped person silences only within their
sites: their silences must name `site_id` values they reach, so a silence can never hold
back another site's alerts; they see the silences of their sites and those they wrote.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.auth import Principal
from api.errors import Forbidden, Invalid, NotFound
from api.notify.config import MATCH_KEYS
from api.notify.routing import matches
from api.schemas import SilenceState
from api.service import decode_id, encode_id
from api.store import Silence

SILENCE_STATES: tuple[SilenceState, ...] = get_args(SilenceState)
SilenceFilter = Literal["active", "pending", "expired", "all"]

WRITERS = ("engineer",)
"""Roles that create and expire silences: engineer, and those that imply it (quality,
admin)."""
MAX_VALUES = 100
"""Values of one matcher key: a silence names a few assets or standards, not a fleet."""
MAX_VALUE_LENGTH = 128
MAX_COMMENT = 2000
SCAN = 500
"""Rows read at a time when a site-scoped reader's page is filtered here."""


def create(session: Session, matchers: Mapping[str, object], starts_at: datetime | None,
           ends_at: datetime, comment: str, principal: Principal, now: datetime) -> Silence:
    """A new silence, added to the caller's transaction (the caller commits). Refuses
    (Forbidden, Invalid) with the reason; a start in the past is now."""
    if not principal.may(*WRITERS):
        raise Forbidden(f"role {principal.role!r} may not silence notifications; needs "
                        "engineer, quality or admin")
    normal = normalize(matchers)
    _within_reach(normal, principal)
    if starts_at is None:
        starts_at = now
    for name, moment in (("starts_at", starts_at), ("ends_at", ends_at)):
        if moment.tzinfo is None:
            raise Invalid(f"{name} needs a time zone, e.g. 2026-11-26T08:00:00Z")
    starts_at, ends_at = max(starts_at.astimezone(UTC), now), ends_at.astimezone(UTC)
    if ends_at <= now:
        raise Invalid(f"ends_at {ends_at.isoformat()} is not in the future")
    if ends_at <= starts_at:
        raise Invalid(f"ends_at {ends_at.isoformat()} is not after starts_at "
                      f"{starts_at.isoformat()}")
    text = comment.strip()
    if not text:
        raise Invalid("a silence needs a comment: why, so the next person knows")
    if len(text) > MAX_COMMENT:
        raise Invalid(f"the comment is over {MAX_COMMENT} characters")
    silence = Silence(matchers=normal, starts_at=starts_at, ends_at=ends_at, comment=text,
                      author=principal.name, created_at=now,
                      sites=sorted(principal.sites) if principal.sites is not None else None)
    session.add(silence)
    session.flush()  # its id, for the answer
    return silence


def normalize(matchers: Mapping[str, object]) -> dict[str, list[str]]:
    """`{key: [values]}`: keys among MATCH_KEYS, each a value or a non-empty list of
    values (repeats dropped, order kept); at least one key (a silence of everything
    would hold back every alert of every site)."""
    if not isinstance(matchers, Mapping) or not matchers:
        raise Invalid("matchers is empty: a silence names what it holds back, e.g. "
                      '{"asset_id": ["CH-1"]}; {"site_id": [...]} silences a whole site')
    out: dict[str, list[str]] = {}
    for key, wanted in matchers.items():
        if key not in MATCH_KEYS:
            raise Invalid(f"matchers: {key!r} is not one of {', '.join(MATCH_KEYS)}")
        values = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise Invalid(f"matchers.{key}: a value or a list of values (text)")
        if not values:
            raise Invalid(f"matchers.{key}: an empty list matches nothing")
        if len(values) > MAX_VALUES:
            raise Invalid(f"matchers.{key}: more than {MAX_VALUES} values")
        for value in values:
            if not value or len(value) > MAX_VALUE_LENGTH or "\x00" in value:
                raise Invalid(f"matchers.{key}: {value[:40]!r} is not a value (1 to "
                              f"{MAX_VALUE_LENGTH} characters, no NUL)")
        out[key] = list(dict.fromkeys(values))
    return out


def _within_reach(matchers: dict[str, list[str]], principal: Principal) -> None:
    """A site-scoped person's silence names only sites they reach."""
    if principal.sites is None:
        return
    reach = ", ".join(sorted(principal.sites))
    sites = matchers.get("site_id")
    if sites is None:
        raise Invalid(f"this token reaches only {reach}: name them in matchers.site_id "
                      "(a silence without site_id would hold back every site's alerts)")
    outside = [site for site in sites if site not in principal.sites]
    if outside:
        raise Forbidden(f"this token does not reach site {outside[0]!r} (it reaches "
                        f"{reach})")


def visible(silence: Silence, principal: Principal) -> bool:
    """Whether the caller sees the silence: every site's reader sees all; a scoped one
    those whose site_id values it reaches, and those it wrote within its reach."""
    if principal.sites is None:
        return True
    sites = silence.matchers.get("site_id") if isinstance(silence.matchers, dict) else None
    if isinstance(sites, list) and sites and all(s in principal.sites for s in sites):
        return True
    return (silence.author == principal.name and silence.sites is not None
            and set(silence.sites) <= principal.sites)


def state_of(silence: Silence, now: datetime) -> SilenceState:
    if silence.expired_at is not None or silence.ends_at <= now:
        return "expired"
    return "pending" if silence.starts_at > now else "active"


def _in_state(query: Select[tuple[Silence]], state: SilenceFilter,
              now: datetime) -> Select[tuple[Silence]]:
    live = Silence.expired_at.is_(None) & (Silence.ends_at > now)
    if state == "active":
        return query.where(live, Silence.starts_at <= now)
    if state == "pending":
        return query.where(live, Silence.starts_at > now)
    if state == "expired":
        return query.where(~live)
    return query


def list_silences(session: Session, principal: Principal, *, state: SilenceFilter = "all",
                  limit: int = 100, cursor: str | None = None, now: datetime
                  ) -> tuple[list[Silence], str | None]:
    """Newest first, `limit` at a time, and the cursor of the next page (None: the last).
    A scoped reader's rows are filtered here (the site is inside the matchers' JSON):
    silences are few, and the scan reads SCAN rows at a time."""
    query = _in_state(select(Silence), state, now).order_by(Silence.id.desc())
    after = decode_id(cursor) if cursor else None
    page: list[Silence] = []
    for silence in _scan(session, query, after):
        if not visible(silence, principal):
            continue
        if len(page) == limit:
            return page, encode_id(page[-1].id)
        page.append(silence)
    return page, None


def _scan(session: Session, query: Select[tuple[Silence]], before: int | None
          ) -> Iterator[Silence]:
    while True:
        bounded = query if before is None else query.where(Silence.id < before)
        rows = list(session.scalars(bounded.limit(SCAN)))
        yield from rows
        if len(rows) < SCAN:
            return
        before = rows[-1].id


def get(session: Session, silence_id: int, principal: Principal) -> Silence:
    """The silence, when the caller sees it; NotFound otherwise (another site's)."""
    silence = session.get(Silence, silence_id)
    if silence is None or not visible(silence, principal):
        raise NotFound(f"no silence {silence_id}")
    return silence


def expire(session: Session, silence_id: int, principal: Principal, now: datetime
           ) -> Silence:
    """End the silence now; the row stays for audit. Expiring an expired one changes
    nothing (a second tap is not an error)."""
    if not principal.may(*WRITERS):
        raise Forbidden(f"role {principal.role!r} may not expire silences; needs "
                        "engineer, quality or admin")
    silence = session.scalar(select(Silence).where(Silence.id == silence_id)
                             .with_for_update())
    if silence is None or not visible(silence, principal):
        raise NotFound(f"no silence {silence_id}")
    if state_of(silence, now) != "expired":
        silence.ends_at = silence.expired_at = now
    return silence


def active_silence(session: Session, fields: Mapping[str, object], now: datetime
                   ) -> Silence | None:
    """The oldest silence in force at `now` whose matchers all match the NC `fields`
    (its public JSON form, or any mapping of the MATCH_KEYS); None when none holds."""
    query = select(Silence).where(Silence.expired_at.is_(None), Silence.starts_at <= now,
                                  Silence.ends_at > now).order_by(Silence.id)
    for silence in session.scalars(query):
        wanted = {key: [value] if isinstance(value, str) else value
                  for key, value in silence.matchers.items()}  # a row written as a value
        if matches(wanted, fields):  # a route's rule: every key's value among the wanted
            return silence
    return None


def describe(silence: Silence, now: datetime) -> dict[str, Any]:
    """The silence's public form (SilencePublic)."""
    return {"id": silence.id, "matchers": silence.matchers, "starts_at": silence.starts_at,
            "ends_at": silence.ends_at, "comment": silence.comment,
            "author": silence.author, "created_at": silence.created_at,
            "expired_at": silence.expired_at, "state": state_of(silence, now)}
