"""The compliance report (SPEC 7.3): groups of figures beside the previous period's and
their KPI status. The figures are computed in api.reports.figures (NCs) and
api.reports.timeshare (time); this module names, divides and arranges them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.orm import Session

from api.errors import Invalid
from api.reports.figures import TOP, NcFigures, nc_figures
from api.reports.period import Window
from api.reports.shared import shared_figures
from api.reports.sql import GROUPS, KEY_FIELDS
from api.reports.status import Target, statuses
from api.reports.stock import add_stock, stock
from api.reports.timeshare import (
    Attributes,
    Downtime,
    TimeFigures,
    attributes,
    day_cuts,
    day_sums,
    downtime,
    time_figures,
)

Key = tuple[Any, ...]
T = TypeVar("T")

ROW_FIELDS = {"site": "site_id", "asset": "asset_id", "asset_type": "asset_type",
              "standard": "standard_id", "category": "category", "department": "department",
              "root_cause": "root_cause_category"}


class BadGrouping(Invalid):
    """A `group_by` the report does not know."""


def compliance_report(session: Session, *, window: Window, group_by: str,
                      sites: Collection[str] | None = None,
                      targets: Mapping[str, Target] | None = None,
                      asset_types: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The report's JSON form: `groups` by `group_by`, each beside the previous period of
    the same length, and the `total`."""
    if group_by not in GROUPS:
        raise BadGrouping(f"group_by must be one of {', '.join(GROUPS)}, not {group_by!r}")
    targets = targets or {}
    types = asset_types or {}

    def entry(key: dict[str, Any] | None, figures: dict[str, Any],
              previous: dict[str, Any]) -> dict[str, Any]:
        body = {"figures": figures, "previous": previous,
                "status": statuses(figures, targets)}
        return body if key is None else {"key": key, **body}

    groups: list[dict[str, Any]] = []
    if group_by == "month":
        months = window.months()
        periods = [part for _, part in months] + [window]
        *per_month, ((_, total), (_, total_before)) = _figures(session, periods, None,
                                                                sites, types)
        for (month, _), ((_, now), (_, before)) in zip(months, per_month, strict=True):
            groups.append(entry({"month": month}, now, before))
    else:
        [((now_groups, total), (before_groups, total_before))] = _figures(
            session, [window], group_by, sites, types)
        for key in sorted(now_groups.keys() | before_groups.keys(), key=_order):
            empty = _empty(window)
            groups.append(entry(dict(zip(KEY_FIELDS[group_by], key, strict=True)),
                                now_groups.get(key, empty), before_groups.get(key, empty)))
    previous = window.previous()
    return {"from": _local(window.start, window), "to": _local(window.end, window),
            "group_by": group_by, "timezone": str(window.tz.key),
            "previous_period": {"from": _local(previous.start, window),
                                "to": _local(previous.end, window)},
            "groups": groups, "total": entry(None, total, total_before)}


def _local(moment: datetime, window: Window) -> str:
    return moment.astimezone(window.tz).isoformat()


def _order(key: Key) -> tuple[tuple[bool, str], ...]:
    """Group keys in text order, the null key (NCs without that field) last."""
    return tuple((value is None, "" if value is None else str(value)) for value in key)


Figures = tuple[dict[Key, dict[str, Any]], dict[str, Any]]
"""The groups' figures by key, and the whole's."""


def _figures(session: Session, periods: list[Window], by: str | None,
             sites: Collection[str] | None, asset_types: Mapping[str, str | None]
             ) -> list[tuple[Figures, Figures]]:
    """For each of `periods` (the last the whole report's window), its figures and those
    of the period before it.

    The reads are independent and run at once, each in a session of its own (most of
    their time is spent in the database and in numpy, which let other threads run): the
    NCs of the windows (below), the stock at every end (api.reports.stock), the
    compliance seconds of every window, and the pairs' attributes with the equipment
    NCs, from which the time figures are computed."""
    fields = [ROW_FIELDS[name] for name in KEY_FIELDS[by]]
    windows = [w for period in periods for w in (period, period.previous())]
    cuts = day_cuts(windows)
    bind = session.get_bind()

    def apart(work: Callable[..., T], *args: Any) -> T:
        with Session(bind) as own:
            if bind.dialect.name == "postgresql":  # compiling a plan costs more than it
                own.execute(text("SET LOCAL jit = off"))  # saves on these reads
                if len(periods) > 1:  # a month report's reads keep the cores busy: workers
                    # of their own only add their coordination (7 % of its time on two
                    # cores); a report of one period is quicker with them
                    own.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
            return work(own, *args)

    def known(own: Session) -> tuple[Attributes, Downtime]:
        return attributes(own, sites, asset_types), downtime(own, windows, sites, fields)

    # one thread per read: the SQLite and numpy parts of each run beside the others
    with ThreadPoolExecutor(max_workers=5, thread_name_prefix="report") as pool:
        # A month report's months, the periods before them (the first month's too, a
        # month before the window) and the whole window share one read of their NCs
        # (25 windows: a fraction of 25 reads); the report's previous period, the last
        # of `windows` (a year before), is read alone, and so is each window of a report
        # of one period, as a shared read carries each NC's pair, pk and spans, which
        # for two windows costs more than a second read saves.
        together = windows[:-1] if len(periods) > 1 else []
        reads = ([together] if together else []) + [[w] for w in windows
                                                     if w not in together]
        ncs = [(part, pool.submit(apart, _flows, part, by, sites)) for part in reads]
        sums = pool.submit(apart, day_sums, cuts, sites)
        attrs = pool.submit(apart, known)
        stocks = pool.submit(apart, stock, {w.end for w in windows}, by, sites)
        times = time_figures(windows, by, *attrs.result(), cuts, sums.result())
        flows = {id(w): found for part, future in ncs
                 for w, found in zip(part, future.result(), strict=True)}
        figures = []
        for w, (time_groups, time_whole) in zip(windows, times, strict=True):
            nc_groups, nc_whole = flows[id(w)]
            add_stock(nc_groups, nc_whole, stocks.result()[w.end], by)
            groups = {key: named(w, nc_groups.get(key, NcFigures()), time_groups.get(key))
                      for key in nc_groups.keys() | time_groups.keys()}
            figures.append((groups, named(w, nc_whole, time_whole)))
    return list(zip(figures[::2], figures[1::2], strict=True))


def _flows(session: Session, windows: list[Window], by: str | None,
           sites: Collection[str] | None) -> list[tuple[dict[Key, NcFigures], NcFigures]]:
    """The NC flow figures of each of `windows`: read alone, or from shared reads."""
    if len(windows) == 1:
        return [nc_figures(session, windows[0], by, sites)]
    return shared_figures(session, windows, by, sites)


def _empty(window: Window) -> dict[str, Any]:
    return named(window, NcFigures(), None)


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def named(window: Window, nc: NcFigures, time: TimeFigures | None) -> dict[str, Any]:
    """The figures of one group under their names (SPEC 7.3), rates taken."""
    s = nc.sums
    raised = int(s["raised"])
    top = _top(nc.pairs)
    figures: dict[str, Any] = {
        "raised": raised, "closed": int(s["closed"]), "cancelled": int(s["cancelled"]),
        "open_at_end": nc.open_at_end, "overdue": nc.overdue,
        "recurring": int(s["recurring"]),
        "cancel_rate": ratio(s["cancelled"], raised),
        "on_time_rate": ratio(s["on_time"], s["rectified_due"]),
        "first_pass_rate": ratio(s["first_pass"], s["verified"]),
        "reopen_rate": ratio(s["reopened"], s["reopen_base"]),
        "recurrence_rate": ratio(s["recurring"], raised),
        "closed_by_sensor_rate": ratio(s["closed_by_sensor"], s["closed"]),
        "mtta_s": ratio(s["ack_sum"], s["ack_n"]),
        "mttr_s": ratio(s["rect_sum"], s["rect_n"]),
        "mttc_s": ratio(s["close_sum"], s["close_n"]),
        "mtta_p90_s": nc.p90["mtta"], "mttr_p90_s": nc.p90["mttr"],
        "mttc_p90_s": nc.p90["mttc"],
        "backlog": dict(nc.backlog),
        "compliance_rate": None, "coverage": None, "active_s": 0.0, "no_data_s": 0.0,
        "intactness_rate": None,
        "alarm_load": {
            "per_day": raised / (window.seconds / 86400), "peak_10m": nc.peak_10m,
            "floods": nc.floods, "chattering": int(s["chattering"]),
            "open_over_24h": nc.open_over_24h,
            "top10_share": ratio(sum(count for _, count in top), raised)},
        "pareto": [_pareto_item("count", rank, pair, count, raised, running)
                   for rank, (pair, count, running) in enumerate(_running(top), 1)],
    }
    if time is not None:
        seconds = time.seconds
        active = seconds["ok"] + seconds["violating"] + seconds["no_data"]
        figures.update(compliance_rate=ratio(seconds["ok"], active),
                       coverage=ratio(seconds["ok"] + seconds["violating"], active),
                       active_s=active, no_data_s=seconds["no_data"],
                       intactness_rate=(1.0 - time.down_s / time.asset_s
                                        if time.asset_s > 0 else None))
        violating = _top(time.violating)
        whole = seconds["violating"]
        figures["pareto"] += [_pareto_item("violating_s", rank, pair, value, whole, running)
                              for rank, (pair, value, running)
                              in enumerate(_running(violating), 1)]
    return figures


def _top(values: Mapping[Key, float]) -> list[tuple[Key, float]]:
    """The TOP items of most value, ties in key order: only those that can be among them
    are sorted by key (a year holds a thousand pairs, a month report 26 such lists)."""
    if len(values) > TOP:
        least = sorted(values.values(), reverse=True)[TOP - 1]
        values = {key: value for key, value in values.items() if value >= least}
    return sorted(values.items(), key=lambda item: (-item[1], _order(item[0])))[:TOP]


def _running(items: list[tuple[Any, float]]) -> list[tuple[Any, float, float]]:
    total, out = 0.0, []
    for pair, value in items:
        total += value
        out.append((pair, value, total))
    return out


def _pareto_item(by: str, rank: int, pair: tuple[str, str, str | None], value: float,
                 whole: float, running: float) -> dict[str, Any]:
    return {"by": by, "rank": rank, "site": pair[0], "asset": pair[1], "standard": pair[2],
            "value": value, "share": ratio(value, whole),
            "cumulative_share": ratio(running, whole)}
