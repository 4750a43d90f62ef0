"""Silences (SPEC 7.2): hold back the notifications of matching NCs for a while. Engineer,
quality and admin create and expire them; any role reads. A site-scoped token silences
only within its sites and sees only theirs (another site's silence is 404)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, status

from api.auth import Principal
from api.deps import CurrentPrincipal, SessionDep, get_db, require
from api.notify import silences
from api.notify.silences import SilenceFilter
from api.schemas import SilenceCreate, SilenceList, SilencePublic
from api.store import Database

router = APIRouter(prefix="/silences", tags=["notifications"])
Writer = Annotated[Principal, Depends(require(*silences.WRITERS))]
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("", response_model=SilencePublic, status_code=status.HTTP_201_CREATED,
             responses={403: {"description": "a role that may not, or a site the token "
                                             "does not reach"},
                        422: {"description": "unusable matchers, times or comment"}})
def create_silence(body: SilenceCreate, principal: Writer,
                   db: Annotated[Database, Depends(get_db)]) -> dict[str, Any]:
    now = datetime.now(UTC)
    with db.write() as session:
        silence = silences.create(session, body.matchers, body.starts_at, body.ends_at,
                                  body.comment, principal, now)
        session.commit()
        return silences.describe(silence, now)


@router.get("", response_model=SilenceList)
def list_silences(session: SessionDep, principal: CurrentPrincipal,
                  state: SilenceFilter = "all",
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  cursor: Annotated[str | None, Query(max_length=200)] = None
                  ) -> dict[str, Any]:
    """Newest first, `limit` at a time: pass `next_cursor` back as `cursor`. `state`:
    active (in force now), pending (starting later), expired, or all."""
    now = datetime.now(UTC)
    rows, next_cursor = silences.list_silences(session, principal, state=state, limit=limit,
                                               cursor=cursor, now=now)
    return {"items": [silences.describe(s, now) for s in rows], "next_cursor": next_cursor}


@router.get("/{silence_id}", response_model=SilencePublic,
            responses={404: {"description": "no such silence, or another site's"}})
def get_silence(silence_id: Id, session: SessionDep,
                principal: CurrentPrincipal) -> dict[str, Any]:
    return silences.describe(silences.get(session, silence_id, principal), datetime.now(UTC))


@router.delete("/{silence_id}", response_model=SilencePublic,
               responses={404: {"description": "no such silence, or another site's"}})
def expire_silence(silence_id: Id, principal: Writer,
                   db: Annotated[Database, Depends(get_db)]) -> dict[str, Any]:
    """Expire the silence now; it is kept for audit and answered as it now stands."""
    now = datetime.now(UTC)
    with db.write() as session:
        silence = silences.expire(session, silence_id, principal, now)
        session.commit()
        return silences.describe(silence, now)
