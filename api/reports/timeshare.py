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
from common.vocabulary import COMPLIANCE_STATES

Pair = tuple[str, str, str]
Key = tuple[Any, ...]
Interval = tuple[datetime, datetime]

DOWN_SEVERITIES = ("major", "critical")
"""An open equipment NC of these severities makes its asset not intact."""


@dataclass
class TimeFigures:
    """One group's seconds, pairs and asset time in a window."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        COMPLIANCE_STATES, 0.0))
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


def time_figures(session: Session, windows: list[Window], by: str | None,
                 sites: Collection[str] | None, attrs: Attributes, nc_key: Any
                 ) -> list[tuple[dict[Key, TimeFigures], TimeFigures]]:
    """Every group's time figures and the whole's, for each of `windows`. `nc_key(row)`
    is an NC row's group key."""
    day = ComplianceDay
    scope = [] if sites is None else [day.site_id.in_(sorted(sites))]
    states = COMPLIANCE_STATES
    answers: list[tuple[dict[Key, TimeFigures], TimeFigures]] = []
    members: list[tuple[dict[Key, set[tuple[str, str]]], set[tuple[str, str]]]] = []
    for window in windows:
        # one plain statement per window: SQLite sums a third faster than with CASEs
        first, last = window.days()
        query = (select(day.site_id, day.asset_id, day.standard_id,
                        *(func.sum(getattr(day, s)) for s in states))
                 .where(day.day >= first, day.day <= last, *scope)
                 .group_by(day.site_id, day.asset_id, day.standard_id))
        groups: dict[Key, TimeFigures] = defaultdict(TimeFigures)
        whole = TimeFigures()
        assets: dict[Key, set[tuple[str, str]]] = defaultdict(set)
        everything: set[tuple[str, str]] = set()
        for row in session.execute(query):
            pair: Pair = (row[0], row[1], row[2])
            key = attrs.key(by, pair)
            seconds = [float(v or 0.0) for v in row[3:]]
            for figures in ([groups[key], whole] if key is not None else [whole]):
                figures.pairs += 1
                for name, value in zip(states, seconds, strict=True):
                    figures.seconds[name] += value
                if seconds[1]:
                    figures.violating[pair] = seconds[1]
            if key is not None:
                assets[key].add((pair[0], pair[1]))
            everything.add((pair[0], pair[1]))
        answers.append((groups, whole))
        members.append((assets, everything))
    down, away = _downtime(session, windows, sites)
    for window, (groups, whole), (assets, everything) in zip(windows, answers, members,
                                                             strict=True):
        _intactness(window, assets, groups, down, away, nc_key)
        _intactness(window, {(): everything}, {(): whole}, down, away, lambda row: ())
    return [(dict(groups), whole) for groups, whole in answers]


def _downtime(session: Session, windows: list[Window], sites: Collection[str] | None
              ) -> tuple[list[Any], dict[tuple[str, str], list[Interval]]]:
    """Major and critical equipment NCs open in any of `windows` (cancelled ones, false
    alarms, never), and out-of-service intervals."""
    n, oos = Nonconformance, OutOfService
    first = min(w.start for w in windows)
    last = max(w.end for w in windows)
    scope = [] if sites is None else [n.site_id.in_(sorted(sites))]
    rows = session.execute(
        select(n.site_id, n.asset_id, n.asset_type, n.standard_id, n.category,
               n.department, n.root_cause_category, n.detected_at, n.closed_at)
        .where(n.category == "equipment", n.severity.in_(DOWN_SEVERITIES),
               n.state != "cancelled", n.detected_at < last,
               (n.closed_at.is_(None)) | (n.closed_at > first), *scope)).all()
    away: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    oos_scope = [] if sites is None else [oos.site_id.in_(sorted(sites))]
    for row in session.execute(select(oos.site_id, oos.asset_id, oos.starts_at, oos.ends_at)
                               .where(oos.starts_at < last, oos.ends_at > first,
                                      *oos_scope)):
        away[row.site_id, row.asset_id].append((row.starts_at, row.ends_at))
    return rows, away


def _intactness(window: Window, assets: Mapping[Key, set[tuple[str, str]]],
                groups: Mapping[Key, TimeFigures], rows: list[Any],
                away: dict[tuple[str, str], list[Interval]], nc_key: Any) -> None:
    """Asset time (less out of service) and the part of it with a major or critical
    equipment NC open, from its detection to its closing."""
    start, end = window.start, window.end
    down: dict[tuple[Key, str, str], list[Interval]] = defaultdict(list)
    for row in rows:
        if row.detected_at < end and (row.closed_at is None or row.closed_at > start):
            closing = row.closed_at if row.closed_at is not None else end
            down[nc_key(row), row.site_id, row.asset_id].append(
                (max(row.detected_at, start), min(closing, end)))
    for key, members in assets.items():
        figures = groups[key]
        for asset in members:
            outside = _merge([(max(a, start), min(b, end)) for a, b in away.get(asset, [])])
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
