"""The NC state machine through the HTTP API: every (state, action) for every role.

The cases are generated from api.workflow (STATES, ACTIONS) and api.auth (ROLES), but the
outcome each case expects is computed here from SPEC section 5 and 6 alone (SPEC_MOVES,
SPEC_RIGHTS, SPEC_REQUIRED), so a wrong table fails the suite instead of agreeing with it.
NCs are brought into each state through the API itself: an engine event, then actions.

One database per backend serves the whole module (each case has its own asset, hence its
own NC), which keeps hundreds of cases fast on PostgreSQL.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import ROLES
from api.store import Database
from api.workflow import ACTIONS, STATES, allowed_actions
from tests.test_api import HOUR, NOW, Api, bearer, cleared, engine_event, new_token, parse

# --- SPEC section 5 and 6, written out independently of api.workflow -------------------

SPEC_STATES = ("open", "acknowledged", "rectifying", "pending_verification", "closed",
               "cancelled")
SPEC_OPEN = ("open", "acknowledged", "rectifying", "pending_verification")
VERIFY_RESULT = "by result: pass -> closed, fail -> open"
SPEC_MOVES: dict[str, dict[str, str]] = {
    "acknowledge": {"open": "acknowledged"},
    "start": {"acknowledged": "rectifying"},
    "rectify": dict.fromkeys(("open", "acknowledged", "rectifying"), "pending_verification"),
    "verify": {"pending_verification": VERIFY_RESULT},
    # "any but closed --cancel--> cancelled": cancelling a cancelled NC is not a change,
    # so cancelled (an ended state) allows nothing
    "cancel": dict.fromkeys(SPEC_OPEN, "cancelled"),
    "reopen": {"closed": "open"},
    "assign": {state: state for state in SPEC_OPEN},  # "in any open state"; state kept
}
"""(action) -> {source state: target state}."""

ENGINEER = {"acknowledge", "start", "rectify", "assign"}
SPEC_RIGHTS: dict[str, set[str]] = {
    "engineer": ENGINEER,
    "quality": ENGINEER | {"verify", "cancel", "reopen"},
    "tracker": set(),
    "agent": set(),
    "admin": set(SPEC_MOVES),
}
SPEC_REQUIRED = {"acknowledge": set(), "start": set(), "rectify": {"action"},
                 "verify": {"result"}, "cancel": {"reason"}, "reopen": {"reason"},
                 "assign": {"assignee"}}

DUE = (NOW + timedelta(days=3)).isoformat()
BODIES: dict[str, dict[str, Any]] = {
    "acknowledge": {"note": "seen it"},
    "start": {"note": "on my way"},
    "rectify": {"action": "replaced the valve", "root_cause": "worn seat", "note": "done"},
    "verify-pass": {"result": "pass", "note": "looks right"},
    "verify-fail": {"result": "fail", "note": "still warm"},
    "cancel": {"reason": "sensor was being calibrated"},
    "reopen": {"reason": "the fault came back"},
    "assign": {"assignee": "ann", "department": "facilities", "due_at": DUE},
}
"""One valid body per action variant (verify twice: its target depends on the result)."""


def spec_target(state: str, variant: str) -> str | None:
    """Where SPEC section 5 takes an NC in `state` on `variant`; None: not allowed (409)."""
    action, _, result = variant.partition("-")
    target = SPEC_MOVES[action].get(state)
    if target == VERIFY_RESULT:
        return "closed" if result == "pass" else "open"
    return target


def spec_allowed(state: str) -> set[str]:
    return {action for action, moves in SPEC_MOVES.items() if state in moves}


VARIANTS = [f"{name}-pass" if name == "verify" else name for name in ACTIONS]
VARIANTS[VARIANTS.index("verify-pass"):VARIANTS.index("verify-pass") + 1] = [
    "verify-pass", "verify-fail"]


# --- the table itself against the SPEC -------------------------------------------------


def test_the_table_has_the_spec_states_actions_and_roles() -> None:
    assert tuple(STATES) == SPEC_STATES
    assert set(ACTIONS) == set(SPEC_MOVES)
    assert set(ROLES) == set(SPEC_RIGHTS)


@pytest.mark.parametrize("state", STATES)
def test_the_table_allows_what_the_spec_allows(state: str) -> None:
    assert set(allowed_actions(state)) == spec_allowed(state)


@pytest.mark.parametrize("name", list(ACTIONS))
def test_the_table_requires_what_the_spec_requires(name: str) -> None:
    assert set(ACTIONS[name].required) == SPEC_REQUIRED[name]


# --- building NCs in every state through the API ---------------------------------------


Seen = tuple[dict[str, Any], list[dict[str, Any]]]
"""An NC's JSON and its history, as last read."""


@dataclass
class Workflow:
    """The module's API and a way to get a fresh NC in any state."""

    api: Api
    db: Database
    assets: Iterator[int]
    spares: dict[str, str] = field(default_factory=dict)
    seen: dict[str, Seen] = field(default_factory=dict)

    def act(self, nc_id: str, action: str, body: dict[str, Any] | None = None,
            role: str = "engineer", headers: dict[str, str] | None = None) -> httpx.Response:
        return self.api.client.post(f"/api/v1/nonconformances/{nc_id}/{action}",
                                    json=body, headers=headers or self.api.headers(role))

    def ok(self, nc_id: str, action: str, body: dict[str, Any] | None = None,
           role: str = "engineer") -> dict[str, Any]:
        response = self.act(nc_id, action, body, role)
        assert response.status_code == 200, response.text
        return response.json()

    def history(self, nc_id: str) -> list[dict[str, Any]]:
        response = self.api.client.get(f"/api/v1/nonconformances/{nc_id}/history",
                                       headers=self.api.headers("tracker"))
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def raise_nc(self, **info: Any) -> str:
        """A new NC opened by an engine event on an asset of its own."""
        asset = f"WF-{next(self.assets)}"
        self.api.apply(engine_event(asset=asset, **info))
        [nc] = self.api.items(asset_id=asset)
        return nc["id"]

    def make(self, state: str) -> str:
        """A fresh NC in `state`, reached by the actions a person would take."""
        nc_id = self.raise_nc()
        steps: dict[str, list[tuple[str, dict[str, Any], str]]] = {
            "open": [],
            "acknowledged": [("acknowledge", {}, "engineer")],
            "rectifying": [("acknowledge", {}, "engineer"), ("start", {}, "engineer")],
            "pending_verification": [("rectify", {"action": "fixed"}, "engineer")],
            "closed": [("rectify", {"action": "fixed"}, "engineer"),
                       ("verify", {"result": "pass"}, "quality")],
            "cancelled": [("cancel", {"reason": "false positive"}, "quality")],
        }
        nc = self.api.nc(nc_id)
        for action, body, role in steps[state]:
            nc = self.ok(nc_id, action, body, role)
        assert nc["state"] == state
        return nc_id

    def look(self, nc_id: str) -> Seen:
        """Read the NC and its history now (and remember them)."""
        self.seen[nc_id] = self.api.nc(nc_id), self.history(nc_id)
        return self.seen[nc_id]

    def last_seen(self, nc_id: str) -> Seen:
        return self.seen.get(nc_id) or self.look(nc_id)

    def spare(self, state: str) -> str:
        """An NC in `state` for cases that must change nothing: shared by such cases (each
        reads it after acting), and replaced when one of them did change it after all."""
        nc_id = self.spares.get(state)
        if nc_id is None or self.last_seen(nc_id)[0]["state"] != state:
            nc_id = self.spares[state] = self.make(state)
        return nc_id


@pytest.fixture(scope="module")
def module_db(module_database_url: str) -> Iterator[Database]:
    database = Database(module_database_url)
    yield database
    database.close()


@pytest.fixture(scope="module")
def wf(module_db: Database) -> Iterator[Workflow]:
    with TestClient(create_app(module_db)) as client:
        yield Workflow(Api(client, module_db), module_db, itertools.count(1))


def old_new(change: Any) -> tuple[Any, Any]:
    """A history change as (old, new), whether written [old, new] or {old:, new:}."""
    if isinstance(change, dict):
        return change["old"], change["new"]
    old, new = change
    return old, new


def named_actions(detail: str) -> set[str]:
    """The action names a 409's detail gives as allowed."""
    _, found, tail = detail.partition("allowed")
    assert found, f"409 detail does not name the allowed actions: {detail!r}"
    return set(re.findall(r"[a-z_]+", tail)) & set(SPEC_MOVES)


def assert_refused(wf: Workflow, nc_id: str, before: Seen, response: httpx.Response,
                   status: int) -> None:
    """The answer is `status`, and the NC and its history are as they were before."""
    after = wf.look(nc_id)  # first, so that a spare NC is replaced if it did change
    assert response.status_code == status, response.text
    assert after[0] == before[0]
    assert after[1] == before[1]


# --- every (state, action, role) ------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("state", STATES)
def test_every_state_action_and_role(wf: Workflow, state: str, variant: str,
                                     role: str) -> None:
    action = variant.partition("-")[0]
    body = BODIES[variant]
    target = spec_target(state, variant)
    refused = action not in SPEC_RIGHTS[role] or target is None
    nc_id = wf.spare(state) if refused else wf.make(state)
    seen = wf.last_seen(nc_id)
    before, history = seen

    response = wf.act(nc_id, action, body, role)

    if action not in SPEC_RIGHTS[role]:
        assert_refused(wf, nc_id, seen, response, 403)
        return
    if target is None:
        assert_refused(wf, nc_id, seen, response, 409)
        assert named_actions(response.json()["detail"]) == spec_allowed(state)
        return

    assert response.status_code == 200, response.text
    after = wf.api.nc(nc_id)
    assert response.json() == after
    assert after["state"] == target
    *earlier, entry = wf.history(nc_id)
    assert earlier == history
    assert (entry["action"], entry["actor"], entry["role"]) == (action, f"{role}-token", role)
    assert (entry["from_state"], entry["to_state"]) == (state, target)
    assert entry["note"] == body.get("note", body.get("reason"))
    assert parse(entry["at"]) >= parse(before["detected_at"])
    # the entry's changes are exactly the fields that changed, old and new
    changed = {key for key in after if key != "overdue" and after[key] != before[key]}
    assert set(entry["changes"]) == changed
    for key in changed:
        assert old_new(entry["changes"][key]) == (before[key], after[key])
    _assert_effects(variant, body, before, after, role)


def _assert_effects(variant: str, body: dict[str, Any], before: dict[str, Any],
                    after: dict[str, Any], role: str) -> None:
    """What each action does to the NC beyond its state."""
    if variant == "rectify":
        rectification = after["rectification"]
        assert (rectification["action"], rectification["root_cause"]) == (
            body["action"], body["root_cause"])
    elif variant == "verify-pass":
        assert after["verification"]["result"] == "pass"
        assert after["closed_at"] is not None
        assert after["reopen_count"] == before["reopen_count"]
    elif variant == "verify-fail":
        assert after["verification"]["result"] == "fail"
        assert after["closed_at"] is None
        assert after["reopen_count"] == before["reopen_count"] + 1
    elif variant == "reopen":
        assert after["closed_at"] is None
        assert after["reopen_count"] == before["reopen_count"] + 1
    elif variant == "assign":
        assert (after["assignee"], after["department"]) == ("ann", "facilities")
        assert parse(after["due_at"]) == parse(DUE)
    if variant != "assign":
        assert after["assignee"] == before["assignee"]


# --- required fields: 422, nothing changed ---------------------------------------------

MISSING = [(action, state, field) for action, fields in SPEC_REQUIRED.items()
           for field in sorted(fields) for state in SPEC_MOVES[action]]


@pytest.mark.parametrize("role", ["admin", "quality"])
@pytest.mark.parametrize(("action", "state", "field"), MISSING)
def test_a_missing_required_field_is_422(wf: Workflow, action: str, state: str, field: str,
                                         role: str) -> None:
    nc_id = wf.spare(state)
    seen = wf.last_seen(nc_id)
    variant = "verify-pass" if action == "verify" else action
    body = {key: value for key, value in BODIES[variant].items() if key != field}
    response = wf.act(nc_id, action, body, role)
    assert_refused(wf, nc_id, seen, response, 422)
    assert field in str(response.json()["detail"])


@pytest.mark.parametrize("action", [a for a, fields in SPEC_REQUIRED.items() if fields])
def test_an_action_without_a_body_is_422_when_it_needs_a_field(wf: Workflow,
                                                               action: str) -> None:
    nc_id = wf.spare(next(iter(SPEC_MOVES[action])))
    seen = wf.last_seen(nc_id)
    assert_refused(wf, nc_id, seen, wf.act(nc_id, action, None, "admin"), 422)


@pytest.mark.parametrize("action", ["acknowledge", "start"])
def test_actions_with_only_optional_fields_need_no_body(wf: Workflow, action: str) -> None:
    nc_id = wf.make(next(iter(SPEC_MOVES[action])))
    assert wf.act(nc_id, action, None, "engineer").status_code == 200


@pytest.mark.parametrize(("action", "body"), [
    ("rectify", {"action": ""}),
    ("rectify", {"action": "fixed", "colour": "red"}),
    ("verify", {"result": "maybe"}),
    ("cancel", {"reason": ""}),
    ("assign", {"assignee": ""}),
    ("assign", {"assignee": "ann", "due_at": "tomorrow"}),
    ("assign", {"assignee": "ann", "due_at": "2026-11-26T08:00:00"}),  # no time zone
])
def test_an_invalid_body_is_422_and_changes_nothing(wf: Workflow, action: str,
                                                    body: dict[str, Any]) -> None:
    nc_id = wf.spare(next(iter(SPEC_MOVES[action])))
    seen = wf.last_seen(nc_id)
    assert_refused(wf, nc_id, seen, wf.act(nc_id, action, body, "admin"), 422)


def test_a_recurring_nc_needs_a_root_cause(wf: Workflow) -> None:
    asset = f"WF-{next(wf.assets)}"
    start = NOW - 10 * HOUR
    wf.api.apply(engine_event(asset=asset, start=start, on_recovery="close"),
                 cleared(asset=asset, start=start, at=start + HOUR, on_recovery="close"),
                 engine_event(asset=asset, start=NOW - HOUR))
    [nc, _closed] = wf.api.items(asset_id=asset)
    assert nc["recurring"] is True
    seen = wf.look(nc["id"])

    refused = wf.act(nc["id"], "rectify", {"action": "reset the breaker"})
    assert_refused(wf, nc["id"], seen, refused, 422)
    assert "root_cause" in refused.json()["detail"]

    done = wf.ok(nc["id"], "rectify", {"action": "reset the breaker",
                                       "root_cause": "undersized breaker"})
    assert done["state"] == "pending_verification"
    assert done["rectification"]["root_cause"] == "undersized breaker"


def test_a_first_nc_needs_no_root_cause(wf: Workflow) -> None:
    nc_id = wf.raise_nc()
    done = wf.ok(nc_id, "rectify", {"action": "reset the breaker"})
    assert (done["state"], done["rectification"]["root_cause"]) == (
        "pending_verification", None)


# --- tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, bearer("pat_not-a-real-token"), {"Authorization": "Basic dXNlcjpwYXNz"},
], ids=["missing", "unknown", "not-bearer"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_an_action_without_a_valid_token_is_401(wf: Workflow, variant: str,
                                                headers: dict[str, str]) -> None:
    action = variant.partition("-")[0]
    nc_id = wf.spare(next(iter(SPEC_MOVES[action])))
    seen = wf.last_seen(nc_id)
    response = wf.api.client.post(f"/api/v1/nonconformances/{nc_id}/{action}",
                                  json=BODIES[variant], headers=headers)
    assert_refused(wf, nc_id, seen, response, 401)


def test_an_action_on_an_unknown_nc_is_404(wf: Workflow) -> None:
    assert wf.act("NC-999999", "acknowledge", {}).status_code == 404


# --- independent verification ----------------------------------------------------------


@pytest.mark.parametrize("role", ["quality", "admin"])
def test_the_rectifier_cannot_verify(wf: Workflow, role: str) -> None:
    nc_id = wf.raise_nc()
    wf.ok(nc_id, "rectify", {"action": "fixed"}, role)
    seen = wf.look(nc_id)
    for result in ("pass", "fail"):
        assert_refused(wf, nc_id, seen, wf.act(nc_id, "verify", {"result": result}, role), 403)

    # the same role with another token is independent
    other = bearer(new_token(wf.db, role, name=f"second-{role}"))
    response = wf.act(nc_id, "verify", {"result": "pass"}, headers=other)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "closed"
    assert wf.history(nc_id)[-1]["actor"] == f"second-{role}"


def test_the_site_may_allow_self_verification(wf: Workflow) -> None:
    nc_id = wf.raise_nc()
    wf.ok(nc_id, "rectify", {"action": "fixed"}, "quality")
    with TestClient(create_app(wf.db, allow_self_verify=True)) as client:
        response = client.post(f"/api/v1/nonconformances/{nc_id}/verify",
                               json={"result": "pass"}, headers=wf.api.headers("quality"))
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "closed"


def test_a_verifier_who_rectified_an_earlier_round_may_verify_a_later_one(
        wf: Workflow) -> None:
    """Independence is about the rectification being verified, not the NC's past."""
    nc_id = wf.raise_nc()
    wf.ok(nc_id, "rectify", {"action": "first try"}, "quality")
    wf.ok(nc_id, "verify", {"result": "fail"}, "admin")
    wf.ok(nc_id, "rectify", {"action": "second try"}, "engineer")
    assert wf.ok(nc_id, "verify", {"result": "pass"}, "quality")["state"] == "closed"


# --- the whole loop, as one story ------------------------------------------------------


def test_the_closed_loop_is_kept_in_order(wf: Workflow) -> None:
    nc_id = wf.raise_nc()
    story = [
        ("assign", {"assignee": "bob"}, "quality", "open"),
        ("acknowledge", {}, "engineer", "acknowledged"),
        ("start", {}, "engineer", "rectifying"),
        ("rectify", {"action": "cleaned the strainer"}, "engineer", "pending_verification"),
        ("verify", {"result": "fail", "note": "still 9 degC"}, "quality", "open"),
        ("rectify", {"action": "replaced the valve"}, "engineer", "pending_verification"),
        ("verify", {"result": "pass"}, "quality", "closed"),
        ("reopen", {"reason": "complaint from tenant"}, "quality", "open"),
        ("cancel", {"reason": "tenant's thermostat"}, "quality", "cancelled"),
    ]
    state = "open"
    for action, body, role, target in story:
        assert wf.ok(nc_id, action, body, role)["state"] == target
        entry = wf.history(nc_id)[-1]
        assert (entry["action"], entry["from_state"], entry["to_state"]) == (
            action, state, target)
        state = target
    history = wf.history(nc_id)
    assert [entry["action"] for entry in history] == ["raised"] + [s[0] for s in story]
    assert [entry["role"] for entry in history] == ["agent"] + [s[2] for s in story]
    nc = wf.api.nc(nc_id)
    assert (nc["state"], nc["reopen_count"], nc["assignee"]) == ("cancelled", 2, "bob")
    assert history == sorted(history, key=lambda entry: parse(entry["at"]))
