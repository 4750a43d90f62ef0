"""The schema of inspection standards (SPEC section 4) and of the assets they apply to."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from common.config_types import Duration
from common.vocabulary import Category, OnRecovery, Severity
from rules.events import StandardInfo
from rules.expr import Expr
from rules.schedule import Schedule

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Asset(_Strict):
    """A piece of equipment or a space that standards apply to."""

    id: str = Field(pattern=ID_PATTERN)
    type: str = ""
    name: str = ""
    location: str = ""
    department: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


class Selector(_Strict):
    """Which assets a standard applies to; every given selector must match."""

    assets: list[str] = Field(default_factory=list)
    asset_types: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)

    def matches(self, asset: Asset) -> bool:
        return (
            (not self.assets or asset.id in self.assets)
            and (not self.asset_types or asset.type in self.asset_types)
            and all(asset.tags.get(key) == value for key, value in self.tags.items())
        )


class RangeCheck(_Strict):
    kind: Literal["range"] = "range"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("a range check needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class EqualsCheck(_Strict):
    kind: Literal["equals"]
    value: float


class RateCheck(_Strict):
    kind: Literal["rate"]
    max: float = Field(gt=0)
    per: Duration = Field(gt=0)


class StaleCheck(_Strict):
    kind: Literal["stale"]
    after: Duration = Field(gt=0)


class WindowCheck(_Strict):
    kind: Literal["window"]
    agg: Literal["mean", "min", "max", "sum", "delta", "count", "p95"]
    over: Duration = Field(gt=0)
    min: float | None = None
    max: float | None = None


class BudgetCheck(_Strict):
    kind: Literal["budget"]
    period: Literal["day", "week", "month"]
    max: float = Field(gt=0)


class TransitionsCheck(_Strict):
    kind: Literal["transitions"]
    to: float
    max: int = Field(ge=0)
    per: Duration = Field(gt=0)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "range"))
    return str(getattr(value, "kind", "range"))


Check = Annotated[
    Annotated[RangeCheck, Tag("range")]
    | Annotated[EqualsCheck, Tag("equals")]
    | Annotated[RateCheck, Tag("rate")]
    | Annotated[StaleCheck, Tag("stale")]
    | Annotated[WindowCheck, Tag("window")]
    | Annotated[BudgetCheck, Tag("budget")]
    | Annotated[TransitionsCheck, Tag("transitions")],
    Discriminator(_kind),
]


class Chattering(_Strict):
    """More than `max` violation episodes within `per` are reported once, as chattering."""

    max: int = Field(5, ge=1)
    per: Duration = Field(3600.0, gt=0)


class Standard(_Strict):
    """One inspection standard: what is checked, on which assets, and what follows an NC."""

    id: str = Field(pattern=ID_PATTERN)
    version: int = Field(1, ge=1)
    title: str
    clause: str = ""
    category: Category = "equipment"
    applies_to: Selector = Field(default_factory=Selector)
    metric: str | None = None
    expr: str | None = None
    check: Check
    for_: Duration = Field(0.0, alias="for")
    clear_after: Duration = 0.0
    deadband: float = Field(0.0, ge=0)
    active: str | None = None
    severity: Severity = "major"
    department: str | None = None
    rectify_within: Duration | None = Field(None, gt=0)
    verify_for: Duration | None = Field(None, gt=0)
    on_recovery: OnRecovery = "keep_open"
    no_data_after: Duration = Field(900.0, gt=0, description="compliance: no reading this "
                                    "long counts as no_data")
    chattering: Chattering = Field(default_factory=Chattering)

    @field_validator("expr")
    @classmethod
    def _expr(cls, text: str | None) -> str | None:
        if text is not None:
            Expr(text)  # ExprError is a ValueError: reported at this key
        return text

    @field_validator("active")
    @classmethod
    def _active(cls, text: str | None) -> str | None:
        if text is not None:
            Schedule(text)
        return text

    @model_validator(mode="after")
    def _subject(self) -> Self:
        if (self.metric is None) == (self.expr is None):
            raise ValueError("give exactly one of metric or expr")
        if self.check.kind == "stale" and self.expr is not None:
            raise ValueError("a stale check watches one metric: use metric, not expr")
        return self

    @property
    def kind(self) -> str:
        """The check's kind: notifications route and inhibit by it (a stale NC)."""
        return self.check.kind

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics this standard reads."""
        return Expr(self.expr).metrics if self.expr else (self.metric or "",)

    def summary(self) -> dict[str, Any]:
        """What the API needs to open an NC without the standards file (fleet mode): the
        fields of the event contract's StandardInfo, so the two cannot drift apart."""
        return {name: getattr(self, name) for name in StandardInfo.model_fields}


class StandardsFile(_Strict):
    standards: list[Standard] = Field(default_factory=list)
