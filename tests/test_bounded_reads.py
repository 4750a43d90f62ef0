"""Every answer that grows with history is bounded: compliance seconds over a window of
days summed by the database, and pages (compliance pairs, NC history, webhook
deliveries) that return every row exactly once. On SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from api.app import create_app
from api.store import Compliance, ComplianceDay, Database, Delivery, FeedEvent, Webhook
from tests.test_api import Api, engine_event

TODAY = datetime.now(UTC).date()
STATES = ("ok", "violating", "no_data", "inactive")
PAIRS = [("tower-a", f"CH-{a}", f"STD-{s}") for a in range(3) for s in range(3)] + [
    ("tower-b", "AHU-1", "STD-0")]
DAYS = 90


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db)) as client:
        yield Api(client, db)


@pytest.fixture
def days(db: Database) -> dict[tuple[str, str, str, date], dict[str, float]]:
    """DAYS days of seconds for every pair in PAIRS (a few days missing), written straight
    to the tables; returned as the test's own record to sum independently."""
    rng = random.Random(12)
    written: dict[tuple[str, str, str, date], dict[str, float]] = {}
    for site, asset, standard in PAIRS:
        for back in range(DAYS):
            if rng.random() < 0.1:
                continue  # a day the agent was off
            day = TODAY - timedelta(days=back)
            written[(site, asset, standard, day)] = {
                state: round(rng.uniform(0, 20000), 3) for state in STATES}
    with db.write() as session:
        session.execute(insert(Compliance), [
            {"site_id": site, "asset_id": asset, "standard_id": standard,
             "standard_version": 1, "state": "ok", "updated_at": datetime.now(UTC)}
            for site, asset, standard in PAIRS])
        session.execute(insert(ComplianceDay), [
            {"site_id": s, "asset_id": a, "standard_id": t, "day": d.isoformat(), **seconds}
            for (s, a, t, d), seconds in written.items()])
        session.commit()
    return written


def expected(written: dict[tuple[str, str, str, date], dict[str, float]], first: date,
             last: date) -> dict[tuple[str, str, str], dict[str, float]]:
    sums = {pair: dict.fromkeys(STATES, 0.0) for pair in PAIRS}
    for (site, asset, standard, day), seconds in written.items():
        if first <= day <= last:
            for state in STATES:
                sums[(site, asset, standard)][state] += seconds[state]
    return sums


def compliance(api: Api, **params: Any) -> dict[str, Any]:
    response = api.client.get("/api/v1/compliance", params=params,
                              headers=api.headers("tracker"))
    assert response.status_code == 200, response.text
    return response.json()


def all_pages(api: Api, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        page = compliance(api, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never end")


def as_sums(items: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, float]]:
    return {(i["site_id"], i["asset_id"], i["standard_id"]): i["seconds"] for i in items}


def assert_close(got: dict[Any, dict[str, float]], want: dict[Any, dict[str, float]]) -> None:
    assert got.keys() == want.keys()
    for pair, seconds in want.items():
        assert got[pair] == pytest.approx(seconds, rel=1e-9, abs=1e-6), pair


def test_compliance_seconds_default_to_the_last_30_days(
        api: Api, days: dict[tuple[str, str, str, date], dict[str, float]]) -> None:
    page = compliance(api, limit=1000)
    first = TODAY - timedelta(days=29)
    assert page["window"] == {"from": first.isoformat(), "to": TODAY.isoformat()}
    assert_close(as_sums(page["items"]), expected(days, first, TODAY))


@pytest.mark.parametrize(("back_from", "back_to"), [(89, 0), (60, 45), (10, 10), (400, 80)])
def test_compliance_seconds_equal_an_independent_sum_over_the_window(
        api: Api, days: dict[tuple[str, str, str, date], dict[str, float]], back_from: int,
        back_to: int) -> None:
    first, last = TODAY - timedelta(days=back_from), TODAY - timedelta(days=back_to)
    items = all_pages(api, **{"from": first.isoformat(), "to": last.isoformat()}, limit=4)
    assert_close(as_sums(items), expected(days, first, last))


def test_compliance_pages_return_every_pair_exactly_once_in_order(
        api: Api, days: dict[tuple[str, str, str, date], dict[str, float]]) -> None:
    for limit in (1, 3, len(PAIRS), 1000):
        items = all_pages(api, limit=limit)
        pairs = [(i["site_id"], i["asset_id"], i["standard_id"]) for i in items]
        assert pairs == sorted(PAIRS), limit
    filtered = all_pages(api, site_id="tower-a", limit=2)
    assert len(filtered) == len(PAIRS) - 1
    assert {i["site_id"] for i in filtered} == {"tower-a"}


@pytest.mark.parametrize(("params", "status"), [
    ({"from": "2026-03-02", "to": "2026-03-01"}, 422),  # backwards
    ({"from": "2024-01-01", "to": "2026-01-01"}, 422),  # over MAX_DAYS
    ({"from": "yesterday"}, 422), ({"to": "0001-01-02"}, 422), ({"from": "9999-12-30"}, 422),
    ({"limit": 0}, 422), ({"limit": 1001}, 422),
    ({"cursor": "not-a-cursor"}, 400), ({"cursor": "WyJhIl0"}, 400),  # ["a"]
])
def test_a_bad_window_or_page_is_refused_with_a_reason(api: Api, params: dict[str, Any],
                                                       status: int) -> None:
    response = api.client.get("/api/v1/compliance", params=params,
                              headers=api.headers("tracker"))
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_history_pages_return_every_entry_exactly_once(api: Api) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=30)
    api.apply(engine_event(start=start))
    for hour in range(1, 12):  # occurrences: one history entry each
        api.apply(engine_event(start=start + timedelta(hours=hour)))
    url = "/api/v1/nonconformances/NC-000001/history"
    whole = api.client.get(url, params={"limit": 1000}, headers=api.headers("tracker")).json()
    assert len(whole["items"]) == 12 and whole["next_cursor"] is None
    got: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = api.client.get(url, params={"limit": 5, **({"cursor": cursor} if cursor
                                                              else {})},
                                  headers=api.headers("tracker"))
        assert response.status_code == 200, response.text
        got += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert got == whole["items"]
    bad = api.client.get(url, params={"cursor": "x"}, headers=api.headers("tracker"))
    assert bad.status_code == 400


def test_deliveries_page_newest_first_and_return_every_one_once(api: Api, db: Database) -> None:
    api.apply(engine_event())
    now = datetime.now(UTC)
    with db.write() as session:
        hook = Webhook(url="http://hooks.example/", event_types=[], secret="whsec_x", cursor=0)
        session.add(hook)
        session.flush()
        seq = session.query(FeedEvent.seq).scalar()
        session.execute(insert(Delivery), [
            {"webhook_id": hook.id, "seq": seq, "nc_pk": 1, "message_id": f"m{i}",
             "status": ("delivered", "dead")[i % 2], "next_attempt_at": now,
             "created_at": now} for i in range(23)])
        session.commit()
        hook_id = hook.id
    admin = api.headers("admin")
    url = f"/api/v1/webhooks/{hook_id}/deliveries"
    got: list[int] = []
    before = None
    while True:
        response = api.client.get(url, params={"limit": 5, **({"before": before} if before
                                                              else {})}, headers=admin)
        assert response.status_code == 200, response.text
        page = [d["id"] for d in response.json()]
        if not page:
            break
        got += page
        before = page[-1]
    assert got == sorted(got, reverse=True) and len(set(got)) == len(got) == 23
    dead = api.client.get(url, params={"status": "dead", "limit": 1000}, headers=admin).json()
    assert len(dead) == 11 and {d["status"] for d in dead} == {"dead"}


def test_webhooks_page_by_id_and_leave_out_the_deleted(api: Api) -> None:
    admin = api.headers("admin")
    ids = [api.client.post("/api/v1/webhooks", json={"url": f"http://203.0.113.{n}/hook"},
                           headers=admin).json()["id"] for n in range(1, 8)]
    assert api.client.delete(f"/api/v1/webhooks/{ids[2]}", headers=admin).status_code == 204
    got: list[int] = []
    after = None
    while True:
        page = api.client.get("/api/v1/webhooks", params={"limit": 3, **(
            {"after": after} if after else {})}, headers=admin).json()
        got += [hook["id"] for hook in page]
        if len(page) < 3:
            break
        after = page[-1]["id"]
    assert got == [hook_id for hook_id in ids if hook_id != ids[2]]
