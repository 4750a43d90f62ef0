"""The stock figures of windows (docs/reports.md): every NC as it stood at a window's
`end`, open, overdue, and its age. No HTTP here.

An NC detected before an end and unchanged since shortly before it stands at the end as
it is now; one changed since, its history tells. So only the NCs open now and those
whose life spans an end (detected before it, changed after it less QUIET_AFTER) count,
and one scan of the NCs finds them for every end at once (a month report has 14
distinct ends), with one read of history for those changed around each end.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import and_, bindparam, func, literal_column, or_, select, union_all
from sqlalchemy.orm import Session

from api.nc_facts import STATE_CODE
from api.reports.figures import QUIET_AFTER, Key, NcFigures, scope
from api.reports.sql import found_at, integers, joined, nc_key, segment, state_code
from api.store import HistoryEntry, Nonconformance, micros
from common.vocabulary import OPEN_STATES, UNRECTIFIED

OPEN_CODES = [STATE_CODE[s] for s in OPEN_STATES]
LATE_CODES = [STATE_CODE[s] for s in UNRECTIFIED]
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
    dialect = session.get_bind().dialect.name
    # ends[born:] are after the NC's detection; from ends[quiet] on it was unchanged
    born, quiet = segment(n.detected_at, ends), segment(n.updated_at, sinces)
    # its lateness at each end as an integer, compared in the database: no time read
    # into Python (parsing them was a fifth of this read on SQLite): due before
    # ends[due:] (a NULL due compares false everywhere: past the last end, never late).
    # Its age from its detection in microseconds (exact), in numpy
    rows = (select(*keys, n.pk.label("pk"),
                   func.coalesce(n.facts % 8, state_code(n.state)).label("state"),
                   n.detected_us.label("detected"), segment(n.due_at, ends).label("due"),
                   born.label("born"), quiet.label("quiet"))
            .where(n.detected_at < ends[-1], *scope(sites),
                   or_(n.state.in_(OPEN_STATES),
                       and_(n.updated_at >= sinces[0], born < quiet)))
            .subquery("stock"))
    grouped = [rows.c[key.name] for key in keys]
    columns = ("pk", "state", "detected", "due", "born", "quiet")
    found = {tuple(row[:len(keys)]): [integers(text) for text in row[len(keys):]]
             for row in session.execute(select(*grouped, *(joined(dialect, rows.c[name])
                                                           for name in columns))
                                        .group_by(*grouped))}
    if not found:
        return {end: {} for end in ends}
    # counted in numpy, an end at a time (a month report: 14 ends, ~20,000 NCs)
    pk, now, detected, due, first, last = (np.concatenate([values[i] for values
                                                           in found.values()])
                                           for i in range(len(columns)))
    names, size = list(found), len(found)
    group = np.repeat(np.arange(size), [len(values[0]) for values in found.values()])
    # the NCs whose state at each end their history tells: detected before it, changed
    # after it less QUIET_AFTER
    around = [np.flatnonzero((first <= i) & (i < last)) for i in range(len(ends))]
    states = _states(session, ends, {i: pk[at].tolist() for i, at in enumerate(around)
                                     if len(at)})
    # detected at or after cuts[:aged] (AGES before each end)
    cuts = sorted({end - within for end in ends for within, _ in AGES})
    ages = [[cuts.index(end - within) for within, _ in AGES] for end in ends]
    aged = np.searchsorted(np.array([micros(cut) for cut in cuts], dtype=np.int64),
                           detected, side="right")
    answer: dict[datetime, dict[Key, NcFigures]] = {}
    for i, end in enumerate(ends):
        state = now.copy()
        state[around[i]] = _at(states, i, pk[around[i]])
        held = (first <= i) & np.isin(state, OPEN_CODES)
        late = held & np.isin(state, LATE_CODES) & (i >= due)
        # the backlog bucket: 0 if detected after the first AGES cut, 1 if the second...
        bucket = sum((aged <= at).astype(np.intp) for at in ages[i])
        count = np.bincount(group[held], minlength=size)
        overdue = np.bincount(group[late], minlength=size)
        backlog = np.bincount(group[held] * 4 + bucket[held],
                              minlength=4 * size).reshape(size, 4)
        answer[end] = {names[g]: _figures(int(count[g]), int(overdue[g]),
                                         backlog[g].tolist())
                       for g in np.flatnonzero(count).tolist()}
    return answer


def _states(session: Session, ends: list[datetime], changed: dict[int, list[int]]
            ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The state code of each NC `changed` around an end at that end (its last history
    entry before it): by end's index, their pks (sorted) and codes; one statement for
    every end, a row per end, each column joined into a text (sql.joined: not a row per
    NC)."""
    h = HistoryEntry
    dialect = session.get_bind().dialect.name
    reads = []
    for i, pks in sorted(changed.items()):
        last = (select(h.nc_pk.label("pk"),
                       (func.max(h.id * 8 + state_code(h.to_state)) % 8).label("code"))
                .where(h.nc_pk.in_(bindparam(f"changed{i}", sorted(pks), expanding=True,
                                             literal_execute=True)), h.at < ends[i])
                .group_by(h.nc_pk).subquery(f"at{i}"))
        reads.append(select(literal_column(str(i)), joined(dialect, last.c.pk),
                            joined(dialect, last.c.code)))
    answer = {}
    for i, pks, codes in session.execute(union_all(*reads)) if reads else ():
        pks, codes = integers(pks), integers(codes)
        order = np.argsort(pks)
        answer[int(i)] = pks[order], codes[order]
    return answer


def _at(states: dict[int, tuple[np.ndarray, np.ndarray]], i: int, pks: np.ndarray
        ) -> np.ndarray:
    """The codes of `pks` at end `i` from `_states` (7, none, for an NC without history
    before it, which only a clock gone wrong makes)."""
    known, codes = states.get(i, (np.empty(0, dtype=np.int64),) * 2)
    at, found = found_at(known, pks)
    answer = np.full(len(pks), 7, dtype=np.int64)
    answer[found] = codes[at[found]]
    return answer


def _figures(open_at_end: int, overdue: int, backlog: list[int]) -> NcFigures:
    """A group's stock at an end: its open NCs, overdue ones, and their number by age
    (AGES' buckets, then 30d+)."""
    figures = NcFigures(open_at_end=open_at_end, overdue=overdue,
                        open_over_24h=open_at_end - backlog[0])
    figures.backlog = dict(zip([name for _, name in AGES] + ["30d+"], backlog, strict=True))
    return figures


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
