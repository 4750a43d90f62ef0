"""The one lifecycle (api/lifecycle.py): every NC change, a person's or the API's own,
leaves exactly one `NCChanged` record beside its history entry, handed to listeners once
its transaction commits, and none when it rolls back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.auth import Principal
from api.background import mark_overdue
from api.errors import Conflict, Forbidden, Invalid, NotFound, PatrolError
from api.lifecycle import NCChanged, decide_with, listen, pending, perform, transition
from api.schemas import ActionBody
from api.service import SYSTEM_ACTOR, get_nc
from api.store import Database, Setting
from api.workflow import TRANSITIONS, IllegalAction
from rules.events import Snapshot
from tests.test_api import HOUR, NOW, Api, cleared, engine_event


@pytest.fixture
def seen(db: Database) -> Iterator[list[NCChanged]]:
    """The records delivered to a listener of `db`, in delivery order."""
    records: list[NCChanged] = []
    stop = listen(db, records.append)
    yield records
    stop()


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    # events dated ahead of the clock stand for readings after a rectification made now
    with TestClient(create_app(db, max_clock_skew=timedelta(days=1))) as client:
        yield Api(client, db)


def act(api: Api, nc_id: str, verb: str, role: str, **body: Any) -> httpx.Response:
    return api.client.post(f"/api/v1/nonconformances/{nc_id}/{verb}", json=body,
                           headers=api.headers(role))


def ok(api: Api, nc_id: str, verb: str, role: str = "engineer", **body: Any) -> None:
    response = act(api, nc_id, verb, role, **body)
    assert response.status_code == 200, response.text


def history(api: Api, nc_id: str) -> list[dict[str, Any]]:
    response = api.client.get(f"/api/v1/nonconformances/{nc_id}/history",
                              headers=api.headers("tracker"))
    assert response.status_code == 200, response.text
    return response.json()["items"]


def ok_snapshot(since: datetime, at: datetime) -> dict[str, Any]:
    span = (at - since).total_seconds()
    return Snapshot("tower-a", since.timestamp(), at.timestamp(), [{
        "asset_id": "CH-1", "standard_id": "HVAC-CHW-SUPPLY", "standard_version": 3,
        "state": "ok", "seconds": {"ok": span}, "readings": round(span / 60)}]).to_dict()


def test_every_change_leaves_one_record_as_its_history_says(
        api: Api, db: Database, seen: list[NCChanged]) -> None:
    # NC-000001 goes round the loop: people, the engine, the sensors
    api.apply(engine_event(start=NOW - 3 * HOUR))
    api.apply(engine_event(start=NOW - 150 * timedelta(minutes=1)))  # an occurrence
    api.apply(cleared(start=NOW - 150 * timedelta(minutes=1), at=NOW - 2 * HOUR))
    for verb, body in (("acknowledge", {}), ("assign", {"assignee": "li.wei"}),
                       ("start", {}), ("rectify", {"action": "replaced the valve"})):
        ok(api, "NC-000001", verb, **body)
    ok(api, "NC-000001", "verify", "quality", result="fail")
    ok(api, "NC-000001", "rectify", action="cleaned the strainer")
    again = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    api.apply(engine_event(start=again))  # during verification: reopened by sensor
    ok(api, "NC-000001", "rectify", action="replaced the sensor")
    calm = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=3)
    api.apply(cleared(start=again, at=calm))
    api.apply(ok_snapshot(calm + timedelta(seconds=1), calm + 2 * HOUR))  # closed by sensor
    assert api.nc("NC-000001")["state"] == "closed"
    ok(api, "NC-000001", "reopen", "quality", reason="the valve leaks again")
    ok(api, "NC-000001", "cancel", "quality", reason="the chiller is replaced")
    tracked = api.client.put("/api/v1/nonconformances/NC-000001/external_ref",
                             json={"external_ref": "JIRA-7"}, headers=api.headers("tracker"))
    assert tracked.status_code == 200, tracked.text
    # NC-000002 becomes overdue, then closes on recovery; NC-000003 is a person's finding
    quick = {"asset": "CH-2", "rectify_within": 60.0, "on_recovery": "close"}
    api.apply(engine_event(start=NOW - 2 * HOUR, **quick))
    assert mark_overdue(db.write) == 1
    api.apply(cleared(start=NOW - 2 * HOUR, at=NOW - HOUR, **quick))
    found = api.client.post("/api/v1/nonconformances", headers=api.headers("quality"),
                            json={"asset_id": "AHU-1", "title": "Filter torn",
                                  "severity": "minor", "site_id": "tower-a"})
    assert found.status_code == 201, found.text
    with db.write() as session:  # the notifier's escalation (api.notify.dispatch)
        nc = get_nc(session, 3, lock=True)
        assert nc is not None
        transition(session, nc, "escalate", SYSTEM_ACTOR, datetime.now(UTC),
                   changes={"escalate_to": ["quality-mail"], "route": 0},
                   note="not acknowledged within 15m")
        session.commit()

    assert {record.change for record in seen} == set(TRANSITIONS)  # every row, once at least
    for nc_id in ("NC-000001", "NC-000002", "NC-000003"):
        entries = history(api, nc_id)
        records = [record for record in seen if record.nc_id == nc_id]
        assert [(r.action, r.from_state, r.to_state, r.actor, r.role, r.note, r.changes)
                for r in records] == [
            (h["action"], h["from_state"], h["to_state"], h["actor"], h["role"], h["note"],
             h["changes"]) for h in entries]
        assert [r.at for r in records] == [datetime.fromisoformat(h["at"]) for h in entries]
    assert len(seen) == sum(len(history(api, n)) for n in ("NC-000001", "NC-000002",
                                                             "NC-000003"))
    by_change = {record.change: record for record in seen}
    assert by_change["raise"].from_state is None
    assert by_change["close_on_recovery"].feed_type == "closed"
    assert by_change["verify_by_sensor"].nc["verification"]["method"] == "sensor"
    assert by_change["overdue"].changes == {"overdue": [False, True]}
    assert by_change["external_ref"].feed_type is None  # history only, as the feed says
    feed_types = [event["type"] for event in api.client.get(
        "/api/v1/feed", params={"limit": 1000}, headers=api.headers("tracker")).json()["events"]]
    assert feed_types == [record.feed_type for record in seen if record.feed_type]


def test_refused_and_rolled_back_changes_are_never_delivered(
        api: Api, db: Database, seen: list[NCChanged]) -> None:
    api.apply(engine_event())
    assert [record.change for record in seen] == ["raise"]
    seen.clear()
    assert act(api, "NC-000001", "start", "engineer").status_code == 409
    assert act(api, "NC-000001", "cancel", "engineer", reason="no").status_code == 403
    assert act(api, "NC-000001", "rectify", "engineer").status_code == 422
    assert seen == []
    actor = ("eve", "engineer")
    with db.write() as session:
        nc = get_nc(session, 1, lock=True)
        assert nc is not None
        transition(session, nc, "acknowledge", actor, datetime.now(UTC))
        assert [record.to_state for record in pending(session)] == ["acknowledged"]
        session.rollback()
        assert pending(session) == ()
    with db.write() as session:  # closed without a commit
        nc = get_nc(session, 1, lock=True)
        assert nc is not None
        transition(session, nc, "acknowledge", actor, datetime.now(UTC))
    assert seen == []
    with db.write() as session:
        nc = get_nc(session, 1, lock=True)
        assert nc is not None
        transition(session, nc, "acknowledge", actor, datetime.now(UTC))
        transition(session, nc, "start", actor, datetime.now(UTC))
        assert seen == []  # not before the commit
        session.commit()
    assert [(r.change, r.from_state, r.to_state, r.actor) for r in seen] == [
        ("acknowledge", "open", "acknowledged", "eve"),
        ("start", "acknowledged", "rectifying", "eve")]


def test_a_change_the_table_does_not_allow_is_refused_and_changes_nothing(
        api: Api, db: Database, seen: list[NCChanged]) -> None:
    api.apply(engine_event(), engine_event(asset="CH-2"))
    seen.clear()
    with db.write() as session:
        nc = get_nc(session, 1, lock=True)
        assert nc is not None
        for automatic in ("verify_by_sensor", "raise"):  # not pending; not new
            with pytest.raises(IllegalAction):
                transition(session, nc, automatic, ("patrol", "system"), datetime.now(UTC))
        assert nc.state == "open" and pending(session) == ()


def test_reopening_takes_the_one_open_slot_or_is_a_conflict(
        api: Api, db: Database, seen: list[NCChanged]) -> None:
    api.apply(engine_event(on_recovery="close"),
              cleared(on_recovery="close"))  # NC-000001 closed on recovery
    api.apply(engine_event(start=NOW - HOUR))  # NC-000002 open for the same pair
    refused = act(api, "NC-000001", "reopen", "quality", reason="same leak")
    assert refused.status_code == 409 and "NC-000002" in refused.json()["detail"]
    with db.write() as session:
        nc = get_nc(session, 1, lock=True)
        assert nc is not None
        with pytest.raises(Conflict):
            transition(session, nc, "reopen", ("q", "quality"), datetime.now(UTC))
        assert (nc.state, nc.open_slot) == ("closed", None) and nc.closed_at is not None
    assert [record.change for record in seen] == ["raise", "close_on_recovery", "raise"]


def test_a_failing_listener_does_not_keep_the_change_from_the_others(
        api: Api, db: Database, seen: list[NCChanged]) -> None:
    def broken(change: NCChanged) -> None:
        raise RuntimeError("down")

    stop = listen(db, broken)
    db.listeners.insert(0, db.listeners.pop())  # it is called first
    try:
        api.apply(engine_event())
    finally:
        stop()
    assert [record.change for record in seen] == ["raise"]
    assert api.nc("NC-000001")["state"] == "open"  # the change itself committed


def test_people_are_refused_with_domain_errors_before_anything_changes(
        api: Api, db: Database, seen: list[NCChanged]) -> None:
    api.apply(engine_event())
    seen.clear()
    elsewhere = Principal(token_id=99, name="other", role="admin", sites=frozenset({"b"}))
    tracker = Principal(token_id=98, name="t", role="tracker")
    engineer = Principal(token_id=97, name="e", role="engineer")
    cases: list[tuple[Principal, str, ActionBody, type[PatrolError], str]] = [
        (elsewhere, "acknowledge", ActionBody(), NotFound, "no nonconformance NC-000001"),
        (tracker, "acknowledge", ActionBody(), Forbidden, "needs engineer"),
        (engineer, "start", ActionBody(), IllegalAction, "allowed: acknowledge"),
        (engineer, "assign", ActionBody(), Invalid, "assign needs assignee"),
    ]
    for principal, action, body, kind, message in cases:
        with db.write() as session, pytest.raises(kind, match=message):
            perform(session, 1, action, body, principal)
    assert seen == [] and api.nc("NC-000001")["state"] == "open"


def test_deciders_write_in_the_changes_own_transaction(api: Api, db: Database) -> None:
    """What a decider adds (the notification outbox) commits with the change, once per
    change, and rolls back with it."""
    decided: list[str] = []

    def decider(session: Any, changes: tuple[NCChanged, ...]) -> None:
        decided.extend(change.change for change in changes)
        session.add(Setting(key=f"decided-{len(decided)}", value="x"))

    stop = decide_with(db, decider)
    try:
        api.apply(engine_event())
        assert decided == ["raise"]
        actor = ("eve", "engineer")
        with db.write() as session:
            nc = get_nc(session, 1, lock=True)
            assert nc is not None
            transition(session, nc, "acknowledge", actor, datetime.now(UTC))
            session.rollback()
        assert decided == ["raise"]  # a rolled back change is never decided
        with db.write() as session:
            nc = get_nc(session, 1, lock=True)
            assert nc is not None
            transition(session, nc, "acknowledge", actor, datetime.now(UTC))
            session.flush()
            transition(session, nc, "start", actor, datetime.now(UTC))
            session.commit()
        assert decided == ["raise", "acknowledge", "start"]  # each once
    finally:
        stop()
    with db.session() as session:
        assert session.scalars(select(Setting.key).order_by(Setting.key)).all() == [
            "decided-1", "decided-3"]
