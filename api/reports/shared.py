"""The NC flow figures of many windows from shared reads (a month report has 26: each
month, the period before each, the whole window and the period before it). No HTTP here.

The NCs detected in any of the windows are read once, each with which of the spans
between their `end - QUIET_AFTER` its last change falls in (sql.segment: exact
comparisons), and told apart by window in numpy (which span between the windows' bounds
its detection falls in, from its time in microseconds); the history of the NCs changed
since shortly before a window's end is read once per end. The figures are those
api.reports.figures gives each window alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, cast, literal_column, select, union_all
from sqlalchemy.orm import Session

from api.reports.figures import (
    COLUMNS,
    QUIET_AFTER,
    Key,
    NcFigures,
    cohort,
    history_facts,
    kept_facts,
    scope,
    whole,
)
from api.reports.period import Window
from api.reports.sql import (
    KEY_FIELDS,
    NC_SEPARATOR,
    Pair,
    found_at,
    integers,
    joined,
    nc_key,
    pair_of,
    pair_text,
    segment,
)
from api.store import Nonconformance, micros

FLAGS_ROOM = 1 << 14
"""An NC's flags (figures.FLAG and the state code) are below this: the read packs its pk
and spans above them, one joined text fewer for each (each costs SQLite as much as the
expressions behind all of them)."""
Span = tuple[int, int, int]
"""A window as indexes into `shared_figures`' starts (its start, its end) and sinces."""


def shared_figures(session: Session, windows: Sequence[Window], by: str | None,
                   sites: Collection[str] | None
                   ) -> list[tuple[dict[Key, NcFigures], NcFigures]]:
    """For each of `windows`, what api.reports.figures.nc_figures gives it alone: every
    group's flow and load figures and the whole's, from one read of the NCs detected in
    any of them and one read of history per end."""
    dialect = session.get_bind().dialect.name
    width = len(KEY_FIELDS[by])
    starts = sorted({w.start for w in windows} | {w.end for w in windows})
    sinces = sorted({w.end - QUIET_AFTER for w in windows})
    pairs: dict[str, int] = {}  # a pair's text (sql.pair_text): its index
    columns: dict[Key, dict[str, np.ndarray]] = {}
    bounds = np.array([micros(start) for start in starts], dtype=np.int64)
    for row in session.execute(_read(dialect, by, sites, starts, sinces)):
        packed, *values = (integers(text) for text in row[width:-1])
        values = dict(zip(COLUMNS[1:], values, strict=True))
        values["flags"], packed = packed % FLAGS_ROOM, packed // FLAGS_ROOM
        values["updated_in"], values["pk"] = packed % (len(sinces) + 1), \
            packed // (len(sinces) + 1)
        # which span its detection falls in, from its time in microseconds: exact
        values["detected_in"] = np.searchsorted(bounds, values["detected"], side="right")
        texts = [text for text in (row[-1] or "").split(NC_SEPARATOR) if text]
        for text in dict.fromkeys(texts):  # a thousand distinct, not 90,000
            pairs.setdefault(text, len(pairs))
        values["pair"] = np.fromiter(map(pairs.__getitem__, texts), dtype=np.int64,
                                     count=len(texts))
        if len(values["pair"]):  # by span of detection: a window's NCs are a slice
            order = np.argsort(values["detected_in"], kind="stable")
            columns[tuple(row[:width])] = {name: value[order]
                                           for name, value in values.items()}
    spans = [(starts.index(w.start), starts.index(w.end), sinces.index(w.end - QUIET_AFTER))
             for w in windows]
    recent = _recent(session, dialect, windows, columns, spans)
    names = [pair_of(text) for text in pairs]  # a thousand texts, not one per NC
    return [_window(columns, names, span, facts, by)
            for span, facts in zip(spans, recent, strict=True)]


def _read(dialect: str, by: str | None, sites: Collection[str] | None,
          starts: Sequence[datetime], sinces: Sequence[datetime]) -> object:
    """One row per group: its key, and its NCs detected between the first and last of
    `starts`, each column joined into one text: their flags packed with their pk and
    span of last change (`packed`), the other COLUMNS (the kept facts: those of NCs changed since
    shortly before a window's end are `_recent`'s), and their pairs. Not a row per pair:
    sorting the NCs by pair took as long as the rest of the read (SQLite)."""
    n = Nonconformance
    keys = nc_key(by)
    rows = (select(*keys, *kept_facts(), pair_text(dialect).label("pair"),
                   cast(n.pk, BigInteger).label("pk"),
                   segment(n.updated_at, sinces).label("updated_in"))
            .where(n.detected_at >= starts[0], n.detected_at < starts[-1], *scope(sites))
            .subquery("kept"))
    c = rows.c
    packed = c.flags + FLAGS_ROOM * (c.updated_in + (len(sinces) + 1) * c.pk)
    grouped = [c[k.name] for k in keys]
    return select(*grouped, joined(dialect, packed),
                  *(joined(dialect, c[name]) for name in COLUMNS[1:]),
                  joined(dialect, c.pair, NC_SEPARATOR)).group_by(*grouped)


def _changed(values: dict[str, np.ndarray], span: Span) -> tuple[slice, np.ndarray]:
    """Which of a group's NCs (sorted by their span of detection) a window's cohort
    holds, and which of those changed since shortly before its end: a slice, not a
    mask over every NC of the 25 windows (a month report's 25 masks of 90,000)."""
    start, end, since = span
    detected = values["detected_in"]
    inside = slice(int(np.searchsorted(detected, start, side="right")),
                   int(np.searchsorted(detected, end, side="right")))
    return inside, values["updated_in"][inside] > since


def _recent(session: Session, dialect: str, windows: Sequence[Window],
            columns: dict[Key, dict[str, np.ndarray]], spans: Sequence[Span]
            ) -> list[dict[str, np.ndarray]]:
    """For each window, COLUMNS of its cohort's NCs changed since shortly before its end,
    from their history up to the end, by pk (sorted); one statement for all windows, and
    one read per end (a month and the period before the next share theirs)."""
    ends = sorted({w.end for w in windows})
    changes: dict[datetime, set[int]] = {end: set() for end in ends}
    for window, span in zip(windows, spans, strict=True):
        for values in columns.values():
            inside, changed = _changed(values, span)
            changes[window.end].update(values["pk"][inside][changed].tolist())
    parameters: dict[str, Any] = {}
    for i, end in enumerate(ends):
        parameters |= {f"history{i}_pks": sorted(changes[end]), f"history{i}_end": end}
    answer: dict[datetime, dict[str, np.ndarray]] = {}
    for row in session.execute(_history(dialect, len(ends)), parameters):
        values = [integers(text) for text in row[1:]]
        order = np.argsort(values[0])
        answer[ends[row[0]]] = {name: value[order] for name, value
                                in zip(("pk", *COLUMNS), values, strict=True)}
    return [answer[w.end] for w in windows]


@cache
def _history(dialect: str, ends: int) -> Any:
    """`_recent`'s statement for so many ends, built once: a row per end, its NCs' pks and
    COLUMNS joined into texts (a month report's took 0.04 s to build, as long as the
    database takes to read two ends)."""
    n = Nonconformance
    reads = []
    for i in range(ends):
        history, facts = history_facts(dialect, f"history{i}")
        rows = select(n.pk.label("pk"), *facts).select_from(history).subquery(f"at{i}")
        reads.append(select(literal_column(str(i)).label("end"),
                            *(joined(dialect, rows.c[name]) for name in ("pk", *COLUMNS))))
    return union_all(*reads)


def _window(columns: dict[Key, dict[str, np.ndarray]], names: list[Pair], span: Span,
            recent: dict[str, np.ndarray], by: str | None
            ) -> tuple[dict[Key, NcFigures], NcFigures]:
    """One window's groups and whole from the groups' columns: the kept facts of the NCs
    unchanged since shortly before its end, the `recent` ones of the others (an NC
    without history before the end, which only a clock gone wrong makes, counts in its
    pair alone, as the history read has no row of it)."""
    groups: dict[Key, NcFigures] = defaultdict(NcFigures)
    if by is None:
        groups[()] = NcFigures()  # the whole, even without NCs
    cohorts: list[list[np.ndarray]] = []
    for key, values in columns.items():
        inside, changed = _changed(values, span)
        if inside.start == inside.stop:
            continue
        figures = groups[key]
        counts = np.bincount(values["pair"][inside], minlength=len(names))
        figures.pairs = {names[i]: int(counts[i]) for i in np.flatnonzero(counts).tolist()}
        at, found = found_at(recent["pk"], values["pk"][inside][changed])
        at, kept = at[found], ~changed
        cohorts.append([np.concatenate([values[name][inside][kept], recent[name][at]])
                        for name in COLUMNS])
        cohort(figures, *cohorts[-1])
    return dict(groups), whole(groups, cohorts, by)
