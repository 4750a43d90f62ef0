"""What people do to NCs: the actions of SPEC section 5 and manual findings. No HTTP here:
refusals are exceptions carrying the status a route answers with."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from api.auth import Principal
from api.schemas import ActionBody, ManualNonconformance
from api.service import get_nc, open_nc, public_fields, record
from api.store import Nonconformance, format_nc_id
from api.workflow import ACTIONS, IllegalAction, check


class Refused(Exception):
    """An action or finding refused; `status` is the HTTP answer (403, 404, 409, 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def perform(session: Session, pk: int, name: str, body: ActionBody, principal: Principal,
            *, allow_self_verify: bool = False, now: datetime | None = None
            ) -> dict[str, Any]:
    """Apply one action in the caller's transaction, or raise Refused (nothing changed).
    Returns the NC's public JSON form after the action."""
    now = now or datetime.now(UTC)
    spec = ACTIONS[name]
    if not principal.may(*spec.roles):
        raise Refused(403, f"role {principal.role!r} may not {name}; needs "
                           f"{' or '.join(spec.roles)}")
    nc = get_nc(session, pk, lock=True)
    if nc is None or not principal.reaches(nc.site_id):  # another site's: not there
        raise Refused(404, f"no nonconformance {format_nc_id(pk)}")
    try:
        check(name, nc.state)
    except IllegalAction as exc:
        raise Refused(409, str(exc)) from None
    for field in spec.required:
        if getattr(body, field) is None:
            raise Refused(422, f"{name} needs {field}")
    before = public_fields(nc)
    from_state = nc.state
    handler = _HANDLERS.get(name)
    if handler is not None:
        handler(session, nc, body, principal, now, allow_self_verify)
    nc.state = spec.target(nc.state, body.result)
    if nc.state in ("closed", "cancelled"):
        nc.open_slot = None
    return record(session, nc, (principal.name, principal.role), name, from_state, now,
                  note=body.note or body.reason, feed_type=_FEED_TYPES.get(name, name),
                  before=before)


def _rectify(session: Session, nc: Nonconformance, body: ActionBody, principal: Principal,
             now: datetime, _self: bool) -> None:
    if nc.recurring and body.root_cause is None:
        raise Refused(422, "this nonconformance is recurring: rectify needs root_cause")
    nc.rectification = {"action": body.action, "root_cause": body.root_cause,
                        "by": principal.name, "at": now.isoformat()}
    nc.rectified_at, nc.rectified_by = now, principal.token_id
    nc.verification, nc.verify_progress = None, None


def _verify(session: Session, nc: Nonconformance, body: ActionBody, principal: Principal,
            now: datetime, allow_self_verify: bool) -> None:
    if nc.rectified_by == principal.token_id and not allow_self_verify:
        raise Refused(403, "independent verification: the token that rectified this "
                           "nonconformance cannot verify it")
    nc.verification = {"method": "manual", "result": body.result, "by": principal.name,
                       "at": now.isoformat(), "note": body.note}
    if body.result == "pass":
        nc.closed_at = now
    else:
        nc.reopen_count += 1


def _cancel(session: Session, nc: Nonconformance, body: ActionBody, principal: Principal,
            now: datetime, _self: bool) -> None:
    nc.closed_at = None


def _reopen(session: Session, nc: Nonconformance, body: ActionBody, principal: Principal,
            now: datetime, _self: bool) -> None:
    if nc.standard_id is not None:
        other = open_nc(session, nc.site_id, nc.asset_id, nc.standard_id)
        if other is not None:
            raise Refused(409, f"{format_nc_id(other.pk)} is open for the same asset and "
                               "standard: add to it instead")
    nc.open_slot = "open"
    nc.closed_at = None
    nc.reopen_count += 1
    nc.verification = None


def _assign(session: Session, nc: Nonconformance, body: ActionBody, principal: Principal,
            now: datetime, _self: bool) -> None:
    nc.assignee = body.assignee
    if body.department is not None:
        nc.department = body.department
    if body.due_at is not None:
        if body.due_at.tzinfo is None:
            raise Refused(422, "due_at needs a time zone, e.g. 2026-11-26T08:00:00Z")
        nc.due_at = body.due_at.astimezone(UTC)
        nc.overdue_notified = nc.due_at < now


_HANDLERS = {"rectify": _rectify, "verify": _verify, "cancel": _cancel, "reopen": _reopen,
             "assign": _assign}
_FEED_TYPES = {"acknowledge": "acknowledged", "start": "started", "rectify": "rectified",
               "verify": "verified", "cancel": "cancelled", "reopen": "reopened",
               "assign": "assigned"}


def create_manual(session: Session, body: ManualNonconformance, principal: Principal, *,
                  site_id: str, assets: Collection[str], now: datetime | None = None
                  ) -> Nonconformance:
    """A finding from a human inspection: source manual; a person verifies its fix."""
    now = now or datetime.now(UTC)
    if assets and body.asset_id not in assets:
        raise Refused(422, f"unknown asset {body.asset_id!r}")
    if body.due_at is not None and body.due_at.tzinfo is None:
        raise Refused(422, "due_at needs a time zone, e.g. 2026-11-26T08:00:00Z")
    nc = Nonconformance(
        site_id=body.site_id or site_id, asset_id=body.asset_id, standard_id=None,
        standard_version=None, metric=None, title=body.title, clause=body.clause,
        category=body.category, severity=body.severity, department=body.department,
        description=body.description, state="open", open_slot="open", condition="violating",
        detected_at=now, due_at=body.due_at.astimezone(UTC) if body.due_at else None,
        occurrences=1, reopen_count=0, recurring=False, source="manual",
        evidence={"description": body.description, "reported_by": principal.name},
    )
    session.add(nc)
    record(session, nc, (principal.name, principal.role), "raised", None, now,
           note=body.description)
    return nc
