"""Root causes as a controlled list (SPEC 7.3): `rectify` takes `root_cause_category`
beside the free text, one of `site.root_cause_categories`, `unknown` when none is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.store import Database, Nonconformance
from common.vocabulary import ROOT_CAUSE_CATEGORIES
from tests.test_api import HOUR, NOW, Api, cleared, engine_event

SITE_CATEGORIES = ["pump_seal", "controls", "unknown"]
"""A site's own list: `design` (a default) is not in it."""


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db, root_cause_categories=SITE_CATEGORIES)) as client:
        yield Api(client, db)


def rectify(api: Api, nc_id: str, body: dict[str, str]) -> tuple[int, dict]:
    response = api.client.post(f"/api/v1/nonconformances/{nc_id}/rectify", json=body,
                               headers=api.headers("engineer"))
    return response.status_code, response.json()


def stored_category(db: Database, asset: str = "CH-1") -> str | None:
    with db.session() as session:
        return session.scalar(select(Nonconformance.root_cause_category)
                              .where(Nonconformance.asset_id == asset))


def history(api: Api, nc_id: str) -> list[dict]:
    response = api.client.get(f"/api/v1/nonconformances/{nc_id}/history",
                              headers=api.headers("tracker"))
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_a_category_from_the_list_is_kept_in_the_column_the_nc_and_the_history(
        api: Api, db: Database) -> None:
    api.apply(engine_event())
    assert stored_category(db) is None  # not rectified yet: nobody classified it

    status, nc = rectify(api, "NC-000001", {"action": "replaced the seal",
                                            "root_cause": "seal worn after 3 years",
                                            "root_cause_category": "pump_seal"})
    assert status == 200, nc
    assert nc["rectification"]["root_cause_category"] == "pump_seal"
    assert nc["rectification"]["root_cause"] == "seal worn after 3 years"
    assert stored_category(db) == "pump_seal"
    entry = history(api, "NC-000001")[-1]
    assert entry["action"] == "rectify"
    old, new = entry["changes"]["rectification"]
    assert old is None and new["root_cause_category"] == "pump_seal"


def test_a_tracker_sending_only_the_free_text_records_unknown(api: Api, db: Database) -> None:
    api.apply(engine_event())
    status, nc = rectify(api, "NC-000001", {"action": "reset", "root_cause": "tripped"})
    assert status == 200, nc
    assert nc["rectification"]["root_cause_category"] == "unknown"
    assert stored_category(db) == "unknown"


@pytest.mark.parametrize("category", ["design", "PUMP_SEAL", "pump seal"])
def test_a_category_outside_the_sites_list_is_422_naming_the_list(
        api: Api, db: Database, category: str) -> None:
    api.apply(engine_event())
    status, body = rectify(api, "NC-000001", {"action": "reset",
                                              "root_cause_category": category})
    assert status == 422
    assert "pump_seal, controls, unknown" in body["detail"]
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["rectification"]) == ("open", None)
    assert stored_category(db) is None
    assert [e["action"] for e in history(api, "NC-000001")] == ["raised"]


def test_the_default_list_is_the_vocabularys(db: Database) -> None:
    with TestClient(create_app(db)) as client:
        api = Api(client, db)
        api.apply(engine_event(), engine_event(asset="CH-2"))
        status, nc = rectify(api, "NC-000001", {"action": "x", "root_cause_category": "design"})
        assert status == 200, nc
        status, body = rectify(api, "NC-000002", {"action": "x",
                                                  "root_cause_category": "pump_seal"})
        assert status == 422
        assert ", ".join(ROOT_CAUSE_CATEGORIES) in body["detail"]


def test_a_recurring_nc_still_needs_the_free_text_root_cause(api: Api) -> None:
    start = NOW - 10 * HOUR
    api.apply(engine_event(start=start, on_recovery="close"),
              cleared(start=start, at=start + HOUR, on_recovery="close"),
              engine_event(start=NOW - HOUR))
    nc = api.nc("NC-000002")
    assert nc["recurring"] is True
    status, body = rectify(api, "NC-000002", {"action": "reset",
                                              "root_cause_category": "controls"})
    assert status == 422 and "root_cause" in body["detail"]
    status, body = rectify(api, "NC-000002", {"action": "reset", "root_cause": "bad PID",
                                              "root_cause_category": "controls"})
    assert status == 200, body
    assert body["rectification"]["root_cause_category"] == "controls"


def test_a_second_rectification_after_a_failed_verification_shows_the_new_category(
        api: Api, db: Database) -> None:
    api.apply(engine_event())
    assert rectify(api, "NC-000001", {"action": "reset"})[0] == 200
    failed = api.client.post("/api/v1/nonconformances/NC-000001/verify",
                             json={"result": "fail"}, headers=api.headers("quality"))
    assert failed.status_code == 200, failed.text
    status, nc = rectify(api, "NC-000001", {"action": "rewired",
                                            "root_cause_category": "controls"})
    assert status == 200, nc
    assert stored_category(db) == "controls"
    old, new = history(api, "NC-000001")[-1]["changes"]["rectification"]
    assert (old["root_cause_category"], new["root_cause_category"]) == ("unknown", "controls")


def test_patrol_run_hands_the_sites_list_to_the_api(tmp_path: Path) -> None:
    from agent.runtime import _api_server
    from agent.site import load_site

    (tmp_path / "site.yaml").write_text(
        "site: {id: plant-1, root_cause_categories: [pump_seal, controls]}\n"
        f"server: {{database: 'sqlite:///{tmp_path / 'patrol.sqlite'}'}}\n")
    database, server = _api_server(load_site(tmp_path / "site.yaml"))
    try:
        # `unknown` is always a choice: the site config adds it
        assert server.config.app.state.root_cause_categories == (
            "pump_seal", "controls", "unknown")
    finally:
        database.close()
