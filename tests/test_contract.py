"""The event contract (rules/events.py): the engine writes it, the API and the in-process
sink read it with the same classes; a field one side adds is never dropped without a trace.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.store import Database, Nonconformance
from rules.events import (
    CONTRACT_VERSION,
    UNKNOWN_FIELDS,
    ComplianceItem,
    EventIn,
    EventsIn,
    SnapshotIn,
    StandardInfo,
)
from tests.rules.test_range import MIN, T0, feed, make_engine, make_standard
from tests.test_api import Api, engine_event


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    with TestClient(create_app(db)) as client:
        yield Api(client, db)


def produced() -> tuple[dict[str, Any], dict[str, Any]]:
    """An event and a snapshot as a real engine writes them."""
    standard = make_standard(version=3, clause="O&M 4.2", severity="critical",
                             rectify_within="24h", verify_for="1h", on_recovery="close",
                             department="quality")
    engine = make_engine(standard)
    engine.snapshot(T0)  # the first one covers the time since the epoch
    event = feed(engine, [7.0, 9.4])[0]
    return event.to_dict(), engine.snapshot(T0 + 5 * MIN).to_dict()


def test_the_producer_writes_exactly_the_fields_the_consumer_declares() -> None:
    """A field added to Event.to_dict, Snapshot.to_dict, the standard's summary or a
    snapshot item without adding it to the contract fails here."""
    event, snapshot = produced()
    assert set(event) == set(EventIn.model_fields)
    assert set(event["standard"]) == set(StandardInfo.model_fields)
    assert set(snapshot) == set(SnapshotIn.model_fields)
    assert snapshot["items"] and all(set(item) == set(ComplianceItem.model_fields)
                                     for item in snapshot["items"])
    assert event["schema_version"] == snapshot["schema_version"] == CONTRACT_VERSION
    parsed = EventsIn.model_validate({"events": [event, snapshot]})
    assert parsed.unknown_fields == ()
    read_event, read_snapshot = parsed.events
    assert isinstance(read_event, EventIn) and isinstance(read_snapshot, SnapshotIn)
    assert read_event.standard.model_dump() == event["standard"]
    assert read_snapshot.items[0].model_dump(mode="json") == snapshot["items"][0]


def test_the_api_and_the_in_process_sink_read_with_the_contracts_classes() -> None:
    """One definition, not two kept equal: the route's body is rules.events.EventsIn."""
    import inspect

    from agent import runtime
    from api.routes import events as route

    assert inspect.signature(route.post_events).parameters["body"].annotation in (
        EventsIn, "EventsIn")
    assert route.EventsIn is EventsIn
    assert "from rules.events import AnyEvent" in inspect.getsource(runtime.in_process_sink)


def test_an_event_from_an_agent_without_schema_version_is_version_1() -> None:
    event, snapshot = produced()
    del event["schema_version"], snapshot["schema_version"]
    parsed = EventsIn.model_validate({"events": [event, snapshot]})
    assert [e.schema_version for e in parsed.events] == [1, 1]


def newer(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**body, **extra}


def test_unknown_fields_are_accepted_counted_and_logged_once(
        api: Api, db: Database, caplog: pytest.LogCaptureFixture) -> None:
    tag = uuid.uuid4().hex[:8]  # names new to this process: their first sight is logged
    event = engine_event()
    event = {**event, f"gateway_{tag}": "gw-7", "schema_version": CONTRACT_VERSION + 1,
             "standard": {**event["standard"], f"owner_{tag}": "ops"}}
    _, snapshot = produced()
    snapshot = {**snapshot, "site_id": "tower-a", f"uptime_{tag}": 3.5,
                "items": [{**item, f"trend_{tag}": "up"} for item in snapshot["items"]]}
    body = {"events": [event, snapshot], f"sent_by_{tag}": "patrol 9"}
    before = UNKNOWN_FIELDS.counts()
    with caplog.at_level(logging.DEBUG, logger="patrol.contract"):
        first = api.client.post("/api/v1/events", json=body, headers=api.headers("agent"))
        again = api.client.post("/api/v1/events", json=body, headers=api.headers("agent"))
    assert first.status_code == again.status_code == 200, first.text
    assert (first.json()["applied"], again.json()["duplicates"]) == (2, 2)
    names = {f"event.gateway_{tag}": 1, f"event.standard.owner_{tag}": 1,
             f"snapshot.uptime_{tag}": 1, f"snapshot.items.trend_{tag}": 1,
             f"batch.sent_by_{tag}": 1}
    assert first.json()["unknown_fields"] == again.json()["unknown_fields"] == names
    after = UNKNOWN_FIELDS.counts()
    assert {name: after.get(name, 0) - before.get(name, 0) for name in names} == {
        name: 2 for name in names}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in names:  # once per name, however often it comes
        assert sum(name in message for message in warnings) == 1, warnings
    with db.session() as session:  # the NC opened; nothing unchecked was stored
        nc = session.query(Nonconformance).one()
        assert nc.standard_info is not None and nc.title == event["standard"]["title"]
        assert f"owner_{tag}" not in nc.standard_info


def test_an_answer_without_unknown_fields_names_none(api: Api) -> None:
    assert "unknown_fields" not in api.apply(engine_event())


def test_unknown_field_names_are_bounded() -> None:
    """Names come from the network: past MAX_NAMES distinct ones they count as OTHER."""
    from rules.events import UnknownFields

    fields = UnknownFields(logging.getLogger("test.contract"))
    for n in range(UnknownFields.MAX_NAMES + 10):
        fields.note([f"event.f{n}"])
    counts = fields.counts()
    assert len(counts) == UnknownFields.MAX_NAMES + 1
    assert counts[UnknownFields.OTHER] == 10
    odd = EventIn.model_validate(newer(engine_event(), **{"x\x00" * 40: 1}))
    assert odd.unknown_fields == ("event." + repr("x\x00" * 32),)
