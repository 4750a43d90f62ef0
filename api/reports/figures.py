"""The NC flow figures of windows (docs/reports.md defines each). No HTTP here.

Flow figures cover the cohort of NCs detected in [start, end) and what had happened to
them before `end`: each NC's facts (first acknowledgement, last rectification, state at
`end`, first verification's result, reopenings, closing by sensor, chattering) come from
the columns the lifecycle keeps (api/nc_facts.py) for an NC unchanged since shortly
before `end`, and from a GROUP BY over its history rows for the few changed since. The
database hands over each group's NCs as a few columns of integers, each joined into one
text (flags, detection time, durations in microseconds); numpy counts, sums and ranks
them. Reading a text of integers is some fifty times quicker than as many rows, and
neither database ranks 90th percentiles as fast (SQLite has no percentile aggregate).
The NCs of many windows (a month report has 26) are read once and told apart here.
The stock figures are api.reports.stock's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import (
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from api.nc_facts import ACKNOWLEDGING, SENSOR_ROLES, VERIFYING
from api.reports.period import Window
from api.reports.sql import (
    KEY_FIELDS,
    STATE_CODE,
    epoch,
    integers,
    joined,
    micro,
    nc_key,
    seconds,
    segment,
    state_code,
)
from api.store import HistoryEntry, Nonconformance

Key = tuple[Any, ...]

TOP = 10
"""Pairs in `alarm_load.top10_share` and in each Pareto list."""
FLOOD = 10
"""NCs raised in one 10-minute period that make it a flood (ISA-18.2, EEMUA 191)."""
QUIET_AFTER = timedelta(days=1)
"""How long after its last change `updated_at` is sure to be: events may be dated ahead
of the server's clock (`server.max_clock_skew`, minutes), never a day."""
DURATIONS = ("mtta", "mttr", "mttc")
SUMS = ("raised", "closed", "cancelled", "recurring", "rectified_due", "on_time",
        "verified", "first_pass", "reopened", "reopen_base", "closed_by_sensor",
        "chattering", "ack_n", "ack_sum", "rect_n", "rect_sum", "close_n", "close_sum")


@dataclass
class NcFigures:
    """One group's NC figures before rates are taken: counts, sums, percentiles."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUMS, 0.0))
    p90: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(DURATIONS))
    open_at_end: int = 0
    overdue: int = 0
    backlog: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("0-1d", "1-7d", "7-30d", "30d+"), 0))
    open_over_24h: int = 0
    peak_10m: int = 0
    floods: int = 0
    pairs: dict[tuple[str, str, str | None], int] = field(default_factory=dict)
    """NCs raised per (site, asset, standard): the load's top 10 and the Pareto."""


def nc_figures(session: Session, windows: Sequence[Window], by: str | None,
               sites: Collection[str] | None) -> list[tuple[dict[Key, NcFigures], NcFigures]]:
    """For each of `windows`, every group's flow and load figures, keyed by the grouping's
    key values, and the whole window's (its groups' columns together). The NCs detected
    in any of them are read once, and told apart by window here: a month report's 26
    windows cost one read of two years, not 26 (the stock is `stock`'s)."""
    dialect = session.get_bind().dialect.name
    width = len(KEY_FIELDS[by])
    starts = sorted({w.start for w in windows} | {w.end for w in windows})
    sinces = sorted({w.end - QUIET_AFTER for w in windows})
    pairs: dict[tuple[str, str, str | None], int] = {}
    parts: dict[Key, list[list[np.ndarray]]] = defaultdict(list)
    for row in session.execute(_read(dialect, by, sites, starts, sinces)):
        values = [integers(text) for text in row[width + 3:]]
        pair = pairs.setdefault(tuple(row[width:width + 3]), len(pairs))
        parts[tuple(row[:width])].append([np.full(len(values[0]), pair), *values])
    columns = {key: dict(zip(("pair", *READ), map(np.concatenate, zip(*rows, strict=True)),
                             strict=True))
               for key, rows in parts.items()}
    spans = [(starts.index(w.start), starts.index(w.end), sinces.index(w.end - QUIET_AFTER))
             for w in windows]
    recent = _recent(session, dialect, windows, columns, spans)
    names = list(pairs)
    return [_window(columns, names, span, facts, by)
            for span, facts in zip(spans, recent, strict=True)]


def _scope(sites: Collection[str] | None) -> list[Any]:
    return [] if sites is None else [Nonconformance.site_id.in_(sorted(sites))]


COLUMNS = ("flags", "detected", "ack", "rect", "close")
"""Each NC's facts as the database gives them, integers: its flags (FLAG); when it was
detected (microseconds since 1970); the microseconds from detection to its first
acknowledgement, its last rectification and its closing (0 where the flags say there
is none: FLAG acknowledged, rectified, and a closed state with ever_closed)."""
READ = (*COLUMNS, "pk", "detected_in", "updated_in")
"""`COLUMNS` as kept on the NC, its pk, and which of the spans between the windows'
bounds its detection falls in, and which between their `end - QUIET_AFTER` its last
change (sql.segment: exact comparisons)."""
FLAG = {"closed_by_sensor": 8, "passed_first": 16, "failed_first": 32, "chattered": 64,
        "recurring": 128, "ever_closed": 256, "reopened": 512, "on_time": 1024,
        "rectified_due": 2048, "rectified": 4096, "acknowledged": 8192}
"""The bits of an NC's flags; the low three are the code of its state at `end`
(api.reports.sql.STATE_CODE)."""


def _facts(dialect: str, ack_at: Any, rect_at: Any, close_at: Any, state: Any,
           by_sensor: Any, first_verification: Any, reopens: Any, chatter: Any
           ) -> list[Any]:
    """COLUMNS of an NC from its facts at some `end`."""
    n = Nonconformance
    bits = {"closed_by_sensor": by_sensor,
            "passed_first": first_verification == 0,
            "failed_first": first_verification == 1,
            "chattered": or_(chatter, n.condition == "chattering"),
            "recurring": n.recurring.is_(True),
            "ever_closed": close_at.is_not(None), "reopened": reopens > 0,
            "on_time": rect_at <= n.due_at,
            "rectified_due": and_(rect_at.is_not(None), n.due_at.is_not(None)),
            "rectified": rect_at.is_not(None), "acknowledged": ack_at.is_not(None)}
    flags = sum((case((condition, FLAG[name]), else_=0)
                 for name, condition in bits.items()), state)
    closed = state == STATE_CODE["closed"]

    def since_detection(at: Any) -> Any:
        return func.coalesce(micro(seconds(dialect, at, n.detected_at)), 0)

    return [flags.label("flags"), micro(epoch(dialect, n.detected_at)).label("detected"),
            since_detection(ack_at).label("ack"), since_detection(rect_at).label("rect"),
            case((closed, since_detection(close_at)), else_=0).label("close")]


def _read(dialect: str, by: str | None, sites: Collection[str] | None,
          starts: Sequence[datetime], sinces: Sequence[datetime]) -> Any:
    """One row per group and pair: its key, its pair and READ of its NCs detected between
    the first and last of `starts`, each joined into one text. The facts are those the
    lifecycle keeps (api/nc_facts.py): an NC unchanged since well before a window's end
    knew them then; the others are read from their history (`_recent`). The database
    sorts narrow rows of integers and joins them; numpy reads them (sql.integers), and
    counts, sums and ranks them (the module's docstring says why)."""
    n = Nonconformance
    keys = nc_key(by)
    columns = [*_facts(
        dialect, n.acknowledged_at, n.rectified_at, n.closed_at, state_code(n.state),
        n.closed_by_sensor.is_(True),
        case((n.first_verification == "pass", 0), (n.first_verification == "fail", 1)),
        n.reopen_count, n.chattered.is_(True)),
        n.pk.label("pk"), segment(n.detected_at, starts).label("detected_in"),
        segment(n.updated_at, sinces).label("updated_in")]
    rows = (select(*keys, n.site_id, n.asset_id, n.standard_id, *columns)
            .where(n.detected_at >= starts[0], n.detected_at < starts[-1], *_scope(sites))
            .subquery("kept"))
    grouped = [rows.c[c.name] for c in keys] + [rows.c.site_id, rows.c.asset_id,
                                                  rows.c.standard_id]
    return select(*grouped, *(joined(dialect, rows.c[name]) for name in READ)
                  ).group_by(*grouped)


Span = tuple[int, int, int]
"""A window as indexes into `nc_figures`' starts (its start, its end) and sinces."""


def _changed(values: dict[str, np.ndarray], span: Span) -> tuple[np.ndarray, np.ndarray]:
    """Which of a group's NCs a window's cohort holds, and which of them changed since
    shortly before its end."""
    start, end, since = span
    inside = (values["detected_in"] > start) & (values["detected_in"] <= end)
    return inside, inside & (values["updated_in"] > since)


def _recent(session: Session, dialect: str, windows: Sequence[Window],
            columns: dict[Key, dict[str, np.ndarray]], spans: Sequence[Span]
            ) -> list[dict[str, np.ndarray]]:
    """For each window, COLUMNS of its cohort's NCs changed since shortly before its end,
    from their history up to the end, by pk (sorted); one statement for all windows, and
    one read per end (a month and the period before the next share theirs). The pks are
    listed: given the list, PostgreSQL's planner reads their history by index
    (it misjudges how few they are)."""
    n, h = Nonconformance, HistoryEntry
    chattering = and_(h.action.in_(("occurrence", "cleared")),
                      cast(h.changes, Text).like('%"chattering"%'))
    closing = and_(h.to_state == "closed", h.from_state != "closed")
    ends = sorted({w.end for w in windows})
    changes: dict[datetime, set[int]] = {end: set() for end in ends}
    for window, span in zip(windows, spans, strict=True):  # facts at an end: one read
        for values in columns.values():
            changes[window.end].update(values["pk"][_changed(values, span)[1]].tolist())
    reads = []
    for i, end in enumerate(ends):
        changed = sorted(changes[end])
        if not changed:
            continue
        history = (
            select(
                h.nc_pk.label("nc_pk"),
                func.min(case((h.action.in_(ACKNOWLEDGING), h.at))).label("ack_at"),
                func.max(case((h.action == "rectify", h.at))).label("rect_at"),
                func.max(case((closing, h.at))).label("close_at"),
                func.max(h.id * 8 + state_code(h.to_state)).label("last"),
                func.max(case((closing, h.id * 2 + case((h.role.in_(SENSOR_ROLES), 1),
                                                         else_=0)))).label("closing"),
                func.min(case((h.action.in_(VERIFYING),
                               h.id * 2 + case((h.to_state == "closed", 0), else_=1))))
                .label("first_verification"),
                func.sum(case((and_(h.to_state == "open",
                                    h.from_state.in_(("pending_verification", "closed"))),
                               1), else_=0)).label("reopens"),
                func.max(case((chattering, 1), else_=0)).label("chatter"))
            .where(h.nc_pk.in_(bindparam(f"changed{i}", changed, expanding=True,
                                         literal_execute=True)),  # no limit on their number
                   h.at < end)
            .group_by(h.nc_pk).subquery(f"history{i}"))
        c = history.c
        reads.append(select(literal_column(str(i)).label("window"), n.pk, *_facts(
            dialect, c.ack_at, c.rect_at, c.close_at, c["last"] % 8, c.closing % 2 == 1,
            c.first_verification % 2, c.reopens, c.chatter == 1))
            .join_from(n, history, c.nc_pk == n.pk))
    found: list[list[tuple[int, ...]]] = [[] for _ in ends]
    if reads:
        for row in session.execute(union_all(*reads)):
            found[row[0]].append(tuple(row[1:]))
    answer = {}
    for end, rows in zip(ends, found, strict=True):
        table = np.array(sorted(rows), dtype=np.int64).reshape(len(rows), 1 + len(COLUMNS))
        answer[end] = dict(zip(("pk", *COLUMNS), table.T, strict=True))
    return [answer[w.end] for w in windows]


def _window(columns: dict[Key, dict[str, np.ndarray]],
            names: list[tuple[str, str, str | None]], span: Span,
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
        if not inside.any():
            continue
        figures = groups[key]
        counts = np.bincount(values["pair"][inside], minlength=len(names))
        figures.pairs = {names[i]: int(counts[i]) for i in np.flatnonzero(counts).tolist()}
        kept = inside & ~changed
        at = _matches(recent["pk"], values["pk"][changed])
        cohort = [np.concatenate([values[name][kept], recent[name][at]]) for name in COLUMNS]
        cohorts.append(cohort)
        _cohort(figures, *cohort)
    if by is None:
        return dict(groups), groups[()]
    total = NcFigures()
    _cohort(total, *(np.concatenate([cohort[i] for cohort in cohorts]
                                    or [np.empty(0, dtype=np.int64)])
                     for i in range(len(COLUMNS))))
    for figures in groups.values():
        for pair, count in figures.pairs.items():
            total.pairs[pair] = total.pairs.get(pair, 0) + count
    return dict(groups), total


def _matches(sorted_pks: np.ndarray, pks: np.ndarray) -> np.ndarray:
    """Where each of `pks` is in `sorted_pks`, those found only."""
    at = np.searchsorted(sorted_pks, pks)
    found = at < len(sorted_pks)
    found[found] = sorted_pks[at[found]] == pks[found]
    return at[found]


def _cohort(figures: NcFigures, flags: np.ndarray, detected: np.ndarray,
            ack: np.ndarray, rect: np.ndarray, close: np.ndarray) -> None:
    """A group's flow and load figures from its COLUMNS."""

    def count(name: str) -> float:
        return float(np.count_nonzero(flags & FLAG[name]))

    state = flags & 7
    closed = state == STATE_CODE["closed"]
    figures.sums = {
        "raised": float(len(flags)),
        "closed": float(np.count_nonzero(closed)),
        "cancelled": float(np.count_nonzero(state == STATE_CODE["cancelled"])),
        "recurring": count("recurring"),
        "rectified_due": count("rectified_due"),
        "on_time": count("on_time"),
        "verified": count("passed_first") + count("failed_first"),
        "first_pass": count("passed_first"),
        "reopened": count("reopened"),
        "reopen_base": float(np.count_nonzero(
            flags & (FLAG["rectified"] | FLAG["ever_closed"] | FLAG["reopened"]))),
        "closed_by_sensor": float(np.count_nonzero(
            closed & ((flags & FLAG["closed_by_sensor"]) != 0))),
        "chattering": count("chattered"),
    }
    present = ((flags & FLAG["acknowledged"]) != 0, (flags & FLAG["rectified"]) != 0,
               closed & ((flags & FLAG["ever_closed"]) != 0))
    for name, short, values, known in zip(DURATIONS, ("ack", "rect", "close"),
                                          (ack, rect, close), present, strict=True):
        values = values[known]
        figures.sums[f"{short}_n"] = float(len(values))
        figures.sums[f"{short}_sum"] = float(values.sum()) / 1e6
        figures.p90[name] = _p90(values / 1e6)
    # the 10-minute periods (UTC) its NCs were raised in; the times are rounded to the
    # millisecond first, as SQLite's julianday arithmetic is off by microseconds
    _, raised = np.unique((detected + 500) // 1000 // 600_000, return_counts=True)
    figures.peak_10m = int(raised.max(initial=0))
    figures.floods = int((raised >= FLOOD).sum())


def _p90(values: np.ndarray) -> float | None:
    """Linear interpolation between the ranks around 0.9 (n - 1), as PostgreSQL's
    percentile_cont(0.9) and numpy's default do."""
    n = len(values)
    if not n:
        return None
    low, fraction = (n - 1) * 9 // 10, (n - 1) * 9 % 10 / 10
    ranked = np.partition(values, (low, min(low + 1, n - 1)))
    below = float(ranked[low])
    return below + fraction * (float(ranked[low + 1]) - below) if fraction else below
