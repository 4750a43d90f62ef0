"""What a `report:` schedule sends: a compliance summary of a period (NCs raised, closed,
open, overdue; compliance and coverage; the standards with most NCs) and the KPI report's
headline figures for the site (api.reports: SPEC 7.3's figures with their
`site.kpi_targets` status)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.compliance import MAX_DAYS
from api.reports.period import Window
from api.reports.report import compliance_report
from api.store import Compliance, ComplianceDay, Nonconformance
from api.workflow import OPEN_STATES, UNRECTIFIED

TOP = 5
"""Standards named as those with the most NCs raised in the period."""


KPI = ("on_time_rate", "first_pass_rate", "reopen_rate", "mttr_s", "intactness_rate")
"""The KPI report's figures a scheduled report names (the whole report is one request
away: GET /api/v1/reports/compliance)."""


def report_summary(session: Session, *, site_id: str, start: datetime, end: datetime,
                   now: datetime, timezone: str = "UTC",
                   targets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The period [start, end) of one site: NCs raised and closed in it, open and overdue
    at `now`, the compliance rate (ok / (ok + violating) seconds) and coverage ((ok +
    violating) / judged seconds) over its UTC days, pairs violating now, and the
    standards with the most NCs raised; and under `kpi` the KPI report's headline figures
    for the site over the same period, each `{value, status}` (status None without a
    target)."""
    nc = Nonconformance
    in_site = nc.site_id == site_id

    def count(*where: Any) -> int:
        return session.scalar(select(func.count()).select_from(nc).where(in_site, *where)) or 0

    raised_in = (nc.detected_at >= start, nc.detected_at < end)
    first = max(start, end - timedelta(days=MAX_DAYS)).date().isoformat()
    last = (end - timedelta(microseconds=1)).date().isoformat()
    day = ComplianceDay
    ok, violating, no_data = session.execute(select(
        func.coalesce(func.sum(day.ok), 0.0), func.coalesce(func.sum(day.violating), 0.0),
        func.coalesce(func.sum(day.no_data), 0.0)).where(
        day.site_id == site_id, day.day >= first, day.day <= last)).one()
    judged = ok + violating
    top = session.execute(
        select(nc.standard_id, func.count()).where(in_site, *raised_in,
                                                   nc.standard_id.is_not(None))
        .group_by(nc.standard_id).order_by(func.count().desc(), nc.standard_id).limit(TOP))
    report = compliance_report(session, window=Window(start, end, ZoneInfo(timezone)),
                               group_by="site", sites={site_id}, targets=targets)
    total = report["total"]
    kpi = {name: {"value": total["figures"].get(name),
                  "status": (total.get("status") or {}).get(name)} for name in KPI}
    return {
        "site_id": site_id, "from": start, "to": end, "kpi": kpi,
        "raised": count(*raised_in),
        "closed": count(nc.closed_at >= start, nc.closed_at < end),
        "open": count(nc.state.in_(OPEN_STATES)),
        "overdue": count(nc.state.in_(UNRECTIFIED), nc.due_at < now),
        "compliance_rate": ok / judged if judged else None,
        "coverage": judged / (judged + no_data) if judged + no_data else None,
        "violating_now": session.scalar(select(func.count()).select_from(Compliance).where(
            Compliance.site_id == site_id, Compliance.state == "violating")) or 0,
        "top_standards": [(standard, n) for standard, n in top],
    }
