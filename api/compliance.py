"""Compliance reads: where every (asset, standard) stands, a page at a time, with the
seconds it spent in each state over a window of UTC days. No HTTP here.

The seconds are summed by the database over the page's pairs and the window's days only
(the primary key of `compliance_days` is (site, asset, standard, day), so each pair is
one index range): an answer reads at most `limit` x window-days rows, however many pairs
and years the store holds.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from api.service import COMPLIANCE_STATES, BadCursor, list_compliance
from api.store import Compliance, ComplianceDay

DEFAULT_DAYS = 30
"""The window when neither `from` nor `to` is given: the last 30 UTC days, today included."""
MAX_DAYS = 366
"""The longest window one answer sums: longer spans are the reports' business."""

Pair = tuple[str, str, str]
"""(site_id, asset_id, standard_id)"""


class BadWindow(ValueError):
    """`from` after `to`, or a window longer than MAX_DAYS."""


@dataclass(frozen=True, slots=True)
class Window:
    """UTC days, both ends included."""

    first: date
    last: date

    @classmethod
    def of(cls, first: date | None, last: date | None, today: date) -> Window:
        """The window a request names; a missing end is DEFAULT_DAYS from the other."""
        if last is None:
            last = today if first is None else first + timedelta(days=DEFAULT_DAYS - 1)
        if first is None:
            first = last - timedelta(days=DEFAULT_DAYS - 1)
        if first > last:
            raise BadWindow(f"from ({first}) is after to ({last})")
        if (last - first).days + 1 > MAX_DAYS:
            raise BadWindow(f"the window {first}..{last} is over {MAX_DAYS} days")
        return cls(first, last)


@dataclass(frozen=True, slots=True)
class CompliancePage:
    rows: list[Compliance]
    seconds: dict[Pair, dict[str, float]]
    next_cursor: str | None


def compliance_page(session: Session, *, window: Window, limit: int, cursor: str | None,
                    site_id: str | None = None, asset_id: str | None = None,
                    standard_id: str | None = None, state: str | None = None
                    ) -> CompliancePage:
    """One page of pairs in (site, asset, standard) order and their seconds in `window`."""
    after = decode_pair(cursor) if cursor else None
    rows = list_compliance(session, site_id=site_id, asset_id=asset_id,
                           standard_id=standard_id, state=state, limit=limit + 1,
                           after=after)
    next_cursor = encode_pair(_pair(rows[limit - 1])) if len(rows) > limit else None
    rows = rows[:limit]
    return CompliancePage(rows, seconds_in(session, [_pair(row) for row in rows], window),
                          next_cursor)


def seconds_in(session: Session, pairs: list[Pair], window: Window
               ) -> dict[Pair, dict[str, float]]:
    """Seconds per state of each pair over the window's days (0.0 where none)."""
    totals = {pair: dict.fromkeys(COMPLIANCE_STATES, 0.0) for pair in pairs}
    if not pairs:
        return totals
    day = ComplianceDay
    query = (select(day.site_id, day.asset_id, day.standard_id,
                    *(func.sum(getattr(day, name)) for name in COMPLIANCE_STATES))
             .where(tuple_(day.site_id, day.asset_id, day.standard_id).in_(pairs),
                    day.day >= window.first.isoformat(), day.day <= window.last.isoformat())
             .group_by(day.site_id, day.asset_id, day.standard_id))
    for site, asset, standard, *sums in session.execute(query):
        totals[(site, asset, standard)] = {
            name: float(total or 0.0) for name, total in zip(COMPLIANCE_STATES, sums,
                                                             strict=True)}
    return totals


def _pair(row: Compliance) -> Pair:
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
