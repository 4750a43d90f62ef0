"""The few SQL expressions SQLite and PostgreSQL spell differently, and the report's
group keys as columns. Everything else in the reports is plain SQLAlchemy core."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Float, String, Text, case, cast, func, literal_column
from sqlalchemy.sql.elements import ColumnElement

from api.nc_facts import STATE_CODE
from api.store import Nonconformance

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

PAIR_SEPARATOR, NC_SEPARATOR = "\x1f", "\x1e"
"""Between the ids of an NC's pair, and between NCs in a joined text of pairs (ASCII unit
and record separators, which no id holds)."""

Pair = tuple[str, str, str | None]


def nc_key(by: str | None) -> list[ColumnElement[Any]]:
    """The NC columns of a grouping's key, labelled k0, k1..."""
    return [NC_COLUMNS[name].label(f"k{i}") for i, name in enumerate(KEY_FIELDS[by])]


def state_code(column: Any) -> ColumnElement[int]:
    """A state's code (api.nc_facts.STATE_CODE): `max(id * 8 + code)` over an NC's history
    rows is the code of its last one, one aggregate instead of a correlated lookup."""
    return case(*((column == state, code) for state, code in STATE_CODE.items()), else_=7)


def seconds(dialect: str, later: Any, earlier: Any) -> ColumnElement[float]:
    """`later - earlier` in seconds (stored UTC: text on SQLite, timestamptz on PostgreSQL)."""
    if dialect == "postgresql":  # date_part is double precision; extract, numeric and slow
        return cast(func.date_part("epoch", later - earlier), Float)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def micro(seconds: Any) -> ColumnElement[int]:
    """Seconds as whole microseconds: integers, which `joined` prints and `integers`
    reads back many times faster than floats."""
    return cast(func.round(seconds * 1_000_000), BigInteger)


def joined(dialect: str, column: Any, separator: str = ",") -> ColumnElement[str]:
    """An aggregate: the group's non-null values in one text, comma-separated (integers:
    numpy reads such a text, `integers`, some fifty times faster than as many rows)."""
    if dialect == "postgresql":
        return func.string_agg(cast(column, Text), separator)
    return func.group_concat(column, separator)


def pair_text(dialect: str) -> ColumnElement[str]:
    """An NC's pair in one text: site, asset and (when it has one) standard; `joined` with
    NC_SEPARATOR, a group's pairs come in the same row as its other columns, where a row
    per pair made the database sort the NCs by pair (as long as the rest of a read)."""
    n = Nonconformance
    concat = func.chr if dialect == "postgresql" else func.char
    unit = concat(ord(PAIR_SEPARATOR), type_=String)
    return n.site_id + unit + n.asset_id + func.coalesce(unit + n.standard_id, "")


def pair_of(text: str) -> Pair:
    """The pair a `pair_text` names."""
    site, asset, *standard = text.split(PAIR_SEPARATOR)
    return site, asset, standard[0] if standard else None


def integers(text: str | None) -> np.ndarray:
    """The integers of a `joined` text."""
    return np.fromstring(text or "", sep=",", dtype=np.int64)


def found_at(ordered: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `keys` is in `ordered` (sorted), and whether it is there at all: the
    positions count only where found."""
    at = np.searchsorted(ordered, keys)
    found = at < len(ordered)
    found[found] = ordered[at[found]] == keys[found]
    return at, found


def segment(column: Any, cuts: Sequence[Any]) -> ColumnElement[int]:
    """How many of `cuts` (sorted) are at or before `column`: which of the spans between
    them a row falls in, so that one read serves many windows. A binary search of CASEs,
    about log2(len(cuts)) comparisons a row, each exact in the column's own type (epoch
    seconds from julianday are off by microseconds)."""

    def search(low: int, high: int) -> ColumnElement[int]:
        if low == high:
            return literal_column(str(low))
        middle = (low + high) // 2
        return case((column < cuts[middle], search(low, middle)),
                    else_=search(middle + 1, high))

    return search(0, len(cuts))
