"""The time figures of windows: compliance and coverage from the compliance snapshots'
seconds, equipment intactness from the open intervals of major and critical equipment
NCs, and the Pareto of violating time (docs/reports.md). No HTTP here.

The seconds are summed by the database per (site, asset, standard) and span of days
between the windows' first and last days (`day_sums`): one read serves every window (a
month report has 26), each window adding up its spans, and the answer is a row per pair
and span, however long the windows. Whole UTC months come from their roll-up
(compliance_months), so a year's report reads 12 rows a pair, not 365. Pairs are put in
groups here, because `compliance_days` knows no asset type, category or department: a
pair takes them from its latest NC (its asset's type from the site's asset list first),
and a pair that never had one from its asset's or its standard's latest NC.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import pairwise
from typing import Any

import numpy as np
from sqlalchemy import and_, case, exists, func, literal_column, select, text, union_all
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from api.reports.period import Window, next_month
from api.reports.sql import KEY_FIELDS, integers, joined, segment
from api.store import ComplianceDay, ComplianceMonth, Nonconformance, OutOfService, micros
from common.vocabulary import COMPLIANCE_STATES

Pair = tuple[str, str, str]
Key = tuple[Any, ...]
Interval = tuple[float, float]
"""[start, end) in seconds (since 1970, or since a window's start)."""

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


def day_cuts(windows: Sequence[Window]) -> list[str]:
    """The days where the windows' days begin or end (the day after their last), sorted:
    the spans `day_sums` adds up."""
    cuts = set()
    for window in windows:
        first, last = window.days()
        cuts |= {first, (date.fromisoformat(last) + timedelta(days=1)).isoformat()}
    return sorted(cuts)


DaySums = tuple[list[Pair], np.ndarray]
"""The pairs, and for each pair and span between the cuts the number of rows read (days
or months: more than 0 when the pair has a day in it) and its seconds in each of
COMPLIANCE_STATES (an array pairs x spans x (1 + states))."""


def day_sums(session: Session, cuts: Sequence[str], sites: Collection[str] | None
             ) -> DaySums:
    """Each pair's seconds in each span of days between `cuts` (from cuts[i] to
    cuts[i + 1], excluded), in one statement: the whole UTC months of a span from their
    roll-up (compliance_months: a year is 12 rows a pair, not 365), and each piece of a
    month a cut divides from compliance_days, summed per pair by the database; but the
    largest piece of a month divided whole is its roll-up less its other pieces (`_Cut`),
    read from neither (a month report's 6 divided months were 180 of 200 days read)."""
    month, day = ComplianceMonth, ComplianceDay
    scope = [] if sites is None else [month.site_id.in_(sorted(sites))]
    months, pieces = _pieces(cuts)
    cut = _Cut(len(cuts) - 1, pieces)
    parts = []
    if months:  # a whole month is in the span of its first day: compare months
        parts.append(select(month.site_id, month.asset_id, month.standard_id,
                            segment(month.month, [c[:7] for c in cuts[1:-1]]).label("span"),
                            literal_column("1").label("rows"),
                            *(getattr(month, s).label(s) for s in COMPLIANCE_STATES))
                     .where(month.month.in_(months), *scope))
    for index, (low, high, _) in enumerate(cut.read, cut.spans):
        # the month's pairs, each one range of the covering index: no sort, no full scan
        parts.append(select(month.site_id, month.asset_id, month.standard_id,
                            literal_column(str(index)).label("span"),
                            func.count().label("rows"),
                            *(func.sum(getattr(day, s)).label(s) for s in COMPLIANCE_STATES))
                     .join_from(month, day, _days(low, high))
                     .where(month.month == low[:7], *scope)
                     .group_by(month.site_id, month.asset_id, month.standard_id))
    for index, (low, high, _) in enumerate(cut.rest, cut.spans + len(cut.read)):
        # the whole month, and whether the piece has a day: one step into the index
        parts.append(select(month.site_id, month.asset_id, month.standard_id,
                            literal_column(str(index)).label("span"),
                            case((exists().where(_days(low, high)), 1), else_=0).label("rows"),
                            *(getattr(month, s).label(s) for s in COMPLIANCE_STATES))
                     .where(month.month == low[:7], *scope))
    if not parts:
        return [], np.zeros((0, len(cuts) - 1, 1 + len(COMPLIANCE_STATES)))
    if session.get_bind().dialect.name == "postgresql":  # hash the pairs' spans in memory:
        session.execute(text("SET LOCAL work_mem = '64MB'"))  # 4 MB spills them to disk
    rows = union_all(*parts).subquery("pieces")
    grouped = [rows.c.site_id, rows.c.asset_id, rows.c.standard_id, rows.c.span]
    pairs: dict[Pair, int] = {}
    # 25,000 rows for a month report: read as core rows, without the ORM's row handling
    # (a sixth of this read)
    found = session.connection().execute(
        select(*grouped, func.sum(rows.c.rows),
               *(func.sum(rows.c[s]) for s in COMPLIANCE_STATES)).group_by(*grouped)).all()
    index = np.array([pairs.setdefault((row[0], row[1], row[2]), len(pairs))
                      for row in found], dtype=np.intp)
    sums = np.zeros((len(pairs), cut.size, 1 + len(COMPLIANCE_STATES)))
    if found:  # the numbers as one array, not a tuple of floats a row (NULL: 0)
        columns = np.nan_to_num(np.array([row[3:] for row in found], dtype=float))
        sums[index, columns[:, 0].astype(np.intp)] = columns[:, 1:]
    return list(pairs), cut.spanned(sums)


def _days(low: str, high: str) -> ColumnElement[bool]:
    """The days of a compliance_months row's pair from `low` to `high` (excluded)."""
    month, day = ComplianceMonth, ComplianceDay
    return and_(day.site_id == month.site_id, day.asset_id == month.asset_id,
                day.standard_id == month.standard_id, day.day >= low, day.day < high)


Piece = tuple[str, str, int]
"""Days [from, to) within one month and one span, and the span's index."""

ROUNDING = 1e-6
"""Seconds a month less its other pieces may be off by (its sums and theirs add the same
seconds in another order): below it, a piece without such seconds has none."""


class _Cut:
    """Which pieces of divided months `day_sums` reads from compliance_days (`read`), and
    which it takes as their month less its other pieces (`rest`: the largest of a month
    whose every piece is between the cuts), and how those come back to their spans. The
    database sums each piece read and each such month apart, their indexes after the
    spans': `read` from `spans` on, then `rest`."""

    def __init__(self, spans: int, pieces: list[Piece]) -> None:
        self.spans = spans
        by_month: dict[str, list[Piece]] = defaultdict(list)
        for piece in pieces:
            by_month[piece[0][:7]].append(piece)
        self.rest: list[Piece] = []
        for month, parts in by_month.items():
            whole = (parts[0][0] == f"{month}-01"
                     and parts[-1][1] == next_month(date.fromisoformat(parts[0][0])).isoformat())
            if whole and len(parts) > 1:
                self.rest.append(max(parts, key=lambda p: date.fromisoformat(p[1])
                                     - date.fromisoformat(p[0])))
        self.read = [piece for piece in pieces if piece not in self.rest]
        self.size = spans + len(self.read) + len(self.rest)

    def spanned(self, sums: np.ndarray) -> np.ndarray:
        """`sums` (pairs x `size` x (rows, states)) as pairs x spans: each piece read
        added to its span, each month less its pieces read to the rest's span."""
        spans = sums[:, :self.spans].copy()
        read = {piece: self.spans + i for i, piece in enumerate(self.read)}
        for piece, index in read.items():
            spans[:, piece[2]] += sums[:, index]
        for i, (low, _, span) in enumerate(self.rest):
            month = sums[:, self.spans + len(self.read) + i]
            others = [index for piece, index in read.items() if piece[0][:7] == low[:7]]
            seconds = month[:, 1:] - sums[:, others, 1:].sum(axis=1)
            seconds[(np.abs(seconds) < ROUNDING) | (month[:, :1] == 0)] = 0.0
            spans[:, span, 0] += month[:, 0]
            spans[:, span, 1:] += seconds
        return spans


def _pieces(cuts: Sequence[str]) -> tuple[list[str], list[Piece]]:
    """The whole months (YYYY-MM) between the first and last of `cuts` that no cut
    divides, and the pieces of the others: days [from, to) within one month and one
    span, and the span's index."""
    months: list[str] = []
    pieces: list[Piece] = []
    for span, (low, high) in enumerate(pairwise(cuts)):
        at = low
        while at < high:
            day = date.fromisoformat(at)
            following = next_month(day).isoformat()
            if day.day == 1 and following <= high:
                months.append(at[:7])
            else:
                pieces.append((at, min(following, high), span))
            at = min(following, high)
    return months, pieces


def time_figures(windows: Sequence[Window], by: str | None, attrs: Attributes,
                 down: Downtime, cuts: Sequence[str], sums: DaySums
                 ) -> list[tuple[dict[Key, TimeFigures], TimeFigures]]:
    """Every group's time figures and the whole's, for each of `windows`, from their
    `day_sums` between `cuts` and the `downtime` of all."""
    by_group, by_asset = down.index(whole=False), down.index(whole=True)
    keys = [attrs.key(by, pair) for pair in sums[0]]
    known = list(dict.fromkeys(key for key in keys if key is not None))
    number = {key: i for i, key in enumerate(known)}
    group_of = np.array([-1 if key is None else number[key] for key in keys], dtype=np.intp)
    answers = []
    for window in windows:
        groups, whole, assets, everything = _seconds(window, cuts, sums, known, group_of)
        _intactness(window, assets, groups, down, by_group)
        _intactness(window, {(): everything}, {(): whole}, down, by_asset)
        answers.append((groups, whole))
    return answers


def _seconds(window: Window, cuts: Sequence[str], sums: DaySums, keys: Sequence[Key],
             group_of: np.ndarray
             ) -> tuple[dict[Key, TimeFigures], TimeFigures, dict[Key, set[tuple[str, str]]],
                        set[tuple[str, str]]]:
    """Each group's and the whole's compliance seconds in `window`, and their assets: the
    pairs with a day in it. `group_of` is each pair's group, an index into `keys` (-1:
    none, as root causes have no time)."""
    first, last = window.days()
    after = (date.fromisoformat(last) + timedelta(days=1)).isoformat()
    pairs, spans = sums
    totals = spans[:, cuts.index(first):cuts.index(after)].sum(axis=1)
    present = totals[:, 0] > 0
    groups, assets = {}, {}
    for g in np.unique(group_of[present]).tolist():
        if g >= 0:
            members = np.flatnonzero(present & (group_of == g))
            groups[keys[g]] = _summed(pairs, totals, members)
            assets[keys[g]] = {pairs[i][:2] for i in members.tolist()}
    members = np.flatnonzero(present)
    everything = {pairs[i][:2] for i in members.tolist()}
    return groups, _summed(pairs, totals, members), assets, everything


def _summed(pairs: list[Pair], totals: np.ndarray, members: np.ndarray) -> TimeFigures:
    """The seconds of the `members` pairs (their rows in `totals`), and their number."""
    chosen = totals[members, 1:]
    violating = chosen[:, COMPLIANCE_STATES.index("violating")]
    late = np.flatnonzero(violating > 0)
    return TimeFigures(
        seconds=dict(zip(COMPLIANCE_STATES, chosen.sum(axis=0).tolist(), strict=True)),
        pairs=len(members),
        violating=dict(zip([pairs[i] for i in members[late].tolist()],
                           violating[late].tolist(), strict=True)))


@dataclass(frozen=True, slots=True)
class Downtime:
    """The major and critical equipment NCs open in some windows, as arrays: the number
    of their (site, asset, key fields), and when each opened and closed (epoch seconds;
    at the last window's end if still open); the numbers' meaning; and the
    out-of-service intervals per asset."""

    owners: list[tuple[str, str, Key]]
    ids: np.ndarray
    opened: np.ndarray
    closed: np.ndarray
    away: dict[tuple[str, str], list[Interval]]

    def index(self, whole: bool) -> Index:
        """Each NC's (group key, site, asset) as a number, the key () for the `whole`,
        and the NCs sorted by that number and opening (`_union` takes them so: sorted
        once for every window)."""
        if not whole:
            numbers = {(key, site, asset): i for i, (site, asset, key)
                       in enumerate(self.owners)}
            ids = self.ids
        else:
            numbers = {}
            renumber = np.array([numbers.setdefault(((), site, asset), len(numbers))
                                 for site, asset, _ in self.owners], dtype=np.intp)
            ids = renumber[self.ids]
        order = np.lexsort((self.opened, ids))
        return Index(numbers, ids[order], self.opened[order], self.closed[order])


@dataclass(frozen=True, slots=True)
class Index:
    """Downtime's NCs numbered by (group key, site, asset), sorted by number and
    opening."""

    numbers: dict[tuple[Key, str, str], int]
    ids: np.ndarray
    opened: np.ndarray
    closed: np.ndarray


def downtime(session: Session, windows: Sequence[Window], sites: Collection[str] | None,
             key_fields: Sequence[str]) -> Downtime:
    """Major and critical equipment NCs open in any of `windows` (cancelled ones, false
    alarms, never), by asset and `key_fields` (the NC columns of a group's key), and
    out-of-service intervals, one read for all windows. The times
    come as one text per asset and key (sql.joined): a fraction of the cost of a row per
    NC."""
    n, oos = Nonconformance, OutOfService
    first, last = min(w.start for w in windows), max(w.end for w in windows)
    scope = [] if sites is None else [n.site_id.in_(sorted(sites))]
    dialect = session.get_bind().dialect.name
    keys = [getattr(n, name) for name in key_fields]
    owners: list[tuple[str, str, Key]] = []
    ids, opened, closed = [], [], []
    for row in session.execute(
            select(n.site_id, n.asset_id, *keys,
                   joined(dialect, n.detected_us),
                   joined(dialect, func.coalesce(n.closed_us, micros(last))))
            .where(n.category == "equipment", n.severity.in_(DOWN_SEVERITIES),
                   n.state != "cancelled", n.detected_at < last,
                   (n.closed_at.is_(None)) | (n.closed_at > first), *scope)
            .group_by(n.site_id, n.asset_id, *keys)):
        opened.append(integers(row[-2]) / 1e6)
        closed.append(integers(row[-1]) / 1e6)
        ids.append(np.full(len(opened[-1]), len(owners), dtype=np.intp))
        owners.append((row[0], row[1], tuple(row[2:-2])))
    away: dict[tuple[str, str], list[Interval]] = defaultdict(list)
    oos_scope = [] if sites is None else [oos.site_id.in_(sorted(sites))]
    for row in session.execute(select(oos.site_id, oos.asset_id, oos.starts_at, oos.ends_at)
                               .where(oos.starts_at < last, oos.ends_at > first,
                                      *oos_scope)):
        away[row.site_id, row.asset_id].append((row.starts_at.timestamp(),
                                                row.ends_at.timestamp()))
    return Downtime(owners, *(np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
                              for parts, dtype in ((ids, np.intp), (opened, float),
                                                   (closed, float))), away)


def _intactness(window: Window, assets: Mapping[Key, set[tuple[str, str]]],
                groups: Mapping[Key, TimeFigures], down: Downtime, index: Index) -> None:
    """Asset time (less out of service) and the part of it with a major or critical
    equipment NC open, from its detection to its closing."""
    start, end = window.start.timestamp(), window.end.timestamp()
    lows = np.maximum(index.opened, start) - start
    highs = np.minimum(index.closed, end) - start
    runs = _union(index.ids, lows, highs, end - start)
    lengths = np.bincount(runs[0], weights=runs[2] - runs[1], minlength=len(index.numbers))
    for key, members in assets.items():
        figures = groups[key]
        for asset in members:
            outside = _merge([(max(a, start) - start, min(b, end) - start)
                              for a, b in down.away[asset]]) if asset in down.away else []
            figures.asset_s += window.seconds - _length(outside)
            i = index.numbers.get((key, *asset))
            if i is None:
                continue
            figures.down_s += float(lengths[i])
            if outside:
                mine = runs[0] == i
                figures.down_s -= _overlap(list(zip(runs[1][mine].tolist(),
                                                    runs[2][mine].tolist(), strict=True)),
                                           outside)


def _union(ids: np.ndarray, lows: np.ndarray, highs: np.ndarray, span: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of the intervals [lows, highs) of each id (sorted by id and low), within
    [0, span], as runs: (id, start, end) arrays sorted by id and start. Each id's times
    are shifted past the previous id's, so one running maximum merges every id's
    intervals at once."""
    kept = lows < highs
    ids, lows, highs = ids[kept], lows[kept], highs[kept]
    if not len(ids):
        return ids, lows, highs
    shift = ids * (2.0 * span + 1.0)
    reach = np.maximum.accumulate(highs + shift)
    first = np.flatnonzero(np.concatenate(([True], lows[1:] + shift[1:] > reach[:-1])))
    ends = np.maximum.reduceat(highs + shift, first) - shift[first]
    return ids[first], lows[first], ends


def _merge(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[0] < i[1]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: list[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def _overlap(a: list[Interval], b: list[Interval]) -> float:
    """Seconds in both of two merged interval lists."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, end - start)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total
