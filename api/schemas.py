"""Request and response bodies of the REST API (SPEC sections 5 and 6), but for the
engine events agents post: those are the event contract, rules/events.py."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.notify.config import MatchKey
from common.health import HealthStatus, ReasonCode
from common.vocabulary import (
    ActorRole,
    Category,
    ComplianceState,
    GatewayStatus,
    NcState,
    Severity,
    WindowState,
)
from common.wire_types import MAX_SECONDS, Moment, Text

# The engine events and snapshots agents post (EventsIn) are the event contract of
# rules/events.py, shared with the engine that writes them.


class CompliancePublic(BaseModel):
    site_id: str
    asset_id: str
    standard_id: str
    standard_version: int
    state: ComplianceState
    updated_at: datetime
    seconds: dict[str, float]


class ComplianceWindow(BaseModel):
    """The UTC days `seconds` covers, both included."""

    model_config = ConfigDict(populate_by_name=True)

    from_: date = Field(alias="from")
    to: date


class ComplianceList(BaseModel):
    items: list[CompliancePublic]
    next_cursor: str | None = None
    window: ComplianceWindow | None = None


class EventsResult(BaseModel):
    applied: int
    duplicates: int
    ids: list[str] = Field(description="ids of the request's events applied now or "
                                       "before (duplicates), in request order: what a "
                                       "sender may drop from its outbox")
    unknown_fields: dict[str, int] | None = Field(
        None, description="fields of the request this API does not know (`event.x`, "
        "`event.standard.x`, `snapshot.x`, `snapshot.items.x`, `catalog.x`, "
        "`catalog.assets.x`, `catalog.standards.x`, `batch.x`; sent by a newer agent), with "
        "the number of messages that carried each: accepted, ignored and logged. Absent "
        "when there are none")


class Refusal(BaseModel):
    """A 4xx answer: `detail` says why; `code` names a refusal a client acts on
    (`clock_skew`: keep the events and send them again once the clock is right)."""

    detail: str | list[Any]
    code: str | None = None
    server_time: datetime | None = None


class NonconformancePublic(BaseModel):
    """NC JSON exactly as SPEC section 5."""

    id: str
    site_id: str
    asset_id: str
    standard_id: str | None
    standard_version: int | None
    metric: str | None
    title: str
    clause: str
    category: str | None
    severity: Severity
    department: str | None
    assignee: str | None
    asset_type: str | None = None
    standard_kind: str | None = None
    state: NcState
    condition: str
    detected_at: datetime
    cleared_at: datetime | None
    due_at: datetime | None
    closed_at: datetime | None
    overdue: bool
    occurrences: int
    reopen_count: int
    recurring: bool
    source: str
    evidence: dict[str, Any] | None
    rectification: dict[str, Any] | None
    verification: dict[str, Any] | None
    external_ref: str | None


class NonconformanceList(BaseModel):
    items: list[NonconformancePublic]
    next_cursor: str | None


class HealthReason(BaseModel):
    """One cause of a degraded service: a code to act on, words to read."""

    code: ReasonCode
    detail: str


class Health(BaseModel):
    """`degraded` still serves (200): `reasons` say what lags or fails (docs/metrics.md)."""

    status: HealthStatus
    version: str
    database: Literal["ok"]
    reasons: list[HealthReason] = Field(default_factory=list)


class ActionBody(BaseModel):
    """Bodies of the actions of SPEC section 5; which fields each needs is in
    api.workflow.ACTIONS (checked by the service, 422 naming the field)."""

    model_config = ConfigDict(extra="forbid")

    note: Text | None = Field(None, max_length=10_000)
    action: Text | None = Field(None, min_length=1, max_length=10_000)
    root_cause: Text | None = Field(None, min_length=1, max_length=10_000)
    root_cause_category: Text | None = Field(
        None, min_length=1, max_length=64,
        description="rectify: one of the site's `root_cause_categories` (default unknown)")
    result: Literal["pass", "fail"] | None = None
    reason: Text | None = Field(None, min_length=1, max_length=10_000)
    assignee: Text | None = Field(None, min_length=1, max_length=128)
    department: Text | None = Field(None, min_length=1, max_length=128)
    due_at: Moment | None = None


class ManualNonconformance(BaseModel):
    """A finding from a human inspection (POST /api/v1/nonconformances)."""

    model_config = ConfigDict(extra="forbid")

    asset_id: Text = Field(min_length=1, max_length=128)
    title: Text = Field(min_length=1, max_length=500)
    severity: Severity
    department: Text | None = Field(None, max_length=128)
    description: Text | None = Field(None, max_length=10_000)
    due_at: Moment | None = None
    site_id: Text | None = Field(None, min_length=1, max_length=64)
    clause: Text = Field("", max_length=500)
    category: Category | None = None


class HistoryPublic(BaseModel):
    at: datetime
    actor: str
    role: ActorRole
    action: str
    from_state: NcState | None
    to_state: NcState | None
    changes: dict[str, Any]
    note: str | None
    channel: str | None = Field(None, description="where the change was made: api, "
                                "console, link (an alert's), system; null for changes "
                                "recorded before this field")


class HistoryList(BaseModel):
    items: list[HistoryPublic]
    next_cursor: str | None = None


# --- notifications (SPEC 7.2): silences, what was sent -----------------------------------

SilenceState = Literal["active", "pending", "expired"]
"""In force now, starting later, or over (ended, or expired by hand)."""
MatcherValue = Annotated[Text, Field(min_length=1, max_length=128)]


class SilenceCreate(BaseModel):
    """POST /api/v1/silences. `matchers` has the shape of a route's `match`: each key a
    value or a list of values, all keys must match; a site-scoped token names its sites
    in `site_id`."""

    model_config = ConfigDict(extra="forbid")

    matchers: dict[MatchKey, MatcherValue | list[MatcherValue]] = Field(
        min_length=1, description='e.g. {"asset_id": ["CH-1"], "severity": ["minor"]}')
    starts_at: Moment | None = Field(None, description="default: now")
    ends_at: Moment
    comment: Text = Field(min_length=1, max_length=2000, description="why")


class SilencePublic(BaseModel):
    id: int
    matchers: dict[str, list[str]]
    starts_at: datetime
    ends_at: datetime
    comment: str
    author: str
    created_at: datetime
    expired_at: datetime | None = Field(description="when it was expired by hand")
    state: SilenceState


class SilenceList(BaseModel):
    items: list[SilencePublic]
    next_cursor: str | None


class NotifyMessagePublic(BaseModel):
    """The message that carried a notification (one per group, or a digest)."""

    id: int
    kind: str = Field(description="group, digest or test")
    status: str = Field(description="pending, sent or failed")
    attempts: int
    sent_at: datetime | None
    last_error: str | None


class NotificationPublic(BaseModel):
    """One NC change (or reminder) for one channel, and what became of it."""

    id: int
    nc_id: str | None
    site_id: str
    event: str = Field(description="the NC change (raised, overdue...) or the timer "
                                   "(reminder, ack_timeout)")
    channel: str
    route: int = Field(description="index in notify.routes when decided")
    status: str = Field(description="pending, sent, suppressed (silence, inhibit, mute), "
                                    "merged (into a digest) or failed")
    reason: str | None
    created_at: datetime
    settled_at: datetime | None
    message: NotifyMessagePublic | None


class NotificationList(BaseModel):
    items: list[NotificationPublic]
    next_cursor: str | None


class AssetPublic(BaseModel):
    """An asset as its site's catalogs listed it (site.yaml's `assets:`)."""

    site_id: str
    id: str
    type: str
    name: str
    location: str
    department: str
    tags: dict[str, str]
    first_seen_at: datetime = Field(description="the first catalog that listed it")
    updated_at: datetime = Field(description="when a catalog last changed its fields")
    retired_at: datetime | None = Field(description="the first catalog that no longer "
                                                    "listed it; null while listed")


class AssetList(BaseModel):
    items: list[AssetPublic]
    next_cursor: str | None


class StandardVersionPublic(BaseModel):
    """One version of a standard, as the site's files held it while it was in force."""

    version: int
    title: str
    kind: str | None = Field(description="the check's kind (range, stale...)")
    file: str | None = Field(description="its file, relative to site.yaml's folder")
    in_force_from: datetime = Field(description="the first catalog that listed this version")
    in_force_until: datetime | None = Field(
        description="the first catalog that listed another version or not the standard; "
                    "null while in force")
    text: str = Field(description="its YAML as written in its file")
    definition: dict[str, Any] = Field(description="as parsed, defaults filled in")
    nc_count: int = Field(description="NCs judged by this version")


class StandardPublic(BaseModel):
    """A standard of a site and every version of it seen, newest first."""

    site_id: str
    id: str
    title: str = Field(description="the newest version's")
    in_force: bool = Field(description="a version of it is in force")
    versions: list[StandardVersionPublic]


class StandardList(BaseModel):
    items: list[StandardPublic]
    next_cursor: str | None


# --- out of service (SPEC 7.3): maintenance windows of an asset -------------------------


class OutOfServiceCreate(BaseModel):
    """POST /api/v1/assets/{asset_id}/out_of_service."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    site_id: Text | None = Field(None, min_length=1, max_length=64,
                                 description="default: the local site of `patrol run`")
    from_: Moment | None = Field(None, alias="from",
                                 description="default: now; at most 5 minutes ago")
    until: Moment = Field(description="after `from`, at most 90 days after it")
    reason: Text = Field(min_length=1, max_length=2000,
                         description="the maintenance: what reports say about the window")


class OutOfServicePublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    site_id: str
    asset_id: str
    from_: datetime = Field(alias="from")
    until: datetime = Field(description="when it ends (or was ended early)")
    reason: str
    author: str
    created_at: datetime
    state: WindowState
    suppressed: int = Field(description="engine events it held back (no NC opened)")


class OutOfServiceList(BaseModel):
    items: list[OutOfServicePublic]
    next_cursor: str | None


# --- gateways (SPEC 7.5) --------------------------------------------------------------

class BufferStatus(BaseModel):
    """The agent's store-and-forward buffer, as it stood when the heartbeat was sent."""

    readings: int = Field(0, ge=0, le=2**53, description="readings not yet in the TSDB")
    events: int = Field(0, ge=0, le=2**53, description="NC events not yet delivered")
    bytes: int = Field(0, ge=0, le=2**53, description="bytes of the buffer file in use")
    oldest_unsent_age: float | None = Field(None, ge=0, le=MAX_SECONDS, description=(
        "seconds since the oldest reading not yet in the TSDB was read (null: none, or no "
        "TSDB configured)"))


class SourceStatus(BaseModel):
    last_at: Moment | None = Field(None, description="when its last reading arrived")
    readings: int = Field(0, ge=0, le=2**53, description="readings since the agent started")


class HeartbeatIn(BaseModel):
    """What an edge agent says of itself every `forward.heartbeat` (SPEC 7.5). Fields a
    newer agent adds are ignored."""

    model_config = ConfigDict(extra="ignore")

    site_id: Text = Field(min_length=1, max_length=64)
    gateway_id: Text = Field(min_length=1, max_length=128)
    version: Text = Field("", max_length=64)
    at: Moment = Field(description="the gateway's clock when it sent this")
    started_at: Moment | None = None
    uptime: float = Field(0.0, ge=0, le=MAX_SECONDS, description="seconds since it started")
    clock_offset: float | None = Field(None, ge=-MAX_SECONDS, le=MAX_SECONDS, description=(
        "seconds its clock runs ahead (+) or behind (-) the API's, as it measured on its "
        "last heartbeat"))
    buffer: BufferStatus = Field(default_factory=BufferStatus)
    sources: dict[Annotated[str, Field(max_length=200)], SourceStatus] = Field(
        default_factory=dict, max_length=1000,
        description="by source (`modbus:<device>`, `mqtt`): its last reading")


class HeartbeatAnswer(BaseModel):
    server_time: datetime = Field(description="this server's clock: the agent measures its "
                                              "clock offset from it")
    offline_closed: str | None = Field(None, description="the gateway-offline NC this "
                                       "heartbeat closed")


class GatewayPublic(BaseModel):
    site_id: str
    gateway_id: str
    status: GatewayStatus
    version: str
    last_heartbeat_at: datetime = Field(description="when the API received the last one")
    silent_for: float = Field(description="seconds since then")
    sent_at: datetime
    started_at: datetime | None
    uptime: float | None = Field(description="seconds, as of now")
    clock_offset: float | None
    offline_since: datetime | None
    offline_nc: str | None = Field(description="the open gateway-offline NC, if any")
    buffer: BufferStatus
    sources: dict[str, SourceStatus]


class GatewayList(BaseModel):
    items: list[GatewayPublic]
    offline_after: float = Field(description="seconds of silence that make a gateway "
                                             "offline (server.gateway_offline_after)")
