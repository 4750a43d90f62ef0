"""SQLAlchemy tables of the NC store, and the engine factory for SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.types import TypeDecorator

from api.config import ServerConfig
from api.nc_facts import fact_flags
from common.secrets import SecretError
from common.sqlite_tuning import without_memory_statistics
from common.vocabulary import COMPLIANCE_STATES

log = logging.getLogger("patrol.api.store")

without_memory_statistics()  # before this process opens a database: see the module

LISTENERS = "patrol.listeners"
"""Key of `Session.info` holding the database's listeners of NC changes (api.lifecycle)."""
DECIDERS = "patrol.deciders"
"""Key of `Session.info` holding what writes in an NC change's own transaction."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps naive text) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


REPORT_COLUMNS = (
    "detected_at", "updated_at", "state", "site_id", "asset_id", "standard_id", "asset_type",
    "category", "department", "root_cause_category", "severity", "condition", "recurring",
    "due_at", "acknowledged_at", "rectified_at", "closed_at", "first_verification",
    "closed_by_sensor", "chattered", "reopen_count", "pk", "detected_us", "acknowledged_us",
    "rectified_us", "closed_us", "facts")
"""The columns of `ix_nc_report`: every NC column the reports (api.reports) read, in one
index ordered by detection, so a year's report reads a range of the index and never the
NC rows with their texts and evidence (three times quicker on SQLite; an index-only
scan on PostgreSQL). About a third of the table's size."""

NEWEST_COLUMNS = ("detected_at", "pk", "title", "asset_id", "standard_id", "assignee")
"""`ix_nc_newest` (SQLite): the NCs newest first with the columns a search reads
(api.service.filtered_ncs), so a search for a rare word reads this index, not every NC
row (2026-12-05, 200,000 NCs, no match: 378 -> 116 ms)."""
INDEX_DIALECTS = {"ix_nc_detected": "postgresql", "ix_nc_newest": "sqlite"}
"""Indexes made on one database only (`ddl_if`), which the other does not compare."""


def compared_on(dialect: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic's `include_object` on `dialect`: the models' indexes but those made on
    another database only."""

    def include(_object: Any, name: str | None, kind: str, _reflected: bool,
                _compare_to: Any) -> bool:
        return kind != "index" or INDEX_DIALECTS.get(name or "", dialect) == dialect

    return include


class Nonconformance(Base):
    __tablename__ = "nonconformances"
    __table_args__ = (
        # at most one open NC per (site, asset, standard): open_slot is "open" or NULL,
        # and NULLs never collide in a unique index on SQLite or PostgreSQL
        UniqueConstraint("site_id", "asset_id", "standard_id", "open_slot",
                         name="one_open_nc"),
        # newest first: on SQLite with the searched texts (migration 0021)
        Index("ix_nc_detected", "detected_at", "pk")
        .ddl_if(dialect=INDEX_DIALECTS["ix_nc_detected"]),
        Index("ix_nc_newest", *NEWEST_COLUMNS).ddl_if(dialect=INDEX_DIALECTS["ix_nc_newest"]),
        Index("ix_nc_state", "state"),
        Index("ix_nc_standard_version", "site_id", "standard_id", "standard_version"),
        Index("ix_nc_updated", "updated_at"),  # reports: NCs changed since a period ended
        Index("ix_nc_report", *REPORT_COLUMNS),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(64))
    asset_id: Mapped[str] = mapped_column(String(128))
    standard_id: Mapped[str | None] = mapped_column(String(128))
    standard_version: Mapped[int | None]
    metric: Mapped[str | None] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(Text)
    clause: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    department: Mapped[str | None] = mapped_column(String(128))
    assignee: Mapped[str | None] = mapped_column(String(128))
    asset_type: Mapped[str | None] = mapped_column(String(64))
    standard_kind: Mapped[str | None] = mapped_column(String(32))
    root_cause_category: Mapped[str | None] = mapped_column(String(64))  # set on rectify
    description: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32))
    open_slot: Mapped[str | None] = mapped_column(String(8))
    condition: Mapped[str] = mapped_column(String(16))
    detected_at: Mapped[datetime]
    cleared_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    occurrences: Mapped[int] = mapped_column(default=1)
    reopen_count: Mapped[int] = mapped_column(default=0)
    recurring: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(String(16))
    evidence: Mapped[dict[str, Any] | None]
    rectification: Mapped[dict[str, Any] | None]
    verification: Mapped[dict[str, Any] | None]
    external_ref: Mapped[str | None] = mapped_column(String(256))
    standard_info: Mapped[dict[str, Any] | None]
    rectified_at: Mapped[datetime | None]
    rectified_by: Mapped[int | None]  # token id: independent verification
    verify_progress: Mapped[dict[str, Any] | None]  # by sensor, while pending: not public
    overdue_notified: Mapped[bool] = mapped_column(default=False)
    # what the reports know of the NC's past without its history (api/nc_facts.py)
    acknowledged_at: Mapped[datetime | None]
    first_verification: Mapped[str | None] = mapped_column(String(4))
    closed_by_sensor: Mapped[bool] = mapped_column(default=False)
    chattered: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(default=1)
    # EPOCH_TIMES as microseconds since 1970, kept with them (`epochs`): the reports read
    # these integers instead of parsing every time (SQLite's julianday was a third of a
    # year's read)
    detected_us: Mapped[int | None] = mapped_column(BigInteger)
    acknowledged_us: Mapped[int | None] = mapped_column(BigInteger)
    rectified_us: Mapped[int | None] = mapped_column(BigInteger)
    closed_us: Mapped[int | None] = mapped_column(BigInteger)
    # the state and the facts above as the reports' flags (api.nc_facts.fact_flags), kept
    # with them (`derived`)
    facts: Mapped[int | None]

    # optimistic locking: a concurrent writer's stale update fails instead of winning
    __mapper_args__ = {"version_id_col": version}


EPOCH_TIMES = ("detected_at", "acknowledged_at", "rectified_at", "closed_at")
"""The NC times the reports also read as integers (`<name>_us`, microseconds)."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DERIVED_FROM = (*EPOCH_TIMES, "state", "closed_by_sensor", "first_verification", "chattered",
                "condition", "recurring", "reopen_count", "due_at")
"""The NC columns `derived` reads."""


def epochs(times: dict[str, Any]) -> dict[str, int | None]:
    """The `<name>_us` columns of an NC's EPOCH_TIMES (a row, absent ones None, or its
    attributes)."""
    return {name.removesuffix("_at") + "_us": None if times.get(name) is None
            else micros(times[name]) for name in EPOCH_TIMES}


def derived(row: dict[str, Any]) -> dict[str, Any]:
    """The columns kept from an NC's others (`epochs` and `facts`): what an insert of NC
    rows adds to them (tests/reports_seed.py); the ORM's writes set them themselves
    (`_keep_derived`)."""
    return epochs(row) | {"facts": fact_flags(row)}


def micros(moment: datetime) -> int:
    """An aware time as whole microseconds since 1970 (exact: no float in between)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


@event.listens_for(Nonconformance, "before_insert")
@event.listens_for(Nonconformance, "before_update")
def _keep_derived(_mapper: Any, _connection: Any, nc: Nonconformance) -> None:
    for name, value in derived({name: getattr(nc, name) for name in DERIVED_FROM}).items():
        if getattr(nc, name) != value:  # an NC's UPDATE names only what changed
            setattr(nc, name, value)


class HistoryEntry(Base):
    """Append-only: no code path updates or deletes a row."""

    __tablename__ = "nc_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    nc_pk: Mapped[int] = mapped_column(ForeignKey("nonconformances.pk"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    changes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    note: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(16))
    """Where the change was made: api, console, link (an alert's), system; NULL before
    2026-12 (migration 0016)."""


class FeedEvent(Base):
    """Every NC change in commit order, with the whole NC as it became: the change feed
    and the webhook outbox. Written in the same transaction as the change."""

    __tablename__ = "feed"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    nc_pk: Mapped[int] = mapped_column(ForeignKey("nonconformances.pk"), index=True)
    nc: Mapped[dict[str, Any]]


class Webhook(Base):
    """A receiver of feed events (Standard Webhooks). `cursor` is the last feed seq fanned
    out into deliveries for it."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    site_id: Mapped[str | None] = mapped_column(String(64))
    secret: Mapped[str] = mapped_column(String(128))
    cursor: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class Delivery(Base):
    """One feed event for one webhook, retried until delivered or given up."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_delivery_due", "status", "next_attempt_at"),
                      Index("ix_delivery_order", "webhook_id", "nc_pk", "id"),
                      Index("ix_delivery_list", "webhook_id", "id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"), index=True)
    seq: Mapped[int] = mapped_column(ForeignKey("feed.seq"))
    nc_pk: Mapped[int]
    message_id: Mapped[str] = mapped_column(String(64))  # webhook-id: stable across retries
    status: Mapped[str] = mapped_column(String(16), default="pending")  # delivered, dead
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class AppliedEvent(Base):
    """Ids of engine events already applied: replays are no-ops."""

    __tablename__ = "applied_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)
    nc_pk: Mapped[int | None]


class Compliance(Base):
    """Where every (asset, standard) stands, from the agents' compliance snapshots."""

    __tablename__ = "compliance"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    standard_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    standard_version: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime]
    last_value: Mapped[float | None]  # the last judged reading (agents from 2026-12 on)
    last_at: Mapped[datetime | None]


class ComplianceDay(Base):
    """Seconds in each state per (asset, standard) and UTC day: compliance rates."""

    __tablename__ = "compliance_days"
    __table_args__ = (
        # covering: a window's sums read one index range per pair and no table row
        Index("ix_compliance_days_sums", "site_id", "asset_id", "standard_id", "day",
              *COMPLIANCE_STATES),
    )

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    standard_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    ok: Mapped[float] = mapped_column(default=0.0)
    violating: Mapped[float] = mapped_column(default=0.0)
    no_data: Mapped[float] = mapped_column(default=0.0)
    inactive: Mapped[float] = mapped_column(default=0.0)


class ComplianceMonth(Base):
    """`compliance_days` summed per (asset, standard) and UTC month (YYYY-MM of their
    days), written with them (api.ingest.add_seconds): a year's report reads 12 rows a
    pair instead of 365."""

    __tablename__ = "compliance_months"
    __table_args__ = (
        # a month's pairs as one range, not a scan of every month (a report reads a piece
        # of each month its windows divide from compliance_days, pair by pair); without
        # the seconds, which each snapshot changes (PostgreSQL updates them in place)
        Index("ix_compliance_months_month", "month", "site_id", "asset_id", "standard_id"),
    )

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    standard_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM, UTC
    ok: Mapped[float] = mapped_column(default=0.0)
    violating: Mapped[float] = mapped_column(default=0.0)
    no_data: Mapped[float] = mapped_column(default=0.0)
    inactive: Mapped[float] = mapped_column(default=0.0)


class User(Base):
    """A person who signs in to the console (SPEC 7.4): a scrypt hash of the password
    (api.console.users), never the password; a role and sites as tokens have them."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    sites: Mapped[list[str] | None] = mapped_column(JSON)  # NULL: every site
    language: Mapped[str] = mapped_column(String(8), default="en")
    disabled: Mapped[bool] = mapped_column(default=False)
    failed_sign_ins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsoleSession(Base):
    """A signed-in browser: only the SHA-256 of its cookie is stored, so a copy of the
    database signs no one in; its CSRF token is checked on every form."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """API tokens: only the SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # the sites the token reaches (SPEC 7.1); NULL: every site, as tokens made before
    sites: Mapped[list[str] | None] = mapped_column(JSON)


class Notification(Base):
    """One decision of the notifier: this NC change (or timer) for this channel, and what
    became of it (SPEC 7.2: pending, sent, suppressed, merged, failed). Written in the NC
    change's own transaction, so a change is never notified twice or not at all."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notification_pending", "status", "channel", "group_key"),
                      Index("ix_notification_nc", "nc_pk", "id"),
                      Index("ix_notification_list", "id", "channel"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    nc_pk: Mapped[int | None] = mapped_column(ForeignKey("nonconformances.pk"))
    site_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(64))
    route: Mapped[int]  # index in notify.routes when decided
    group_key: Mapped[str] = mapped_column(String(512))
    group_wait: Mapped[float] = mapped_column(default=0.0)
    group_interval: Mapped[float] = mapped_column(default=300.0)
    severity: Mapped[str] = mapped_column(String(16))
    nc: Mapped[dict[str, Any]]  # the NC's public form at the change: what the message says
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("notify_messages.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    settled_at: Mapped[datetime | None]


class NotifyMessage(Base):
    """One message to one channel: a group's notifications, a digest, or a test; sent
    with retries like a webhook delivery."""

    __tablename__ = "notify_messages"
    __table_args__ = (Index("ix_notify_message_due", "status", "next_attempt_at"),
                      Index("ix_notify_message_window", "channel", "created_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(64))
    group_key: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16))  # group, digest, test
    severity: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(default=0)  # notifications in it
    status: Mapped[str] = mapped_column(String(16), default="pending")  # sent, failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class NotifyGroup(Base):
    """When each (channel, group) last sent: the next message waits group_interval."""

    __tablename__ = "notify_groups"

    key: Mapped[str] = mapped_column(String(600), primary_key=True)
    last_flush_at: Mapped[datetime]


class NotifyTimer(Base):
    """A notification time will raise unless the NC moves first: a reminder, an
    escalation, an acknowledgement timing out, a due date coming."""

    __tablename__ = "notify_timers"
    __table_args__ = (Index("ix_notify_timer_due", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    nc_pk: Mapped[int] = mapped_column(ForeignKey("nonconformances.pk"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # reminder, escalate, ack_timeout, due_soon
    route: Mapped[int]
    channels: Mapped[list[str]] = mapped_column(JSON)
    due_at: Mapped[datetime]
    every: Mapped[float | None]  # reminders repeat


class Silence(Base):
    """Notifications matching `matchers` between `starts_at` and `ends_at` are not sent
    (recorded as suppressed). Expiring one sets `ends_at`; rows are kept for audit."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    matchers: Mapped[dict[str, Any]]
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    comment: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    sites: Mapped[list[str] | None] = mapped_column(JSON)  # the author's reach; NULL: all
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expired_at: Mapped[datetime | None]


class OutOfService(Base):
    """A planned or ad hoc maintenance window of one asset (SPEC 7.3): no NC opens for it
    inside, and its time counts as inactive in compliance and KPIs."""

    __tablename__ = "out_of_service"
    __table_args__ = (Index("ix_out_of_service_asset", "site_id", "asset_id", "ends_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(64))
    asset_id: Mapped[str] = mapped_column(String(128))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppliedCatalog(Base):
    """Each site catalog applied (api.catalog): the newest is what the site is now; an
    older one arriving later retires nothing, and the ones after it bound what it adds."""

    __tablename__ = "site_catalogs"
    __table_args__ = (Index("ix_site_catalogs_at", "site_id", "at"),)

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime]
    assets: Mapped[int]
    standards: Mapped[int]
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)


class SiteAsset(Base):
    """An asset as the site's catalogs listed it; `retired_at` once one no longer does."""

    __tablename__ = "assets"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(Text, default="")
    department: Mapped[str] = mapped_column(String(128), default="")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]  # when a catalog last changed its fields
    retired_at: Mapped[datetime | None]


class StandardVersion(Base):
    """One version of one standard of a site, as the site's catalogs listed it: in force
    from the first catalog that listed it until the first that listed another version or
    none (NULL while in force)."""

    __tablename__ = "standard_versions"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    standard_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(32))
    definition: Mapped[dict[str, Any]]
    text: Mapped[str] = mapped_column(Text)
    file: Mapped[str | None] = mapped_column(Text)
    in_force_from: Mapped[datetime]
    in_force_until: Mapped[datetime | None]


class SuppressedEvent(Base):
    """An engine event that opened no NC and added no occurrence because its asset was out
    of service at the event's time (SPEC 7.3): kept so reports and audits see what the
    window held back. Its id is in applied_events as well (a replay stays a no-op)."""

    __tablename__ = "suppressed_events"
    __table_args__ = (Index("ix_suppressed_asset", "site_id", "asset_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(32))  # violation_started, chattering
    site_id: Mapped[str] = mapped_column(String(64))
    asset_id: Mapped[str] = mapped_column(String(128))
    standard_id: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)  # the window's, copied: read without a join
    window_id: Mapped[int] = mapped_column(ForeignKey("out_of_service.id"), index=True)


class Inspection(Base):
    """One inspection (SPEC 7.3): who ran it, when, what it selected and its counts; its
    items are `inspection_items`."""

    __tablename__ = "inspections"
    __table_args__ = (Index("ix_inspection_site", "site_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    template: Mapped[str | None] = mapped_column(String(40))
    by: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]  # when no checklist item was pending any more
    summary: Mapped[dict[str, Any]]  # counts per result, the selectors


class InspectionItem(Base):
    """An (asset, standard) pair as the inspection judged it, or a checklist item and its
    answer; `nc_pk` is the NC it opened or added an occurrence to."""

    __tablename__ = "inspection_items"
    __table_args__ = (Index("ix_inspection_item", "inspection_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"))
    kind: Mapped[str] = mapped_column(String(8))  # pair, manual
    asset_id: Mapped[str] = mapped_column(String(128))
    standard_id: Mapped[str | None] = mapped_column(String(128))
    item_id: Mapped[str | None] = mapped_column(String(40))
    text: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str] = mapped_column(String(8))  # pass, fail, no_data, na, pending
    value: Mapped[float | None]
    at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)
    nc_pk: Mapped[int | None] = mapped_column(ForeignKey("nonconformances.pk"))
    answered_by: Mapped[str | None] = mapped_column(String(128))


class ScheduleRun(Base):
    """A schedule's fire time, claimed by the one process that inserts it first: each
    fire time runs once across restarts and replicas."""

    __tablename__ = "schedule_runs"
    __table_args__ = (UniqueConstraint("site_id", "schedule", "fire_at",
                                       name="one_run_per_fire_time"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(String(64))
    schedule: Mapped[str] = mapped_column(String(64))
    fire_at: Mapped[datetime]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))  # running, sent, failed
    inspection_id: Mapped[int | None] = mapped_column(ForeignKey("inspections.id"))
    outcome: Mapped[dict[str, Any] | None]  # channel -> null (sent) or the error


class Gateway(Base):
    """The last heartbeat of each edge agent (SPEC 7.5), and whether it counts as offline:
    `offline_since` is the last heartbeat before a silence longer than
    `server.gateway_offline_after`, set when the gateway-offline NC was raised."""

    __tablename__ = "gateways"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), default="")
    sent_at: Mapped[datetime]  # the gateway's clock
    received_at: Mapped[datetime] = mapped_column(index=True)  # this server's clock
    started_at: Mapped[datetime | None]
    clock_offset: Mapped[float | None]  # seconds its clock runs ahead (+) or behind
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Buffer depth, oldest unsent reading, last reading per source, as the agent sent."""
    offline_since: Mapped[datetime | None]


class Setting(Base):
    """Values the server makes once and keeps (the alert links' signing key)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def format_nc_id(pk: int) -> str:
    return f"NC-{pk:06d}"


def parse_nc_id(text: str) -> int | None:
    """`NC-000123` -> 123; None for anything else."""
    prefix, _, digits = text.partition("-")
    if prefix != "NC" or not (digits.isascii() and digits.isdigit()) or len(digits) > 12:
        return None
    return int(digits)


def make_engine(url: str, *, password: str | None = None) -> Engine:
    """An engine for `sqlite:///...` (WAL, busy timeout) or `postgresql://...` (psycopg 3);
    `password` is PostgreSQL's, kept out of the URL (and so out of anything that prints
    it)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            private_file(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    address = make_url(url)
    if password is not None:
        address = address.set(password=password)
    return create_engine(address, pool_pre_ping=True)


def private_file(path: Path) -> None:
    """Create the database file 0600 in a directory created 0700 (webhook secrets and token
    hashes are inside). SQLite gives its -wal, -shm and -journal files the database file's
    mode. A file left readable by others by an older version is made 0600, with a warning."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        path.parent.chmod(0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    for name in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(FileNotFoundError):
            if name.stat().st_mode & 0o077:
                try:
                    name.chmod(0o600)
                    log.warning("%s was readable by others; made it 0600", name)
                except PermissionError:
                    log.warning("%s is readable by others and not ours to change: "
                                "chmod 600 it", name)


def _sqlite_begin_immediate(connection: Any) -> None:
    """Writers (sessions from `Database.write`) queue for SQLite's one write lock at BEGIN,
    so a read-then-write never loses an update to another process; readers begin deferred
    and never block anyone (SQLAlchemy's documented pysqlite recipe)."""
    write = connection.get_execution_options().get("patrol_write")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # let _sqlite_begin_immediate emit BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration; replicas starting together take turns."""
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(72437)")
        command.upgrade(alembic_config(connection), "head")


class DatabaseUnavailable(RuntimeError):
    """The database cannot be opened or migrated; the message hides any password."""


SessionFactory = Callable[[], AbstractContextManager[Session]]
"""`Database.write` (or `.session`): `with factory() as session: ...`."""

T = TypeVar("T")
CONFLICT_ATTEMPTS = 5


def committed(factory: SessionFactory, work: Callable[[Session], T]) -> T:
    """`work(session)` and a commit, in a fresh transaction again when a concurrent writer
    got there first (the one-open-NC constraint, an NC's version); the last conflict is
    raised. Returns what `work` returned."""
    for attempt in range(CONFLICT_ATTEMPTS):
        with factory() as session:
            try:
                result = work(session)
                session.commit()
                return result
            except (IntegrityError, StaleDataError):
                session.rollback()
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
    raise AssertionError("unreachable")


class Database:
    """One engine and its session factories; the schema is migrated on open."""

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, password=password)
        try:
            migrate(self.engine)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            where = self.engine.url.render_as_string(hide_password=True)
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise DatabaseUnavailable(f"cannot open database {where}: {reason}") from None
        self.listeners: list[Callable[[Any], None]] = []
        """Called with each NC change its sessions commit (`api.lifecycle.listen`)."""
        self.deciders: list[Callable[[Session, tuple[Any, ...]], None]] = []
        """Called before each commit with the transaction's NC changes not yet decided
        (`api.lifecycle.decide_with`): what they add is committed with them."""
        # each session's info: a copy sharing the lists
        info = {LISTENERS: self.listeners, DECIDERS: self.deciders}
        self.session = sessionmaker(self.engine, expire_on_commit=False, info=info)
        """Sessions that read (and may write on PostgreSQL, where rows are locked)."""
        self._write_sessions = sessionmaker(self.engine.execution_options(patrol_write=True),
                                            expire_on_commit=False, info=info)
        self._writers = threading.RLock() if self.engine.dialect.name == "sqlite" else None

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session that writes; on SQLite it takes the write lock when it begins.

        On SQLite the writers of this process first queue on a lock of their own: a thread
        waiting there sleeps until its turn, where one waiting on SQLite's lock polls with
        sleeps of up to 100 ms (the long tail of concurrent actions). Other processes
        still meet at SQLite's lock."""
        with self._writers or contextlib.nullcontext(), self._write_sessions() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()


def open_database(server: ServerConfig) -> Database:
    """The database of site.yaml's `server:`, with its password read from its env/file."""
    try:
        password = server.database_password()
    except SecretError as exc:
        raise DatabaseUnavailable(f"server.database_password: {exc}") from None
    return Database(server.database, password=password)
