"""Heartbeats and the fleet's gateways (SPEC 7.5), through the API on SQLite and
PostgreSQL: what a heartbeat records, who may post and read, and the gateway-offline NC
raised by a silence and closed by the next heartbeat, through the one lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_token
from api.gateways import STANDARD_ID, mark_offline
from api.store import Database

MINUTE = timedelta(minutes=1)


def token(db: Database, role: str, sites: list[str] | None = None) -> dict[str, str]:
    with db.session() as session:
        made = create_token(session, name=f"{role}-{sites}", role=role, sites=sites)
    return {"Authorization": f"Bearer {made}"}


def beat(site: str = "tower-a", gateway: str = "pi-1", at: datetime | None = None,
         **extra: Any) -> dict[str, Any]:
    at = at or datetime.now(UTC)
    return {"site_id": site, "gateway_id": gateway, "version": "1.2.3",
            "at": at.isoformat(), "started_at": (at - 10 * MINUTE).isoformat(),
            "uptime": 600.0, "clock_offset": -0.25,
            "buffer": {"readings": 1200, "events": 3, "bytes": 65536,
                       "oldest_unsent_age": 42.5},
            "sources": {"modbus:plc": {"last_at": at.isoformat(), "readings": 5000},
                        "mqtt": {"last_at": (at - MINUTE).isoformat(), "readings": 70}},
            **extra}


@pytest.fixture
def client(db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(db, gateway_offline_after=5 * MINUTE)) as test_client:
        yield test_client


def test_a_heartbeat_is_the_gateways_last_and_is_listed(client: TestClient,
                                                        db: Database) -> None:
    agent, reader = token(db, "agent", ["tower-a"]), token(db, "tracker")
    assert client.get("/api/v1/gateways", headers=reader).json()["items"] == []
    first = client.post("/api/v1/heartbeats", json=beat(uptime=1.0), headers=agent)
    assert first.status_code == 200, first.text
    server_time = datetime.fromisoformat(first.json()["server_time"])
    assert abs((server_time - datetime.now(UTC)).total_seconds()) < 5
    assert first.json()["offline_closed"] is None
    later = beat(buffer={"readings": 7, "events": 0, "bytes": 4096, "oldest_unsent_age": 1.0})
    assert client.post("/api/v1/heartbeats", json=later, headers=agent).status_code == 200
    assert client.post("/api/v1/heartbeats", json=beat(gateway="pi-2"),
                       headers=agent).status_code == 200

    answer = client.get("/api/v1/gateways", headers=reader).json()
    assert answer["offline_after"] == 300.0
    items = {g["gateway_id"]: g for g in answer["items"]}
    assert set(items) == {"pi-1", "pi-2"}
    one = items["pi-1"]
    assert one["status"] == "online" and one["site_id"] == "tower-a"
    assert one["version"] == "1.2.3" and one["clock_offset"] == -0.25
    assert one["buffer"] == {"readings": 7, "events": 0, "bytes": 4096,
                             "oldest_unsent_age": 1.0}  # the later heartbeat's
    assert one["sources"]["modbus:plc"]["readings"] == 5000
    assert 590 < one["uptime"] < 700 and one["silent_for"] < 5
    assert one["offline_nc"] is None


def test_who_may_post_and_read_heartbeats(client: TestClient, db: Database) -> None:
    other_site = token(db, "agent", ["tower-b"])
    refused = client.post("/api/v1/heartbeats", json=beat(), headers=other_site)
    assert refused.status_code == 403 and "tower-a" in refused.json()["detail"]
    engineer = client.post("/api/v1/heartbeats", json=beat(), headers=token(db, "engineer"))
    assert engineer.status_code == 403
    assert client.post("/api/v1/heartbeats", json=beat()).status_code == 401
    assert client.get("/api/v1/gateways").status_code == 401

    assert client.post("/api/v1/heartbeats", json=beat(site="tower-b"),
                       headers=other_site).status_code == 200
    assert client.post("/api/v1/heartbeats", json=beat(site="tower-a"),
                       headers=token(db, "agent", ["tower-a"])).status_code == 200
    scoped = client.get("/api/v1/gateways", headers=token(db, "tracker", ["tower-b"]))
    assert [g["site_id"] for g in scoped.json()["items"]] == ["tower-b"]
    wide = client.get("/api/v1/gateways?site_id=tower-a", headers=token(db, "quality"))
    assert [g["site_id"] for g in wide.json()["items"]] == ["tower-a"]


def test_a_heartbeat_from_a_clock_far_ahead_is_refused_with_the_servers_time(
        client: TestClient, db: Database) -> None:
    ahead = beat(at=datetime.now(UTC) + timedelta(hours=1))
    refused = client.post("/api/v1/heartbeats", json=ahead, headers=token(db, "agent"))
    assert refused.status_code == 422
    assert refused.json()["code"] == "clock_skew" and "server_time" in refused.json()


@pytest.mark.parametrize("change", [
    {"site_id": ""}, {"gateway_id": "x" * 129}, {"at": "2026-12-04T10:00:00"},
    {"buffer": {"readings": -1}}, {"sources": {"a": {"readings": "many"}}},
    {"uptime": float("inf")}])
def test_a_malformed_heartbeat_is_a_422_naming_the_field(
        client: TestClient, db: Database, change: dict[str, Any]) -> None:
    body = {**beat(), **change}
    answer = client.post("/api/v1/heartbeats", content=_json(body),
                         headers={**token(db, "agent"), "content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert any(next(iter(change)) in map(str, e["loc"]) for e in answer.json()["detail"])


def _json(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body).replace("Infinity", "1e999")


def test_silence_raises_the_gateway_offline_nc_once_and_a_heartbeat_closes_it(
        client: TestClient, db: Database) -> None:
    agent, reader = token(db, "agent"), token(db, "tracker")
    assert client.post("/api/v1/heartbeats", json=beat(), headers=agent).status_code == 200
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    now = datetime.now(UTC)
    # an API (re)started less than the limit ago: no one could reach it before, no NC
    assert mark_offline(db.write, 5 * MINUTE, started=now + 2 * MINUTE,
                        now=now + 6 * MINUTE) == 0
    later = now + 6 * MINUTE
    assert mark_offline(db.write, 5 * MINUTE, started=long_ago, now=later) == 1
    assert mark_offline(db.write, 5 * MINUTE, started=long_ago, now=later) == 0  # once

    items = client.get("/api/v1/nonconformances", headers=reader).json()["items"]
    assert len(items) == 1
    nc = items[0]
    assert (nc["asset_id"], nc["standard_id"], nc["severity"], nc["category"]) == (
        "gateway:pi-1", STANDARD_ID, "major", "equipment")
    assert nc["state"] == "open" and nc["site_id"] == "tower-a"
    gateways = client.get("/api/v1/gateways", headers=reader).json()["items"]
    assert gateways[0]["status"] == "offline" and gateways[0]["offline_nc"] == nc["id"]

    back = client.post("/api/v1/heartbeats", json=beat(), headers=agent)
    assert back.json()["offline_closed"] == nc["id"]
    closed = client.get(f"/api/v1/nonconformances/{nc['id']}", headers=reader).json()
    assert closed["state"] == "closed"
    history = client.get(f"/api/v1/nonconformances/{nc['id']}/history",
                         headers=reader).json()["items"]
    assert [(e["action"], e["to_state"]) for e in history] == [
        ("raised", "open"), ("cleared", "closed")]
    feed = client.get("/api/v1/feed?after=0", headers=reader).json()["events"]
    assert [e["nc"]["state"] for e in feed if e["nc"]["id"] == nc["id"]] == ["open", "closed"]
    again = client.get("/api/v1/gateways", headers=reader).json()["items"][0]
    assert again["status"] == "online" and again["offline_nc"] is None
    # a second silence is a new NC, not the closed one reopened
    assert mark_offline(db.write, 5 * MINUTE, started=long_ago,
                        now=datetime.now(UTC) + 6 * MINUTE) == 1
    open_ = client.get("/api/v1/nonconformances?state=open", headers=reader).json()["items"]
    assert [n["id"] for n in open_] != [nc["id"]] and len(open_) == 1


def test_an_offline_gateway_inhibits_its_sites_stale_notifications() -> None:
    from api.notify.config import DEFAULT_INHIBIT, NotifyConfig

    config = NotifyConfig.model_validate({"channels": [], "routes": []})
    rules = [(r.source, r.target, r.equal) for r in config.inhibit]
    assert rules == [(r.source, r.target, r.equal) for r in DEFAULT_INHIBIT]
    assert any("gateway_offline" in str(source) and "stale" in str(target)
               and equal == ["site_id"] for source, target, equal in rules)
