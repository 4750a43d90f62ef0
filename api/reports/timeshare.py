"""The time figures of one window: compliance and coverage from the compliance snapshots'
seconds, equipment intactness from the open intervals of major and critical equipment
NCs, and the Pareto of violating time (docs/reports.md). No HTTP here.

The seconds are summed per (site, asset, standard) by the database over the window's
UTC days (one range of the covering index `ix_compliance_days_sums` per pair): the
answer is one row per pair, however long the window. Pairs are put in groups here,
because `compliance_days` knows no asset type, category or department: a pair takes
them from its latest NC (its asset's type from the site's asset list first), and a pair
that never had one from its asset's or its standard's latest NC.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.reports.period import Window
from api.reports.sql import KEY_FIELDS
from api.store import ComplianceDay, Nonconformance, OutOfService

Pair = tuple[str, str, str]
Key = tuple[Any, ...]
Interval = tuple[datetime, datetime]

DOWN_SEVERITIES = ("major", "critical")
"""An open equipment NC of these severities makes its asset not intact."""


@dataclass
class TimeFigures:
    """One group's seconds, pairs and asset time in a window."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("ok", "violating", "no_data", "inactive"), 0.0))
    pairs: int = 0
    violating: dict[Pair, float] = field(default_factory=dict)
    asset_s: float = 0.0
    down_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Attributes:
    """What each pair is: its asset type, category and department."""

    pairs: Mapping[Pair, tuple[Any, Any, Any]]
    assets: Mapping[tuple[str, str], tuple[Any, Any, Any]]
    standards: Mapping[str, tuple[Any, Any, Any]]
    asset_types: Mapping[str, str | None]

    def key(self, by: str | None, pair: Pair) -> Key | None:
        """The group key of `pair`; None when the grouping does not apply to time."""
        if by == "root_cause":
            return None
        site, asset, standard = pair
        values = {"site": site, "asset": asset, "standard": standard}
        if by in ("asset_type", "category", "department"):
            known = (self.pairs.get(pair) or self.assets.get((site, asset))
                     or self.standards.get(standard) or (None, None, None))
            asset_type = self.asset_types.get(asset) or known[0]
            category = (self.pairs.get(pair) or self.standards.get(standard)
                        or (None, None, None))[1]
            values.update(asset_type=asset_type, category=category, department=known[2])
        return tuple(values[name] for name in KEY_FIELDS[by])


def attributes(session: Session, sites: Collection[str] | None,
               asset_types: Mapping[str, str | None]) -> Attributes:
    """Each pair's, asset's and standard's latest NC's type, category and department."""
    n = Nonconformance
    scope = [] if sites is None else [n.site_id.in_(sorted(sites))]
    latest = select(func.max(n.pk)).where(*scope).group_by(n.site_id, n.asset_id,
                                                           n.standard_id)
    rows = session.execute(select(n.site_id, n.asset_id, n.standard_id, n.asset_type,
                                  n.category, n.department)
                           .where(n.pk.in_(latest)).order_by(n.pk)).all()
    pairs = {(r[0], r[1], r[2]): (r[3], r[4], r[5]) for r in rows if r[2] is not None}
    assets = {(r[0], r[1]): (r[3], r[4], r[5]) for r in rows}  # later rows win
    standards = {r[2]: (r[3], r[4], r[5]) for r in rows if r[2] is not None}
    return Attributes(pairs, assets, standards, asset_types)


def time_figures(session: Session, window: Window, by: str | None,
                 sites: Collection[str] | None, attrs: Attributes,
                 nc_key: Any) -> dict[Key, TimeFigures]:
    """Every group's time figures in `window`. `nc_key(row)` is an NC row's group key."""
    groups: dict[Key, TimeFigures] = defaultdict(TimeFigures)
    if by == "root_cause":
        return {}
    day = ComplianceDay
    first, last = window.days()
    scope = [] if sites is None else [day.site_id.in_(sorted(sites))]
    states = ("ok", "violating", "no_data", "inactive")
    query = (select(day.site_id, day.asset_id, day.standard_id,
                    *(func.sum(getattr(day, s)) for s in states))
             .where(day.day >= first, day.day <= last, *scope)
             .group_by(day.site_id, day.asset_id, day.standard_id))
    assets: dict[Key, set[tuple[str, str]]] = defaultdict(set)
    for row in session.execute(query):
        pair: Pair = (row[0], row[1], row[2])
        key = attrs.key(by, pair)
        if key is None:
            continue
        figures = groups[key]
        figures.pairs += 1
        for name, total in zip(states, row[3:], strict=True):
            figures.seconds[name] += float(total or 0.0)
        if row[4]:
            figures.violating[pair] = float(row[4])
        assets[key].add((pair[0], pair[1]))
    _intactness(session, window, sites, assets, groups, nc_key)
    return dict(groups)


def _intactness(session: Session, window: Window, sites: Collection[str] | None,
                assets: dict[Key, set[tuple[str, str]]], groups: dict[Key, TimeFigures],
                nc_key: Any) -> None:
    """Asset time (less out of service) and the part of it with a major or critical
    equipment NC open: from detection to its closing, cancelled NCs (false alarms) never."""
    n, oos = Nonconformance, OutOfService
    scope = [] if sites is None else [n.site_id.in_(sorted(sites))]
    rows = session.execute(
        select(n.site_id, n.asset_id, n.asset_type, n.standard_id, n.category,
               n.department, n.root_cause_category, n.detected_at, n.closed_at)
        .where(n.category == "equipment", n.severity.in_(DOWN_SEVERITIES),
               n.state != "cancelled", n.detected_at < window.end,
               (n.closed_at.is_(None)) | (n.closed_at > window.start), *scope))
    down: dict[tuple[Key, str, str], list[Interval]] = defaultdict(list)
    for row in rows:
        end = row.closed_at if row.closed_at is not None else window.end
        down[nc_key(row), row.site_id, row.asset_id].append(
            (max(row.detected_at, window.start), min(end, window.end)))
    away: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    oos_scope = [] if sites is None else [oos.site_id.in_(sorted(sites))]
    for row in session.execute(select(oos.site_id, oos.asset_id, oos.starts_at, oos.ends_at)
                               .where(oos.starts_at < window.end,
                                      oos.ends_at > window.start, *oos_scope)):
        away[row.site_id, row.asset_id].append(
            (max(row.starts_at, window.start), min(row.ends_at, window.end)))
    for key, members in assets.items():
        figures = groups[key]
        for asset in members:
            outside = _merge(away.get(asset, []))
            figures.asset_s += window.seconds - _length(outside)
            intervals = _merge(down.get((key, *asset), []))
            figures.down_s += _length(intervals) - _overlap(intervals, outside)


def _merge(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[0] < i[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: list[Interval]) -> float:
    return sum((end - start).total_seconds() for start, end in intervals)


def _overlap(a: list[Interval], b: list[Interval]) -> float:
    """Seconds in both of two merged interval lists."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, (end - start).total_seconds())
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total
