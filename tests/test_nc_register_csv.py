"""The NC register as CSV (SPEC 7.3): `GET /nonconformances?format=csv`, read back with
the csv module as Excel would open it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api import register
from api.app import create_app
from api.auth import create_token
from api.errors import Invalid
from api.service import Filters, list_ncs
from api.store import Database
from tests.test_api import HOUR, NOW, Api, bearer, engine_event

TITLE_ZH = "冷冻水供水温度超限 (机房 B2)"


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db, site_id="tower-a")) as client:
        yield Api(client, db)


def at_site(site: str, **kwargs: Any) -> dict[str, Any]:
    event = engine_event(**kwargs)
    return {**event, "site_id": site, "id": f"{site}-{event['id'][:40]}"}


def register_of(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.content.startswith(b"\xef\xbb\xbf")  # the BOM: Excel reads UTF-8
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert tuple(rows[0]) == register.COLUMNS
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def get_csv(api: Api, role: str = "quality", headers: dict[str, str] | None = None,
            **params: Any) -> httpx.Response:
    return api.client.get("/api/v1/nonconformances", params={"format": "csv", **params},
                          headers=headers or api.headers(role))


def manual(api: Api, title: str, asset: str = "CH-9", site: str = "tower-a") -> str:
    response = api.client.post("/api/v1/nonconformances", headers=api.headers("quality"),
                               json={"asset_id": asset, "title": title, "severity": "minor",
                                     "site_id": site})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_the_register_is_a_file_excel_opens_with_chinese_text_intact(api: Api) -> None:
    api.apply(engine_event(start=NOW - 3 * HOUR))
    nc_id = manual(api, TITLE_ZH)
    act = api.client.post("/api/v1/nonconformances/NC-000001/rectify",
                          headers=api.headers("engineer"),
                          json={"action": "更换阀门", "root_cause": "阀门老化",
                                "root_cause_category": "equipment_wear"})
    assert act.status_code == 200, act.text

    response = get_csv(api)
    assert response.headers["content-type"].startswith("text/csv")
    today = datetime.now(UTC).date().isoformat()
    assert response.headers["content-disposition"] == (
        f'attachment; filename="nonconformances-all-{today}.csv"')
    rows = register_of(response)
    assert [r["id"] for r in rows] == [nc_id, "NC-000001"]  # newest detected first
    found, auto = rows
    assert (found["title"], found["source"], found["root_cause_category"]) == (
        TITLE_ZH, "manual", "")
    assert (auto["state"], auto["rectification_action"], auto["root_cause"]) == (
        "pending_verification", "更换阀门", "阀门老化")
    assert auto["root_cause_category"] == "equipment_wear"
    assert auto["detected_at"] == (NOW - 3 * HOUR).isoformat().replace("+00:00", "Z")
    assert auto["rectified_at"].endswith("Z") and auto["closed_at"] == ""
    assert (auto["overdue"], auto["recurring"], auto["occurrences"]) == ("false", "false", "1")
    assert (auto["standard_id"], auto["asset_type"], auto["rectified_by"]) == (
        "HVAC-CHW-SUPPLY", "chiller", "engineer-token")


def test_a_cell_a_spreadsheet_would_run_as_a_formula_is_defused(api: Api) -> None:
    titles = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-2+3",
              "@SUM(A1:A2)", "\t=1+1", "a = b"]
    for n, title in enumerate(titles):
        manual(api, title, asset=f"CH-{n}")
    cells = {row["asset_id"]: row["title"] for row in register_of(get_csv(api))}
    assert [cells[f"CH-{n}"] for n in range(len(titles))] == [
        "'" + title for title in titles[:-1]] + ["a = b"]


def test_the_list_filters_and_from_to_choose_the_rows(api: Api) -> None:
    api.apply(engine_event(asset="CH-1", start=NOW - 50 * HOUR),
              engine_event(asset="CH-2", start=NOW - 30 * HOUR),
              engine_event(asset="CH-3", start=NOW - 10 * HOUR, severity="critical"))
    ack = api.client.post("/api/v1/nonconformances/NC-000002/acknowledge",
                          headers=api.headers("engineer"))
    assert ack.status_code == 200, ack.text

    def assets(**params: Any) -> list[str]:
        return [row["asset_id"] for row in register_of(get_csv(api, **params))]

    assert assets() == ["CH-3", "CH-2", "CH-1"]
    assert assets(state="acknowledged") == ["CH-2"]
    assert assets(severity="critical") == ["CH-3"]
    assert assets(asset_id="CH-1") == ["CH-1"]
    window = {"from": (NOW - 40 * HOUR).isoformat(), "to": (NOW - 10 * HOUR).isoformat()}
    assert assets(**window) == ["CH-2"]  # [from, to): CH-3 detected exactly at `to`
    assert assets(**{"from": (NOW - 10 * HOUR).isoformat()}) == ["CH-3"]
    # the JSON list takes the same window
    assert [nc["asset_id"] for nc in api.items(**window)] == ["CH-2"]
    assert [nc["asset_id"] for nc in api.items(to=(NOW - 30 * HOUR).isoformat())] == ["CH-1"]


@pytest.mark.parametrize("params", [
    {"from": "2026-11-01T00:00:00"},  # no time zone
    {"to": "yesterday"},
    {"from": (NOW - HOUR).isoformat(), "to": (NOW - 2 * HOUR).isoformat()},  # backwards
    {"from": (NOW - HOUR).isoformat(), "to": (NOW - HOUR).isoformat()},  # empty
    {"format": "xml"},
])
@pytest.mark.parametrize("format_", ["json", "csv"])
def test_a_bad_window_or_format_is_422(api: Api, params: dict[str, str], format_: str) -> None:
    response = api.client.get("/api/v1/nonconformances",
                              params={"format": format_, **params},
                              headers=api.headers("tracker"))
    assert response.status_code == 422, response.text


def test_a_scoped_token_gets_only_its_sites(api: Api, db: Database) -> None:
    api.apply(at_site("tower-a", asset="CH-1"), at_site("tower-b", asset="CH-1"),
              at_site("tower-c", asset="CH-1"))
    with db.session() as session:
        scoped = create_token(session, name="a-quality", role="quality", sites=["tower-a"])
        both = create_token(session, name="ab-quality", role="quality",
                            sites=["tower-a", "tower-b"])

    response = get_csv(api, headers=bearer(scoped))
    assert [r["site_id"] for r in register_of(response)] == ["tower-a"]
    assert "nonconformances-tower-a-" in response.headers["content-disposition"]
    assert register_of(get_csv(api, headers=bearer(scoped), site_id="tower-b")) == []
    assert sorted(r["site_id"] for r in register_of(get_csv(api, headers=bearer(both)))) == [
        "tower-a", "tower-b"]
    everyone = register_of(get_csv(api, site_id="tower-c"))
    assert [r["site_id"] for r in everyone] == ["tower-c"]


def test_pages_are_read_by_keyset_in_the_lists_order(api: Api, db: Database) -> None:
    """Small pages here; the route's are register.PAGE rows."""
    start = NOW - 20 * HOUR
    api.apply(*(engine_event(asset=f"CH-{n}", start=start + n * timedelta(minutes=n % 3))
                for n in range(11)))
    now = datetime.now(UTC)
    chunks = list(register.lines(db.session, Filters(), now, page=4))
    assert len(chunks) == 1 + 3  # header, then pages of 4, 4 and 3
    text = b"".join(chunks).decode("utf-8-sig")
    ids = [row[0] for row in csv.reader(io.StringIO(text))][1:]
    with db.session() as session:
        listed, _ = list_ncs(session, Filters(), limit=500, cursor=None, now=now)
    assert ids == [f"NC-{nc.pk:06d}" for nc in listed]
    assert len(set(ids)) == 11


def test_more_rows_than_a_file_holds_is_refused_before_the_first_byte(
        api: Api, db: Database) -> None:
    api.apply(*(engine_event(asset=f"CH-{n}") for n in range(4)))
    now = datetime.now(UTC)
    assert register.check_size(db.session, Filters(), now, max_rows=4) == 4
    with pytest.raises(Invalid, match="narrow the window"):
        register.check_size(db.session, Filters(), now, max_rows=3)
    # a filter that narrows it is enough
    assert register.check_size(db.session, Filters(asset_id="CH-1"), now, max_rows=3) == 1
    rows = list(csv.reader(io.StringIO(b"".join(register.lines(
        db.session, Filters(), now, page=2, max_rows=3)).decode("utf-8-sig"))))
    assert len(rows) == 1 + 3  # the stream stops at the cap, whatever arrived meanwhile
