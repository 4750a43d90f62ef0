"""compliance_months, the reports' monthly roll-up of compliance_days: after snapshots
ingested through the API, and after migration 0017 fills it from the days, each month
holds the sums of its days, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, text

from api.app import create_app
from api.ingest import add_seconds
from api.reports.timeshare import day_sums
from api.store import ComplianceDay, ComplianceMonth, Database
from common.vocabulary import COMPLIANCE_STATES
from rules.events import Snapshot
from tests.test_api import Api

FILL = importlib.import_module("api.migrations.versions.0017_compliance_months").FILL
ASSETS = {"CH-1": "chiller", "CH-2": "chiller"}


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db, site_id="tower-a", assets=ASSETS)) as client:
        yield Api(client, db)


def snapshot(at: datetime, *items: dict[str, Any]) -> dict[str, Any]:
    since = at - timedelta(minutes=10)
    return Snapshot("tower-a", since.timestamp(), at.timestamp(), list(items)).to_dict()


def item(asset: str, standard: str, **seconds: float) -> dict[str, Any]:
    return {"asset_id": asset, "standard_id": standard, "standard_version": 1,
            "state": "ok", "seconds": seconds, "readings": 0}


def months(db: Database) -> dict[tuple[str, ...], list[float]]:
    with db.session() as session:
        return {tuple(row[:4]): list(row[4:]) for row in session.execute(select(
            ComplianceMonth.site_id, ComplianceMonth.asset_id, ComplianceMonth.standard_id,
            ComplianceMonth.month,
            *(getattr(ComplianceMonth, state) for state in COMPLIANCE_STATES)))}


def days_by_month(db: Database) -> dict[tuple[str, ...], list[float]]:
    day = ComplianceDay
    month = func.substr(day.day, 1, 7)
    with db.session() as session:
        return {tuple(row[:4]): list(row[4:]) for row in session.execute(
            select(day.site_id, day.asset_id, day.standard_id, month,
                   *(func.sum(getattr(day, state)) for state in COMPLIANCE_STATES))
            .group_by(day.site_id, day.asset_id, day.standard_id, month))}


def test_a_month_holds_the_sums_of_its_days(api: Api) -> None:
    """Snapshots on days of three months and two years, several a day: every month the
    sum of its days."""
    start = datetime(2025, 12, 31, 23, 40, tzinfo=UTC)
    for n in range(8):  # every 10 minutes across new year's midnight, then a month on
        at = start + timedelta(minutes=10 * n) + timedelta(days=31 * (n // 4))
        api.apply(snapshot(at, item("CH-1", "S-1", ok=500.25 + n, violating=99.75),
                           item("CH-2", "S-1", ok=300, no_data=300.5, inactive=n / 3),
                           item("CH-1", "S-2", violating=600)))
    api.apply(snapshot(datetime(2026, 2, 28, 12, tzinfo=UTC),
                       item("CH-1", "S-1", ok=1.5, violating=2.5)))
    found, wanted = months(api.db), days_by_month(api.db)
    assert {key[3] for key in found} == {"2025-12", "2026-01", "2026-02"}
    assert found == {key: pytest.approx(values, rel=1e-12) for key, values in wanted.items()}
    assert found["tower-a", "CH-1", "S-1", "2026-02"] == pytest.approx(
        [4 * 500.25 + 4 + 5 + 6 + 7 + 1.5, 4 * 99.75 + 2.5, 0, 0], rel=1e-12)


def test_the_migration_fills_the_months_of_the_days_before_it(api: Api) -> None:
    for n in range(3):
        api.apply(snapshot(datetime(2026, 3, 30, 8, tzinfo=UTC) + timedelta(days=n),
                           item("CH-1", "S-1", ok=60.0 * n, violating=1.25),
                           item("CH-2", "S-3", no_data=7.0)))
    wanted = months(api.db)
    with api.db.write() as session:
        session.execute(delete(ComplianceMonth))
        session.execute(text(FILL))
        session.commit()
    assert months(api.db) == {key: pytest.approx(values, rel=1e-12)
                              for key, values in wanted.items()}
    assert len(wanted) == 4


def test_a_divided_months_largest_piece_is_the_month_less_the_others(db: Database) -> None:
    """api.reports.timeshare.day_sums reads the largest piece of a month its cuts divide
    as the month less its other pieces: the same seconds as its days (to rounding; a
    state without seconds there has none, not a rounding's worth), and a pair without a
    day in it is absent from it."""
    def row(pair: str, day: int, ok: float, violating: float) -> dict[str, Any]:
        return {"site_id": "tower-a", "asset_id": "CH-1", "standard_id": pair,
                "day": f"2026-01-{day:02d}", "ok": ok, "violating": violating,
                "no_data": 0.0, "inactive": 0.0}

    with db.write() as session:  # several snapshots a day: the month adds in another order
        for part in range(3):
            add_seconds(session, [row("S-ALL", day, 0.1 * day + part,
                                      0.1 * (1 + 0.1 * part) if day < 4 else 0.0)
                                  for day in range(1, 32)]
                        + [row("S-EDGE", day, 0.7, 0.1 * part) for day in (2, 3, 30)])
        session.commit()
    cuts = ["2026-01-01", "2026-01-04", "2026-01-29", "2026-02-01"]
    with db.session() as session:
        pairs, sums = day_sums(session, cuts, None)
    everything, edge = (pairs.index(("tower-a", "CH-1", s)) for s in ("S-ALL", "S-EDGE"))
    ok, violating = 1 + COMPLIANCE_STATES.index("ok"), 1 + COMPLIANCE_STATES.index("violating")
    assert sums[edge, 1].tolist() == [0.0] * (1 + len(COMPLIANCE_STATES))  # no day in it
    assert sums[everything, 1, 0] > 0 and sums[everything, 1, violating] == 0.0
    assert sums[everything, 1, ok] == pytest.approx(sum(3 * 0.1 * d + 3 for d in range(4, 29)))
    assert sums[edge, 0, violating] == pytest.approx(2 * 0.3)
    assert sums[edge, 2, ok] == pytest.approx(3 * 0.7)
