"""The NC lifecycle: every change of a nonconformance goes through `transition`, over the
tables of api/workflow.py. No other module sets an NC's `state`, `open_slot` or
`closed_at` (tests/test_layout.py says so).

`transition`, in the caller's transaction:
1. checks the change applies in the NC's state (IllegalAction otherwise);
2. moves the state, with what always goes with it: the one open slot per (site, asset,
   standard) taken on entering the open states (Conflict when another NC holds it) and
   given up on leaving them, `closed_at` set on closing and cleared otherwise,
   `reopen_count` counted on every way back to open, and the facts the reports read
   (api/nc_facts.py) kept;
3. appends the history entry and (unless the change is history only) the feed event:
   history is the audit trail people read, the feed is what trackers and webhooks
   consume, and neither can miss a change the other has;
4. makes one `NCChanged` record.

Consuming the records: `pending(session)` lists those of the session's transaction so far;
`decide_with(db, decider)` calls `decider(session, records)` just before each commit of
`db`'s sessions with the records not yet decided, and what it adds commits with them (the
notification outbox: a change is notified if and only if it happened);
`listen(db, listener)` calls `listener(change)` for each record of a transaction of
`db`'s sessions once it has committed, in order, in the committing thread (keep it
quick: hand the work on). A rollback, or a session closed without commit, drops the
records: a listener never hears of a change that did not happen. (Savepoints are not
used here; a record made inside one rolled back would still be delivered.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session, SessionTransaction

from api.auth import Principal
from api.errors import Conflict, Forbidden, Invalid, NotFound
from api.nc_facts import COLUMNS as FACT_COLUMNS
from api.nc_facts import kept_facts
from api.schemas import ActionBody, ManualNonconformance
from api.service import Actor, get_nc, open_nc, public_fields, to_public, visible_nc
from api.store import (
    DECIDERS,
    LISTENERS,
    Database,
    FeedEvent,
    HistoryEntry,
    Nonconformance,
    format_nc_id,
)
from api.workflow import ACTIONS, ENDED_STATES, NEW, OPEN_STATES, check
from common.vocabulary import ROOT_CAUSE_CATEGORIES

log = logging.getLogger("patrol.api.lifecycle")

PENDING = "patrol.nc_changed"
"""Key of `Session.info` under which a transaction's records wait for its commit."""
DECIDED = "patrol.nc_decided"
"""How many of them the deciders have seen (a transaction may commit in several flushes,
but `before_commit` runs once per commit)."""
FEED_LOCK = 72438
CHANNEL = "patrol.channel"
"""Key of `Session.info` naming where the session's changes are made (`console`, `link`);
without it a person's change came through the API and the system's is `system`."""


@dataclass(frozen=True, slots=True)
class NCChanged:
    """One change of one NC, as its history entry says it: what notifiers consume."""

    nc_id: str
    site_id: str
    from_state: str | None
    """None: the NC was raised by this change."""
    to_state: str
    action: str
    """As the history shows it (`raised`, `acknowledged`... `cleared`, `overdue`)."""
    actor: str
    role: str
    at: datetime
    change: str
    """The row of api.workflow.TRANSITIONS applied (`close_on_recovery`, `verify`...)."""
    feed_type: str | None
    """The feed event's type; None: in the history only."""
    note: str | None = None
    event_id: str | None = None
    changes: dict[str, Any] = field(default_factory=dict, compare=False)
    """Public fields that changed, [old, new] (or what the change names)."""
    nc: dict[str, Any] = field(default_factory=dict, compare=False)
    """The NC's public JSON form after the change (do not mutate: shared)."""


Listener = Callable[[NCChanged], None]


def listen(db: Database, listener: Listener) -> Callable[[], None]:
    """Call `listener` with each NC change committed through `db`'s sessions; returns
    the function that stops it."""
    db.listeners.append(listener)
    return lambda: db.listeners.remove(listener)


def pending(session: Session) -> tuple[NCChanged, ...]:
    """The records of the session's transaction so far, oldest first."""
    return tuple(session.info.get(PENDING, ()))


Decider = Callable[[Session, tuple[NCChanged, ...]], None]


def decide_with(db: Database, decider: Decider) -> Callable[[], None]:
    """Call `decider(session, records)` before each commit of `db`'s sessions that made NC
    changes, in the committing transaction; returns the function that stops it. An
    exception in a decider fails the commit: the change and its consequences stand or fall
    together."""
    db.deciders.append(decider)
    return lambda: db.deciders.remove(decider)


@event.listens_for(Session, "before_commit")
def _decide(session: Session) -> None:
    changes = session.info.get(PENDING)
    if not changes or session.in_nested_transaction():
        return
    done = session.info.get(DECIDED, 0)
    session.info[DECIDED] = len(changes)
    for decider in session.info.get(DECIDERS, ()):
        decider(session, tuple(changes[done:]))


@event.listens_for(Session, "after_commit")
def _deliver(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: the transaction still may roll back
    changes = session.info.pop(PENDING, None)
    session.info.pop(DECIDED, None)
    for listener in session.info.get(LISTENERS, ()) if changes else ():
        for change in changes:
            try:
                listener(change)
            except Exception:  # one failing listener must not starve the others
                log.exception("a listener of NC changes failed on %s %s", change.nc_id,
                              change.action)


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # rolled back or closed: the changes did not happen
        session.info.pop(PENDING, None)
        session.info.pop(DECIDED, None)


def transition(session: Session, nc: Nonconformance, name: str, actor: Actor,
               at: datetime, *, result: str | None = None,
               before: dict[str, Any] | None = None, changes: dict[str, Any] | None = None,
               note: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    """Apply the change `name` (a row of api.workflow.TRANSITIONS) to `nc` in the caller's
    transaction; `result` is verify's. Raises IllegalAction (the change does not apply in
    the NC's state) or Conflict (another NC is open for its asset and standard), having
    changed nothing of the state. With `before` (its `public_fields` before the caller's
    own edits), the history lists every public field that changed, old and new; else
    `changes` is what it lists. Returns the NC's public JSON form after the change."""
    spec = check(name, nc.state)
    from_state = nc.state
    to = spec.target(from_state, result)
    if from_state is NEW:
        session.add(nc)
    if to != from_state:
        _move(session, nc, from_state, to, at)
    return _record(session, nc, actor, name, spec.recorded_as, from_state, at,
                   changes=changes, note=note, event_id=event_id, feed_type=spec.feed,
                   before=before)


def _move(session: Session, nc: Nonconformance, from_state: str | None, to: str,
          at: datetime) -> None:
    if to in OPEN_STATES and from_state in ENDED_STATES and nc.standard_id is not None:
        with session.no_autoflush:  # the caller's edits wait for the check
            other = open_nc(session, nc.site_id, nc.asset_id, nc.standard_id)
        if other is not None:
            raise Conflict(f"{format_nc_id(other.pk)} is open for the same asset and "
                           "standard: add to it instead")
    if to == "open" and from_state is not NEW:
        nc.reopen_count += 1
    nc.state = to
    nc.open_slot = "open" if to in OPEN_STATES else None
    nc.closed_at = at if to == "closed" else None


def _record(session: Session, nc: Nonconformance, actor: Actor, change: str, action: str,
            from_state: str | None, at: datetime, *, changes: dict[str, Any] | None,
            note: str | None, event_id: str | None, feed_type: str | None,
            before: dict[str, Any] | None) -> dict[str, Any]:
    """The history entry, the feed event and the record of one change."""
    if nc.pk is None:
        session.flush()  # a new NC: its pk (the commit flushes the rest in one go)
    public = to_public(nc, at).model_dump(mode="json")  # once: history diff, feed, answer
    if before is not None:
        changes = {key: [before[key], value] for key, value in public.items()
                   if key != "overdue" and before[key] != value}
    channel = "system" if actor[1] == "system" else session.info.get(CHANNEL, "api")
    history = {"nc_pk": nc.pk, "at": at.astimezone(UTC), "actor": actor[0], "role": actor[1],
               "action": action, "from_state": from_state, "to_state": nc.state,
               "changes": changes or {}, "note": note, "event_id": event_id,
               "channel": channel}
    facts = kept_facts({name: getattr(nc, name) for name in (*FACT_COLUMNS, "condition")},
                       action=action, from_state=from_state, to_state=nc.state,
                       role=actor[1], at=history["at"])
    for name, value in facts.items():
        setattr(nc, name, value)
    session.info.setdefault(PENDING, []).append(NCChanged(
        nc_id=public["id"], site_id=nc.site_id, from_state=from_state, to_state=nc.state,
        action=action, actor=actor[0], role=actor[1], at=history["at"], change=change,
        feed_type=feed_type, note=note, event_id=event_id, changes=history["changes"],
        nc=public))
    if feed_type is not None and session.get_bind().dialect.name == "postgresql":
        # One statement: history row, then, holding the feed lock, the feed row. Feed rows
        # must commit in seq order, or a reader at seq 11 could skip a seq 10 still in
        # flight: writers of the feed take turns from here until they commit.
        session.connection().execute(_PG_RECORD, {
            **history, "changes": json.dumps(history["changes"]), "key": FEED_LOCK,
            "type": feed_type, "site_id": nc.site_id, "nc": json.dumps(public)})
        return public
    session.add(HistoryEntry(**history))
    if feed_type is not None:
        session.add(FeedEvent(type=feed_type, at=history["at"], site_id=nc.site_id,
                              nc_pk=nc.pk, nc=public))
    return public


_PG_RECORD = text("""
WITH feed_lock AS (SELECT pg_advisory_xact_lock(:key)),
     history AS (
        INSERT INTO nc_history (nc_pk, at, actor, role, action, from_state, to_state,
                                changes, note, event_id, channel)
        VALUES (:nc_pk, :at, :actor, :role, :action, :from_state, :to_state,
                CAST(:changes AS json), :note, :event_id, :channel))
INSERT INTO feed (type, at, site_id, nc_pk, nc)
SELECT :type, :at, :site_id, :nc_pk, CAST(:nc AS json) FROM feed_lock
""")


# --- people's actions (SPEC section 5), manual findings, the tracker's reference -------


UNKNOWN_CAUSE = "unknown"
"""The root cause category of a rectification that names none (always in the site's list)."""


def perform(session: Session, pk: int, name: str, body: ActionBody, principal: Principal,
            *, allow_self_verify: bool = False, now: datetime | None = None,
            root_cause_categories: Sequence[str] = ROOT_CAUSE_CATEGORIES
            ) -> dict[str, Any]:
    """Apply one action of a person in the caller's transaction, or raise (Forbidden,
    NotFound, IllegalAction, Conflict, Invalid; the caller rolls back). Returns the NC's
    public JSON form after the action. `root_cause_categories` is the site's controlled
    list a rectification's `root_cause_category` must be one of."""
    now = now or datetime.now(UTC)
    spec = ACTIONS[name]
    if not principal.may(*spec.roles):
        raise Forbidden(f"role {principal.role!r} may not {name}; needs "
                        f"{' or '.join(spec.roles)}")
    nc = get_nc(session, pk, lock=True)
    if nc is None or not principal.reaches(nc.site_id):  # another site's: not there
        raise NotFound(f"no nonconformance {format_nc_id(pk)}")
    check(name, nc.state)
    for required in spec.required:
        if getattr(body, required) is None:
            raise Invalid(f"{name} needs {required}")
    category = body.root_cause_category
    if name == "rectify" and category is not None and category not in root_cause_categories:
        raise Invalid(f"root_cause_category {category[:64]!r} is not one of "
                      f"{', '.join(root_cause_categories)}")
    before = public_fields(nc)
    handler = _HANDLERS.get(name)
    if handler is not None:
        handler(nc, body, principal, now, allow_self_verify)
    return transition(session, nc, name, (principal.name, principal.role), now,
                      result=body.result, before=before, note=body.note or body.reason)


def _rectify(nc: Nonconformance, body: ActionBody, principal: Principal, now: datetime,
             _self: bool) -> None:
    if nc.recurring and body.root_cause is None:
        raise Invalid("this nonconformance is recurring: rectify needs root_cause")
    # a tracker that sends only the free text keeps working: the category is `unknown`,
    # which reports count as the share nobody classified
    category = body.root_cause_category or UNKNOWN_CAUSE
    nc.rectification = {"action": body.action, "root_cause": body.root_cause,
                        "root_cause_category": category,
                        "by": principal.name, "at": now.isoformat()}
    nc.root_cause_category = category
    nc.rectified_at, nc.rectified_by = now, principal.token_id
    nc.verification, nc.verify_progress = None, None


def _verify(nc: Nonconformance, body: ActionBody, principal: Principal, now: datetime,
            allow_self_verify: bool) -> None:
    if nc.rectified_by == principal.token_id and not allow_self_verify:
        raise Forbidden("independent verification: the token that rectified this "
                        "nonconformance cannot verify it")
    readings = (nc.verify_progress or {}).get("readings")
    nc.verification = {"method": "manual", "result": body.result, "by": principal.name,
                       "at": now.isoformat(), "note": body.note,
                       **({"readings": readings} if readings else {})}
    nc.verify_progress = None


def _reopen(nc: Nonconformance, body: ActionBody, principal: Principal, now: datetime,
            _self: bool) -> None:
    nc.verification = None


def _assign(nc: Nonconformance, body: ActionBody, principal: Principal, now: datetime,
            _self: bool) -> None:
    nc.assignee = body.assignee
    if body.department is not None:
        nc.department = body.department
    if body.due_at is not None:
        nc.due_at = _aware(body.due_at)
        nc.overdue_notified = nc.due_at < now


_HANDLERS = {"rectify": _rectify, "verify": _verify, "reopen": _reopen, "assign": _assign}


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise Invalid("due_at needs a time zone, e.g. 2026-11-26T08:00:00Z")
    return moment.astimezone(UTC)


def create_manual(session: Session, body: ManualNonconformance, principal: Principal, *,
                  site_id: str, assets: Collection[str] | Mapping[str, str | None],
                  now: datetime | None = None) -> Nonconformance:
    """A finding from a human inspection (`site_id` and `assets`: the local site's, the
    default and the check; a map gives each asset's type): source manual; a person
    verifies its fix."""
    now = now or datetime.now(UTC)
    if not principal.may("quality"):
        raise Forbidden(f"role {principal.role!r} may not record findings; needs quality")
    site = body.site_id or site_id
    if not principal.reaches(site):
        raise Forbidden(f"this token does not reach site {site!r}")
    if assets and body.asset_id not in assets:
        raise Invalid(f"unknown asset {body.asset_id!r}")
    nc = Nonconformance(
        site_id=site, asset_id=body.asset_id, standard_id=None,
        standard_version=None, metric=None, title=body.title, clause=body.clause,
        category=body.category, severity=body.severity, department=body.department,
        description=body.description, condition="violating", detected_at=now,
        due_at=_aware(body.due_at) if body.due_at else None,
        occurrences=1, reopen_count=0, recurring=False, source="manual",
        asset_type=assets.get(body.asset_id) if isinstance(assets, Mapping) else None,
        evidence={"description": body.description, "reported_by": principal.name},
    )
    transition(session, nc, "raise", (principal.name, principal.role), now,
               note=body.description)
    return nc


def set_external_ref(session: Session, nc_id: str, external_ref: str | None,
                     principal: Principal, now: datetime | None = None) -> Nonconformance:
    """The tracker's own ticket id; history only (a tracker is not woken by its own
    write), and none when it is the same."""
    nc = visible_nc(session, nc_id, principal, lock=True)
    if nc.external_ref != external_ref:
        old, nc.external_ref = nc.external_ref, external_ref
        transition(session, nc, "external_ref", (principal.name, principal.role),
                   now or datetime.now(UTC), changes={"external_ref": [old, external_ref]})
    return nc
