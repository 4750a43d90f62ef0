"""The report seed (tests/reports_seed.py) writes NCs and their history directly, for
speed; here the same paths go through the real lifecycle (the API, as agents and people
use it) and both histories must agree, step for step: what changed, from which state to
which, recorded as which action by which role, and the NC columns the reports read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.nc_facts import COLUMNS as FACT_COLUMNS
from api.reports.figures import kept_facts
from api.store import EPOCH_TIMES, Database, Nonconformance, derived, epochs
from tests.reports_seed import HOUR as SECONDS_AN_HOUR
from tests.reports_seed import Asset, Generator, Spec, Standard
from tests.test_api import HOUR, NOW, Api, cleared, engine_event

STEP = timedelta(minutes=10)
ROLE = {"acknowledge": "engineer", "start": "engineer", "rectify": "engineer",
        "assign": "engineer", "verify": "quality", "cancel": "quality", "reopen": "quality"}
BODY: dict[str, dict[str, Any]] = {"rectify": {"action": "fixed", "root_cause": "worn seal"},
                                   "assign": {"assignee": "wang.fang"},
                                   "cancel": {"reason": "why"}, "reopen": {"reason": "why"}}

PATHS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "verified": [("acknowledge", {}), ("start", {}), ("rectify", {}),
                 ("verify", {"result": "pass"})],
    "failed_then_fixed": [("acknowledge", {}), ("rectify", {}), ("verify", {"result": "fail"}),
                          ("rectify", {}), ("verify", {"result": "pass"})],
    "cancelled": [("acknowledge", {}), ("cancel", {})],
    "reopened_after_close": [("rectify", {}), ("verify", {"result": "pass"}), ("reopen", {})],
    "assigned_then_rectified": [("assign", {}), ("rectify", {})],
    "chattering": [("chattering", {})],
    "recovered": [("close_on_recovery", {})],
}
"""Paths of the seed's PATHS (and their parts), as the seed's steps."""


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db, max_clock_skew=timedelta(days=1))) as client:
        yield Api(client, db)


def real(api: Api, path: str) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """The path through the API: the history as (action, from, to, role) and the NC."""
    start = NOW - 3 * HOUR
    info = {"on_recovery": "close"} if path == "recovered" else {}
    api.apply(engine_event(start=start, **info))
    for number, (name, kwargs) in enumerate(PATHS[path], start=1):
        if name == "chattering":
            api.apply(engine_event("chattering", start=start + number * STEP, **info))
        elif name == "close_on_recovery":
            api.apply(cleared(start=start, at=start + number * STEP, **info))
        else:
            response = api.client.post(f"/api/v1/nonconformances/NC-000001/{name}",
                                       json={**BODY.get(name, {}), **kwargs},
                                       headers=api.headers(ROLE[name]))
            assert response.status_code == 200, response.text
    history = api.client.get("/api/v1/nonconformances/NC-000001/history",
                             headers=api.headers("tracker")).json()["items"]
    return ([(h["action"], h["from_state"], h["to_state"], h["role"]) for h in history],
            api.nc("NC-000001"))


def seeded(path: str) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """The same path as the seed writes it."""
    spec = Spec()
    generator = Generator(spec)
    on_recovery = "close" if path == "recovered" else "keep_open"
    standard = Standard("STD-00", "equipment", "major", 24 * SECONDS_AN_HOUR, SECONDS_AN_HOUR,
                        None, on_recovery)
    asset = Asset("tower-a", "CH-1", "chiller", "engineering")
    at = spec.end - timedelta(days=2)
    nc = generator.raise_nc(asset, standard, at, recurring=False)
    for number, (name, kwargs) in enumerate(PATHS[path], start=1):
        assert generator.step(nc, name, at + number * STEP, **kwargs)
    return ([(h["action"], h["from_state"], h["to_state"], h["role"]) for h in nc.history],
            nc.row)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_the_seed_writes_the_history_the_lifecycle_writes(api: Api, path: str) -> None:
    made, nc = real(api, path)
    written, row = seeded(path)
    assert written == made
    for column in ("state", "reopen_count", "condition", "occurrences", "source"):
        assert row[column] == nc[column], column
    with api.db.session() as session:  # the facts the reports read, not in the public form
        kept = session.get(Nonconformance, 1)
        assert kept is not None
        for column in FACT_COLUMNS:
            value = getattr(kept, column)
            assert (row[column] is None) == (value is None), column
            if column != "acknowledged_at":  # a time: the two paths start at different ones
                assert row[column] == value, column
        # the lifecycle's writes keep the times the reports read as integers
        assert {name: getattr(kept, name) for name in epochs(row)} == epochs(
            {name: getattr(kept, name) for name in EPOCH_TIMES})
        # and the flags, as the reports' SQL computes them from the NC's columns
        flags = session.execute(select(Nonconformance.facts, kept_facts(kept=False)[0])
                                .where(Nonconformance.pk == 1)).one()
        assert flags[0] == flags[1] == derived(row)["facts"]
    assert (row["closed_at"] is None) == (nc["closed_at"] is None)
    for part in ("rectification", "verification"):
        assert (row[part] is None) == (nc[part] is None), part
        if row[part] is not None and "result" in row[part]:
            assert row[part]["result"] == nc[part]["result"]
