"""The NC figures of one window, aggregated by the database (docs/reports.md defines
each). No HTTP here.

Flow figures cover the cohort of NCs detected in [start, end) and what had happened to
them before `end`: each NC's facts (first acknowledgement, last rectification, state at
`end`, first verification's result, reopenings, closing by sensor, chattering) come from
the columns the lifecycle keeps (api/nc_facts.py) for an NC unchanged since shortly
before `end`, and from a GROUP BY over its history rows for the few changed since. One
statement aggregates them per group, beside the rows the 90th percentiles are read from
(ranks from window functions: the answer holds a few rows per group, never the
durations).
Stock figures (open at `end`, overdue, backlog) cover every NC as it stood at `end`:
the NCs open now, and those changed since shortly before `end`, whose state at `end`
their history tells; any other NC has not changed since and stands as it is now.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Float, String, Text, and_, case, cast, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from api.nc_facts import ACKNOWLEDGING, SENSOR_ROLES, VERIFYING
from api.reports.period import Window
from api.reports.sql import STATE_CODE, bucket_10m, nc_key, seconds, state_code
from api.store import HistoryEntry, Nonconformance
from common.vocabulary import OPEN_STATES, UNRECTIFIED

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
    """Every group's NC figures in `window`, keyed by the grouping's key values, and the
    whole window's (the same statements: the cohort's facts are gathered once)."""
    groups: dict[Key, NcFigures] = defaultdict(NcFigures)
    whole: dict[Key, NcFigures] = defaultdict(NcFigures)
    dialect = session.get_bind().dialect.name
    _flow(session, dialect, window, by, sites, groups, whole)
    _stock(session, window, by, sites, groups)
    _load(session, dialect, window, by, sites, groups)
    if by is None:
        return dict(groups), groups[()]
    _load(session, dialect, window, None, sites, whole, pairs=False)
    total = whole[()]
    for figures in groups.values():
        total.open_at_end += figures.open_at_end
        total.overdue += figures.overdue
        total.open_over_24h += figures.open_over_24h
        for age, count in figures.backlog.items():
            total.backlog[age] += count
        for pair, count in figures.pairs.items():
            total.pairs[pair] = total.pairs.get(pair, 0) + count
    return dict(groups), total


def _scope(sites: Collection[str] | None) -> list[Any]:
    return [] if sites is None else [Nonconformance.site_id.in_(sorted(sites))]


def _cohort(window: Window, sites: Collection[str] | None) -> list[Any]:
    return [Nonconformance.detected_at >= window.start,
            Nonconformance.detected_at < window.end, *_scope(sites)]


def _facts(dialect: str, window: Window, by: str | None,
           sites: Collection[str] | None) -> Any:
    """One row per NC of the cohort: its key and what it knew at `end`. An NC unchanged
    since well before `end` knew then what its kept facts (api/nc_facts.py) say now; the
    few changed since are read from their history, up to `end`."""
    n, h = Nonconformance, HistoryEntry
    since = window.end - QUIET_AFTER

    def facts(ack_at: Any, rect_at: Any, close_at: Any, last: Any, closing: Any,
              first_verification: Any, reopens: Any, chatter: Any) -> list[Any]:
        closed = last % 8 == STATE_CODE["closed"]
        return [*nc_key(by), n.detected_at, n.due_at, n.recurring, n.condition,
                ack_at.label("ack_at"), rect_at.label("rect_at"), last.label("last"),
                closing.label("closing"), first_verification.label("first_verification"),
                reopens.label("reopens"), chatter.label("chatter"),
                seconds(dialect, ack_at, n.detected_at).label("ack_s"),
                seconds(dialect, rect_at, n.detected_at).label("rect_s"),
                case((closed, seconds(dialect, close_at, n.detected_at))).label("close_s"),
                case((close_at.is_not(None), 1), else_=0).label("ever_closed")]

    quiet = select(*facts(
        n.acknowledged_at, n.rectified_at, n.closed_at, state_code(n.state),
        case((n.closed_by_sensor.is_(True), 1), else_=0),
        case((n.first_verification == "pass", 0), (n.first_verification == "fail", 1)),
        n.reopen_count, case((n.chattered.is_(True), 1), else_=0))
    ).where(*_cohort(window, sites), n.updated_at < since)
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
        .where(h.nc_pk.in_(select(n.pk).where(*_cohort(window, sites),
                                              n.updated_at >= since)),
               h.at < window.end)
        .group_by(h.nc_pk).subquery("history"))
    c = history.c
    recent = (select(*facts(c.ack_at, c.rect_at, c.close_at, c["last"], c.closing,
                            c.first_verification, c.reopens, c.chatter))
              .join_from(n, history, c.nc_pk == n.pk))
    return union_all(quiet, recent).cte("facts")


def _flow(session: Session, dialect: str, window: Window, by: str | None,
          sites: Collection[str] | None, groups: dict[Key, NcFigures],
          whole: dict[Key, NcFigures]) -> None:
    """Counts, sums and percentiles per group and (with a grouping) for the whole window,
    in one statement over one set of facts."""
    facts = _facts(dialect, window, by, sites)
    keys = [c for c in facts.c if c.name.startswith("k")]
    scopes = [("group", keys)] + ([("whole", [])] if keys else [])
    last = facts.c["last"] % 8
    closed = last == STATE_CODE["closed"]

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    ack, rect, close = facts.c.ack_s, facts.c.rect_s, facts.c.close_s
    values = {
        "raised": func.count(),
        "closed": count(closed),
        "cancelled": count(last == STATE_CODE["cancelled"]),
        "recurring": count(facts.c.recurring.is_(True)),
        "rectified_due": count(and_(facts.c.rect_at.is_not(None),
                                    facts.c.due_at.is_not(None))),
        "on_time": count(facts.c.rect_at <= facts.c.due_at),
        "verified": count(facts.c.first_verification.is_not(None)),
        "first_pass": count(facts.c.first_verification % 2 == 0),
        "reopened": count(facts.c.reopens > 0),
        "reopen_base": count(or_(facts.c.rect_at.is_not(None),
                                 facts.c.ever_closed == 1, facts.c.reopens > 0)),
        "closed_by_sensor": count(and_(closed, facts.c.closing % 2 == 1)),
        "chattering": count(or_(facts.c.chatter == 1, facts.c.condition == "chattering")),
        "ack_n": func.count(facts.c.ack_at), "ack_sum": func.sum(ack),
        "rect_n": func.count(facts.c.rect_at), "rect_sum": func.sum(rect),
        "close_n": func.count(close), "close_sum": func.sum(close),
    }
    width = len(SUMS)
    statements = []
    for scope, by_keys in scopes:
        # the whole window's rows carry the key columns too, as NULLs
        columns = by_keys or [cast(literal(None), String).label(c.name) for c in keys]
        statements.append(select(literal(f"sums {scope}").label("kind"), *columns,
                                 *(cast(values[name], Float).label(f"v{i}")
                                   for i, name in enumerate(SUMS))).group_by(*by_keys))
        for kind, duration in zip(DURATIONS, (ack, rect, close), strict=True):
            ranked = select(*by_keys, duration.label("value"),
                            func.row_number().over(partition_by=by_keys or None,
                                                   order_by=duration).label("rank"),
                            # the same window as the rank's: one sort, not two
                            func.count().over(partition_by=by_keys or None,
                                              order_by=duration,
                                              rows=(None, None)).label("n")
                            ).where(duration.is_not(None)).subquery()
            low = (ranked.c.n - 1) * 9 // 10 + 1  # the rank at or below p90's
            pad = [cast(literal(None), Float).label(f"v{i}") for i in range(3, width)]
            key_columns = [ranked.c[c.name] for c in by_keys] or columns
            statements.append(
                select(literal(f"{kind} {scope}").label("kind"), *key_columns,
                       cast(ranked.c.value, Float).label("v0"),
                       cast(ranked.c["rank"], Float).label("v1"),
                       cast(ranked.c.n, Float).label("v2"), *pad)
                .where(ranked.c["rank"].in_((low, low + 1))))
    points: dict[tuple[str, Key], dict[int, float]] = defaultdict(dict)
    counts: dict[tuple[str, Key], int] = {}
    for row in session.execute(union_all(*statements)):
        kind, scope = row.kind.split()
        key = tuple(row[1:1 + len(keys)]) if scope == "group" else ()
        target = groups if scope == "group" else whole
        data = row[1 + len(keys):]
        if kind == "sums":
            target[key].sums = {name: float(v or 0.0)
                                for name, v in zip(SUMS, data, strict=True)}
        else:
            points[row.kind, key][int(data[1])] = float(data[0])
            counts[row.kind, key] = int(data[2])
    for (kind, key), ranks in points.items():
        name, scope = kind.split()
        target = groups if scope == "group" else whole
        target[key].p90[name] = _p90(ranks, counts[kind, key])


def _p90(ranks: dict[int, float], n: int) -> float:
    """Linear interpolation between the ranks around 0.9 (n - 1) + 1, as PostgreSQL's
    percentile_cont(0.9) and numpy's default do."""
    low = (n - 1) * 9 // 10 + 1
    fraction = ((n - 1) * 9 % 10) / 10
    below = ranks[low]
    return below + fraction * (ranks[low + 1] - below) if fraction else below


def _stock(session: Session, window: Window, by: str | None,
           sites: Collection[str] | None, groups: dict[Key, NcFigures]) -> None:
    """Every NC as it stood at `end`: open, overdue, and its age."""
    n, h, end = Nonconformance, HistoryEntry, window.end
    keys = nc_key(by)
    # Not open now and unchanged since well before `end`: not open at `end` either.
    then = (select(func.max(h.id * 8 + state_code(h.to_state)))
            .where(h.nc_pk == n.pk, h.at < end).scalar_subquery())
    now = state_code(n.state)
    state = case((n.updated_at >= end - QUIET_AFTER, then % 8), else_=now)
    rows = (select(*keys, state.label("state"), n.detected_at, n.due_at)
            .where(n.detected_at < end, *_scope(sites),
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


def _load(session: Session, dialect: str, window: Window, by: str | None,
          sites: Collection[str] | None, groups: dict[Key, NcFigures], *,
          pairs: bool = True) -> None:
    """Peak and floods per 10 minutes, and the NCs raised per pair."""
    n = Nonconformance
    keys = nc_key(by)
    period = bucket_10m(dialect, n.detected_at).label("period")
    per_period = (select(*keys, period, func.count().label("raised"))
                  .where(*_cohort(window, sites)).group_by(*keys, period).subquery())
    key_columns = [per_period.c[c.name] for c in keys]
    query = select(*key_columns, func.max(per_period.c.raised),
                   func.sum(case((per_period.c.raised >= FLOOD, 1), else_=0))
                   ).group_by(*key_columns)
    for row in session.execute(query):
        figures = groups[tuple(row[:len(keys)])]
        figures.peak_10m, figures.floods = int(row[-2] or 0), int(row[-1] or 0)
    if not pairs:
        return
    per_pair = (select(*keys, n.site_id, n.asset_id, n.standard_id, func.count())
             .where(*_cohort(window, sites))
             .group_by(*keys, n.site_id, n.asset_id, n.standard_id))
    for row in session.execute(per_pair):
        groups[tuple(row[:len(keys)])].pairs[tuple(row[len(keys):-1])] = int(row[-1])
