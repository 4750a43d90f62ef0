"""What happens to NCs without a person: engine events, automatic verification by sensor,
the overdue and stalled-verification jobs, recurrence; and manual findings, the history
trail, and the routes that must not exist. On SQLite and PostgreSQL.

Time is driven by the events themselves: `Event(... at=, episode_start=)` and
`Snapshot(site_id, since, at, items)`. A rectification happens at the wall clock, so the
snapshots that verify it are placed after the rectification's own time.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.background import mark_overdue, reopen_stalled_verifications
from api.store import Base, Database
from rules.events import Snapshot
from tests.test_api import HOUR, NC_KEYS, NOW, STANDARD, Api, cleared, engine_event, parse

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
WATCHED = {"no_data_after": 900.0}
"""What rules.standard.Standard.summary() always sends; STANDARD of test_api leaves it out."""
HISTORY_KEYS = {"at", "actor", "role", "action", "from_state", "to_state", "changes", "note",
                "channel"}


AHEAD = timedelta(days=30)
"""max_clock_skew here: these tests date readings hours ahead of the clock."""


@pytest.fixture(scope="module")
def shared_db(module_database_url: str) -> Iterator[Database]:
    database = Database(module_database_url)
    yield database
    database.close()


@pytest.fixture
def db(shared_db: Database) -> Database:
    """The module's database, emptied (ids from 1 again) before each test: creating a
    PostgreSQL schema per test would cost more than the tests themselves."""
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    with shared_db.write() as session:
        if shared_db.engine.dialect.name == "postgresql":
            session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                session.execute(text(f"DELETE FROM {table}"))
            if session.scalar(text("SELECT count(*) FROM sqlite_master "
                                   "WHERE name = 'sqlite_sequence'")):
                session.execute(text("DELETE FROM sqlite_sequence"))
        session.commit()
    return shared_db


@pytest.fixture
def make_api(db: Database) -> Iterator[Callable[..., Api]]:
    """An Api over an app made with create_app(db, **options). These tests play hours of
    readings ahead of the clock, so the clock check (tested in test_scope) is widened."""
    with ExitStack() as stack:

        def make(**options: Any) -> Api:
            options.setdefault("max_clock_skew", AHEAD)
            client = stack.enter_context(TestClient(create_app(db, **options)))
            return Api(client, db)

        yield make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def act(api: Api, nc_id: str, action: str, body: dict[str, Any] | None = None,
        role: str = "engineer") -> httpx.Response:
    return api.client.post(f"/api/v1/nonconformances/{nc_id}/{action}", json=body,
                           headers=api.headers(role))


def ok(api: Api, nc_id: str, action: str, body: dict[str, Any] | None = None,
       role: str = "engineer") -> dict[str, Any]:
    response = act(api, nc_id, action, body, role)
    assert response.status_code == 200, response.text
    return response.json()


def history(api: Api, nc_id: str) -> list[dict[str, Any]]:
    response = api.client.get(f"/api/v1/nonconformances/{nc_id}/history",
                              headers=api.headers("tracker"))
    assert response.status_code == 200, response.text
    return response.json()["items"]


def actions(api: Api, nc_id: str) -> list[str]:
    return [entry["action"] for entry in history(api, nc_id)]


def item(state: str = "ok", *, asset: str = "CH-1", standard: str = "HVAC-CHW-SUPPLY",
         readings: int = 0, **seconds: float) -> dict[str, Any]:
    """One (asset, standard) of a compliance snapshot."""
    return {"asset_id": asset, "standard_id": standard, "standard_version": 3,
            "state": state, "seconds": seconds, "readings": readings}


def snapshot(since: datetime, at: datetime, *items: dict[str, Any]) -> dict[str, Any]:
    return Snapshot("tower-a", since.timestamp(), at.timestamp(), list(items)).to_dict()


def ok_for(since: datetime, at: datetime, **kwargs: Any) -> dict[str, Any]:
    """A snapshot in which CH-1 complied all along, with one good reading a minute."""
    span = (at - since).total_seconds()
    return snapshot(since, at, item(ok=span, readings=round(span / 60), **kwargs))


def rectify(api: Api, nc_id: str = "NC-000001", role: str = "engineer") -> datetime:
    """Rectify now; returns the first whole second after the rectification, from which
    snapshots are wholly after it (their times are written to the millisecond)."""
    nc = ok(api, nc_id, "rectify", {"action": "replaced the valve"}, role)
    assert nc["state"] == "pending_verification"
    at = parse(nc["rectification"]["at"])
    return at.replace(microsecond=0) + timedelta(seconds=1)


def fixed_and_cleared(api: Api, **info: Any) -> datetime:
    """CH-1 violated 3 h ago and recovered 2 h ago; an engineer rectifies it now."""
    info = {**WATCHED, **info}
    api.apply(engine_event(start=NOW - 3 * HOUR, **info),
              cleared(start=NOW - 3 * HOUR, at=NOW - 2 * HOUR, **info))
    return rectify(api)


# --- engine events into NCs ------------------------------------------------------------


def test_violation_started_opens_an_nc_recorded_as_raised(api: Api) -> None:
    started = engine_event(start=NOW - 3 * HOUR)
    api.apply(started)
    nc = api.nc("NC-000001")
    assert set(nc) == NC_KEYS
    assert (nc["state"], nc["condition"], nc["source"], nc["occurrences"]) == (
        "open", "violating", "auto", 1)
    [entry] = history(api, "NC-000001")
    assert set(entry) == HISTORY_KEYS
    assert (entry["action"], entry["from_state"], entry["to_state"]) == ("raised", None, "open")
    assert (entry["actor"], entry["role"]) == ("agent-token", "agent")
    assert parse(entry["at"]) == parse(nc["detected_at"]) == parse(started["at"])


@pytest.mark.parametrize("state_steps", [[], ["acknowledge"], ["acknowledge", "start"]],
                         ids=["open", "acknowledged", "rectifying"])
def test_a_new_episode_adds_an_occurrence_to_the_open_nc(api: Api,
                                                         state_steps: list[str]) -> None:
    api.apply(engine_event(start=NOW - 5 * HOUR),
              cleared(start=NOW - 5 * HOUR, at=NOW - 4 * HOUR))
    for step in state_steps:
        ok(api, "NC-000001", step)
    before = api.nc("NC-000001")
    api.apply(engine_event(start=NOW - 2 * HOUR))

    [nc] = api.items()
    assert nc["id"] == "NC-000001"
    assert nc["state"] == before["state"]
    assert (nc["occurrences"], nc["condition"], nc["cleared_at"]) == (2, "violating", None)
    entry = history(api, "NC-000001")[-1]
    assert entry["action"] == "occurrence"
    assert entry["changes"]["occurrences"] == [1, 2]
    assert entry["from_state"] == entry["to_state"] == before["state"]


def test_violation_cleared_sets_the_condition_normal_and_keeps_the_nc_open(api: Api) -> None:
    end = cleared(start=NOW - 3 * HOUR, at=NOW - 2 * HOUR)
    api.apply(engine_event(start=NOW - 3 * HOUR), end)
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["condition"], nc["closed_at"]) == ("open", "normal", None)
    assert parse(nc["cleared_at"]) == parse(end["at"])
    entry = history(api, "NC-000001")[-1]
    assert (entry["action"], entry["from_state"], entry["to_state"]) == (
        "cleared", "open", "open")
    assert entry["changes"]["condition"] == ["violating", "normal"]


@pytest.mark.parametrize("state_steps", [[], ["acknowledge"], ["acknowledge", "start"]],
                         ids=["open", "acknowledged", "rectifying"])
def test_on_recovery_close_closes_when_the_condition_clears(api: Api,
                                                            state_steps: list[str]) -> None:
    api.apply(engine_event(start=NOW - 3 * HOUR, on_recovery="close"))
    for step in state_steps:
        ok(api, "NC-000001", step)
    end = cleared(start=NOW - 3 * HOUR, at=NOW - 2 * HOUR, on_recovery="close")
    api.apply(end)
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["condition"]) == ("closed", "normal")
    assert parse(nc["cleared_at"]) == parse(nc["closed_at"]) == parse(end["at"])
    entry = history(api, "NC-000001")[-1]
    assert entry["to_state"] == "closed"
    assert entry["changes"]["state"][1] == "closed"


def test_on_recovery_close_still_waits_for_a_verification_in_progress(api: Api) -> None:
    api.apply(engine_event(start=NOW - 3 * HOUR, on_recovery="close"))
    rectify(api)
    api.apply(cleared(start=NOW - 3 * HOUR, at=NOW - 2 * HOUR, on_recovery="close"))
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["condition"]) == ("pending_verification", "normal")


# --- due dates and the overdue scan ----------------------------------------------------


def test_the_due_date_is_detection_plus_rectify_within(api: Api) -> None:
    api.apply(engine_event(asset="CH-1", start=NOW - HOUR, rectify_within=4 * 3600.0),
              engine_event(asset="CH-2", start=NOW - HOUR, rectify_within=None))
    with_deadline = api.items(asset_id="CH-1")[0]
    assert parse(with_deadline["due_at"]) == parse(with_deadline["detected_at"]) + 4 * HOUR
    assert with_deadline["overdue"] is False
    without = api.items(asset_id="CH-2")[0]
    assert (without["due_at"], without["overdue"]) == (None, False)


def test_the_overdue_scan_records_overdue_once(api: Api, db: Database) -> None:
    api.apply(engine_event(start=NOW - 2 * HOUR, rectify_within=3600.0))
    assert api.nc("NC-000001")["overdue"] is True
    scan_at = datetime.now(UTC)

    assert mark_overdue(db.write, scan_at) == 1
    assert mark_overdue(db.write, scan_at + MINUTE) == 0
    assert mark_overdue(db.write, scan_at + DAY) == 0

    entries = [e for e in history(api, "NC-000001") if e["action"] == "overdue"]
    assert len(entries) == 1
    [entry] = entries
    assert (entry["from_state"], entry["to_state"], entry["role"]) == ("open", "open", "system")
    assert entry["changes"] == {"overdue": [False, True]}
    assert parse(entry["at"]) == scan_at


def test_the_overdue_scan_waits_for_the_deadline(api: Api, db: Database) -> None:
    api.apply(engine_event(start=NOW - 2 * HOUR))  # due in 22 h
    due = parse(api.nc("NC-000001")["due_at"])
    assert mark_overdue(db.write, due - MINUTE) == 0
    assert "overdue" not in actions(api, "NC-000001")
    assert mark_overdue(db.write, due + MINUTE) == 1
    assert actions(api, "NC-000001").count("overdue") == 1


@pytest.mark.parametrize("ending", ["closed", "cancelled"])
def test_ended_ncs_never_become_overdue(api: Api, db: Database, ending: str) -> None:
    api.apply(engine_event(start=NOW - 2 * HOUR, rectify_within=3600.0))
    if ending == "closed":
        rectify(api)
        ok(api, "NC-000001", "verify", {"result": "pass"}, "quality")
    else:
        ok(api, "NC-000001", "cancel", {"reason": "false alarm"}, "quality")
    assert api.nc("NC-000001")["overdue"] is False
    assert mark_overdue(db.write, datetime.now(UTC)) == 0
    assert "overdue" not in actions(api, "NC-000001")


def test_a_new_due_date_makes_the_scan_watch_again(api: Api, db: Database) -> None:
    api.apply(engine_event(start=NOW - 2 * HOUR, rectify_within=3600.0))
    assert mark_overdue(db.write, datetime.now(UTC)) == 1
    due = NOW + 2 * DAY
    ok(api, "NC-000001", "assign", {"assignee": "ann", "due_at": due.isoformat()})
    assert api.nc("NC-000001")["overdue"] is False
    assert mark_overdue(db.write, due - MINUTE) == 0
    assert mark_overdue(db.write, due + MINUTE) == 1
    assert actions(api, "NC-000001").count("overdue") == 2


# --- automatic verification by sensor --------------------------------------------------


def test_compliant_snapshots_covering_verify_for_close_it_by_sensor(api: Api) -> None:
    t = fixed_and_cleared(api)  # verify_for 1 h
    api.apply(ok_for(t, t + 30 * MINUTE))
    halfway = api.nc("NC-000001")
    assert halfway["state"] == "pending_verification"
    assert halfway["closed_at"] is None

    api.apply(ok_for(t + 30 * MINUTE, t + 60 * MINUTE))
    nc = api.nc("NC-000001")
    assert nc["state"] == "closed"
    assert parse(nc["closed_at"]) == t + 60 * MINUTE
    verification = nc["verification"]
    assert (verification["method"], verification["result"]) == ("sensor", "pass")
    assert verification["samples"] == 60
    window = verification["window"]
    assert parse(window["to"]) == t + 60 * MINUTE
    assert t - timedelta(seconds=1) <= parse(window["from"]) <= t
    # the console says how the sensors verified it
    from api.console.users import add_user
    from tests.test_console_pages import PASSWORD, sign_in

    with api.db.write() as session:
        add_user(session, name="quality-person", password=PASSWORD, role="quality")
        session.commit()
    sign_in(api.client, "quality-person")
    page = api.client.get("/ncs/NC-000001").text
    assert 'data-verification="sensor"' in page and "(60 readings)" in page
    entry = history(api, "NC-000001")[-1]
    assert (entry["action"], entry["from_state"], entry["to_state"], entry["role"]) == (
        "verified", "pending_verification", "closed", "system")


def test_compliant_time_before_the_rectification_does_not_count(api: Api) -> None:
    t = fixed_and_cleared(api)
    api.apply(ok_for(t - 3 * HOUR, t - HOUR), ok_for(t - HOUR, t))
    assert api.nc("NC-000001")["state"] == "pending_verification"
    # a snapshot straddling the rectification counts only its part after it
    api.apply(ok_for(t, t + 20 * MINUTE), ok_for(t + 20 * MINUTE, t + 80 * MINUTE))
    nc = api.nc("NC-000001")
    assert nc["state"] == "closed"


def test_a_snapshot_straddling_the_rectification_counts_only_its_later_part(
        api: Api) -> None:
    t = fixed_and_cleared(api)
    api.apply(ok_for(t - 40 * MINUTE, t + 40 * MINUTE))  # 40 min after: not yet 1 h
    assert api.nc("NC-000001")["state"] == "pending_verification"
    api.apply(ok_for(t + 40 * MINUTE, t + 60 * MINUTE))
    assert api.nc("NC-000001")["state"] == "closed"


def test_time_before_the_condition_cleared_does_not_count(api: Api) -> None:
    api.apply(engine_event(start=NOW - 3 * HOUR, **WATCHED))
    t = rectify(api)  # still violating when rectified
    api.apply(ok_for(t, t + 30 * MINUTE))
    assert api.nc("NC-000001")["state"] == "pending_verification"

    api.apply(cleared(start=NOW - 3 * HOUR, at=t + 40 * MINUTE))
    api.apply(ok_for(t + 40 * MINUTE, t + 90 * MINUTE))
    assert api.nc("NC-000001")["state"] == "pending_verification"  # 50 of 60 min
    api.apply(ok_for(t + 90 * MINUTE, t + 100 * MINUTE))
    nc = api.nc("NC-000001")
    assert nc["state"] == "closed"
    assert parse(nc["verification"]["window"]["from"]) == t + 40 * MINUTE


def test_a_violation_after_the_rectification_reopens_it(api: Api) -> None:
    t = fixed_and_cleared(api)
    api.apply(ok_for(t, t + 30 * MINUTE))
    again = engine_event(start=t + 40 * MINUTE)
    api.apply(again)
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["reopen_count"], nc["condition"]) == ("open", 1, "violating")
    assert nc["occurrences"] == 2
    assert (nc["verification"]["method"], nc["verification"]["result"]) == ("sensor", "fail")
    assert nc["verification"]["evidence"] == again["evidence"]
    assert nc["closed_at"] is None
    entry = history(api, "NC-000001")[-1]
    assert (entry["action"], entry["from_state"], entry["to_state"], entry["role"]) == (
        "reopened", "pending_verification", "open", "system")
    assert entry["changes"]["reopen_count"] == [0, 1]
    assert [nc["id"] for nc in api.items()] == ["NC-000001"]  # no second NC


def test_after_a_reopen_by_sensor_the_next_rectification_is_verified_afresh(
        api: Api) -> None:
    t = fixed_and_cleared(api)
    api.apply(ok_for(t, t + 50 * MINUTE))
    api.apply(engine_event(start=t + 55 * MINUTE),
              cleared(start=t + 55 * MINUTE, at=t + 56 * MINUTE))
    assert api.nc("NC-000001")["state"] == "open"
    # the 50 minutes before the reopening do not carry over to the new rectification,
    # whose coverage starts when the condition cleared (t + 56 min)
    rectify(api)
    t2 = t + 60 * MINUTE
    api.apply(ok_for(t2, t2 + 30 * MINUTE))
    assert api.nc("NC-000001")["state"] == "pending_verification"
    api.apply(ok_for(t2 + 30 * MINUTE, t2 + 60 * MINUTE))
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["reopen_count"]) == ("closed", 1)


def test_a_late_event_of_an_episode_before_the_rectification_does_not_reopen(
        api: Api) -> None:
    t = fixed_and_cleared(api)
    api.apply(engine_event(start=t - 30 * MINUTE))  # delivered late, happened before
    assert api.nc("NC-000001")["state"] == "pending_verification"


@pytest.mark.parametrize(("gap", "no_data_after", "closed"), [
    (300.0, 600.0, True),
    (900.0, 600.0, False),
    pytest.param(800.0, None, True),  # default limit: 15 min
    pytest.param(1000.0, None, False),
], ids=["short-gap", "long-gap", "short-gap-default", "long-gap-default"])
def test_a_data_gap_longer_than_no_data_after_restarts_the_coverage(
        api: Api, gap: float, no_data_after: float | None, closed: bool) -> None:
    t = fixed_and_cleared(api, no_data_after=no_data_after)
    quiet = timedelta(seconds=gap)
    api.apply(ok_for(t, t + 30 * MINUTE),
              snapshot(t + 30 * MINUTE, t + 30 * MINUTE + quiet, item("no_data", no_data=gap)),
              ok_for(t + 30 * MINUTE + quiet, t + 60 * MINUTE + quiet))
    assert api.nc("NC-000001")["state"] == ("closed" if closed else "pending_verification")
    if not closed:  # a whole verify_for after the gap closes it, from the gap's end
        api.apply(ok_for(t + 60 * MINUTE + quiet, t + 90 * MINUTE + quiet))
        nc = api.nc("NC-000001")
        assert nc["state"] == "closed"
        assert parse(nc["verification"]["window"]["from"]) == t + 30 * MINUTE + quiet


def test_consecutive_no_data_snapshots_add_up_to_one_gap(api: Api) -> None:
    t = fixed_and_cleared(api, no_data_after=600.0)
    api.apply(ok_for(t, t + 30 * MINUTE),
              snapshot(t + 30 * MINUTE, t + 37 * MINUTE, item("no_data", no_data=420)),
              snapshot(t + 37 * MINUTE, t + 44 * MINUTE, item("no_data", no_data=420)),
              ok_for(t + 44 * MINUTE, t + 74 * MINUTE))
    assert api.nc("NC-000001")["state"] == "pending_verification"


def test_time_outside_the_schedule_is_not_a_data_gap(api: Api) -> None:
    t = fixed_and_cleared(api, verify_for=4 * 3600.0)
    night = 14 * HOUR
    api.apply(ok_for(t, t + 2 * HOUR),
              snapshot(t + 2 * HOUR, t + 2 * HOUR + night,
                       item("inactive", inactive=night.total_seconds())),
              ok_for(t + 2 * HOUR + night, t + 4 * HOUR + night))
    assert api.nc("NC-000001")["state"] == "closed"


def test_snapshots_of_other_pairs_do_not_verify_it(api: Api) -> None:
    t = fixed_and_cleared(api)
    api.apply(snapshot(t, t + 2 * HOUR, item(asset="CH-2", ok=7200),
                       item(standard="OTHER", ok=7200)))
    assert api.nc("NC-000001")["state"] == "pending_verification"


def test_a_standard_without_verify_for_waits_for_a_person(api: Api) -> None:
    t = fixed_and_cleared(api, verify_for=None)
    api.apply(ok_for(t, t + 10 * HOUR))
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["verification"]) == ("pending_verification", None)
    nc = ok(api, "NC-000001", "verify", {"result": "pass"}, "quality")
    assert nc["state"] == "closed"
    assert nc["verification"]["result"] == "pass"
    assert nc["verification"].get("method") != "sensor"


def test_a_person_may_verify_before_the_sensors_do(api: Api) -> None:
    t = fixed_and_cleared(api)
    api.apply(ok_for(t, t + 30 * MINUTE))
    nc = ok(api, "NC-000001", "verify", {"result": "pass"}, "quality")
    assert nc["state"] == "closed"
    api.apply(ok_for(t + 30 * MINUTE, t + 90 * MINUTE))  # changes nothing any more
    assert api.nc("NC-000001") == nc


def test_a_standard_without_no_data_after_is_verified_with_the_default_limit(
        db: Database) -> None:
    with TestClient(create_app(db, max_clock_skew=AHEAD),
                    raise_server_exceptions=False) as client:
        api = Api(client, db)
        t = fixed_and_cleared(api, no_data_after=None)  # as test_api.STANDARD sends it
        response = api.post_events(ok_for(t, t + 30 * MINUTE))
        assert response.status_code == 200, response.text
        api.apply(ok_for(t + 30 * MINUTE, t + 60 * MINUTE))
        assert api.nc("NC-000001")["state"] == "closed"


def test_replaying_a_snapshot_counts_it_once(api: Api) -> None:
    t = fixed_and_cleared(api)
    first = ok_for(t, t + 40 * MINUTE)
    assert api.apply(first, first) == {"applied": 1, "duplicates": 1,
                                       "ids": [first["id"]] * 2}
    assert api.nc("NC-000001")["state"] == "pending_verification"


# --- verification that never starts ----------------------------------------------------


def test_a_verification_still_violating_after_verify_for_is_reopened(api: Api,
                                                                     db: Database) -> None:
    api.apply(engine_event(start=NOW - 3 * HOUR))
    t = rectify(api)  # the condition never clears
    assert reopen_stalled_verifications(db.write, t + 59 * MINUTE) == 0
    assert api.nc("NC-000001")["state"] == "pending_verification"

    assert reopen_stalled_verifications(db.write, t + 61 * MINUTE) == 1
    assert reopen_stalled_verifications(db.write, t + 62 * MINUTE) == 0
    nc = api.nc("NC-000001")
    assert (nc["state"], nc["reopen_count"]) == ("open", 1)
    assert nc["verification"]["result"] == "fail"
    entry = history(api, "NC-000001")[-1]
    assert (entry["action"], entry["from_state"], entry["to_state"], entry["role"]) == (
        "reopened", "pending_verification", "open", "system")
    assert actions(api, "NC-000001").count("reopened") == 1


def test_the_stalled_scan_leaves_cleared_and_unwatched_ncs_alone(api: Api,
                                                                 db: Database) -> None:
    api.apply(engine_event(asset="CH-1", start=NOW - 3 * HOUR),  # cleared below
              cleared(asset="CH-1", start=NOW - 3 * HOUR, at=NOW - 2 * HOUR),
              engine_event(asset="CH-2", start=NOW - 3 * HOUR, verify_for=None))
    manual = api.client.post("/api/v1/nonconformances", headers=api.headers("quality"),
                             json={"asset_id": "CH-3", "title": "Leak", "severity": "minor"})
    assert manual.status_code == 201
    ids = [nc["id"] for nc in api.items()]
    for nc_id in ids:
        rectify(api, nc_id)
    assert reopen_stalled_verifications(db.write, datetime.now(UTC) + 30 * DAY) == 0
    assert {nc["state"] for nc in api.items()} == {"pending_verification"}


# --- recurrence ------------------------------------------------------------------------


def close_on_recovery(api: Api, start: datetime, **kwargs: Any) -> None:
    api.apply(engine_event(start=start, on_recovery="close", **kwargs),
              cleared(start=start, at=start + HOUR, on_recovery="close", **kwargs))


@pytest.mark.parametrize(("days_ago", "recurring"), [(10, True), (88, True), (95, False)])
def test_recurring_when_the_pair_had_an_nc_closed_within_90_days(
        api: Api, days_ago: int, recurring: bool) -> None:
    close_on_recovery(api, NOW - days_ago * DAY)
    api.apply(engine_event(start=NOW - HOUR))
    nc = api.nc("NC-000002")
    assert nc["recurring"] is recurring
    raised = history(api, "NC-000002")[0]
    assert raised["action"] == "raised"
    if recurring:
        assert raised["changes"]["recurs"] == ["NC-000001"]
    else:
        assert "recurs" not in raised["changes"]
    assert [n["id"] for n in api.items(recurring="true")] == (
        ["NC-000002"] if recurring else [])


def test_a_recurrence_links_every_earlier_nc_closed_in_the_window(api: Api) -> None:
    close_on_recovery(api, NOW - 200 * DAY)  # NC-1, too old
    close_on_recovery(api, NOW - 60 * DAY)  # NC-2
    close_on_recovery(api, NOW - 30 * DAY)  # NC-3 (itself recurring)
    api.apply(engine_event(start=NOW - HOUR))
    assert api.nc("NC-000004")["recurring"] is True
    assert history(api, "NC-000004")[0]["changes"]["recurs"] == ["NC-000002", "NC-000003"]


def test_an_nc_closed_by_a_person_counts_for_recurrence(api: Api) -> None:
    api.apply(engine_event(start=NOW - 3 * HOUR))
    rectify(api)
    ok(api, "NC-000001", "verify", {"result": "pass"}, "quality")
    closed_at = parse(api.nc("NC-000001")["closed_at"])
    api.apply(engine_event(start=closed_at + HOUR))
    assert api.nc("NC-000002")["recurring"] is True


@pytest.mark.parametrize("other", [{"asset": "CH-2"}, {"standard": "HVAC-CHW-RETURN"}],
                         ids=["other-asset", "other-standard"])
def test_recurrence_is_per_asset_and_standard(api: Api, other: dict[str, str]) -> None:
    close_on_recovery(api, NOW - 10 * DAY)
    api.apply(engine_event(start=NOW - HOUR, **other))
    assert api.nc("NC-000002")["recurring"] is False


def test_a_cancelled_nc_is_not_a_recurrence(api: Api) -> None:
    api.apply(engine_event(start=NOW - 10 * DAY))
    ok(api, "NC-000001", "cancel", {"reason": "sensor fault"}, "quality")
    api.apply(engine_event(start=NOW - HOUR))
    assert api.nc("NC-000002")["recurring"] is False


@pytest.mark.parametrize(("days_ago", "recurring"), [(5, True), (10, False)])
def test_the_recurrence_window_is_configurable(make_api: Callable[..., Api], days_ago: int,
                                               recurring: bool) -> None:
    api = make_api(recurrence=timedelta(days=7))
    close_on_recovery(api, NOW - days_ago * DAY)
    api.apply(engine_event(start=NOW - HOUR))
    assert api.nc("NC-000002")["recurring"] is recurring


# --- manual findings -------------------------------------------------------------------


FINDING = {"asset_id": "CH-1", "title": "Insulation torn on the chilled water header",
           "severity": "minor", "department": "facilities",
           "description": "seen on the weekly walk", "due_at": "2026-12-01T08:00:00Z"}


def post_finding(api: Api, body: dict[str, Any], role: str = "quality") -> httpx.Response:
    return api.client.post("/api/v1/nonconformances", json=body, headers=api.headers(role))


@pytest.mark.parametrize("role", ["quality", "admin"])
def test_a_manual_finding_is_201_with_source_manual(make_api: Callable[..., Api],
                                                    role: str) -> None:
    api = make_api(site_id="tower-a", assets=["CH-1", "CH-2"])
    response = post_finding(api, FINDING, role)
    assert response.status_code == 201, response.text
    nc = response.json()
    assert set(nc) == NC_KEYS
    assert nc == api.nc(nc["id"])
    assert (nc["source"], nc["state"], nc["site_id"], nc["asset_id"]) == (
        "manual", "open", "tower-a", "CH-1")
    assert (nc["title"], nc["severity"], nc["department"]) == (
        FINDING["title"], "minor", "facilities")
    assert parse(nc["due_at"]) == parse(FINDING["due_at"])
    assert (nc["standard_id"], nc["recurring"], nc["occurrences"]) == (None, False, 1)
    [entry] = history(api, nc["id"])
    assert (entry["action"], entry["from_state"], entry["to_state"]) == (
        "raised", None, "open")
    assert (entry["actor"], entry["role"]) == (f"{role}-token", role)


@pytest.mark.parametrize("role", ["engineer", "tracker", "agent"])
def test_only_quality_records_findings(api: Api, role: str) -> None:
    assert post_finding(api, FINDING, role).status_code == 403
    assert api.items() == []


def test_a_finding_without_a_token_is_401(api: Api) -> None:
    assert api.client.post("/api/v1/nonconformances", json=FINDING).status_code == 401
    assert api.items() == []


def test_an_unknown_asset_is_422_when_the_app_knows_its_assets(
        make_api: Callable[..., Api]) -> None:
    api = make_api(assets=["CH-1"])
    response = post_finding(api, {**FINDING, "asset_id": "CH-9"})
    assert response.status_code == 422
    assert "CH-9" in response.json()["detail"]
    assert api.items() == []


def test_any_asset_is_accepted_when_the_app_knows_none(api: Api) -> None:
    assert post_finding(api, {**FINDING, "asset_id": "CH-9"}).status_code == 201


@pytest.mark.parametrize("body", [
    {key: value for key, value in FINDING.items() if key != "title"},
    {key: value for key, value in FINDING.items() if key != "severity"},
    {key: value for key, value in FINDING.items() if key != "asset_id"},
    {**FINDING, "severity": "huge"},
    {**FINDING, "title": ""},
    {**FINDING, "due_at": "2026-12-01T08:00:00"},
    {**FINDING, "state": "closed"},
], ids=["no-title", "no-severity", "no-asset", "bad-severity", "empty-title", "naive-due",
        "extra-field"])
def test_an_invalid_finding_is_422(api: Api, body: dict[str, Any]) -> None:
    assert post_finding(api, body).status_code == 422
    assert api.items() == []


def test_a_manual_finding_waits_for_a_persons_verify(api: Api, db: Database) -> None:
    nc_id = post_finding(api, FINDING).json()["id"]
    t = rectify(api, nc_id)
    api.apply(snapshot(t, t + 10 * HOUR, item(asset="CH-1", ok=36000)))
    assert reopen_stalled_verifications(db.write, t + 10 * DAY) == 0
    assert api.nc(nc_id)["state"] == "pending_verification"
    nc = ok(api, nc_id, "verify", {"result": "pass"}, "quality")
    assert nc["state"] == "closed"


def test_a_manual_finding_and_an_auto_nc_on_one_asset_are_separate(api: Api) -> None:
    api.apply(engine_event(start=NOW - HOUR))
    post_finding(api, FINDING)
    post_finding(api, FINDING)
    api.apply(engine_event(start=NOW - 30 * MINUTE))  # occurrence of the auto NC
    assert sorted((nc["source"], nc["occurrences"]) for nc in api.items()) == [
        ("auto", 2), ("manual", 1), ("manual", 1)]


# --- history: append-only, and no route edits anything ---------------------------------


def test_history_only_grows_and_every_entry_is_whole(api: Api, db: Database) -> None:
    snapshots: list[list[dict[str, Any]]] = []

    def keep() -> None:
        snapshots.append(history(api, "NC-000001"))

    api.apply(engine_event(start=NOW - 5 * HOUR, **WATCHED))
    keep()
    api.apply(engine_event(start=NOW - 4 * HOUR, **WATCHED))  # occurrence
    keep()
    ok(api, "NC-000001", "acknowledge", {"note": "on it"})
    keep()
    ok(api, "NC-000001", "assign", {"assignee": "ann"}, "quality")
    keep()
    api.apply(cleared(start=NOW - 4 * HOUR, at=NOW - 3 * HOUR, **WATCHED))
    keep()
    t = rectify(api)
    keep()
    api.apply(ok_for(t, t + 2 * HOUR))
    keep()
    ok(api, "NC-000001", "reopen", {"reason": "tenant complaint"}, "quality")
    keep()
    mark_overdue(db.write, datetime.now(UTC) + 30 * DAY)
    keep()

    for shorter, longer in itertools.pairwise(snapshots):
        assert longer[:len(shorter)] == shorter
        assert len(longer) == len(shorter) + 1
    entries = snapshots[-1]
    assert [e["action"] for e in entries] == [
        "raised", "occurrence", "acknowledge", "assign", "cleared", "rectify", "verified",
        "reopen", "overdue"]
    for entry in entries:
        assert set(entry) == HISTORY_KEYS
        assert entry["actor"] and entry["role"] and entry["at"]
        for change in entry["changes"].values():
            if entry["action"] != "raised":
                assert len(change) == 2  # [old, new]
    assert entries[2]["note"] == "on it"
    assert entries[3]["changes"]["assignee"] == [None, "ann"]
    assert entries[7]["note"] == "tenant complaint"


def _missing_changes(api: Api, step: Callable[[], object]) -> list[str]:
    """Run `step`, which must add one history entry; the NC fields that changed but that
    the entry's `changes` do not list."""
    before, count = api.nc("NC-000001"), len(history(api, "NC-000001"))
    step()
    after, trail = api.nc("NC-000001"), history(api, "NC-000001")
    assert len(trail) == count + 1
    entry = trail[-1]
    changed = {key for key in after if key != "overdue" and after[key] != before[key]}
    return [f"{entry['action']}: {key}" for key in sorted(changed - set(entry["changes"]))]


@pytest.mark.parametrize("on_recovery", ["keep_open", "close"])
def test_automatic_changes_list_every_changed_field(api: Api, on_recovery: str) -> None:
    info = {**WATCHED, "on_recovery": on_recovery}
    api.apply(engine_event(start=NOW - 5 * HOUR, **info))
    missing = _missing_changes(api, lambda: api.apply(
        engine_event(start=NOW - 4 * HOUR, **info)))  # occurrence while violating
    missing += _missing_changes(api, lambda: api.apply(
        cleared(start=NOW - 4 * HOUR, at=NOW - 3 * HOUR, **info)))
    if on_recovery == "keep_open":
        missing += _missing_changes(api, lambda: api.apply(
            engine_event(start=NOW - 150 * MINUTE, **info)))  # occurrence after clearing
        api.apply(cleared(start=NOW - 150 * MINUTE, at=NOW - 2 * HOUR, **info))
        t = rectify(api)
        missing += _missing_changes(api, lambda: api.apply(
            engine_event(start=t + 10 * MINUTE, **info)))  # reopened by sensor
        api.apply(cleared(start=t + 10 * MINUTE, at=t + 11 * MINUTE, **info))
        rectify(api)
        missing += _missing_changes(api, lambda: api.apply(
            ok_for(t + 11 * MINUTE, t + 80 * MINUTE)))  # verified by sensor
    assert missing == [], missing


def test_every_change_of_an_nc_has_a_history_entry(api: Api) -> None:
    t = fixed_and_cleared(api)
    before, trail = api.nc("NC-000001"), history(api, "NC-000001")
    api.apply(ok_for(t, t + 30 * MINUTE))  # not yet verify_for: should change nothing
    assert api.nc("NC-000001") == before or history(api, "NC-000001") != trail


def test_history_of_an_unknown_nc_is_404(api: Api) -> None:
    response = api.client.get("/api/v1/nonconformances/NC-000042/history",
                              headers=api.headers("tracker"))
    assert response.status_code == 404


def test_history_needs_a_token(api: Api) -> None:
    api.apply(engine_event())
    assert api.client.get("/api/v1/nonconformances/NC-000001/history").status_code == 401


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", [
    "/api/v1/nonconformances/NC-000001/history",
    "/api/v1/nonconformances/NC-000001",
    "/api/v1/nonconformances",
])
def test_no_route_edits_or_deletes_ncs_or_history(api: Api, method: str, path: str) -> None:
    api.apply(engine_event())
    before, trail = api.nc("NC-000001"), history(api, "NC-000001")
    response = api.client.request(method, path, json={"items": []},
                                  headers=api.headers("admin"))
    assert response.status_code == 405
    assert api.nc("NC-000001") == before
    assert history(api, "NC-000001") == trail


def test_the_standard_info_of_an_event_is_kept_on_the_nc(api: Api) -> None:
    api.apply(engine_event(severity="critical", department="quality"))
    nc = api.nc("NC-000001")
    assert (nc["title"], nc["clause"], nc["category"]) == (
        STANDARD["title"], STANDARD["clause"], STANDARD["category"])
    assert (nc["severity"], nc["department"]) == ("critical", "quality")


# --- engine events the API must refuse or take, never fail on ---------------------------
# Found by tests/test_schemathesis.py. A 5xx on POST /api/v1/events is worse than a 4xx:
# agent/forward.py retries a 5xx batch for ever, so one such event stops every later event
# of that agent; a 4xx is dead-lettered and the rest flow on.


@pytest.fixture
def raw_api(db: Database) -> Iterator[Api]:
    """An Api whose server errors come back as 500 answers instead of exceptions."""
    with TestClient(create_app(db, max_clock_skew=AHEAD),
                    raise_server_exceptions=False) as client:
        yield Api(client, db)


@pytest.mark.parametrize("version", [2**31, 2**63])
@pytest.mark.parametrize("where", ["event", "snapshot"])
def test_a_huge_standard_version_is_not_a_server_error(
        raw_api: Api, db: Database, request: pytest.FixtureRequest, where: str,
        version: int) -> None:
    if where == "event":
        body = engine_event()
        body["standard_version"] = version
    else:
        body = snapshot(NOW - HOUR, NOW, {**item(ok=3600), "standard_version": version})
    assert raw_api.post_events(body).status_code < 500


@pytest.mark.parametrize("change", [
    {"standard": {"rectify_within": 1e17}},
    {"at": "9999-12-31T23:00:00Z", "standard": {"rectify_within": 86400.0}},
    {"at": "0001-01-01T00:00:00Z", "episode_start": "0001-01-01T00:00:00Z"},
], ids=["rectify-within-past-timedelta", "due-past-year-9999", "recurrence-before-year-1"])
def test_times_out_of_range_are_not_a_server_error(raw_api: Api,
                                                    change: dict[str, Any]) -> None:
    body = engine_event()
    body.update({**change, "standard": {**body["standard"], **change.get("standard", {})}})
    assert raw_api.post_events(body).status_code < 500


@pytest.mark.parametrize("seconds", [-5000.0, float("nan")], ids=["negative", "nan"])
def test_compliance_seconds_must_be_finite_and_not_negative(raw_api: Api,
                                                            seconds: float) -> None:
    t = fixed_and_cleared(raw_api)
    body = {"events": [snapshot(t, t + HOUR, item(ok=seconds))]}
    response = raw_api.client.post(  # json.dumps writes NaN as agents' JSON encoders may
        "/api/v1/events", content=json.dumps(body),
        headers={**raw_api.headers("agent"), "Content-Type": "application/json"})
    assert response.status_code == 422, response.text


def test_an_absurd_verify_for_is_refused_so_it_cannot_stop_the_stalled_scan(
        raw_api: Api, api: Api, db: Database) -> None:
    refused = raw_api.post_events(engine_event(asset="CH-1", start=NOW - 3 * HOUR,
                                               verify_for=1e12))
    assert refused.status_code == 422 and "verify_for" in refused.text
    api.apply(engine_event(asset="CH-2", start=NOW - 3 * HOUR))
    t = rectify(api, "NC-000001")
    assert reopen_stalled_verifications(db.write, t + 2 * HOUR) == 1
    assert api.nc("NC-000001")["state"] == "open"


def read_for(since: datetime, at: datetime, *, last_value: float, last_at: str
             ) -> dict[str, Any]:
    """`ok_for`, with the pair's last reading (value and time) as agents send it."""
    span = (at - since).total_seconds()
    return snapshot(since, at, {**item(ok=span, readings=round(span / 60)),
                                "last_value": last_value, "last_at": last_at})


def test_each_snapshot_during_verification_leaves_its_last_reading_for_the_plot(
        api: Api) -> None:
    """One reading a snapshot (its pair's last), from the rectification on, kept with the
    verification and plotted on the NC's page beside those around detection."""
    t = fixed_and_cleared(api)  # verify_for 1 h
    before = t - 10 * MINUTE  # read before the rectification: not part of verifying it
    api.apply(read_for(t - 20 * MINUTE, t - MINUTE, last_value=7.9,
                     last_at=before.isoformat()))
    for n in range(4):  # four snapshots, each 15 min with its own last reading
        since, at = t + n * 15 * MINUTE, t + (n + 1) * 15 * MINUTE
        api.apply(read_for(since, at, last_value=7.0 + n / 10,
                         last_at=(at - MINUTE).isoformat()))
    api.apply(read_for(t + 60 * MINUTE, t + 61 * MINUTE, last_value=7.3,
                     last_at=(t + 59 * MINUTE).isoformat()))  # nothing new read: no point
    nc = api.nc("NC-000001")
    assert nc["state"] == "closed"
    readings = nc["verification"]["readings"]
    assert [value for _, value in readings] == [7.0, 7.1, 7.2, 7.3]
    assert [parse(at) for at, _ in readings] == [
        t + (n + 1) * 15 * MINUTE - MINUTE for n in range(4)]

    from api.console.users import add_user
    from tests.test_console_pages import PASSWORD, sign_in

    with api.db.write() as session:
        add_user(session, name="quality-plot", password=PASSWORD, role="quality")
        session.commit()
    sign_in(api.client, "quality-plot")
    page = api.client.get("/ncs/NC-000001").text
    assert "data-verifying='[[" in page and "4 readings since the rectification" in page


def test_a_person_verifying_keeps_the_readings_traced_so_far(api: Api) -> None:
    t = fixed_and_cleared(api)
    api.apply(read_for(t, t + 10 * MINUTE, last_value=7.4,
                     last_at=(t + 9 * MINUTE).isoformat()))
    nc = ok(api, "NC-000001", "verify", {"result": "pass"}, "quality")
    assert nc["verification"]["method"] == "manual"
    assert nc["verification"]["readings"] == [[(t + 9 * MINUTE).isoformat(), 7.4]]
