"""The report's published JSON shape (OpenAPI): what `compliance_report` returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.reports.status import Status


class _Open(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class Backlog(_Open):
    d0_1: int = Field(alias="0-1d")
    d1_7: int = Field(alias="1-7d")
    d7_30: int = Field(alias="7-30d")
    d30: int = Field(alias="30d+")


class AlarmLoad(_Open):
    per_day: float
    peak_10m: int
    floods: int
    chattering: int
    open_over_24h: int
    top10_share: float | None


class ParetoItem(_Open):
    by: Literal["count", "violating_s"]
    rank: int
    site: str
    asset: str
    standard: str | None
    value: float
    share: float | None
    cumulative_share: float | None


class Figures(_Open):
    """Rates 0..1 (null over nothing), durations in seconds; docs/reports.md."""

    raised: int
    closed: int
    cancelled: int
    open_at_end: int
    overdue: int
    recurring: int
    cancel_rate: float | None
    on_time_rate: float | None
    first_pass_rate: float | None
    reopen_rate: float | None
    recurrence_rate: float | None
    closed_by_sensor_rate: float | None
    mtta_s: float | None
    mttr_s: float | None
    mttc_s: float | None
    mtta_p90_s: float | None
    mttr_p90_s: float | None
    mttc_p90_s: float | None
    backlog: Backlog
    compliance_rate: float | None
    coverage: float | None
    active_s: float
    no_data_s: float
    intactness_rate: float | None
    alarm_load: AlarmLoad
    pareto: list[ParetoItem]


class Total(_Open):
    figures: Figures
    previous: Figures
    status: dict[str, Status]


class Group(Total):
    key: dict[str, str | None]


class Period(_Open):
    from_: str = Field(alias="from")
    to: str


class Report(_Open):
    from_: str = Field(alias="from")
    to: str
    group_by: str
    timezone: str
    previous_period: Period
    groups: list[Group]
    total: Total
