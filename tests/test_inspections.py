# ruff: noqa: RUF001  (full-width punctuation in zh-CN and look-alikes are meant)
"""Inspections (SPEC 7.3) over the real app on SQLite and PostgreSQL: pairs judged from the
compliance snapshots agents post, NCs raised or added to through the lifecycle, the
manual checklist and its NCs, roles and site scope, refusals as 4xx, the listing; and the
last value a snapshot carries, from a real engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.ingest import apply_events
from api.inspections import judge, service
from api.inspections.config import InspectionsConfig, InspectionSetup
from api.inspections.judge import Selection
from api.service import SYSTEM_ACTOR
from api.store import Database, OutOfService
from rules.events import Snapshot, SnapshotIn
from rules.standard import Asset
from tests.rules.test_range import MIN, T0, feed, make_engine
from tests.test_api import Api, engine_event
from tests.test_scope import scoped

TEMPLATES = {
    "templates": [{
        "name": "daily-patrol", "standards": ["HVAC-*"],
        "assets": {"asset_types": ["chiller", "ahu"]},
        "items": [{"id": "logbook", "text": "Plant room log book filled in"},
                  {"id": "extinguishers", "text": "Extinguishers in date",
                   "asset": "PUMP-1", "severity": "minor", "rectify_within": "2d"}]}],
    "schedules": []}
ASSETS = {a.id: a for a in (
    Asset(id="CH-1", type="chiller", tags={"floor": "B1"}), Asset(id="CH-2", type="chiller"),
    Asset(id="AHU-1", type="ahu"), Asset(id="PUMP-1", type="pump"))}
STANDARDS = {
    "HVAC-AHU-TEMP": {"title": "AHU supply air 14-18 degC", "severity": "critical",
                      "department": "engineering", "rectify_within": 3600.0,
                      "kind": "range", "clause": "4.3"},
}


def setup(site_id: str = "tower-a") -> InspectionSetup:
    return InspectionSetup(InspectionsConfig.model_validate(TEMPLATES), site_id,
                           assets=ASSETS, standards=STANDARDS)


def item(asset: str, standard: str, state: str, value: float | None = None,
         at: datetime | None = None) -> dict[str, Any]:
    return {"asset_id": asset, "standard_id": standard, "standard_version": 2,
            "state": state, "seconds": {state: 60.0}, "readings": 1, "last_value": value,
            "last_at": at.isoformat() if at else None}


def snapshot(*items: dict[str, Any], site: str = "tower-a",
             at: datetime | None = None) -> dict[str, Any]:
    at = at or datetime.now(UTC) - timedelta(seconds=30)
    return Snapshot(site, (at - timedelta(minutes=1)).timestamp(), at.timestamp(),
                    list(items)).to_dict()


def plant(at: datetime | None = None) -> dict[str, Any]:
    """CH-1 in limits, CH-2 and AHU-1 out, CH-1's return water outside its schedule, the
    pump's pressure without data: five pairs, four of them chillers' or AHUs' HVAC."""
    read = (at or datetime.now(UTC)) - timedelta(minutes=2)
    return snapshot(item("CH-1", "HVAC-CHW-SUPPLY", "ok", 7.1, read),
                    item("CH-2", "HVAC-CHW-SUPPLY", "violating", 9.4, read),
                    item("AHU-1", "HVAC-AHU-TEMP", "violating", 21.5, read),
                    item("CH-1", "HVAC-CHW-RETURN", "inactive", 12.0, read),
                    item("PUMP-1", "FIRE-PRESSURE", "no_data"), at=at)


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db, site_id="tower-a", inspections=setup())) as client:
        yield Api(client, db)


def inspect(api: Api, role: str = "quality", headers: dict[str, str] | None = None,
            **body: Any) -> dict[str, Any]:
    response = api.client.post("/api/v1/inspections", json=body,
                               headers=headers or api.headers(role))
    assert response.status_code == 201, response.text
    return response.json()


def answer(api: Api, inspection: int, item_id: str, role: str = "quality",
           **body: Any) -> Any:
    return api.client.put(f"/api/v1/inspections/{inspection}/items/{item_id}", json=body,
                          headers=api.headers(role))


def results(report: dict[str, Any]) -> dict[tuple[str, str | None], str]:
    return {(i["asset_id"], i["standard_id"] or i["item_id"]): i["result"]
            for i in report["items"]}


# --- pairs ---------------------------------------------------------------------------------


def test_a_template_judges_every_pair_it_selects_from_the_latest_snapshot(api: Api) -> None:
    api.apply(plant())
    report = inspect(api, template="daily-patrol")
    assert results(report) == {
        ("AHU-1", "HVAC-AHU-TEMP"): "fail", ("CH-1", "HVAC-CHW-RETURN"): "na",
        ("CH-1", "HVAC-CHW-SUPPLY"): "pass", ("CH-2", "HVAC-CHW-SUPPLY"): "fail",
        ("tower-a", "logbook"): "pending", ("PUMP-1", "extinguishers"): "pending"}
    assert report["counts"] == {"pass": 1, "fail": 2, "no_data": 0, "na": 1, "pending": 2}
    assert report["name"] == report["template"] == "daily-patrol"
    assert report["by"] == "quality-token" and report["finished_at"] is None
    passed = next(i for i in report["items"] if i["result"] == "pass")
    assert passed["value"] == 7.1 and passed["at"] is not None and passed["nc_id"] is None
    assert report["selection"] == {"standards": ["HVAC-*"], "assets": {
        "assets": [], "asset_types": ["chiller", "ahu"], "tags": {}}}
    got = api.client.get(f"/api/v1/inspections/{report['id']}", headers=api.headers("tracker"))
    assert got.status_code == 200 and got.json() == report


def test_a_failing_pair_adds_an_occurrence_to_its_open_nc_or_opens_one(api: Api) -> None:
    api.apply(engine_event(asset="CH-2", standard="HVAC-CHW-SUPPLY"), plant())
    report = inspect(api, template="daily-patrol")
    by_pair = {(i["asset_id"], i["standard_id"]): i for i in report["items"]}
    assert by_pair["CH-2", "HVAC-CHW-SUPPLY"]["nc_id"] == "NC-000001"
    existing = api.nc("NC-000001")
    assert existing["occurrences"] == 2 and existing["source"] == "auto"
    history = api.client.get("/api/v1/nonconformances/NC-000001/history",
                             headers=api.headers("tracker")).json()["items"]
    assert [h["action"] for h in history] == ["raised", "occurrence"]
    assert history[-1]["actor"] == "quality-token"
    new = api.nc(by_pair["AHU-1", "HVAC-AHU-TEMP"]["nc_id"])
    assert (new["source"], new["state"], new["title"], new["severity"], new["clause"]) == (
        "inspection", "open", "AHU supply air 14-18 degC", "critical", "4.3")
    assert (new["asset_type"], new["standard_kind"], new["department"]) == (
        "ahu", "range", "engineering")
    assert new["evidence"]["value"] == 21.5 and new["evidence"]["inspection"] == report["id"]
    detected = datetime.fromisoformat(new["detected_at"])
    assert datetime.fromisoformat(new["due_at"]) == detected + timedelta(hours=1)
    # a second inspection adds to the NCs the first opened: still one open per pair
    again = inspect(api, template="daily-patrol")
    assert {i["nc_id"] for i in again["items"] if i["result"] == "fail"} == {
        "NC-000001", new["id"]}
    assert api.nc(new["id"])["occurrences"] == 2
    assert len(api.items()) == 2


def test_a_standard_unknown_here_takes_its_summary_from_the_engines_last_nc(api: Api) -> None:
    """A central API without the site's files: the NC the engine opened says it."""
    api.apply(engine_event(asset="CH-2", standard="HVAC-CHW-SUPPLY"))
    nc = api.nc("NC-000001")
    api.client.post("/api/v1/nonconformances/NC-000001/cancel", json={"reason": "test"},
                    headers=api.headers("quality")).raise_for_status()
    api.apply(plant())
    report = inspect(api, name="chillers", standards=["HVAC-CHW-SUPPLY"], assets=["CH-2"])
    raised = api.nc(report["items"][0]["nc_id"])
    assert raised["id"] != "NC-000001" and raised["source"] == "inspection"
    assert (raised["title"], raised["severity"]) == (nc["title"], nc["severity"])


def test_ad_hoc_selectors_by_ids_globs_types_and_tags(api: Api) -> None:
    api.apply(plant())
    pump = inspect(api, name="pump check", standards=["FIRE-*"], assets=["PUMP-1"])
    assert pump["template"] is None and pump["finished_at"] is not None
    assert results(pump) == {("PUMP-1", "FIRE-PRESSURE"): "no_data"}
    chillers = inspect(api, name="chillers", assets={"asset_types": ["chiller"]})
    assert set(results(chillers)) == {("CH-1", "HVAC-CHW-SUPPLY"), ("CH-2", "HVAC-CHW-SUPPLY"),
                                      ("CH-1", "HVAC-CHW-RETURN")}
    tagged = inspect(api, name="B1", assets={"tags": {"floor": "B1"}},
                     standards=["*-SUPPLY"])
    assert set(results(tagged)) == {("CH-1", "HVAC-CHW-SUPPLY")}
    everything = inspect(api, name="all")
    assert len(everything["items"]) == 5
    narrowed = inspect(api, template="daily-patrol", assets=["CH-1"])
    assert {key for key, result in results(narrowed).items() if result != "pending"} == {
        ("CH-1", "HVAC-CHW-SUPPLY"), ("CH-1", "HVAC-CHW-RETURN")}


def test_a_silent_gateway_passes_nothing_and_an_asset_out_of_service_is_na(
        api: Api, db: Database) -> None:
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    api.apply(plant(at=hour_ago))
    with db.write() as session:
        session.add(OutOfService(site_id="tower-a", asset_id="AHU-1", starts_at=hour_ago,
                                 ends_at=hour_ago + timedelta(hours=3), reason="belt change",
                                 author="quality-token"))
        session.commit()
    report = inspect(api, name="stale")
    by_pair = {(i["asset_id"], i["standard_id"]): i for i in report["items"]}
    assert by_pair["CH-1", "HVAC-CHW-SUPPLY"]["result"] == "no_data"
    assert "no compliance snapshot since" in by_pair["CH-1", "HVAC-CHW-SUPPLY"]["note"]
    assert by_pair["AHU-1", "HVAC-AHU-TEMP"]["result"] == "na"
    assert by_pair["AHU-1", "HVAC-AHU-TEMP"]["note"] == "out of service: belt change"
    assert api.items() == []  # neither opens an NC


def test_selectors_picking_too_many_pairs_are_refused(api: Api,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    api.apply(plant())
    monkeypatch.setattr(judge, "MAX_PAIRS", 2)
    response = api.client.post("/api/v1/inspections", json={"name": "all"},
                               headers=api.headers("quality"))
    assert response.status_code == 422 and "narrow" in response.json()["detail"]
    assert api.client.get("/api/v1/inspections", headers=api.headers("quality")
                          ).json()["items"] == []  # nothing half made


# --- the manual checklist ---------------------------------------------------------------------


def test_checklist_answers_and_the_ncs_a_failure_opens(api: Api) -> None:
    api.apply(plant())
    report = inspect(api, template="daily-patrol")
    passed = answer(api, report["id"], "logbook", result="pass", note="all signed")
    assert passed.status_code == 200, passed.text
    logbook = next(i for i in passed.json()["items"] if i["item_id"] == "logbook")
    assert (logbook["result"], logbook["note"], logbook["answered_by"]) == (
        "pass", "all signed", "quality-token")
    assert passed.json()["finished_at"] is None  # the extinguishers still pending
    failed = answer(api, report["id"], "extinguishers", role="admin", result="fail",
                    note="two expired in B1").json()
    assert failed["finished_at"] is not None
    assert failed["counts"]["pending"] == 0 and failed["counts"]["pass"] == 2
    nc = api.nc(next(i["nc_id"] for i in failed["items"] if i["item_id"] == "extinguishers"))
    assert (nc["standard_id"], nc["asset_id"], nc["severity"], nc["source"]) == (
        "INSPECTION-daily-patrol-extinguishers", "PUMP-1", "minor", "inspection")
    assert nc["title"] == "Extinguishers in date" and nc["standard_kind"] == "checklist"
    assert datetime.fromisoformat(nc["due_at"]) - datetime.fromisoformat(
        nc["detected_at"]) == timedelta(days=2)
    # answering fail again does not raise twice; another inspection's fail adds to it
    answer(api, report["id"], "extinguishers", result="fail").raise_for_status()
    second = inspect(api, template="daily-patrol")
    again = answer(api, second["id"], "extinguishers", result="fail").json()
    assert next(i["nc_id"] for i in again["items"] if i["item_id"] == "extinguishers") \
        == nc["id"]
    assert api.nc(nc["id"])["occurrences"] == 2
    checklist = [n for n in api.items() if n["standard_id"].startswith("INSPECTION-")]
    assert len(checklist) == 1
    # the logbook item is on the site itself
    answer(api, second["id"], "logbook", result="na").raise_for_status()
    answer(api, second["id"], "logbook", result="fail").raise_for_status()
    assert any(n["asset_id"] == "tower-a" and n["standard_id"] ==
               "INSPECTION-daily-patrol-logbook" for n in api.items())


@pytest.mark.parametrize(("path", "body", "status"), [
    ("extinguishers", {"result": "maybe"}, 422),
    ("extinguishers", {"result": "pass", "colour": "red"}, 422),
    ("nothing-here", {"result": "pass"}, 404),
    ("HVAC-AHU-TEMP", {"result": "pass"}, 404),  # a pair is judged, not answered
    ("bad id!", {"result": "pass"}, 422),
])
def test_bad_answers_are_4xx(api: Api, path: str, body: dict[str, Any], status: int) -> None:
    api.apply(plant())
    report = inspect(api, template="daily-patrol")
    response = answer(api, report["id"], path, **body)
    assert response.status_code == status, response.text
    assert answer(api, 999_999, "logbook", result="pass").status_code == 404


# --- roles, scope, refusals, the listing ---------------------------------------------------


@pytest.mark.parametrize(("role", "status"), [
    ("quality", 201), ("admin", 201), ("engineer", 403), ("tracker", 403), ("agent", 403)])
def test_who_may_run_an_inspection(api: Api, role: str, status: int) -> None:
    api.apply(plant())
    response = api.client.post("/api/v1/inspections", json={"template": "daily-patrol"},
                               headers=api.headers(role))
    assert response.status_code == status, response.text


@pytest.mark.parametrize("role", ["engineer", "tracker", "agent"])
def test_only_quality_answers_the_checklist_and_every_role_reads(api: Api, role: str) -> None:
    report = inspect(api, template="daily-patrol")
    assert answer(api, report["id"], "logbook", role=role, result="pass").status_code == 403
    got = api.client.get(f"/api/v1/inspections/{report['id']}", headers=api.headers(role))
    assert got.status_code == 200 and got.json()["counts"]["pending"] == 2


def test_a_scoped_token_inspects_and_sees_only_its_sites(api: Api, db: Database) -> None:
    api.apply(plant(), snapshot(item("CH-9", "HVAC-CHW-SUPPLY", "violating", 9.0),
                                site="tower-b"))
    ours = inspect(api, template="daily-patrol")
    theirs_admin = scoped(db, "admin", "tower-b")
    refused = api.client.post("/api/v1/inspections", json={"template": "daily-patrol"},
                              headers=theirs_admin)
    assert refused.status_code == 403
    theirs = inspect(api, headers=theirs_admin, name="b", site_id="tower-b")
    assert results(theirs) == {("CH-9", "HVAC-CHW-SUPPLY"): "fail"}
    assert api.nc(theirs["items"][0]["nc_id"])["site_id"] == "tower-b"
    assert api.client.get(f"/api/v1/inspections/{ours['id']}",
                          headers=theirs_admin).status_code == 404
    assert answer(api, ours["id"], "logbook", role="quality", result="pass").status_code == 200
    put = api.client.put(f"/api/v1/inspections/{ours['id']}/items/logbook",
                         json={"result": "fail"}, headers=theirs_admin)
    assert put.status_code == 404
    listed = api.client.get("/api/v1/inspections", headers=theirs_admin).json()["items"]
    assert [i["id"] for i in listed] == [theirs["id"]]


@pytest.mark.parametrize(("body", "status"), [
    ({"template": "nightly"}, 422),
    ({}, 422),
    ({"name": "x", "standards": []}, 422),
    ({"name": "x", "assets": {"colour": ["red"]}}, 422),
    ({"name": "x", "site_id": "tower-a\u0000"}, 422),
    ({"name": "x", "unknown": 1}, 422),
])
def test_bad_requests_are_4xx(api: Api, body: dict[str, Any], status: int) -> None:
    response = api.client.post("/api/v1/inspections", json=body,
                               headers=api.headers("quality"))
    assert response.status_code == status, response.text


def test_an_api_without_a_site_needs_one_named(db: Database) -> None:
    with TestClient(create_app(db)) as client:
        api = Api(client, db)
        response = client.post("/api/v1/inspections", json={"name": "x"},
                               headers=api.headers("quality"))
        assert response.status_code == 422 and "site_id" in response.json()["detail"]
        assert inspect(api, name="x", site_id="tower-a")["items"] == []


def test_the_listing_is_newest_first_in_pages_and_filters(api: Api) -> None:
    api.apply(plant())
    made = [inspect(api, template="daily-patrol")["id"], inspect(api, name="adhoc")["id"],
            inspect(api, template="daily-patrol")["id"]]
    first = api.client.get("/api/v1/inspections", params={"limit": 2},
                           headers=api.headers("tracker")).json()
    assert [i["id"] for i in first["items"]] == made[:0:-1]
    assert "items" not in first["items"][0] and first["items"][0]["counts"]["fail"] == 2
    rest = api.client.get("/api/v1/inspections", params={"limit": 2,
                          "cursor": first["next_cursor"]}, headers=api.headers("tracker"))
    assert [i["id"] for i in rest.json()["items"]] == made[:1]
    assert rest.json()["next_cursor"] is None
    by_template = api.client.get("/api/v1/inspections", params={"template": "daily-patrol"},
                                 headers=api.headers("tracker")).json()["items"]
    assert [i["id"] for i in by_template] == [made[2], made[0]]
    bad = api.client.get("/api/v1/inspections", params={"cursor": "nonsense"},
                         headers=api.headers("tracker"))
    assert bad.status_code == 400
    assert api.client.get("/api/v1/inspections/424242",
                          headers=api.headers("tracker")).status_code == 404


# --- the last value, from a real engine ----------------------------------------------------


def test_a_real_engines_snapshot_carries_the_last_value_an_inspection_shows(
        db: Database) -> None:
    engine = make_engine()
    engine.snapshot(T0)
    feed(engine, [7.0] * 55 + [7.5, 9.4])  # past the evidence ring's 50: wrapped
    sent = engine.snapshot(T0 + 58 * MIN).to_dict()
    assert sent["items"][0]["last_value"] == 9.4
    assert sent["items"][0]["last_at"] == "2026-11-25T08:56:00Z"
    now = datetime.fromtimestamp(T0 + 58 * MIN, UTC)
    apply_events(db.write, [SnapshotIn.model_validate(sent)], now=now)
    report = service.start(db.write, setup(), site_id="tower-a", name="engine",
                           template=None, selection=Selection(), actor=SYSTEM_ACTOR, now=now)
    [judged] = report["items"]
    assert (judged["result"], judged["value"]) == ("fail", 9.4)
    assert judged["at"] == datetime.fromtimestamp(T0 + 56 * MIN, UTC)
    # a snapshot from an agent older than the fields keeps the value known
    older = {**engine.snapshot(T0 + 59 * MIN).to_dict(), "schema_version": 2}
    for line in older["items"]:
        del line["last_value"], line["last_at"]
    apply_events(db.write, [SnapshotIn.model_validate(older)], now=now + timedelta(minutes=1))
    again = service.start(db.write, setup(), site_id="tower-a", name="engine",
                          template=None, selection=Selection(), actor=SYSTEM_ACTOR,
                          now=now + timedelta(minutes=1))
    assert again["items"][0]["value"] == 9.4


def test_a_pair_never_read_has_no_last_value() -> None:
    engine = make_engine()
    line = engine.snapshot(T0).to_dict()["items"][0]
    assert line["last_value"] is None and line["last_at"] is None


# --- the report as a channel's text ---------------------------------------------------------


def report_with(lines: int) -> dict[str, Any]:
    pair = {"kind": "pair", "asset_id": "CH-[1](javascript:x)", "standard_id": "HVAC-*",
            "item_id": None, "text": None, "result": "fail", "value": 9.4,
            "at": datetime(2026, 11, 24, 23, 57, tzinfo=UTC), "note": None,
            "nc_id": "NC-000001"}
    return {"id": 1, "site_id": "tower-a", "name": "daily-patrol", "by": "quality-token",
            "started_at": datetime(2026, 11, 25, tzinfo=UTC),
            "counts": {"pass": 0, "fail": lines, "no_data": 0, "na": 0, "pending": 0},
            "items": [pair] * lines}


def test_report_data_is_escaped_for_each_tool_and_what_does_not_fit_is_counted() -> None:
    from api.inspections.render import inspection_document, render_document

    document = inspection_document(report_with(40), locale="zh-CN", timezone="Asia/Shanghai",
                                   site_name="Tower A")
    dingtalk = render_document(document, "dingtalk", 2000, "zh-CN")
    assert dingtalk.title == "[Patrol] Tower A检查报告 daily-patrol：40 项不通过，0 项无数据"
    assert "](javascript" not in dingtalk.body and "［1］" in dingtalk.body
    assert "**开始时间**: 2026年11月25日 08:00" in dingtalk.body
    assert len(dingtalk.body.encode()) <= 2000 and 0 < dingtalk.shown < 40
    assert dingtalk.body.endswith(f"… 另有 {40 - dingtalk.shown} 项未显示")
    html = render_document(document, "html", 100_000, "zh-CN")
    assert html.shown == 40 and "<b>开始时间</b>" in html.body
    assert "CH-[1](javascript:x)" in html.body and "<a" not in html.body
