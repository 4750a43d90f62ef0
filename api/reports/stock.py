"""The stock figures of a window (docs/reports.md): every NC as it stood at the window's
`end`, open, overdue, and its age. The NCs open now, and those changed since shortly
before `end`, whose state at `end` their history tells; any other NC has not changed
since and stands as it is now. No HTTP here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from api.reports.figures import QUIET_AFTER, Key, NcFigures
from api.reports.sql import STATE_CODE, nc_key, state_code
from api.store import HistoryEntry, Nonconformance
from common.vocabulary import OPEN_STATES, UNRECTIFIED


def stock(session: Session, ends: Collection[datetime], by: str | None,
          sites: Collection[str] | None) -> dict[datetime, dict[Key, NcFigures]]:
    """Every group's NCs as they stood at each of `ends` (the windows of a month report
    share their ends): open, overdue, and their age."""
    answer = {}
    for end in sorted(set(ends)):
        groups: dict[Key, NcFigures] = defaultdict(NcFigures)
        _stock(session, end, by, sites, groups)
        answer[end] = dict(groups)
    return answer


def add_stock(groups: dict[Key, NcFigures], whole: NcFigures,
              stocks: dict[Key, NcFigures], by: str | None) -> None:
    """A window's stock (`stock`) into its groups' figures and the whole's."""
    for key, found in stocks.items():
        figures = groups.setdefault(key, NcFigures())
        for target in (figures,) if by is None else (figures, whole):
            target.open_at_end += found.open_at_end
            target.overdue += found.overdue
            target.open_over_24h += found.open_over_24h
            for age, count in found.backlog.items():
                target.backlog[age] += count


def _stock(session: Session, end: datetime, by: str | None,
           sites: Collection[str] | None, groups: dict[Key, NcFigures]) -> None:
    """Every NC as it stood at `end`: open, overdue, and its age."""
    n, h = Nonconformance, HistoryEntry
    keys = nc_key(by)
    scope = [] if sites is None else [n.site_id.in_(sorted(sites))]
    # Not open now and unchanged since well before `end`: not open at `end` either.
    then = (select(func.max(h.id * 8 + state_code(h.to_state)))
            .where(h.nc_pk == n.pk, h.at < end).scalar_subquery())
    now = state_code(n.state)
    state = case((n.updated_at >= end - QUIET_AFTER, then % 8), else_=now)
    rows = (select(*keys, state.label("state"), n.detected_at, n.due_at)
            .where(n.detected_at < end, *scope,
                   or_(n.state.in_(OPEN_STATES), n.updated_at >= end - QUIET_AFTER))
            .subquery())
    is_open = rows.c.state.in_([STATE_CODE[s] for s in OPEN_STATES])
    late = and_(rows.c.state.in_([STATE_CODE[s] for s in UNRECTIFIED]), rows.c.due_at < end)
    ages = [(end - timedelta(days=1), "0-1d"), (end - timedelta(days=7), "1-7d"),
            (end - timedelta(days=30), "7-30d")]
    bucket = case(*((rows.c.detected_at >= since, name) for since, name in ages),
                  else_="30d+")
    key_columns = [rows.c[c.name] for c in keys]
    query = (select(*key_columns, bucket.label("age"), func.count().label("open"),
                    func.sum(case((late, 1), else_=0)).label("overdue"))
             .where(is_open).group_by(*key_columns, bucket))
    for row in session.execute(query):
        key = tuple(row[:len(keys)])
        figures = groups[key]
        figures.open_at_end += row.open
        figures.overdue += int(row.overdue or 0)
        figures.backlog[row.age] += row.open
        if row.age != "0-1d":
            figures.open_over_24h += row.open
