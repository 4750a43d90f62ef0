"""The bodies of /api/v1/inspections (SPEC 7.3), beside the feature they describe."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.inspections.config import ItemResult, Result
from common.wire_types import Text

Id = Annotated[Text, Field(min_length=1, max_length=128)]


class AssetSelection(BaseModel):
    """As a standard's `applies_to`: every given selector must match."""

    model_config = ConfigDict(extra="forbid")

    assets: list[Id] = Field(default_factory=list, max_length=1000)
    asset_types: list[Annotated[Text, Field(max_length=64)]] = Field(default_factory=list,
                                                                    max_length=100)
    tags: dict[Annotated[Text, Field(max_length=64)],
               Annotated[Text, Field(max_length=256)]] = Field(default_factory=dict,
                                                               max_length=50)


class InspectionCreate(BaseModel):
    """Run a template (`template`), or judge ad hoc selectors (`name` with `standards`
    and `assets`); given with a template, the request's selectors replace its own."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, min_length=1, max_length=128,
                              description="default: the template's name")
    template: Text | None = Field(None, min_length=1, max_length=40)
    site_id: Text | None = Field(None, min_length=1, max_length=64,
                                 description="default: this API's site")
    standards: list[Id] | None = Field(None, min_length=1, max_length=1000,
                                       description="standard ids or globs (HVAC-*)")
    assets: list[Id] | AssetSelection | None = Field(
        None, description="asset ids, or a selector {assets, asset_types, tags}")

    @model_validator(mode="after")
    def _named(self) -> Self:
        if self.name is None and self.template is None:
            raise ValueError("give a template to run, or a name for an ad hoc inspection")
        return self


class ItemAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    result: ItemResult
    note: Text | None = Field(None, max_length=10_000)


class InspectionItemPublic(BaseModel):
    kind: Literal["pair", "manual"]
    asset_id: str
    standard_id: str | None
    item_id: str | None
    text: str | None
    result: Result
    value: float | None
    at: datetime | None
    note: str | None
    nc_id: str | None
    answered_by: str | None


class InspectionHeader(BaseModel):
    id: int
    site_id: str
    name: str
    template: str | None
    by: str
    started_at: datetime
    finished_at: datetime | None
    selection: dict[str, object]
    counts: dict[Result, int]


class InspectionPublic(InspectionHeader):
    """The report: the header, counts per result, and every item."""

    items: list[InspectionItemPublic]


class InspectionList(BaseModel):
    items: list[InspectionHeader]
    next_cursor: str | None
