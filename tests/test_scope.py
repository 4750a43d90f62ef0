"""Site scope, the clock and the standard version (SPEC 7.1), on SQLite and PostgreSQL.

A token made with sites reaches only those: lists, feed, compliance and webhooks are
filtered, another site's NC is 404, an agent's events for another site are 403 (the whole
batch). Events dated further ahead than `max_clock_skew` are refused with 422 and
`code: clock_skew`, on the HTTP route and in `patrol run`'s in-process sink alike, where
they stay in the outbox. An NC keeps the lifecycle settings of the version it was opened
with.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agent.buffer import Buffer
from agent.forward import Forwarder
from agent.runtime import ClockAhead, in_process_sink
from api.app import create_app
from api.auth import Principal, create_token, note_legacy_use
from api.config import ServerConfig
from api.store import Database
from rules.events import Snapshot
from tests.buffer_contents import dead_letters
from tests.test_api import HOUR, NOW, Api, bearer, cleared, engine_event

SITE_B = "tower-b"


def at_site(event: dict[str, Any], site: str) -> dict[str, Any]:
    return {**event, "site_id": site, "id": f"ev_{uuid.uuid4().hex}"}


def snapshot(site: str = "tower-a", at: datetime = NOW, asset: str = "CH-1"
             ) -> dict[str, Any]:
    item = {"asset_id": asset, "standard_id": "HVAC-CHW-SUPPLY", "standard_version": 3,
            "state": "ok", "seconds": {"ok": 60.0}, "readings": 1}
    return Snapshot(site, (at - timedelta(minutes=1)).timestamp(), at.timestamp(),
                    [item]).to_dict()


def scoped(db: Database, role: str, *sites: str) -> dict[str, str]:
    with db.session() as session:
        return bearer(create_token(session, name=f"{role}-{'-'.join(sites)}", role=role,
                                   sites=list(sites)))


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db, site_id="tower-a", webhooks_allow_private=True)) as client:
        yield Api(client, db)


@pytest.fixture
def two_sites(api: Api) -> Api:
    """NC-000001 at tower-a, NC-000002 at tower-b (both open), and a snapshot of each."""
    api.apply(engine_event(asset="CH-1"), at_site(engine_event(asset="CH-2"), SITE_B),
              snapshot("tower-a"), snapshot(SITE_B, asset="CH-2"))
    return api


# --- reads ------------------------------------------------------------------------------


def test_a_scoped_token_lists_only_its_sites(two_sites: Api, db: Database) -> None:
    client, mine = two_sites.client, scoped(db, "tracker", "tower-a")
    listed = client.get("/api/v1/nonconformances", headers=mine).json()["items"]
    assert [nc["site_id"] for nc in listed] == ["tower-a"]
    other = client.get(f"/api/v1/nonconformances?site_id={SITE_B}", headers=mine)
    assert other.status_code == 200 and other.json()["items"] == []
    feed = client.get("/api/v1/feed", headers=mine).json()["events"]
    assert feed and {event["nc"]["site_id"] for event in feed} == {"tower-a"}
    compliance = client.get("/api/v1/compliance", headers=mine).json()["items"]
    assert [row["site_id"] for row in compliance] == ["tower-a"]
    # a token for both sites sees both
    both = scoped(db, "tracker", "tower-a", SITE_B)
    assert len(client.get("/api/v1/nonconformances", headers=both).json()["items"]) == 2


@pytest.mark.parametrize("path", ["/api/v1/nonconformances/NC-000002",
                                  "/api/v1/nonconformances/NC-000002/history"])
def test_another_sites_nc_is_404(two_sites: Api, db: Database, path: str) -> None:
    response = two_sites.client.get(path, headers=scoped(db, "engineer", "tower-a"))
    assert response.status_code == 404, response.text
    assert two_sites.client.get(path, headers=two_sites.headers("engineer")).status_code == 200


def test_a_scoped_token_cannot_act_on_another_sites_nc(two_sites: Api, db: Database) -> None:
    client = two_sites.client
    engineer, tracker = scoped(db, "engineer", "tower-a"), scoped(db, "tracker", "tower-a")
    refused = client.post("/api/v1/nonconformances/NC-000002/acknowledge", json={},
                          headers=engineer)
    assert refused.status_code == 404, refused.text
    ref = client.put("/api/v1/nonconformances/NC-000002/external_ref",
                     json={"external_ref": "T-1"}, headers=tracker)
    assert ref.status_code == 404, ref.text
    assert two_sites.nc("NC-000002")["state"] == "open"
    assert two_sites.nc("NC-000002")["external_ref"] is None
    mine = client.post("/api/v1/nonconformances/NC-000001/acknowledge", json={},
                       headers=engineer)
    assert mine.status_code == 200, mine.text


def test_a_manual_finding_for_another_site_is_403(db: Database) -> None:
    with TestClient(create_app(db, site_id="tower-a")) as client:
        quality = scoped(db, "quality", SITE_B)
        finding = {"asset_id": "CH-1", "title": "Leak", "severity": "minor"}
        refused = client.post("/api/v1/nonconformances", json=finding, headers=quality)
        assert refused.status_code == 403 and "tower-a" in refused.json()["detail"]
        made = client.post("/api/v1/nonconformances", json={**finding, "site_id": SITE_B},
                           headers=quality)
        assert made.status_code == 201, made.text


def test_webhooks_of_a_scoped_admin_stay_in_its_sites(db: Database) -> None:
    with TestClient(create_app(db, webhooks_allow_private=True)) as client:
        wide, mine = bearer(new_admin(db)), scoped(db, "admin", "tower-a")
        url = "https://hooks.example.com/patrol"
        every = client.post("/api/v1/webhooks", json={"url": url}, headers=wide).json()
        own = client.post("/api/v1/webhooks", json={"url": url}, headers=mine)
        assert own.status_code == 201, own.text
        assert own.json()["site_id"] == "tower-a"  # its one site, not every site
        other = client.post("/api/v1/webhooks", json={"url": url, "site_id": SITE_B},
                            headers=mine)
        assert other.status_code == 403, other.text
        listed = client.get("/api/v1/webhooks", headers=mine).json()
        assert [hook["id"] for hook in listed] == [own.json()["id"]]
        for method in ("GET", "DELETE"):
            response = client.request(method, f"/api/v1/webhooks/{every['id']}", headers=mine)
            assert response.status_code == 404, response.text
        assert len(client.get("/api/v1/webhooks", headers=wide).json()) == 2


def new_admin(db: Database) -> str:
    with db.session() as session:
        return create_token(session, name="wide-admin", role="admin")


# --- agents' events ---------------------------------------------------------------------


@pytest.mark.parametrize("foreign", [
    at_site(engine_event(asset="CH-2"), SITE_B), snapshot(SITE_B)], ids=["event", "snapshot"])
def test_an_agents_events_for_another_site_refuse_the_whole_batch(
        api: Api, db: Database, foreign: dict[str, Any]) -> None:
    agent = scoped(db, "agent", "tower-a")
    response = api.client.post("/api/v1/events", headers=agent,
                               json={"events": [engine_event(), foreign]})
    assert response.status_code == 403, response.text
    assert SITE_B in response.json()["detail"]
    assert api.items() == []
    ok = api.client.post("/api/v1/events", headers=agent,
                         json={"events": [engine_event(), snapshot()]})
    assert ok.status_code == 200, ok.text
    assert [nc["site_id"] for nc in api.items()] == ["tower-a"]


def test_the_answer_lists_the_ids_applied_or_duplicate_in_request_order(api: Api) -> None:
    first, second, third = (engine_event(asset=f"CH-{n}") for n in (1, 2, 3))
    api.apply(first)
    answer = api.apply(second, first, third)
    assert answer == {"applied": 2, "duplicates": 1,
                      "ids": [second["id"], first["id"], third["id"]]}


# --- the clock --------------------------------------------------------------------------


@pytest.mark.parametrize("ahead", [
    lambda: engine_event(start=datetime.now(UTC) + timedelta(minutes=10)),
    lambda: cleared(start=NOW - HOUR, at=datetime.now(UTC) + timedelta(days=3 * 365)),
    lambda: snapshot(at=datetime.now(UTC) + timedelta(minutes=6)),
], ids=["started", "cleared-2030", "snapshot"])
def test_an_event_dated_ahead_of_the_clock_refuses_the_batch(api: Api, ahead: Any) -> None:
    response = api.post_events(engine_event(asset="CH-9"), ahead())
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "clock_skew" and "ahead of this server's clock" in body["detail"]
    server_time = datetime.fromisoformat(body["server_time"])
    assert body["server_time"].endswith("Z") and server_time.tzinfo is not None
    assert abs(datetime.now(UTC) - server_time) < timedelta(minutes=1)
    assert api.items() == []  # the whole batch


def test_an_event_within_the_skew_is_taken(api: Api) -> None:
    assert api.apply(engine_event(start=datetime.now(UTC) + timedelta(minutes=4)))["applied"]


def test_max_clock_skew_is_a_duration_in_server_config() -> None:
    assert ServerConfig().max_clock_skew == 300.0
    assert ServerConfig(max_clock_skew="30s").max_clock_skew == 30.0


def test_patrol_runs_sink_keeps_skewed_events_in_the_outbox(db: Database,
                                                            tmp_path: Path) -> None:
    """In process the service refuses them alike; the forwarder retries, never a dead
    letter, and delivers them once the clock allows (here: a wider limit)."""
    buffer = Buffer(tmp_path / "buffer.sqlite")
    try:
        ahead = engine_event(start=datetime.now(UTC) + timedelta(minutes=10))
        buffer.put([], [ahead])
        forwarder = Forwarder(buffer, in_process_sink(db, 300.0), asyncio.Event())
        with pytest.raises(ClockAhead, match="ahead of this server's clock"):
            asyncio.run(forwarder.deliver_pending())
        assert [body["id"] for _, body in buffer.pending_events()] == [ahead["id"]]
        assert dead_letters(buffer, kind="event") == []
        later = Forwarder(buffer, in_process_sink(db, 3600.0), asyncio.Event())
        assert asyncio.run(later.deliver_pending()) == 1
        assert buffer.pending_events() == []
    finally:
        buffer.close()


# --- the standard version ---------------------------------------------------------------


def test_a_later_event_of_the_same_version_does_not_change_on_recovery(api: Api) -> None:
    """Opened with keep_open: a clear of the same version saying close leaves it open."""
    api.apply(engine_event(on_recovery="keep_open"), cleared(on_recovery="close"))
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["condition"], nc["closed_at"]) == ("open", "normal", None)


def test_a_new_standard_version_brings_its_settings(api: Api) -> None:
    api.apply(engine_event(on_recovery="keep_open"))
    newer = {**cleared(on_recovery="close"), "standard_version": 4}
    api.apply(newer)
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["standard_version"]) == ("closed", 4)


# --- tokens -----------------------------------------------------------------------------


def _site_yaml(tmp_path: Path) -> Path:
    (tmp_path / "site.yaml").write_text(textwrap.dedent("""\
        site:
          id: tower-a
        server:
          database: sqlite:///data/patrol.sqlite
    """), encoding="utf-8")
    return tmp_path / "site.yaml"


def _patrol(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_an_agent_token_needs_a_site(tmp_path: Path) -> None:
    site = _site_yaml(tmp_path)
    refused = _patrol("token", "create", "-c", site, "--role", "agent", "--name", "gw")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "agent token needs --site" in refused.stderr
    bad = _patrol("token", "create", "-c", site, "--role", "agent", "--name", "gw",
                  "--site", "Tower A")
    assert bad.returncode == 2 and "not a site id" in bad.stderr
    made = _patrol("token", "create", "-c", site, "--role", "agent", "--name", "gw",
                   "--site", "tower-a", "--site", "tower-b")
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[-1]
    database = Database(f"sqlite:///{tmp_path / 'data' / 'patrol.sqlite'}")
    try:
        with database.session() as session:  # a legacy one, as made before sites existed
            create_token(session, name="old-gw", role="agent")
        with TestClient(create_app(database)) as client:
            response = client.post("/api/v1/events", headers=bearer(token), json={
                "events": [at_site(engine_event(), "tower-c")]})
        assert response.status_code == 403 and "tower-c" in response.json()["detail"]
    finally:
        database.close()
    listing = _patrol("token", "list", "-c", site)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[-1]: line for line in listing.stdout.splitlines()[1:]}
    assert "tower-a,tower-b" in rows["gw"]
    assert "all sites (legacy)" in rows["old-gw"]


def test_a_legacy_agent_token_keeps_working_and_is_logged_once_a_day(
        api: Api, db: Database, caplog: pytest.LogCaptureFixture) -> None:
    name = f"old-gw-{uuid.uuid4().hex[:8]}"  # the log is once a day per token, per process
    with db.session() as session:
        legacy = bearer(create_token(session, name=name, role="agent"))
    with caplog.at_level(logging.WARNING, logger="patrol.api.auth"):
        for n in range(3):
            response = api.client.post("/api/v1/events", headers=legacy, json={
                "events": [at_site(engine_event(asset=f"CH-{n}"), f"site-{n}")]})
            assert response.status_code == 200, response.text
    logged = [r for r in caplog.records if "all sites (legacy)" in r.getMessage()]
    assert len(logged) == 1 and name in logged[0].getMessage()
    principal = Principal(10**6, "gw", "agent")
    assert note_legacy_use(principal, date(2026, 1, 1))
    assert not note_legacy_use(principal, date(2026, 1, 1))
    assert note_legacy_use(principal, date(2026, 1, 2))
    assert not note_legacy_use(Principal(10**6 + 1, "gw", "agent", frozenset({"a"})))
