"""Out of service (SPEC 7.3): maintenance windows of an asset. Inside one, the asset's
violations open no NC (kept as suppressed events) and its compliance time is inactive."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.auth import create_token
from api.out_of_service import share_out, to_inactive
from api.store import Database, SuppressedEvent
from rules.events import Snapshot
from tests.test_api import Api, bearer, cleared, engine_event

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
ASSETS = {"CH-1": "chiller", "CH-2": "chiller", "CH-3": "chiller"}


def moment() -> datetime:
    """Now, to the second (events travel to the millisecond)."""
    return datetime.now(UTC).replace(microsecond=0)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db, site_id="tower-a", assets=ASSETS)) as client:
        yield Api(client, db)


def take_out(api: Api, asset: str = "CH-1", role: str = "quality",
             headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    body.setdefault("until", iso(moment() + 2 * HOUR))
    body.setdefault("reason", "annual overhaul / 年度大修")
    return api.client.post(f"/api/v1/assets/{asset}/out_of_service", json=body,
                           headers=headers or api.headers(role))


def window(api: Api, asset: str = "CH-1", **body: Any) -> dict[str, Any]:
    response = take_out(api, asset, **body)
    assert response.status_code == 201, response.text
    return response.json()


def windows(api: Api, asset: str = "CH-1", headers: dict[str, str] | None = None,
            **params: Any) -> list[dict[str, Any]]:
    response = api.client.get(f"/api/v1/assets/{asset}/out_of_service", params=params,
                              headers=headers or api.headers("tracker"))
    assert response.status_code == 200, response.text
    return response.json()["items"]


def suppressed(db: Database) -> list[SuppressedEvent]:
    with db.session() as session:
        return list(session.scalars(select(SuppressedEvent).order_by(SuppressedEvent.id)))


def scoped(db: Database, role: str = "quality", sites: tuple[str, ...] = ("tower-a",)) -> dict:
    with db.session() as session:
        return bearer(create_token(session, name=f"scoped-{role}", role=role,
                                   sites=list(sites)))


# --- the windows --------------------------------------------------------------------------


def test_quality_takes_an_asset_out_of_service_and_anyone_reads_it(api: Api) -> None:
    before = moment()
    made = window(api, until=iso(before + 3 * HOUR))
    assert (made["site_id"], made["asset_id"], made["state"], made["suppressed"]) == (
        "tower-a", "CH-1", "active", 0)
    assert made["reason"] == "annual overhaul / 年度大修"
    assert made["author"] == "quality-token"
    assert before <= datetime.fromisoformat(made["from"]) <= moment() + MINUTE
    assert made["until"] == iso(before + 3 * HOUR)
    later = window(api, **{"from": iso(before + 5 * HOUR), "until": iso(before + 6 * HOUR)},
                   role="admin")
    assert later["state"] == "pending"
    assert [w["id"] for w in windows(api)] == [later["id"], made["id"]]  # newest first
    assert windows(api, "CH-2") == []


@pytest.mark.parametrize("role", ["engineer", "tracker", "agent"])
def test_other_roles_may_not_make_or_end_windows(api: Api, role: str) -> None:
    made = window(api)
    assert take_out(api, role=role).status_code == 403
    ended = api.client.delete(f"/api/v1/out_of_service/{made['id']}",
                              headers=api.headers(role))
    assert ended.status_code == 403
    assert [w["state"] for w in windows(api)] == ["active"]


@pytest.mark.parametrize(("body", "words"), [
    ({"from": "PAST"}, "in the past"),
    ({"from": "LATER", "until": "SOON"}, "not after from"),
    ({"until": "LONG"}, "longer than 90 days"),
    ({"until": "2027-01-01T00:00:00"}, "time zone"),
    ({"reason": "   "}, "reason"),
    ({"reason": ""}, "reason"),
    ({"colour": "red"}, "extra"),
])
def test_a_window_out_of_bounds_is_422(api: Api, body: dict[str, str], words: str) -> None:
    now = moment()
    times = {"PAST": now - 10 * MINUTE, "LATER": now + 2 * HOUR, "SOON": now + HOUR,
             "LONG": now + timedelta(days=91)}
    body = {key: iso(times[value]) if value in times else value
            for key, value in body.items()}
    response = take_out(api, **body)
    assert response.status_code == 422, response.text
    assert words in response.text
    assert windows(api) == []


def test_a_window_may_start_a_few_minutes_ago(api: Api) -> None:
    start = moment() - 4 * MINUTE
    assert window(api, **{"from": iso(start)})["from"] == iso(start)


def test_an_asset_the_local_site_lacks_is_404_and_another_sites_is_not_checked(
        api: Api) -> None:
    response = take_out(api, "CH-404")
    assert response.status_code == 404 and "CH-404" in response.text
    elsewhere = window(api, "PUMP-7", site_id="tower-b")
    assert (elsewhere["site_id"], elsewhere["asset_id"]) == ("tower-b", "PUMP-7")


def test_a_central_api_needs_the_site_named(db: Database) -> None:
    with TestClient(create_app(db)) as client:
        api = Api(client, db)
        response = take_out(api)
        assert response.status_code == 422 and "site_id" in response.text
        assert window(api, site_id="tower-b")["site_id"] == "tower-b"


def test_a_scoped_token_works_within_its_sites(api: Api, db: Database) -> None:
    theirs = window(api, site_id="tower-b")
    ours = window(api)
    mine = scoped(db)
    assert take_out(api, headers=mine, site_id="tower-b").status_code == 403
    assert [w["id"] for w in windows(api, headers=scoped(db, "tracker"))] == [ours["id"]]
    assert windows(api, headers=mine, site_id="tower-b") == []
    refused = api.client.delete(f"/api/v1/out_of_service/{theirs['id']}", headers=mine)
    assert refused.status_code == 404
    assert take_out(api, headers=mine).status_code == 201  # the local site, its own
    other_site_only = scoped(db, sites=("tower-b",))
    assert take_out(api, headers=other_site_only).status_code == 403  # local is not theirs


def test_ending_a_window_early_keeps_it_and_a_second_end_changes_nothing(api: Api) -> None:
    made = window(api)
    pending = window(api, **{"from": iso(moment() + HOUR)})
    ended = api.client.delete(f"/api/v1/out_of_service/{made['id']}",
                              headers=api.headers("quality"))
    assert ended.status_code == 200, ended.text
    assert ended.json()["state"] == "ended"
    assert datetime.fromisoformat(ended.json()["until"]) <= moment() + MINUTE
    again = api.client.delete(f"/api/v1/out_of_service/{made['id']}",
                              headers=api.headers("admin"))
    assert again.json() == ended.json()
    never = api.client.delete(f"/api/v1/out_of_service/{pending['id']}",
                              headers=api.headers("quality")).json()
    assert (never["state"], never["until"]) == ("ended", never["from"])
    assert {w["id"]: w["state"] for w in windows(api)} == {made["id"]: "ended",
                                                          pending["id"]: "ended"}
    missing = api.client.delete("/api/v1/out_of_service/999", headers=api.headers("quality"))
    assert missing.status_code == 404


# --- effect 1: no NC for the asset's events inside the window ------------------------------


def test_a_violation_inside_the_window_opens_no_nc_and_is_kept_as_suppressed(
        api: Api, db: Database) -> None:
    now = moment()
    made = window(api, **{"from": iso(now - 4 * MINUTE)})
    inside = engine_event(start=now - 2 * MINUTE)
    chattering = engine_event("chattering", start=now - 3 * MINUTE)
    result = api.apply(inside, chattering)
    assert (result["applied"], result["ids"]) == (2, [inside["id"], chattering["id"]])
    assert api.items() == []
    kept = suppressed(db)
    assert [(s.event_id, s.type, s.asset_id, s.window_id) for s in kept] == [
        (inside["id"], "violation_started", "CH-1", made["id"]),
        (chattering["id"], "chattering", "CH-1", made["id"])]
    assert kept[0].at == now - 2 * MINUTE and kept[0].reason == made["reason"]
    assert api.apply(inside)["duplicates"] == 1  # still applied once: a replay is a no-op
    assert len(suppressed(db)) == 2
    assert windows(api)[0]["suppressed"] == 2

    # another asset, and the same asset before the window, raise NCs as ever
    api.apply(engine_event(asset="CH-2", start=now - 2 * MINUTE),
              engine_event(start=now - 10 * MINUTE))
    assert sorted(nc["asset_id"] for nc in api.items()) == ["CH-1", "CH-2"]
    [before] = api.items(asset_id="CH-1")
    assert before["detected_at"] == iso(now - 10 * MINUTE)


def test_an_nc_open_when_the_window_starts_stays_and_gains_no_occurrence(
        api: Api, db: Database) -> None:
    now = moment()
    api.apply(engine_event(start=now - HOUR))
    window(api, **{"from": iso(now - 4 * MINUTE)})
    api.apply(cleared(start=now - HOUR, at=now - 3 * MINUTE),
              engine_event(start=now - 2 * MINUTE))
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["occurrences"]) == ("open", 1)
    assert (nc["condition"], nc["cleared_at"]) == ("normal", iso(now - 3 * MINUTE))
    assert [s.asset_id for s in suppressed(db)] == ["CH-1"]


def test_after_the_window_is_ended_a_violation_opens_an_nc(api: Api) -> None:
    now = moment()
    made = window(api, **{"from": iso(now - 4 * MINUTE)})
    ended = api.client.delete(f"/api/v1/out_of_service/{made['id']}",
                              headers=api.headers("quality")).json()
    after = datetime.fromisoformat(ended["until"]).replace(microsecond=0) + 2 * SECOND
    api.apply(engine_event(start=now - 3 * MINUTE),  # dated inside: still held back
              engine_event(start=after))
    [nc] = api.items()
    assert nc["detected_at"] == iso(after)


# --- effect 2: its time counts as inactive --------------------------------------------------


def snapshot(since: datetime, at: datetime, *items: dict[str, Any]) -> dict[str, Any]:
    return Snapshot("tower-a", since.timestamp(), at.timestamp(), list(items)).to_dict()


def item(asset: str, **seconds: float) -> dict[str, Any]:
    return {"asset_id": asset, "standard_id": "HVAC-CHW-SUPPLY", "standard_version": 3,
            "state": "ok", "seconds": seconds, "readings": 0}


def seconds_of(api: Api, asset: str) -> dict[str, float]:
    response = api.client.get("/api/v1/compliance", params={"asset_id": asset},
                              headers=api.headers("tracker"))
    assert response.status_code == 200, response.text
    [row] = response.json()["items"]
    return row["seconds"]


def test_compliance_time_inside_the_window_moves_to_inactive_in_proportion(api: Api) -> None:
    now = moment()
    window(api, **{"from": iso(now - 4 * MINUTE)})
    # 8 minutes, the last 4 of them out of service: half of each state moves
    api.apply(snapshot(now - 8 * MINUTE, now, item("CH-1", ok=300, violating=120, no_data=60),
                       item("CH-2", ok=420, violating=60)))
    assert seconds_of(api, "CH-1") == {"ok": 150, "violating": 60, "no_data": 30,
                                       "inactive": 240}
    assert seconds_of(api, "CH-2") == {"ok": 420, "violating": 60, "no_data": 0,
                                       "inactive": 0}
    # a snapshot wholly inside: all of it
    api.apply(snapshot(now, now + MINUTE, item("CH-1", ok=40, violating=10, inactive=10)))
    assert seconds_of(api, "CH-1") == {"ok": 150, "violating": 60, "no_data": 30,
                                       "inactive": 300}


def test_verification_by_sensor_does_not_see_violations_of_an_asset_out_of_service(
        api: Api) -> None:
    now = moment()
    api.apply(engine_event(start=now - HOUR, verify_for=600.0),
              cleared(start=now - HOUR, at=now - 50 * MINUTE, verify_for=600.0))
    rectified = api.client.post("/api/v1/nonconformances/NC-000001/rectify",
                                json={"action": "replaced the valve"},
                                headers=api.headers("engineer"))
    assert rectified.status_code == 200, rectified.text
    start = moment() + timedelta(seconds=1)
    window(api, **{"from": iso(start)})
    # violating throughout, but wholly out of service: not a failed fix
    api.apply(snapshot(start, start + MINUTE, item("CH-1", violating=60)))
    assert api.nc("NC-000001")["state"] == "pending_verification"


# --- the arithmetic ------------------------------------------------------------------------


T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(("spans", "share"), [
    ([], 0.0),
    ([(0, 10)], 1.0),
    ([(-5, 5)], 0.5),
    ([(2, 4), (3, 6)], 0.4),   # overlapping windows count once
    ([(1, 2), (1, 2)], 0.1),
    ([(2, 3), (0, 10)], 1.0),  # one inside another
    ([(10, 20)], 0.0),         # [from, until): touching the end is outside
    ([(-9, 0)], 0.0),
])
def test_the_share_of_a_span_out_of_service(spans: list[tuple[int, int]], share: float) -> None:
    def at(minute: int) -> datetime:
        return T0 + minute * MINUTE

    found = share_out([(at(a), at(b)) for a, b in spans], at(0), at(10))
    assert found == pytest.approx(share)


def test_a_snapshot_of_no_length_is_out_when_a_window_holds_its_moment() -> None:
    assert share_out([(T0, T0 + HOUR)], T0, T0) == 1.0
    assert share_out([(T0 + MINUTE, T0 + HOUR)], T0, T0) == 0.0


def test_moving_seconds_to_inactive_keeps_the_total() -> None:
    moved = to_inactive({"ok": 100.0, "violating": 20.0, "inactive": 5.0}, 0.25)
    assert moved == {"ok": 75.0, "violating": 15.0, "no_data": 0.0, "inactive": 35.0}
    assert to_inactive({"ok": 1.0}, 0.0) == {"ok": 1.0}
