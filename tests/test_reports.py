"""GET /reports/compliance (SPEC 7.3): every figure against a recomputation in plain
Python (tests/report_oracle.py) over a seeded history (tests/reports_seed.py), on SQLite
and PostgreSQL; every grouping, the previous period, KPI statuses, CSV and XLSX read back,
site scope and refusals."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from agent.site import KpiTarget
from api.app import create_app
from api.auth import create_token
from api.reports import GROUPS
from api.reports.status import status_of
from api.store import Database
from tests import report_oracle as oracle
from tests.reports_seed import Spec, catalog, seed

SPEC = Spec()
TZ = ZoneInfo("Asia/Shanghai")
TARGETS = {"on_time_rate": KpiTarget(target=0.95, amber=0.5),
           "mttr_s": KpiTarget(target=86400, amber=172800),
           "cancel_rate": KpiTarget(target=0.05, amber=0.2),
           "compliance_rate": KpiTarget(target=0.99, amber=0.95),
           "backlog.30d+": KpiTarget(target=0, amber=3)}
LAST_DAY = (SPEC.end - timedelta(days=1)).date()  # the seed's last day, tz aside


class Store:
    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.counts = seed(self.db, SPEC)
        assets, _ = catalog(SPEC)
        self.types = {a.id: a.type for a in assets}
        self.app = create_app(self.db, site_id="tower-a", assets=self.types,
                              kpi_targets=TARGETS, timezone="Asia/Shanghai")
        with self.db.session() as session:
            self.tokens = {
                "tracker": create_token(session, name="t", role="tracker"),
                "scoped": create_token(session, name="s", role="engineer",
                                       sites=["tower-a"])}
        self.rows = oracle.Rows.load(self.db, self.types)
        self.client = TestClient(self.app)

    def get(self, token: str = "tracker", **params: Any) -> Any:
        return self.client.get("/api/v1/reports/compliance", params=params,
                               headers={"Authorization": f"Bearer {self.tokens[token]}"})

    def report(self, **params: Any) -> dict[str, Any]:
        response = self.get(**params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def store(module_database_url: str) -> Iterator[Store]:
    under_test = Store(module_database_url)
    with under_test.client:
        yield under_test
    under_test.db.close()


def approx(value: Any) -> Any:
    return None if value is None else pytest.approx(value, rel=1e-6, abs=1e-3)


def check(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    """Every figure of `got` (the API's) as `want` (the oracle's) has it."""
    for name in ("raised", "closed", "cancelled", "open_at_end", "overdue", "recurring",
                 "backlog"):
        assert got[name] == want[name], f"{where}: {name}"
    for name in ("cancel_rate", "on_time_rate", "first_pass_rate", "reopen_rate",
                 "recurrence_rate", "closed_by_sensor_rate", "mtta_s", "mttr_s", "mttc_s",
                 "mtta_p90_s", "mttr_p90_s", "mttc_p90_s", "compliance_rate", "coverage",
                 "intactness_rate"):
        assert got[name] == approx(want[name]), f"{where}: {name}"
    load, expected = got["alarm_load"], want["alarm_load"]
    for name in ("peak_10m", "floods", "chattering", "open_over_24h"):
        assert load[name] == expected[name], f"{where}: alarm_load.{name}"
    for name in ("per_day", "top10_share"):
        assert load[name] == approx(expected[name]), f"{where}: alarm_load.{name}"
    counts = [((p["site"], p["asset"], p["standard"]), p["value"])
              for p in got["pareto"] if p["by"] == "count"]
    assert counts == want["pareto_count"], f"{where}: pareto by count"
    violating = [((p["site"], p["asset"], p["standard"]), approx(p["value"]))
                 for p in got["pareto"] if p["by"] == "violating_s"]
    assert violating == want.get("pareto_violating", []), f"{where}: pareto by time"


def expected(store: Store, start: datetime, end: datetime, by: str | None,
             sites: set[str] | None = None) -> dict[tuple[Any, ...], dict[str, Any]]:
    return oracle.figures(store.rows, start, end, by, TZ, sites)


def test_the_seed_covers_every_path(store: Store) -> None:
    """The history holds each way through the lifecycle the figures count."""
    actions = {(h.action, h.from_state, h.to_state, h.role)
               for entries in store.rows.history.values() for h in entries}
    for wanted in [("acknowledge", "open", "acknowledged", "engineer"),
                   ("start", "acknowledged", "rectifying", "engineer"),
                   ("verify", "pending_verification", "closed", "quality"),
                   ("verify", "pending_verification", "open", "quality"),
                   ("verified", "pending_verification", "closed", "system"),
                   ("reopened", "pending_verification", "open", "system"),
                   ("cleared", "open", "closed", "agent"),
                   ("reopen", "closed", "open", "quality"),
                   ("cancel", "acknowledged", "cancelled", "quality"),
                   ("overdue", "open", "open", "system")]:
        assert wanted in actions, wanted
    ncs = store.rows.ncs
    assert store.counts["ncs"] > 500 and store.counts["compliance_days"] > 15000
    assert any(nc.recurring for nc in ncs) and any(nc.source == "manual" for nc in ncs)
    assert any(nc.state in ("open", "acknowledged", "rectifying") and nc.due_at
               and nc.due_at < SPEC.end for nc in ncs)  # overdue at the end
    assert any(nc.condition == "chattering" for nc in ncs) or any(
        "chattering" in str(h.changes) for e in store.rows.history.values() for h in e)


@pytest.mark.parametrize(("first", "last"), [
    (LAST_DAY - timedelta(days=29), LAST_DAY),   # the last 30 days
    (LAST_DAY - timedelta(days=44), LAST_DAY - timedelta(days=5)),  # ends in the past
    (SPEC.start.date() + timedelta(days=45), LAST_DAY)])  # previous period half empty
def test_the_total_matches_a_recomputation(store: Store, first: date, last: date) -> None:
    report = store.report(**{"from": first.isoformat(), "to": last.isoformat()})
    start, end = oracle.window(first, last, TZ)
    assert datetime.fromisoformat(report["from"]) == start
    assert datetime.fromisoformat(report["to"]) == end
    check(report["total"]["figures"], expected(store, start, end, None)[()], "total")
    before = expected(store, start - (end - start), start, None).get(())
    if before is not None:
        check(report["total"]["previous"], before, "previous")


@pytest.mark.parametrize("group_by", [g for g in GROUPS if g != "month"])
def test_every_group_matches_a_recomputation(store: Store, group_by: str) -> None:
    first, last = LAST_DAY - timedelta(days=29), LAST_DAY
    report = store.report(**{"from": first.isoformat(), "to": last.isoformat(),
                             "group_by": group_by})
    start, end = oracle.window(first, last, TZ)
    now = expected(store, start, end, group_by)
    before = expected(store, start - (end - start), start, group_by)
    fields = oracle.FIELDS[group_by]
    keys = [tuple(g["key"][name] for name in g["key"]) for g in report["groups"]]
    assert set(keys) == set(now) | set(before)
    assert all(len(g["key"]) == len(fields) for g in report["groups"])
    for group, key in zip(report["groups"], keys, strict=True):
        if key in now:
            check(group["figures"], now[key], f"{group_by}={key}")
        else:
            assert group["figures"]["raised"] == 0 and group["figures"]["open_at_end"] == 0
        if key in before:
            check(group["previous"], before[key], f"{group_by}={key} before")
    if group_by == "department":
        assert {"工程部", "品质部", "安保部"} <= {k[0] for k in keys}


def test_months_are_their_own_windows(store: Store) -> None:
    """group_by=month: each calendar month (site time) cut to the window, beside the
    same length just before it."""
    first, last = date(2026, 9, 15), LAST_DAY
    report = store.report(**{"from": first.isoformat(), "to": last.isoformat(),
                             "group_by": "month"})
    assert [g["key"]["month"] for g in report["groups"]] == ["2026-09", "2026-10", "2026-11"]
    bounds = [(first, date(2026, 9, 30)), (date(2026, 10, 1), date(2026, 10, 31)),
              (date(2026, 11, 1), last)]
    for group, (a, b) in zip(report["groups"], bounds, strict=True):
        start, end = oracle.window(a, b, TZ)
        check(group["figures"], expected(store, start, end, None)[()], f"month {a}")
        check(group["previous"], expected(store, start - (end - start), start, None)[()],
              f"month before {a}")


def test_a_month_group_is_the_report_of_that_month(store: Store) -> None:
    """group_by=month reads every month, the periods before them and the whole window in
    shared reads (api.reports.report._figures), split by window afterwards: each month's
    figures are those of a report of that month alone (floats but for rounding)."""
    report = store.report(**{"from": "2026-08-20", "to": LAST_DAY.isoformat(),
                             "group_by": "month"})
    bounds = [("2026-08-20", "2026-08-31"), ("2026-09-01", "2026-09-30"),
              ("2026-10-01", "2026-10-31"), ("2026-11-01", LAST_DAY.isoformat())]
    assert len(report["groups"]) == len(bounds)
    for group, (a, b) in zip(report["groups"], bounds, strict=True):
        alone = store.report(**{"from": a, "to": b})["total"]
        assert group["figures"] == rounded(alone["figures"]), a
        assert group["previous"] == rounded(alone["previous"]), a
    whole = store.report(**{"from": "2026-08-20", "to": LAST_DAY.isoformat()})["total"]
    assert report["total"]["figures"] == rounded(whole["figures"])
    assert report["total"]["previous"] == rounded(whole["previous"])


def rounded(value: Any) -> Any:
    """`value` with each float compared approximately (intervals add up in another
    order when windows share a read)."""
    if isinstance(value, dict):
        return {name: rounded(item) for name, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return pytest.approx(value, rel=1e-9) if isinstance(value, float) else value


def test_a_datetime_window_in_site_time(store: Store) -> None:
    start = datetime(2026, 11, 10, 8, 30, tzinfo=TZ)
    end = datetime(2026, 11, 20, 17, 0, tzinfo=TZ)
    report = store.report(**{"from": "2026-11-10T08:30:00", "to": "2026-11-20T09:00:00Z",
                             "group_by": "standard"})
    assert datetime.fromisoformat(report["to"]) == end
    now = expected(store, start.astimezone(UTC), end.astimezone(UTC), "standard")
    for group in report["groups"]:
        key = (group["key"]["standard"],)
        if key in now:
            check(group["figures"], now[key], f"standard={key}")


def test_statuses_follow_the_targets(store: Store) -> None:
    # the seed's last 30 days, not the default's (the last 30 days before now): the backlog
    # ages with the clock, and a group's green one turned amber as a day went by
    report = store.report(group_by="category", **{
        "from": (LAST_DAY - timedelta(days=29)).isoformat(), "to": LAST_DAY.isoformat()})
    for entry in [*report["groups"], report["total"]]:
        figures = entry["figures"]
        for name, target in TARGETS.items():
            value = figures
            for part in name.split("."):
                value = value[part]
            if value is None:
                assert name not in entry["status"]
            else:
                assert entry["status"][name] == status_of(name, value, target)
    statuses = {s for e in report["groups"] for s in e["status"].values()}
    assert statuses == {"green", "amber", "red"}  # the seed meets all three


def test_status_directions() -> None:
    target = KpiTarget(target=0.9, amber=0.8)
    assert [status_of("on_time_rate", v, target) for v in (0.95, 0.9, 0.85, 0.5)] == \
        ["green", "green", "amber", "red"]
    slow = KpiTarget(target=3600, amber=7200)
    assert [status_of("mttr_s", v, slow) for v in (60, 3600, 5000, 9000)] == \
        ["green", "green", "amber", "red"]
    assert status_of("cancel_rate", 0.01, KpiTarget(target=0.05, amber=0.1)) == "green"
    assert status_of("reopen_rate", 0.2, KpiTarget(target=0.05, amber=0.1)) == "red"


def test_the_default_window_is_the_last_30_days(store: Store) -> None:
    report = store.report()
    start, end = (datetime.fromisoformat(report[k]) for k in ("from", "to"))
    assert end - start == timedelta(days=30) and report["group_by"] == "site"
    assert end > datetime.now(UTC) and end.utcoffset() == timedelta(hours=8)


def test_csv_reads_back_with_its_bom(store: Store) -> None:
    params = {"from": "2026-11-01", "to": LAST_DAY.isoformat(), "group_by": "department"}
    report = store.report(**params)
    response = store.get(**params, format="csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert len(rows) == len(report["groups"]) + 1 and rows[-1]["row"] == "total"
    departments = [g["key"]["department"] for g in report["groups"]]
    assert [r["department"] for r in rows[:-1]] == [d or "" for d in departments]
    assert "工程部" in departments
    for row, group in zip(rows, [*report["groups"], report["total"]], strict=False):
        figures = group["figures"]
        assert int(row["raised"]) == figures["raised"]
        assert int(row["previous.raised"]) == group["previous"]["raised"]
        assert float(row["alarm_load.per_day"]) == pytest.approx(
            figures["alarm_load"]["per_day"])
        assert int(row["backlog.30d+"]) == figures["backlog"]["30d+"]
        if figures["mttr_s"] is None:
            assert row["mttr_s"] == ""
        else:
            assert float(row["mttr_s"]) == pytest.approx(figures["mttr_s"])
        assert row["status.on_time_rate"] == group["status"].get("on_time_rate", "")


def test_xlsx_opens_in_openpyxl(store: Store) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    params = {"from": "2026-11-01", "to": LAST_DAY.isoformat(), "group_by": "department"}
    report = store.report(**params)
    response = store.get(**params, format="xlsx")
    assert response.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True)
    assert book.sheetnames == ["figures", "pareto", "about"]
    rows = list(book["figures"].iter_rows(values_only=True))
    header = rows[0]
    assert len(rows) == len(report["groups"]) + 2
    column = {name: i for i, name in enumerate(header)}
    for row, group in zip(rows[1:], [*report["groups"], report["total"]], strict=True):
        assert row[column["raised"]] == group["figures"]["raised"]
        assert row[column["department"]] == group.get("key", {}).get("department")
        assert row[column["compliance_rate"]] == approx(group["figures"]["compliance_rate"])
    pareto = list(book["pareto"].iter_rows(values_only=True))
    assert len(pareto) - 1 == sum(len(g["figures"]["pareto"])
                                  for g in [*report["groups"], report["total"]])
    about = dict(book["about"].iter_rows(values_only=True))
    assert about["group_by"] == "department" and about["timezone"] == "Asia/Shanghai"


def test_a_site_scoped_token_sees_its_sites_only(store: Store) -> None:
    first, last = LAST_DAY - timedelta(days=29), LAST_DAY
    params = {"from": first.isoformat(), "to": last.isoformat()}
    response = store.get("scoped", **params, group_by="site")
    assert response.status_code == 200
    report = response.json()
    assert [g["key"] for g in report["groups"]] == [{"site": "tower-a"}]
    start, end = oracle.window(first, last, TZ)
    check(report["total"]["figures"], expected(store, start, end, None, {"tower-a"})[()],
          "scoped total")
    assert store.get("scoped", **params, site_id="tower-b").status_code == 403
    everyone = store.report(**params, site_id="tower-b", group_by="asset")
    assert {g["key"]["site"] for g in everyone["groups"]} == {"tower-b"}


@pytest.mark.parametrize(("params", "reason"), [
    ({"from": "2026-11-10", "to": "2026-11-01"}, "is not before"),
    ({"from": "2025-01-01", "to": "2026-11-01"}, "over 400 days"),
    ({"from": "yesterday"}, "must be a date"),
    ({"to": "9999-12-31"}, "calendar"),
    ({"from": "0001-01-01", "to": "0001-01-05"}, "calendar"),
])
def test_bad_windows_are_422_with_a_reason(store: Store, params: dict[str, str],
                                           reason: str) -> None:
    response = store.get(**params)
    assert response.status_code == 422
    assert reason in response.json()["detail"]


def test_refusals(store: Store) -> None:
    assert store.get(group_by="weekday").status_code == 422
    assert store.get(format="pdf").status_code == 422
    assert store.client.get("/api/v1/reports/compliance").status_code == 401


def test_intervals_merge_per_id_and_nothing_merges_to_nothing() -> None:
    """The interval union behind intactness (timeshare._union), on its edges: no
    interval, empty ones, touching ones, and ids apart."""
    import numpy as np

    from api.reports.timeshare import _union

    empty = np.empty(0)
    ids, lows, highs = _union(np.empty(0, dtype=np.intp), empty, empty, 100.0)
    assert len(ids) == len(lows) == len(highs) == 0
    given = (np.array([1, 0, 0, 0, 1, 2]), np.array([0.0, 10.0, 5.0, 30.0, 0.0, 7.0]),
             np.array([100.0, 20.0, 10.0, 40.0, 50.0, 7.0]))
    order = np.lexsort((given[1], given[0]))  # as Downtime.index sorts them
    ids, lows, highs = _union(*(column[order] for column in given), 100.0)
    assert list(zip(ids.tolist(), lows.tolist(), highs.tolist(), strict=True)) == [
        (0, 5.0, 20.0), (0, 30.0, 40.0), (1, 0.0, 100.0)]
