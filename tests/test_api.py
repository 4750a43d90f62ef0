"""The REST API over a real SQLite file: auth, engine events into NCs, listing and paging.

Events are built with the rules engine's own `Event(...).to_dict()`, so the wire form the
API accepts is the one agents send.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text, update

from api.app import create_app
from api.auth import ROLES, authenticate, create_token, hash_token
from api.store import ApiToken, Database
from rules.events import Event, EventType, iso

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
STANDARD = {
    "title": "Chilled water supply temperature 6-8 degC", "clause": "O&M manual 4.2",
    "category": "equipment", "severity": "major", "department": "engineering",
    "rectify_within": 86400.0, "verify_for": 3600.0, "on_recovery": "keep_open",
    "kind": "range",
}
NC_KEYS = {
    "id", "site_id", "asset_id", "standard_id", "standard_version", "metric", "title", "clause",
    "category", "severity", "department", "assignee", "state", "condition", "detected_at",
    "cleared_at", "due_at", "closed_at", "overdue", "occurrences", "reopen_count", "recurring",
    "source", "evidence", "rectification", "verification", "external_ref",
    "asset_type", "standard_kind",  # SPEC 7.2: what notification routes match
}
"""The NC JSON of SPEC section 5."""


def engine_event(kind: EventType = "violation_started", *, start: datetime = NOW - 2 * HOUR,
                 at: datetime | None = None, asset: str = "CH-1",
                 standard: str = "HVAC-CHW-SUPPLY", **info: Any) -> dict[str, Any]:
    """One event of the episode that began at `start`, as an agent posts it."""
    at = at or start
    readings = ((start.timestamp(), 8.9), (at.timestamp(), 9.4))
    return Event(
        type=kind,
        site_id="tower-a", asset_id=asset, standard_id=standard, standard_version=3,
        metric="chw_supply_temp", episode_start=start.timestamp(), at=at.timestamp(),
        value=9.4 if kind == "violation_started" else 7.0, limit={"min": 6, "max": 8},
        readings=readings if kind == "violation_started" else (),
        standard={**STANDARD, **info}, asset={"type": "chiller", "name": "Chiller 1"},
    ).to_dict()


def cleared(start: datetime = NOW - 2 * HOUR, at: datetime = NOW - HOUR,
            **kwargs: Any) -> dict[str, Any]:
    return engine_event("violation_cleared", start=start, at=at, **kwargs)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def new_token(db: Database, role: str, name: str | None = None) -> str:
    with db.session() as session:
        return create_token(session, name=name or f"{role}-token", role=role)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """A test client with one token per role, and the few calls the tests make."""

    def __init__(self, client: TestClient, db: Database) -> None:
        self.client, self.db = client, db
        self._tokens: dict[str, str] = {}

    def headers(self, role: str) -> dict[str, str]:
        if role not in self._tokens:
            self._tokens[role] = new_token(self.db, role)
        return bearer(self._tokens[role])

    def post_events(self, *events: dict[str, Any], role: str = "agent") -> httpx.Response:
        return self.client.post("/api/v1/events", json={"events": list(events)},
                                headers=self.headers(role))

    def post_events_text(self, body: str | bytes) -> httpx.Response:
        """POST a JSON text as given: for bodies `json=` could not produce."""
        return self.client.post("/api/v1/events", content=body, headers={
            **self.headers("agent"), "content-type": "application/json"})

    def apply(self, *events: dict[str, Any]) -> dict[str, int]:
        response = self.post_events(*events)
        assert response.status_code == 200, response.text
        return response.json()

    def list(self, **params: Any) -> httpx.Response:
        return self.client.get("/api/v1/nonconformances", params=params,
                               headers=self.headers("tracker"))

    def items(self, **params: Any) -> list[dict[str, Any]]:
        response = self.list(**params)
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def get(self, nc_id: str) -> httpx.Response:
        return self.client.get(f"/api/v1/nonconformances/{nc_id}",
                               headers=self.headers("engineer"))

    def nc(self, nc_id: str) -> dict[str, Any]:
        response = self.get(nc_id)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(db)) as test_client:
        yield test_client


@pytest.fixture
def api(client: TestClient, db: Database) -> Api:
    return Api(client, db)


# --- auth ------------------------------------------------------------------------------


def test_health_needs_no_token(client: TestClient) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["database"] == "ok"


@pytest.mark.parametrize("headers", [
    {},
    bearer("pat_not-a-real-token"),
    {"Authorization": "Basic dXNlcjpwYXNz"},
], ids=["missing", "unknown", "not-bearer"])
def test_reading_ncs_needs_a_valid_token(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/api/v1/nonconformances", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("role", ROLES)
def test_any_role_can_read(api: Api, role: str) -> None:
    response = api.client.get("/api/v1/nonconformances", headers=api.headers(role))
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(("role", "status"), [
    ("agent", 200), ("admin", 200), ("engineer", 403), ("quality", 403), ("tracker", 403),
])
def test_posting_events_needs_the_agent_role(api: Api, role: str, status: int) -> None:
    response = api.post_events(engine_event(), role=role)
    assert response.status_code == status
    assert len(api.items()) == (1 if status == 200 else 0)


def test_posting_events_without_a_token(client: TestClient) -> None:
    response = client.post("/api/v1/events", json={"events": [engine_event()]})
    assert response.status_code == 401


def test_only_the_hash_of_a_token_is_stored(db: Database) -> None:
    token = new_token(db, "admin", name="ops")
    with db.engine.connect() as conn:  # raw rows, as an attacker with the file would see
        rows = conn.execute(text("SELECT * FROM api_tokens")).all()
    assert len(rows) == 1
    assert token not in repr(rows)
    assert hash_token(token) in rows[0]


def test_a_revoked_token_is_refused(api: Api, db: Database) -> None:
    headers = api.headers("engineer")
    assert api.client.get("/api/v1/nonconformances", headers=headers).status_code == 200
    with db.session() as session:
        session.execute(update(ApiToken).where(ApiToken.role == "engineer")
                        .values(revoked_at=datetime.now(UTC)))
        session.commit()
    assert api.client.get("/api/v1/nonconformances", headers=headers).status_code == 401


# --- engine events into NCs ------------------------------------------------------------


def test_a_violation_opens_an_nc(api: Api) -> None:
    started = engine_event()
    assert api.apply(started) == {"applied": 1, "duplicates": 0, "ids": [started["id"]]}
    nc = api.nc("NC-000001")
    assert set(nc) == NC_KEYS
    assert nc["id"] == "NC-000001"
    assert (nc["site_id"], nc["asset_id"], nc["standard_id"], nc["standard_version"]) == (
        "tower-a", "CH-1", "HVAC-CHW-SUPPLY", 3)
    assert (nc["metric"], nc["title"], nc["clause"], nc["category"]) == (
        "chw_supply_temp", STANDARD["title"], "O&M manual 4.2", "equipment")
    assert (nc["severity"], nc["department"], nc["assignee"]) == ("major", "engineering", None)
    assert (nc["asset_type"], nc["standard_kind"]) == ("chiller", "range")  # SPEC 7.2
    assert (nc["state"], nc["condition"], nc["source"]) == ("open", "violating", "auto")
    assert nc["detected_at"] == started["at"] == iso((NOW - 2 * HOUR).timestamp())
    assert parse(nc["due_at"]) == parse(nc["detected_at"]) + timedelta(hours=24)
    assert (nc["cleared_at"], nc["closed_at"], nc["overdue"]) == (None, None, False)
    assert (nc["occurrences"], nc["reopen_count"], nc["recurring"]) == (1, 0, False)
    assert nc["evidence"] == started["evidence"]
    assert nc["evidence"]["limit"] == {"min": 6, "max": 8}
    assert (nc["rectification"], nc["verification"], nc["external_ref"]) == (None, None, None)
    assert api.items() == [nc]


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("evidence", {"note\ud800": 1}, "lone surrogate"),
    ("evidence", {"readings": [{"text": "x\udfff"}]}, "lone surrogate"),
    ("asset", {"name": "\ud83d"}, "lone surrogate"),
    ("asset_id", "CH-\udc00", "unicode"),
    ("asset", "\ud800 not even a mapping", "dictionary"),
])
def test_half_a_surrogate_pair_is_a_422_that_can_be_read(
    api: Api, field: str, value: Any, reason: str
) -> None:
    """JSON may escape half a surrogate pair (\\ud800), which no database and no UTF-8 can
    hold: refused with a reason, echoed back escaped, never a 500, nothing stored."""
    event = {**engine_event(), field: value}
    body = json.dumps({"events": [event]})  # ensure_ascii: the half pair as an escape
    response = api.post_events_text(body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == field and reason in error["msg"].lower()
    assert api.items() == []


@pytest.mark.parametrize(("field", "value"), [
    ("asset_id", "CH\x00-1"), ("evidence", {"note": "a\x00b"}), ("asset", {"x\x00": 1}),
])
def test_a_nul_character_is_a_422_on_every_database(api: Api, field: str, value: Any) -> None:
    """PostgreSQL text cannot hold NUL; SQLite can. Refused alike, before the database."""
    response = api.post_events({**engine_event(), field: value})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == field and "NUL character" in error["msg"]
    assert api.items() == []


@pytest.mark.parametrize("depth", [32, 900])
def test_evidence_nested_too_deep_is_a_422_that_echoes_a_summary(api: Api, depth: int) -> None:
    """A few hundred levels stored would break every later answer about that NC
    (pydantic refuses to serialize them); refused on the way in, echoed cut short."""
    event = json.dumps(engine_event())
    body = (f'{{"events": [{event[:-1]}, "evidence": {{"x": ' + "[" * depth + "]" * depth
            + "}}]}")
    response = api.post_events_text(body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert "nested deeper than 32 levels" in error["msg"]
    assert '"..."' in response.text and len(response.text) < 2000
    assert api.items() == []
    deep: Any = []
    for _ in range(30):
        deep = [deep]  # 31 lists inside the evidence object: 32 levels, the most allowed
    assert api.apply({**engine_event(), "evidence": {"x": deep}})["applied"] == 1
    assert api.items()[0]["evidence"] == {"x": deep}


@pytest.mark.parametrize("path", [
    "/api/v1/nonconformances?asset_id=CH%00", "/api/v1/compliance?site_id=%00",
    "/api/v1/feed?site_id=a%00b",
])
def test_a_nul_in_the_query_string_is_a_400(api: Api, path: str) -> None:
    response = api.client.get(path, headers=api.headers("tracker"))
    assert response.status_code == 400
    assert response.json() == {"detail": "the query string holds a NUL character (%00)"}


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_a_413_before_it_is_read(db: Database, chunked: bool) -> None:
    """With a length, refused before reading; without one (chunked), as soon as it runs
    past the limit. A body within the limit still works."""
    token = new_token(db, "agent")
    small = json.dumps({"events": [engine_event()]}).encode()
    with TestClient(create_app(db, max_body=len(small))) as client:
        big = json.dumps({"events": [engine_event(), {**engine_event(), "id": "e2"}]}).encode()

        def stream() -> Iterator[bytes]:  # no Content-Length: counted as it comes
            for at in range(0, len(big), 100):
                yield big[at:at + 100]

        response = client.post("/api/v1/events", content=stream() if chunked else big,
                                headers={**bearer(token), "content-type": "application/json"})
        assert response.status_code == 413, response.text
        assert response.json() == {"detail": f"the body is over {len(small)} bytes"}
        assert client.get("/api/v1/nonconformances", headers=bearer(token)).json()["items"] == []
        ok = client.post("/api/v1/events", content=small,
                         headers={**bearer(token), "content-type": "application/json"})
        assert ok.status_code == 200, ok.text


def test_a_value_the_database_refuses_is_a_422_not_a_500(db: Database) -> None:
    """The backstop for what validation misses: the database's DataError is the request's."""
    from sqlalchemy.exc import DataError

    app = create_app(db)

    @app.get("/api/v1/refused")
    def refused() -> None:
        raise DataError("SELECT 1", {}, ValueError("A string literal cannot contain NUL"))

    with TestClient(app) as test_client:
        response = test_client.get("/api/v1/refused", headers=bearer(new_token(db, "tracker")))
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["request"] and error["type"] == "database_refused"
    assert "cannot be stored or compared by the database" in error["msg"]


def test_the_same_event_twice_is_a_duplicate(api: Api) -> None:
    started = engine_event()
    api.apply(started)
    assert api.apply(started) == {"applied": 0, "duplicates": 1, "ids": [started["id"]]}
    assert [nc["occurrences"] for nc in api.items()] == [1]


def test_a_batch_with_a_repeat_applies_it_once(api: Api) -> None:
    started = engine_event()
    assert api.apply(started, started) == {"applied": 1, "duplicates": 1,
                                           "ids": [started["id"]] * 2}
    assert len(api.items()) == 1


def test_a_new_episode_while_open_adds_an_occurrence(api: Api) -> None:
    first = engine_event(start=NOW - 5 * HOUR)
    api.apply(first, cleared(start=NOW - 5 * HOUR, at=NOW - 4 * HOUR),
              engine_event(start=NOW - 2 * HOUR))
    [nc] = api.items()
    assert nc["occurrences"] == 2
    assert (nc["state"], nc["condition"], nc["cleared_at"]) == ("open", "violating", None)
    assert nc["detected_at"] == first["at"]


def test_clearing_keeps_the_nc_open_by_default(api: Api) -> None:
    end = cleared()
    api.apply(engine_event(), end)
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["condition"], nc["closed_at"]) == ("open", "normal", None)
    assert nc["cleared_at"] == end["at"]


def test_clearing_closes_a_transient_nc_and_a_later_episode_recurs(api: Api) -> None:
    end = cleared(on_recovery="close")
    api.apply(engine_event(on_recovery="close"), end)
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["condition"]) == ("closed", "normal")
    assert nc["cleared_at"] == nc["closed_at"] == end["at"]

    api.apply(engine_event(start=NOW - timedelta(minutes=30), on_recovery="close"))
    again = api.nc("NC-000002")
    assert (again["state"], again["occurrences"], again["recurring"]) == ("open", 1, True)
    assert api.nc("NC-000001")["state"] == "closed"


def test_clearing_with_no_open_nc_changes_nothing(api: Api) -> None:
    end = cleared()
    assert api.apply(end) == {"applied": 1, "duplicates": 0, "ids": [end["id"]]}
    assert api.items() == []


# --- listing: filters and pages --------------------------------------------------------


@pytest.fixture
def three_ncs(api: Api) -> Api:
    """CH-1 major open; CH-2 critical overdue; PR-1 minor, closed on recovery."""
    api.apply(
        engine_event(asset="CH-1", start=NOW - HOUR),
        engine_event(asset="CH-2", start=NOW - 48 * HOUR, severity="critical",
                     department="quality", rectify_within=3600.0),
        engine_event(asset="PR-1", standard="ENV-ROOM-TEMP", start=NOW - 3 * HOUR,
                     severity="minor", department="facilities", on_recovery="close"),
        cleared(asset="PR-1", standard="ENV-ROOM-TEMP", start=NOW - 3 * HOUR,
                at=NOW - 2 * HOUR, on_recovery="close"),
    )
    return api


@pytest.mark.parametrize(("params", "assets"), [
    ({}, ["CH-1", "PR-1", "CH-2"]),
    ({"state": "open"}, ["CH-1", "CH-2"]),
    ({"state": "closed"}, ["PR-1"]),
    ({"state": "acknowledged"}, []),
    ({"asset_id": "CH-2"}, ["CH-2"]),
    ({"standard_id": "ENV-ROOM-TEMP"}, ["PR-1"]),
    ({"standard_id": "HVAC-CHW-SUPPLY"}, ["CH-1", "CH-2"]),
    ({"severity": "critical"}, ["CH-2"]),
    ({"severity": "major"}, ["CH-1"]),
    ({"department": "facilities"}, ["PR-1"]),
    ({"overdue": "true"}, ["CH-2"]),
    ({"overdue": "false"}, ["CH-1", "PR-1"]),
    ({"state": "open", "severity": "major"}, ["CH-1"]),
    ({"recurring": "false"}, ["CH-1", "PR-1", "CH-2"]),
])
def test_filters(three_ncs: Api, params: dict[str, str], assets: list[str]) -> None:
    assert [nc["asset_id"] for nc in three_ncs.items(**params)] == assets


def test_overdue_is_reported_on_the_nc(three_ncs: Api) -> None:
    overdue = {nc["asset_id"]: nc["overdue"] for nc in three_ncs.items()}
    assert overdue == {"CH-1": False, "CH-2": True, "PR-1": False}


@pytest.mark.parametrize("params", [
    {"state": "bogus"}, {"severity": "huge"}, {"overdue": "perhaps"}, {"limit": 0},
    {"limit": 501},
])
def test_invalid_filter_values_are_422(api: Api, params: dict[str, Any]) -> None:
    assert api.list(**params).status_code == 422


def test_cursor_pagination_visits_every_nc_once_newest_first(api: Api) -> None:
    hours_ago = [5, 3, 3, 1, 4]  # two NCs detected at the same instant
    api.apply(*(engine_event(asset=f"A-{i}", start=NOW - h * HOUR)
                for i, h in enumerate(hours_ago)))
    pages, cursor = [], None
    while True:
        response = api.list(limit=2, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([nc["asset_id"] for nc in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == [["A-3", "A-2"], ["A-1", "A-4"], ["A-0"]]


def test_a_page_that_ends_exactly_has_no_next_cursor(api: Api) -> None:
    api.apply(engine_event(asset="A-0"), engine_event(asset="A-1"))
    assert api.list(limit=2).json()["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["!!!", "bm90IGEgY3Vyc29y", "MjAyNnwx"])
def test_an_invalid_cursor_is_400_with_a_reason(api: Api, cursor: str) -> None:
    response = api.list(cursor=cursor)
    assert response.status_code == 400
    assert response.json() == {"detail": "cursor is not one this API gave out"}


@pytest.mark.parametrize("raw", [
    "2026-01-01T00:00:00+00:00|99999999999999999999999",
    "0001-01-01T00:00:00+05:00|1",
])
def test_a_forged_cursor_is_400(db: Database, raw: str) -> None:
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    with TestClient(create_app(db), raise_server_exceptions=False) as client:
        response = client.get("/api/v1/nonconformances", params={"cursor": cursor},
                              headers=bearer(new_token(db, "tracker")))
    assert response.status_code == 400


@pytest.mark.parametrize("nc_id", ["NC-000001", "NC-999999", "NC-", "nc-000001", "42"])
def test_unknown_nc_is_404(api: Api, nc_id: str) -> None:
    response = api.get(nc_id)
    assert response.status_code == 404
    assert nc_id in response.json()["detail"]


def test_an_id_with_odd_digits_is_404(db: Database) -> None:
    with TestClient(create_app(db), raise_server_exceptions=False) as client:
        response = client.get("/api/v1/nonconformances/NC-²",
                              headers=bearer(new_token(db, "tracker")))
    assert response.status_code == 404


# --- `patrol token create` -------------------------------------------------------------


def test_token_create_prints_a_working_token(tmp_path: Path) -> None:
    config_dir = tmp_path / "site"
    config_dir.mkdir()
    (config_dir / "site.yaml").write_text(textwrap.dedent("""\
        site:
          id: tower-a
        server:
          database: sqlite:///data/patrol.sqlite
    """), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "token", "create", "-c", "site/site.yaml",
         "--role", "admin", "--name", "x"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    token = result.stdout.splitlines()[-1]
    assert token.startswith("pat_") and token == token.strip()

    database = Database("sqlite:///" + str(config_dir / "data" / "patrol.sqlite"))
    try:
        with database.session() as session:
            principal = authenticate(session, token)
        assert principal is not None
        assert (principal.name, principal.role) == ("x", "admin")
        with TestClient(create_app(database)) as client:
            response = client.get("/api/v1/nonconformances", headers=bearer(token))
        assert response.status_code == 200
    finally:
        database.close()
    assert not (tmp_path / "data").exists()
