"""The NC flow figures of a window (docs/reports.md defines each). No HTTP here.

Flow figures cover the cohort of NCs detected in [start, end) and what had happened to
them before `end`: each NC's facts (first acknowledgement, last rectification, state at
`end`, first verification's result, reopenings, closing by sensor, chattering) come from
the columns the lifecycle keeps (api/nc_facts.py) for an NC unchanged since shortly
before `end`, and from a GROUP BY over its history rows for the few changed since. The
database hands over each group's NCs as a few columns of integers, each joined into one
text (flags, detection time, durations in microseconds); numpy counts, sums and ranks
them. Reading a text of integers is some fifty times quicker than as many rows, and
neither database ranks 90th percentiles as fast (SQLite has no percentile aggregate).
A month report's many windows share their reads (api.reports.shared); the stock
figures are api.reports.stock's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import (
    Integer,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    join,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from api.nc_facts import ACKNOWLEDGING, FLAG, SENSOR_ROLES, STATE_CODE, VERIFYING
from api.reports.period import Window
from api.reports.sql import (
    KEY_FIELDS,
    integers,
    joined,
    micro,
    nc_key,
    seconds,
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


def nc_figures(session: Session, window: Window, by: str | None,
               sites: Collection[str] | None) -> tuple[dict[Key, NcFigures], NcFigures]:
    """Every group's flow and load figures in `window`, keyed by the grouping's key values,
    and the whole window's (its groups' columns together); the stock is
    api.reports.stock's, and the windows of a month report share their reads
    (api.reports.shared)."""
    dialect = session.get_bind().dialect.name
    width = len(KEY_FIELDS[by])
    groups: dict[Key, NcFigures] = defaultdict(NcFigures)
    if by is None:
        groups[()] = NcFigures()  # the whole, even without NCs
    # the cohort's NCs changed since shortly before `end`, listed first: given the list,
    # PostgreSQL's planner reads their history by index (it misjudges how few they are)
    changed = session.scalars(select(Nonconformance.pk).where(
        *_in_window(window, sites),
        Nonconformance.updated_at >= window.end - QUIET_AFTER)).all()
    cohorts = []
    for row in session.execute(_flow(dialect, window, by, sites),
                               {"history_pks": changed, "history_end": window.end}):
        cohorts.append([integers(text) for text in row[width:]])
        cohort(groups[tuple(row[:width])], *cohorts[-1])
    # a statement of their own: the pairs' texts in the flow read cost PostgreSQL more
    # than this second scan of the window (its reports of one window 0.37 -> 0.43 s)
    keyed, n = nc_key(by), Nonconformance
    for row in session.execute(
            select(*keyed, n.site_id, n.asset_id, n.standard_id, func.count())
            .where(*_in_window(window, sites))
            .group_by(*keyed, n.site_id, n.asset_id, n.standard_id)):
        groups[tuple(row[:width])].pairs[tuple(row[width:-1])] = int(row[-1])
    return dict(groups), whole(groups, cohorts, by)


def whole(groups: dict[Key, NcFigures], cohorts: list[list[np.ndarray]], by: str | None
          ) -> NcFigures:
    """The whole window's flow figures from its groups' `cohorts` (their COLUMNS)."""
    if by is None:
        return groups[()]
    total = NcFigures()
    cohort(total, *(np.concatenate([columns[i] for columns in cohorts]
                                   or [np.empty(0, dtype=np.int64)])
                    for i in range(len(COLUMNS))))
    for figures in groups.values():
        for pair, count in figures.pairs.items():
            total.pairs[pair] = total.pairs.get(pair, 0) + count
    return total


def scope(sites: Collection[str] | None) -> list[Any]:
    return [] if sites is None else [Nonconformance.site_id.in_(sorted(sites))]


def _in_window(window: Window, sites: Collection[str] | None) -> list[Any]:
    return [Nonconformance.detected_at >= window.start,
            Nonconformance.detected_at < window.end, *scope(sites)]


COLUMNS = ("flags", "detected", "ack", "rect", "close")
"""Each NC's facts as the database gives them, integers: its flags (FLAG); when it was
detected (microseconds since 1970); the microseconds from detection to its first
acknowledgement, its last rectification and its closing (0 where there is none; the
flags say which count: FLAG acknowledged, rectified, and a closed state with
ever_closed)."""


def _facts(ack_at: Any, rect_at: Any, close_at: Any, since: tuple[Any, Any, Any],
           state: Any, by_sensor: Any, first_verification: Any, reopens: Any, chatter: Any,
           kept: Any = None) -> list[Any]:
    """COLUMNS of an NC from its facts at some `end`; `since` is the microseconds from its
    detection to its acknowledgement, rectification and closing (NULL: none). `kept`:
    the flags as kept on the NC, where it has them (its `facts` column)."""
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
    if kept is not None:  # both databases evaluate the rest only where it is NULL
        flags = func.coalesce(kept, flags)
    ack, rect, close = (func.coalesce(micros, 0) for micros in since)
    return [flags.label("flags"), n.detected_us.label("detected"), ack.label("ack"),
            rect.label("rect"), close.label("close")]


def kept_facts(*, kept: bool = True) -> list[Any]:
    """COLUMNS of an NC unchanged since well before `end`: it knew then what the facts
    the lifecycle keeps on it (api/nc_facts.py) say now. Its flags and times as the
    integers kept with them (api.store.derived): no time parsed (SQLite's julianday was a
    third of the read), no comparison made (a third of the rest). The flags of an NC
    without them (none since migration 0020), or all with `kept` false, are computed as
    api.nc_facts.fact_flags does."""
    n = Nonconformance
    return _facts(
        n.acknowledged_at, n.rectified_at, n.closed_at,
        (n.acknowledged_us - n.detected_us, n.rectified_us - n.detected_us,
         n.closed_us - n.detected_us),
        state_code(n.state), n.closed_by_sensor.is_(True),
        case((n.first_verification == "pass", 0), (n.first_verification == "fail", 1)),
        n.reopen_count, n.chattered.is_(True), n.facts if kept else None)


def listed(name: str) -> Any:
    """A parameter of pks written into the statement (no limit on their number)."""
    return bindparam(name, type_=Integer, expanding=True, literal_execute=True)


def history_facts(dialect: str, name: str) -> tuple[Any, list[Any]]:
    """COLUMNS of the NCs listed in the parameter `{name}_pks` as their history up to the
    parameter `{name}_end` tells, for NCs changed since shortly before that end: the NCs
    joined to their history (to select from) and the columns. The pks are written into
    the statement, for both tables: given the lists, PostgreSQL's planner reads the
    history and the NCs by index (it misjudges how few they are, and scans every NC once
    per end of a month report). The values are the caller's, at execution, so that a
    statement can be built once (api.reports.shared)."""
    n, h = Nonconformance, HistoryEntry
    pks = listed(f"{name}_pks")
    chattering = and_(h.action.in_(("occurrence", "cleared")),
                      cast(h.changes, Text).like('%"chattering"%'))
    closing = and_(h.to_state == "closed", h.from_state != "closed")
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
                                h.from_state.in_(("pending_verification", "closed"))), 1),
                          else_=0)).label("reopens"),
            func.max(case((chattering, 1), else_=0)).label("chatter"))
        .where(h.nc_pk.in_(pks), h.at < bindparam(f"{name}_end", type_=h.at.type))
        .group_by(h.nc_pk).subquery(name))
    c = history.c
    since = tuple(micro(seconds(dialect, at, n.detected_at))
                  for at in (c.ack_at, c.rect_at, c.close_at))
    columns = _facts(c.ack_at, c.rect_at, c.close_at, since, c["last"] % 8,
                     c.closing % 2 == 1, c.first_verification % 2, c.reopens, c.chatter == 1)
    return join(n.__table__, history, and_(c.nc_pk == n.pk, n.pk.in_(pks))), columns


def _flow(dialect: str, window: Window, by: str | None, sites: Collection[str] | None
          ) -> Any:
    """One row per group: its key and COLUMNS of its cohort as it stood at `end`, each
    joined into one text: the kept facts of NCs unchanged since shortly before `end`,
    those of the few changed since (the parameter `history_pks`) from their history
    (`history_end`: `end`). The database sorts narrow rows of integers and joins them;
    numpy reads them (sql.integers), and counts, sums and ranks them (the module's
    docstring says why)."""
    n = Nonconformance
    keys = nc_key(by)
    quiet = select(*keys, *kept_facts()).where(
        *_in_window(window, sites), n.updated_at < window.end - QUIET_AFTER)
    history, columns = history_facts(dialect, "history")
    recent = select(*keys, *columns).select_from(history)
    facts = union_all(quiet, recent).subquery("facts")
    grouped = [facts.c[c.name] for c in keys]
    return select(*grouped, *(joined(dialect, facts.c[name]) for name in COLUMNS)
                  ).group_by(*grouped)


def cohort(figures: NcFigures, flags: np.ndarray, detected: np.ndarray,
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
    # millisecond first, as when they came from SQLite's julianday (off by microseconds)
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
