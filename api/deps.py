"""FastAPI dependencies: the database session and the calling token's principal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, authenticate
from api.door import PRINCIPAL
from api.store import Database

_bearer = HTTPBearer(auto_error=False, description="a token from `patrol token create`")


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` one in its
# thread pool, a hop that costs about as much CPU as the work of a small request.


async def get_db(request: Request) -> Database:
    return request.app.state.db


def get_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    with db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The request's bearer token, unchecked: 401 here when there is none at all."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    return credentials.credentials


BearerToken = Annotated[str, Depends(bearer_token)]


def principal_of(db: Session | Connection, token: str) -> Principal:
    """The token's principal, looked up on the caller's connection; 401 when the token
    is not a live one."""
    principal = authenticate(db, token)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


async def get_principal(request: Request, db: Annotated[Database, Depends(get_db)],
                        token: BearerToken) -> Principal:
    """The principal api.door found from the headers before the body was read; looked up
    here only for an app mounted without the door."""
    found = request.scope.get(PRINCIPAL)
    if isinstance(found, Principal):
        return found

    def lookup() -> Principal:
        # its own short connection: a request holds at most one pooled connection at a time
        with db.engine.connect() as connection:
            return principal_of(connection, token)

    return await run_in_threadpool(lookup)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require(*roles: str) -> Callable[[Principal], Principal]:
    """A dependency admitting only tokens whose role implies one of `roles`."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.may(*roles):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"role {principal.role!r} may not do this; needs "
                                f"{' or '.join(roles)}")
        return principal

    return check
