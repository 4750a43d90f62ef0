"""Request and response bodies of the REST API (SPEC sections 5 and 6)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_INT = 2**31 - 1
"""Counters and versions fit a 32-bit INTEGER column on every database."""
MAX_SECONDS = 10 * 366 * 86400.0
"""Durations past ten years are mistakes, and would overflow date arithmetic."""


def _plausible(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a time needs a time zone, e.g. 2026-11-25T08:00:00Z")
    if not 1970 <= moment.year <= 2200:
        raise ValueError("a time must lie between the years 1970 and 2200")
    return moment


Moment = Annotated[datetime, AfterValidator(_plausible)]
"""An aware time within reason: event times feed date arithmetic and the database."""


MAX_DEPTH = 32
"""Nesting levels of JSON in a body (evidence, asset data): engines send three or four;
pydantic refuses to serialize a few hundred, which would fail every later answer."""


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError(f"text holds a NUL character (at {text.index(chr(0))}), which a "
                         "database text column cannot store")
    return text


def _storable(value: Any, depth: int = 0) -> Any:
    """Free JSON (evidence, asset data) as a database can keep it and pydantic serialize
    it: no half surrogate pair (\\ud800, which no UTF-8 can hold; `str` fields refuse it
    themselves), no NUL (\\u0000, which PostgreSQL text cannot), at most MAX_DEPTH deep.
    Refused here as 422, not met as a 500 at INSERT or at every later answer."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"text holds a lone surrogate ({exc.object[exc.start]!r} at "
                             f"{exc.start}): not valid Unicode") from None
        _no_nul(value)
    elif isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key in value:
                _storable(key)
        for item in value.values() if isinstance(value, dict) else value:
            _storable(item, depth + 1)
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string field of a request body (pydantic itself refuses half surrogate pairs)."""
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]
"""Free JSON in a request body."""


class StandardInfo(BaseModel):
    """The standard as the agent judged it; lets the API open an NC without its files."""

    model_config = ConfigDict(extra="ignore")

    title: Text
    clause: Text = ""
    category: Text | None = None
    severity: Literal["minor", "major", "critical"] = "major"
    department: Text | None = None
    rectify_within: float | None = Field(None, gt=0, le=MAX_SECONDS, description="seconds")
    verify_for: float | None = Field(None, gt=0, le=MAX_SECONDS, description="seconds")
    on_recovery: Literal["keep_open", "close"] = "keep_open"
    no_data_after: float | None = Field(None, gt=0, le=MAX_SECONDS, description="seconds")


class EventIn(BaseModel):
    """A rules-engine event (agent/outbox wire form, rules.events.Event.to_dict)."""

    model_config = ConfigDict(extra="ignore")

    id: Text = Field(min_length=1, max_length=64)
    type: Literal["violation_started", "violation_cleared", "chattering"]
    site_id: Text = Field(min_length=1, max_length=64)
    asset_id: Text = Field(min_length=1, max_length=128)
    standard_id: Text = Field(min_length=1, max_length=128)
    standard_version: int = Field(1, ge=1, le=MAX_INT)
    metric: Text | None = Field(None, max_length=128)
    episode_start: Moment
    at: Moment
    evidence: JsonObject = Field(default_factory=dict)
    standard: StandardInfo
    asset: JsonObject = Field(default_factory=dict)


ComplianceState = Literal["ok", "violating", "no_data", "inactive"]


class ComplianceItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    asset_id: Text = Field(min_length=1, max_length=128)
    standard_id: Text = Field(min_length=1, max_length=128)
    standard_version: int = Field(1, ge=1, le=MAX_INT)
    state: ComplianceState
    seconds: dict[ComplianceState, Annotated[float, Field(ge=0, le=MAX_SECONDS,
                                                          allow_inf_nan=False)]] = Field(
        default_factory=dict)
    readings: int = Field(0, ge=0, le=MAX_INT,
                          description="good readings judged since the last snapshot")


class SnapshotIn(BaseModel):
    """Compliance of every (asset, standard) of a site (rules.events.Snapshot.to_dict)."""

    model_config = ConfigDict(extra="ignore")

    id: Text = Field(min_length=1, max_length=64)
    type: Literal["compliance_snapshot"]
    site_id: Text = Field(min_length=1, max_length=64)
    since: Moment
    at: Moment
    items: list[ComplianceItem] = Field(max_length=200_000)


AnyEvent = Annotated[EventIn | SnapshotIn, Field(discriminator="type")]


class EventsIn(BaseModel):
    events: list[AnyEvent] = Field(max_length=1000)


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
    severity: str
    department: str | None
    assignee: str | None
    state: str
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


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: Literal["ok"]


class ErrorBody(BaseModel):
    detail: str | list[Any]


class ActionBody(BaseModel):
    """Bodies of the actions of SPEC section 5; which fields each needs is in
    api.workflow.ACTIONS (checked by the service, 422 naming the field)."""

    model_config = ConfigDict(extra="forbid")

    note: Text | None = Field(None, max_length=10_000)
    action: Text | None = Field(None, min_length=1, max_length=10_000)
    root_cause: Text | None = Field(None, min_length=1, max_length=10_000)
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
    severity: Literal["minor", "major", "critical"]
    department: Text | None = Field(None, max_length=128)
    description: Text | None = Field(None, max_length=10_000)
    due_at: Moment | None = None
    site_id: Text | None = Field(None, min_length=1, max_length=64)
    clause: Text = Field("", max_length=500)
    category: Literal["equipment", "environment", "energy", "safety"] | None = None


class HistoryPublic(BaseModel):
    at: datetime
    actor: str
    role: str
    action: str
    from_state: str | None
    to_state: str | None
    changes: dict[str, Any]
    note: str | None


class HistoryList(BaseModel):
    items: list[HistoryPublic]
    next_cursor: str | None = None
