"""The report's figures recomputed in plain Python from the stored rows, apart from
api/reports: each NC's history replayed entry by entry, every definition of
docs/reports.md written out again. tests/test_reports.py compares the two."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import select

from api.store import ComplianceDay, Database, HistoryEntry, Nonconformance, OutOfService

OPEN = {"open", "acknowledged", "rectifying", "pending_verification"}
UNRECTIFIED = {"open", "acknowledged", "rectifying"}
FIELDS = {"site": ("site_id",), "asset": ("site_id", "asset_id"),
          "asset_type": ("asset_type",), "standard": ("standard_id",),
          "category": ("category",), "department": ("department",),
          "root_cause": ("root_cause_category",), None: ()}


@dataclass
class Rows:
    ncs: list[Nonconformance]
    history: dict[int, list[HistoryEntry]]
    days: list[ComplianceDay]
    away: list[OutOfService]
    asset_types: dict[str, str]

    @classmethod
    def load(cls, db: Database, asset_types: dict[str, str]) -> Rows:
        with db.session() as session:
            ncs = list(session.scalars(select(Nonconformance).order_by(Nonconformance.pk)))
            history: dict[int, list[HistoryEntry]] = defaultdict(list)
            for entry in session.scalars(select(HistoryEntry).order_by(HistoryEntry.id)):
                history[entry.nc_pk].append(entry)
            days = list(session.scalars(select(ComplianceDay)))
            away = list(session.scalars(select(OutOfService)))
            session.expunge_all()
        return cls(ncs, dict(history), days, away, asset_types)


def _key(nc: Any, by: str | None) -> tuple[Any, ...]:
    return tuple(getattr(nc, name) for name in FIELDS[by])


def _rate(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _p90(values: list[float]) -> float | None:
    return float(np.percentile(values, 90)) if values else None


def _s(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def figures(rows: Rows, start: datetime, end: datetime, by: str | None, tz: ZoneInfo,
            sites: set[str] | None = None) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every group's figures over [start, end)."""
    ncs = [nc for nc in rows.ncs if sites is None or nc.site_id in sites]
    flows: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    stock: dict[tuple[Any, ...], list[tuple[Nonconformance, str]]] = defaultdict(list)
    for nc in ncs:
        before = [h for h in rows.history[nc.pk] if h.at < end]
        if not before:
            continue
        if nc.detected_at < end and before[-1].to_state in OPEN:
            stock[_key(nc, by)].append((nc, before[-1].to_state))
        if not start <= nc.detected_at < end:
            continue
        closings = [h for h in before if h.to_state == "closed" and h.from_state != "closed"]
        verifications = [h for h in before if h.action in ("verify", "verified", "reopened")]
        acks = [h.at for h in before if h.action in ("acknowledge", "rectify")]
        fixes = [h.at for h in before if h.action == "rectify"]
        flows[_key(nc, by)].append({
            "nc": nc, "state": before[-1].to_state,
            "ack": min(acks) if acks else None, "fix": max(fixes) if fixes else None,
            "close": closings[-1].at if closings else None,
            "sensor": bool(closings) and closings[-1].role in ("system", "agent"),
            "first": verifications[0].to_state == "closed" if verifications else None,
            "reopens": sum(1 for h in before if h.to_state == "open"
                           and h.from_state in ("pending_verification", "closed")),
            "chatter": nc.condition == "chattering" or any(
                "chattering" in (h.changes.get("condition") or []) for h in before
                if h.action in ("occurrence", "cleared"))})
    times = _time(rows, start, end, by, tz, sites)
    keys = set(flows) | set(stock) | set(times)
    return {key: _named(flows.get(key, []), stock.get(key, []), times.get(key), start, end)
            for key in keys}


def _named(flow: list[dict[str, Any]], stock: list[tuple[Nonconformance, str]],
           time: dict[str, Any] | None, start: datetime, end: datetime) -> dict[str, Any]:
    raised = len(flow)
    closed = [f for f in flow if f["state"] == "closed"]
    due = [f for f in flow if f["fix"] is not None and f["nc"].due_at is not None]
    verified = [f for f in flow if f["first"] is not None]
    based = [f for f in flow if f["fix"] or f["close"] or f["reopens"]]
    acks = [_s(f["ack"], f["nc"].detected_at) for f in flow if f["ack"]]
    fixes = [_s(f["fix"], f["nc"].detected_at) for f in flow if f["fix"]]
    closes = [_s(f["close"], f["nc"].detected_at) for f in closed]
    backlog = dict.fromkeys(("0-1d", "1-7d", "7-30d", "30d+"), 0)
    for nc, _ in stock:
        age = _s(end, nc.detected_at)
        backlog["0-1d" if age <= 86400 else "1-7d" if age <= 7 * 86400
                else "7-30d" if age <= 30 * 86400 else "30d+"] += 1
    periods: dict[int, int] = defaultdict(int)
    pairs: dict[tuple[Any, ...], int] = defaultdict(int)
    for f in flow:
        nc = f["nc"]
        periods[math.floor(nc.detected_at.timestamp()) // 600] += 1
        pairs[nc.site_id, nc.asset_id, nc.standard_id] += 1
    top = sorted(pairs.items(), key=lambda i: (-i[1], i[0][0], i[0][1], i[0][2] is None,
                                               i[0][2] or ""))[:10]
    out: dict[str, Any] = {
        "raised": raised, "closed": len(closed),
        "cancelled": sum(f["state"] == "cancelled" for f in flow),
        "open_at_end": len(stock),
        "overdue": sum(1 for nc, state in stock if nc.due_at is not None
                       and nc.due_at < end and state in UNRECTIFIED),
        "recurring": sum(f["nc"].recurring for f in flow),
        "cancel_rate": _rate(sum(f["state"] == "cancelled" for f in flow), raised),
        "on_time_rate": _rate(sum(f["fix"] <= f["nc"].due_at for f in due), len(due)),
        "first_pass_rate": _rate(sum(f["first"] for f in verified), len(verified)),
        "reopen_rate": _rate(sum(f["reopens"] > 0 for f in flow), len(based)),
        "recurrence_rate": _rate(sum(f["nc"].recurring for f in flow), raised),
        "closed_by_sensor_rate": _rate(sum(f["sensor"] for f in closed), len(closed)),
        "mtta_s": _mean(acks), "mttr_s": _mean(fixes), "mttc_s": _mean(closes),
        "mtta_p90_s": _p90(acks), "mttr_p90_s": _p90(fixes), "mttc_p90_s": _p90(closes),
        "backlog": backlog,
        "alarm_load": {
            "per_day": raised / (_s(end, start) / 86400),
            "peak_10m": max(periods.values(), default=0),
            "floods": sum(1 for n in periods.values() if n >= 10),
            "chattering": sum(f["chatter"] for f in flow),
            "open_over_24h": sum(1 for nc, _ in stock if _s(end, nc.detected_at) > 86400),
            "top10_share": _rate(sum(n for _, n in top), raised)},
        "pareto_count": [(p, n) for p, n in top],
        "compliance_rate": None, "coverage": None, "intactness_rate": None,
    }
    if time is not None:
        ok, bad, none = time["ok"], time["violating"], time["no_data"]
        out.update(compliance_rate=_rate(ok, ok + bad + none),
                   coverage=_rate(ok + bad, ok + bad + none),
                   intactness_rate=(1 - time["down"] / time["asset_s"]) if time["asset_s"]
                   else None,
                   pareto_violating=time["pareto"])
    return out


def _time(rows: Rows, start: datetime, end: datetime, by: str | None, tz: ZoneInfo,
          sites: set[str] | None) -> dict[tuple[Any, ...], dict[str, Any]]:
    if by == "root_cause":
        return {}
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    latest_pair: dict[tuple[str, str, str], Nonconformance] = {}
    latest_asset: dict[tuple[str, str], Nonconformance] = {}
    latest_standard: dict[str, Nonconformance] = {}
    for nc in rows.ncs:  # in pk order: later ones win
        if sites is not None and nc.site_id not in sites:
            continue
        latest_asset[nc.site_id, nc.asset_id] = nc
        if nc.standard_id is not None:
            latest_pair[nc.site_id, nc.asset_id, nc.standard_id] = nc
            latest_standard[nc.standard_id] = nc
    sums: dict[tuple[str, str, str], dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(("ok", "violating", "no_data"), 0.0))
    for day in rows.days:
        if (sites is None or day.site_id in sites) and \
                first <= date.fromisoformat(day.day) <= last:
            pair = sums[day.site_id, day.asset_id, day.standard_id]
            for name in pair:
                pair[name] += getattr(day, name)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for (site, asset, standard), seconds in sums.items():
        known = (latest_pair.get((site, asset, standard))
                 or latest_asset.get((site, asset)) or latest_standard.get(standard))
        by_standard = latest_pair.get((site, asset, standard)) or latest_standard.get(standard)
        values = {"site_id": site, "asset_id": asset, "standard_id": standard,
                  "asset_type": rows.asset_types.get(asset),
                  "category": by_standard.category if by_standard else None,
                  "department": known.department if known else None}
        key = tuple(values[name] for name in FIELDS[by])
        group = groups.setdefault(key, {"ok": 0.0, "violating": 0.0, "no_data": 0.0,
                                        "assets": set(), "pairs": {}})
        for name, value in seconds.items():
            group[name] += value
        group["assets"].add((site, asset))
        if seconds["violating"]:
            group["pairs"][site, asset, standard] = seconds["violating"]
    for key, group in groups.items():
        group["asset_s"], group["down"] = 0.0, 0.0
        for site, asset in group["assets"]:
            away = _union([(max(o.starts_at, start), min(o.ends_at, end)) for o in rows.away
                           if (o.site_id, o.asset_id) == (site, asset)])
            group["asset_s"] += _s(end, start) - sum(_s(b, a) for a, b in away)
            down = _union([
                (max(nc.detected_at, start), min(nc.closed_at or end, end))
                for nc in rows.ncs
                if (nc.site_id, nc.asset_id) == (site, asset) and _key(nc, by) == key
                and nc.category == "equipment" and nc.severity in ("major", "critical")
                and nc.state != "cancelled"])
            group["down"] += sum(_s(b, a) for a, b in down) - _cut(down, away)
        group["pareto"] = sorted(group["pairs"].items(),
                                 key=lambda i: (-i[1], i[0]))[:10]
    return groups


def _union(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Covered time as disjoint intervals, by a sweep over the ends (not merging)."""
    points = sorted([(a, 1) for a, b in intervals if a < b]
                    + [(b, -1) for a, b in intervals if a < b])
    out, depth, opened = [], 0, None
    for moment, step in sorted(points, key=lambda p: (p[0], -p[1])):
        if depth == 0 and step == 1:
            opened = moment
        depth += step
        if depth == 0 and opened is not None:
            out.append((opened, moment))
    return out


def _cut(a: list[tuple[datetime, datetime]], b: list[tuple[datetime, datetime]]) -> float:
    return sum(max(0.0, _s(min(x2, y2), max(x1, y1))) for x1, x2 in a for y1, y2 in b)


def window(first: date, last: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[first's midnight, the midnight after last) in UTC."""
    return (datetime.combine(first, datetime.min.time(), tz).astimezone(UTC),
            datetime.combine(last + timedelta(days=1), datetime.min.time(), tz)
            .astimezone(UTC))
