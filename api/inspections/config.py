"""site.yaml `inspections:` (SPEC 7.3): templates to run and schedules that run them.

```yaml
inspections:
  templates:
    - name: daily-patrol
      standards: [HVAC-*, FIRE-PUMP-PRESSURE]   # ids or globs; default: every standard
      assets: {asset_types: [chiller]}           # as a standard's applies_to; default: all
      items:                                     # the manual checklist
        - {id: logbook, text: "Plant room log book filled in"}
        - {id: extinguishers, text: "Extinguishers in date", asset: PLANT-B1}
  schedules:
    - {name: morning, cron: "0 8 * * *", template: daily-patrol, channels: [quality-mail]}
    - {name: monthly, cron: "0 9 1 * *", report: compliance, channels: [quality-mail]}
```

pydantic only (the agent loads it). What is wrong in itself (a bad cron, a schedule with
both `template` and `report`) fails validation with its line; what other sections must
agree with (channel names, standards, assets) is `problems`, which agent/site.py calls
after the standards are loaded.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from api.inspections.cron import Cron
from api.notify.config import NotifyConfig
from collector.mqtt.config import MqttConfig
from common.config_types import Duration
from common.vocabulary import Severity
from rules.standard import Asset, Selector

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ReportKind = Literal["compliance"]
ItemResult = Literal["pass", "fail", "na"]
"""A person's answer to a checklist item."""
Result = Literal["pass", "fail", "no_data", "na", "pending"]
"""What an inspection says of each of its items."""
RESULTS: tuple[Result, ...] = ("pass", "fail", "no_data", "na", "pending")


def _cron(text: str) -> str:
    Cron.parse(text)  # CronError is a ValueError: pydantic reports it with the key's line
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AssetSelector(Selector):
    """Selector, described for the reference."""

    assets: list[str] = Field(default_factory=list, description="asset ids")
    asset_types: list[str] = Field(default_factory=list, description="asset types")
    tags: dict[str, str] = Field(default_factory=dict, description="tags the asset has")


class ChecklistItem(_Strict):
    """A question a person answers pass, fail or n.a.; a fail opens an NC under the
    standard id `INSPECTION-<template>-<id>`."""

    id: str = Field(pattern=NAME, max_length=40, description="unique in the template; "
                    "names the answer (PUT .../items/{id}) and the NC's standard id")
    text: str = Field(min_length=1, max_length=500, description="the question as people "
                      "read it; a failure's NC title")
    asset: str | None = Field(None, description="the asset a failure's NC is about "
                              "(default: the site itself, by its id)")
    severity: Severity = Field("major", description="a failure's NC's")
    department: str | None = Field(None, description="who a failure's NC goes to")
    rectify_within: Duration | None = Field(None, gt=0, description="a failure's NC is "
                                            "due this long after the answer")


class Template(_Strict):
    """What an inspection judges: the (asset, standard) pairs its selectors pick, and its
    manual checklist."""

    name: str = Field(pattern=NAME, max_length=40, description="what POST /inspections "
                      "{template} and a schedule's template name")
    standards: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                                 description="standard ids or globs (HVAC-*)")
    assets: AssetSelector = Field(default_factory=AssetSelector, description="as a "
                                  "standard's applies_to; every given selector must match "
                                  "(default: every asset)")
    items: list[ChecklistItem] = Field(default_factory=list, description="the manual "
                                       "checklist: each starts pending")

    @field_validator("items")
    @classmethod
    def _unique_items(cls, items: list[ChecklistItem]) -> list[ChecklistItem]:
        seen = [item.id for item in items]
        if len(set(seen)) != len(seen):
            raise ValueError(f"item id {next(i for i in seen if seen.count(i) > 1)!r} is "
                             "used twice")
        return items

    def item(self, item_id: str) -> ChecklistItem | None:
        return next((item for item in self.items if item.id == item_id), None)


class Schedule(_Strict):
    """At each `cron` time (site time zone): run `template` and send its report, or send
    the `report` summary, to `channels` (names in notify.channels)."""

    name: str = Field(pattern=NAME, max_length=64, description="unique; each fire time "
                      "of it runs once")
    cron: Annotated[str, AfterValidator(_cron)] = Field(
        description="minute hour day-of-month month day-of-week, site time zone")
    template: str | None = Field(None, description="the template to run; its report is "
                                 "sent")
    report: ReportKind | None = Field(None, description="or the summary to send: "
                                      "compliance (NCs raised, closed, open; compliance "
                                      "rate) of the period")
    channels: list[str] = Field(min_length=1, description="names in notify.channels")
    period: Duration | None = Field(None, gt=0, description="report: the time it covers "
                                    "(default: since the schedule's previous time)")

    @model_validator(mode="after")
    def _one_job(self) -> Schedule:
        if (self.template is None) == (self.report is None):
            raise ValueError("a schedule runs a template or sends a report: give one of "
                             "template, report")
        if self.period is not None and self.report is None:
            raise ValueError("period belongs to a report schedule (an inspection judges now)")
        return self

    @property
    def parsed(self) -> Cron:
        return Cron.parse(self.cron)


class InspectionsConfig(_Strict):
    templates: list[Template] = Field(default_factory=list, description="what an "
                                      "inspection judges and asks")
    schedules: list[Schedule] = Field(default_factory=list, description="cron times to run "
                                      "a template or send a report")
    stale_after: Duration = Field(900.0, gt=0, description="a pair whose last compliance "
                                  "snapshot is older than this is judged no data")

    @model_validator(mode="after")
    def _unique_names(self) -> InspectionsConfig:
        for what, names in (("templates", [t.name for t in self.templates]),
                            ("schedules", [s.name for s in self.schedules])):
            if len(set(names)) != len(names):
                twice = next(n for n in names if names.count(n) > 1)
                raise ValueError(f"{what}: the name {twice!r} is used twice")
        return self

    def template(self, name: str) -> Template | None:
        return next((t for t in self.templates if t.name == name), None)


def matches_standard(patterns: Collection[str], standard_id: str) -> bool:
    """Whether an id or glob of `patterns` names `standard_id` (case matters)."""
    return any(fnmatch.fnmatchcase(standard_id, pattern) for pattern in patterns)


def problems(config: InspectionsConfig, *, notify: NotifyConfig | None,
             assets: Collection[Asset], standards: Collection[str]
             ) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(key path under the file, message) for every name `inspections:` gives that the
    rest of site.yaml does not have. Standards and assets are checked only when the site
    lists some (a central API's site.yaml may judge other sites' standards)."""
    channels = {c.name for c in notify.channels} if notify else set()
    templates = {t.name for t in config.templates}
    for s, schedule in enumerate(config.schedules):
        where = ("inspections", "schedules", s)
        if schedule.template is not None and schedule.template not in templates:
            yield (*where, "template"), (f"no template named {schedule.template!r} "
                                         f"(templates: {', '.join(sorted(templates)) or 'none'})")
        for c, name in enumerate(schedule.channels):
            if name not in channels:
                yield (*where, "channels", c), (
                    f"no channel named {name!r} in notify.channels "
                    f"({', '.join(sorted(channels)) or 'none'})")
    ids = {asset.id for asset in assets}
    types = {asset.type for asset in assets}
    for t, template in enumerate(config.templates):
        where = ("inspections", "templates", t)
        if standards:
            for p, pattern in enumerate(template.standards):
                if not any(matches_standard([pattern], sid) for sid in standards):
                    yield (*where, "standards", p), f"{pattern!r} matches no standard"
        if ids:
            for a, asset in enumerate(template.assets.assets):
                if asset not in ids:
                    yield (*where, "assets", "assets", a), f"unknown asset {asset!r}"
            for a, kind in enumerate(template.assets.asset_types):
                if kind not in types:
                    yield (*where, "assets", "asset_types", a), f"no asset has type {kind!r}"
            for i, item in enumerate(template.items):
                if item.asset is not None and item.asset not in ids:
                    yield (*where, "items", i, "asset"), f"unknown asset {item.asset!r}"


@dataclass(frozen=True)
class InspectionSetup:
    """What the API needs to run inspections and their schedules: `inspections:`, the
    site it belongs to, its assets (selectors by type and tag) and standards (a new NC's
    title, severity, due time), and the channels schedules send through."""

    config: InspectionsConfig
    site_id: str
    site_name: str = ""
    timezone: str = "UTC"
    locale: Literal["en", "zh-CN"] = "en"
    public_url: str | None = None
    assets: Mapping[str, Asset] = field(default_factory=dict)
    standards: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Standard id -> its summary (rules.events.StandardInfo's fields)."""
    notify: NotifyConfig | None = None
    mqtt: MqttConfig | None = None
    kpi_targets: Mapping[str, Any] = field(default_factory=dict)
    """`site.kpi_targets`: the status a scheduled report gives each KPI figure."""
