"""Compliance reads: where every (asset, standard) stands, a page at a time, with the
seconds it spent in each state over a window of UTC days. No HTTP here.

The seconds are summed by the database over the page's pairs and the window's days only
(`ix_compliance_days_sums` covers (site, asset, standard, day) and the seconds, so each
pair is one index range): an answer reads at most `limit` x window days index entries,
however many pairs and years the store holds.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from api.errors import BadCursor, Invalid
from api.service import compliance_query
from api.store import ComplianceDay
from common.vocabulary import COMPLIANCE_STATES

DEFAULT_DAYS = 30
"""The window when neither `from` nor `to` is given: the last 30 UTC days, today included."""
MAX_DAYS = 366
"""The longest window one answer sums: longer spans are the reports' business."""

Pair = tuple[str, str, str]
"""(site_id, asset_id, standard_id)"""


class BadWindow(Invalid):
    """`from` after `to`, or a window longer than MAX_DAYS."""


@dataclass(frozen=True, slots=True)
class Window:
    """UTC days, both ends included."""

    first: date
    last: date

    @classmethod
    def of(cls, first: date | None, last: date | None, today: date) -> Window:
        """The window a request names; a missing end is DEFAULT_DAYS from the other."""
        span = timedelta(days=DEFAULT_DAYS - 1)
        try:
            if last is None:
                last = today if first is None else first + span
            if first is None:
                first = last - span
        except OverflowError:
            raise BadWindow(f"the window reaches past the calendar ({first or last})") from None
        if first > last:
            raise BadWindow(f"from ({first}) is after to ({last})")
        if (last - first).days + 1 > MAX_DAYS:
            raise BadWindow(f"the window {first}..{last} is over {MAX_DAYS} days")
        return cls(first, last)


class PairState(NamedTuple):
    """A `compliance` row, in its columns' order."""

    site_id: str
    asset_id: str
    standard_id: str
    standard_version: int
    state: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CompliancePage:
    rows: list[tuple[PairState, dict[str, float]]]
    """Each pair and its seconds per state in the window (0.0 where none)."""
    next_cursor: str | None


def compliance_page(session: Session, *, window: Window, limit: int, cursor: str | None,
                    **filters: Any) -> CompliancePage:
    """One page of pairs in (site, asset, standard) order with their seconds in `window`,
    in one statement. `filters` are `compliance_query`'s.

    Each pair's sums read one range of the covering index: a LATERAL subquery on
    PostgreSQL, a subquery per state on SQLite. Either is a third of the time of joining
    the days and grouping them again (SQLite sorts the join to group it)."""
    after = decode_pair(cursor) if cursor else None
    page = compliance_query(**filters, after=after).limit(limit + 1).subquery("page")
    day = ComplianceDay
    in_window = (day.site_id == page.c.site_id, day.asset_id == page.c.asset_id,
                 day.standard_id == page.c.standard_id,
                 day.day >= window.first.isoformat(), day.day <= window.last.isoformat())
    columns = [page.c[name] for name in PairState._fields]  # plain rows, no ORM objects
    if session.get_bind().dialect.name == "postgresql":  # one index scan per pair
        totals = select(*(func.sum(getattr(day, name)).label(name)
                          for name in COMPLIANCE_STATES)).where(*in_window).lateral("totals")
        query = select(*columns, *totals.c).select_from(page).outerjoin(totals, true())
    else:  # no LATERAL in SQLite
        query = select(*columns, *(
            select(func.sum(getattr(day, name))).where(*in_window).scalar_subquery()
            for name in COMPLIANCE_STATES))
    query = query.order_by(page.c.site_id, page.c.asset_id, page.c.standard_id)
    width = len(columns)
    rows = [(PairState(*row[:width]), {
        name: float(total or 0.0)
        for name, total in zip(COMPLIANCE_STATES, row[width:], strict=True)})
        for row in session.execute(query)]
    next_cursor = encode_pair(_pair(rows[limit - 1][0])) if len(rows) > limit else None
    return CompliancePage(rows[:limit], next_cursor)


def _pair(row: PairState) -> Pair:
    return row.site_id, row.asset_id, row.standard_id


def encode_pair(pair: Pair) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(pair)).encode()).decode().rstrip("=")


def decode_pair(cursor: str) -> Pair:
    try:
        pair = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadCursor("cursor is not one this API gave out") from None
    if not (isinstance(pair, list) and len(pair) == 3 and all(isinstance(p, str) for p in pair)):
        raise BadCursor("cursor is not one this API gave out")
    return pair[0], pair[1], pair[2]
