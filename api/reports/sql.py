"""The few SQL expressions SQLite and PostgreSQL spell differently, and the report's
group keys as columns. Everything else in the reports is plain SQLAlchemy core."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Integer, case, cast, func
from sqlalchemy.sql.elements import ColumnElement

from api.store import Nonconformance
from common.vocabulary import NC_STATES

GROUPS = ("site", "asset", "asset_type", "standard", "category", "department", "root_cause",
          "month")
"""What `group_by` may name (SPEC 7.3)."""

KEY_FIELDS: dict[str | None, tuple[str, ...]] = {
    None: (), "month": (), "site": ("site",), "asset": ("site", "asset"),
    "asset_type": ("asset_type",), "standard": ("standard",), "category": ("category",),
    "department": ("department",), "root_cause": ("root_cause",)}
"""The fields of each grouping's key: an asset id names an asset within its site only."""

NC_COLUMNS: dict[str, Any] = {
    "site": Nonconformance.site_id, "asset": Nonconformance.asset_id,
    "asset_type": Nonconformance.asset_type, "standard": Nonconformance.standard_id,
    "category": Nonconformance.category, "department": Nonconformance.department,
    "root_cause": Nonconformance.root_cause_category}

STATE_CODE = {state: code for code, state in enumerate(NC_STATES)}
"""States as small integers: `max(id * 8 + code)` over an NC's history rows is the code of
its last one, one aggregate instead of a correlated lookup."""


def nc_key(by: str | None) -> list[ColumnElement[Any]]:
    """The NC columns of a grouping's key, labelled k0, k1..."""
    return [NC_COLUMNS[name].label(f"k{i}") for i, name in enumerate(KEY_FIELDS[by])]


def state_code(column: Any) -> ColumnElement[int]:
    return case(*((column == state, code) for state, code in STATE_CODE.items()), else_=7)


def seconds(dialect: str, later: Any, earlier: Any) -> ColumnElement[float]:
    """`later - earlier` in seconds (stored UTC: text on SQLite, timestamptz on PostgreSQL)."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", later - earlier), Float)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def bucket_10m(dialect: str, column: Any) -> ColumnElement[Any]:
    """The 10-minute period a time falls in, as a value to group by (UTC). SQLite holds
    times as 'YYYY-MM-DD HH:MM:SS.ffffff' text, whose first 15 characters name the
    period, four times quicker than converting each to epoch seconds."""
    if dialect == "postgresql":
        return cast(func.floor(func.extract("epoch", column) / 600), Integer)
    return func.substr(column, 1, 15)
