"""The stock figures of windows (docs/reports.md): every NC as it stood at a window's
`end`, open, overdue, and its age. No HTTP here.

An NC detected before an end and unchanged since shortly before it stands at the end as
it is now; one changed since, its history tells. So only the NCs open now and those
whose life spans an end (detected before it, changed after it less QUIET_AFTER) count,
and one scan of the NCs finds them for every end at once (a month report has 14
distinct ends), with one read of history for those changed around each end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, func, literal_column, or_, select, union_all
from sqlalchemy.orm import Session

from api.reports.figures import QUIET_AFTER, Key, NcFigures, scope
from api.reports.sql import STATE_CODE, nc_key, segment, state_code
from api.store import HistoryEntry, Nonconformance
from common.vocabulary import OPEN_STATES, UNRECTIFIED

OPEN = frozenset(STATE_CODE[s] for s in OPEN_STATES)
LATE = frozenset(STATE_CODE[s] for s in UNRECTIFIED)
AGES = ((timedelta(days=1), "0-1d"), (timedelta(days=7), "1-7d"),
        (timedelta(days=30), "7-30d"))
"""Backlog buckets: an NC open at `end` detected less than this before it; else 30d+."""


def stock(session: Session, ends: Collection[datetime], by: str | None,
          sites: Collection[str] | None) -> dict[datetime, dict[Key, NcFigures]]:
    """Every group's NCs as they stood at each of `ends`: open, overdue, and their age."""
    ends = sorted(set(ends))
    sinces = [end - QUIET_AFTER for end in ends]
    n = Nonconformance
    keys = nc_key(by)
    # ends[born:] are after the NC's detection; from ends[quiet] on it was unchanged
    born, quiet = segment(n.detected_at, ends), segment(n.updated_at, sinces)
    # its age and lateness at each end as integers, compared in the database: no time
    # read into Python (parsing them was a fifth of this read on SQLite). It was
    # detected at or after cuts[:aged] (AGES before each end), and due before ends[due:]
    # (a NULL due compares false everywhere: past the last end, never late)
    cuts = sorted({end - within for end in ends for within, _ in AGES})
    ages = [[cuts.index(end - within) for within, _ in AGES] for end in ends]
    rows = session.execute(
        select(n.pk, state_code(n.state), segment(n.detected_at, cuts),
               segment(n.due_at, ends), born, quiet, *keys)
        .where(n.detected_at < ends[-1], *scope(sites),
               or_(n.state.in_(OPEN_STATES),
                   and_(n.updated_at >= sinces[0], born < quiet)))).all()
    changed: dict[int, list[int]] = defaultdict(list)  # end's index: NCs changed around it
    for row in rows:
        for i in range(row[4], row[5]):
            changed[i].append(row[0])
    states = _states(session, ends, changed)
    answer: dict[datetime, dict[Key, NcFigures]] = {end: defaultdict(NcFigures)
                                                     for end in ends}
    for pk, now, aged, due, first, last, *key in rows:
        for i in range(first, len(ends)):
            state = states.get((i, pk)) if i < last else now
            if state in OPEN:
                age = next((name for at, (_, name) in zip(ages[i], AGES, strict=True)
                            if aged > at), "30d+")
                _count(answer[ends[i]][tuple(key)], state in LATE and i >= due, age)
    return {end: dict(groups) for end, groups in answer.items()}


def _states(session: Session, ends: list[datetime], changed: dict[int, list[int]]
            ) -> dict[tuple[int, int], int]:
    """The state code of each NC `changed` around an end at that end (its last history
    entry before it), by (end's index, pk); one statement for every end."""
    h = HistoryEntry
    reads = [select(literal_column(str(i)), h.nc_pk,
                    func.max(h.id * 8 + state_code(h.to_state)) % 8)
             .where(h.nc_pk.in_(bindparam(f"changed{i}", sorted(pks), expanding=True,
                                          literal_execute=True)), h.at < ends[i])
             .group_by(h.nc_pk)
             for i, pks in sorted(changed.items())]
    if not reads:
        return {}
    return {(int(row[0]), row[1]): row[2] for row in session.execute(union_all(*reads))}


def _count(figures: NcFigures, late: bool, age: str) -> None:
    """An NC open at an end into its group's stock: overdue if `late`, of `age`."""
    figures.open_at_end += 1
    if late:
        figures.overdue += 1
    figures.backlog[age] += 1
    if age != "0-1d":
        figures.open_over_24h += 1


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
