"""Request and response bodies of the REST API (SPEC sections 5 and 6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StandardInfo(BaseModel):
    """The standard as the agent judged it; lets the API open an NC without its files."""

    model_config = ConfigDict(extra="ignore")

    title: str
    clause: str = ""
    category: str | None = None
    severity: Literal["minor", "major", "critical"] = "major"
    department: str | None = None
    rectify_within: float | None = Field(None, gt=0, description="seconds")
    verify_for: float | None = Field(None, gt=0, description="seconds")
    on_recovery: Literal["keep_open", "close"] = "keep_open"


class EventIn(BaseModel):
    """A rules-engine event (agent/outbox wire form, rules.events.Event.to_dict)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=64)
    type: Literal["violation_started", "violation_cleared"]
    site_id: str = Field(min_length=1, max_length=64)
    asset_id: str = Field(min_length=1, max_length=128)
    standard_id: str = Field(min_length=1, max_length=128)
    standard_version: int = Field(1, ge=1)
    metric: str | None = Field(None, max_length=128)
    episode_start: datetime
    at: datetime
    evidence: dict[str, Any] = Field(default_factory=dict)
    standard: StandardInfo
    asset: dict[str, Any] = Field(default_factory=dict)


class EventsIn(BaseModel):
    events: list[EventIn] = Field(max_length=1000)


class EventsResult(BaseModel):
    applied: int
    duplicates: int


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
