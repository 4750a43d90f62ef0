"""Property-based tests of the whole REST API from its own OpenAPI schema (schemathesis).

Every operation the app publishes gets generated requests, valid and invalid, each with
a token drawn from one of every role and two scoped to site tower-a (an admin and an
agent); no answer may be a server error, every answer must match the schema the app
publishes, and no successful answer to a scoped token shows another site. The app runs in
process over ASGI on a database seeded with NCs in several states at tower-a and one at
tower-b, and generated NC ids are mostly mapped onto those, so the action routes act on
real NCs as well as answer 404s.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from api.app import create_app
from api.auth import ROLES, create_token
from api.store import Database
from tests.conftest import postgres_schema
from tests.test_api import HOUR, NOW, Api, bearer, cleared, engine_event

SEEDED = ["NC-000001", "NC-000002", "NC-000003", "NC-000004", "NC-000005", "NC-000006"]
SCOPED = {"scoped-admin": "admin", "scoped-agent": "agent"}
"""Tokens that reach only tower-a."""
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.content_type_conformance,
]
METHODS = ("get", "put", "post", "delete", "patch")


def _published_schema() -> dict[str, Any]:
    """The OpenAPI document the app serves (it does not depend on the data)."""
    database = Database("sqlite://")
    try:
        with TestClient(create_app(database)) as client:
            return client.get("/openapi.json").raise_for_status().json()
    finally:
        database.close()


# Loaded at import so that every operation is a test of its own. (schemathesis's pytest
# loaders do not fit here: `from_fixture` sets `request.node._nodeid`, which pytest 9
# nodes no longer have, and `schema.parametrize()` gives every operation the same node id.)
RAW = _published_schema()
SCHEMA = schemathesis.openapi.from_dict(RAW)
OPERATIONS = [(method.upper(), path) for path, item in RAW["paths"].items()
              for method in METHODS if method in item]


class Patrol:
    """The app under test, its tokens by name, and a handle on its database."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.app: FastAPI = create_app(self.db, site_id="tower-a")
        with self.db.session() as session:
            self.tokens = {name: create_token(session, name=f"fuzz-{name}", role=role,
                                              sites=["tower-a"] if name in SCOPED else None)
                           for name, role in [*((r, r) for r in ROLES), *SCOPED.items()]}
        self.token = self.tokens["admin"]
        with TestClient(self.app) as client:
            _seed(Api(client, self.db))


def _seed(api: Api) -> None:
    """NC-1 open, NC-2 acknowledged, NC-3 pending verification, NC-4 closed, NC-5 manual,
    all at tower-a; NC-6 open at tower-b."""
    api.apply(*(engine_event(asset=f"CH-{n}", start=NOW - n * HOUR) for n in (1, 2, 3, 4)),
              cleared(asset="CH-4", start=NOW - 4 * HOUR, at=NOW - 3 * HOUR,
                      on_recovery="close"))
    steps = [("NC-000002", "acknowledge", {}, "engineer"),
             ("NC-000003", "rectify", {"action": "fixed"}, "engineer")]
    for nc_id, action, body, role in steps:
        response = api.client.post(f"/api/v1/nonconformances/{nc_id}/{action}", json=body,
                                   headers=api.headers(role))
        assert response.status_code == 200, response.text
    manual = api.client.post("/api/v1/nonconformances", headers=api.headers("quality"),
                             json={"asset_id": "CH-9", "title": "Leak", "severity": "minor"})
    assert manual.status_code == 201, manual.text
    other = {**engine_event(asset="CH-1", start=NOW - HOUR), "site_id": "tower-b",
             "id": "ev-tower-b-1"}
    api.apply(other)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def patrol(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Patrol]:
    """On both databases: PostgreSQL refuses what SQLite stores (a NUL in text, say)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'patrol.sqlite'}"
        else:
            url = stack.enter_context(postgres_schema("fuzz"))
        under_test = Patrol(url)
        yield under_test
        under_test.db.close()


def _aim(case: Any) -> None:
    """Point most generated NC ids at seeded NCs, and keep long polls short."""
    params = case.path_parameters or {}
    nc_id = params.get("nc_id")
    if isinstance(nc_id, str):
        choice = len(nc_id) % (len(SEEDED) + 1)
        if choice < len(SEEDED):
            params["nc_id"] = SEEDED[choice]
    if case.query and "wait" in case.query:
        del case.query["wait"]  # a long poll waits up to 60 s for nothing


@pytest.mark.parametrize(("method", "path"), OPERATIONS,
                         ids=[f"{method} {path}" for method, path in OPERATIONS])
def test_every_operation_answers_by_its_schema(patrol: Patrol, method: str,
                                               path: str) -> None:
    operation = SCHEMA[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    # the scoped tokens drawn about half the time: each operation meets them often
    @given(case=cases, who=st.one_of(st.sampled_from(sorted(SCOPED)),
                                     st.sampled_from(sorted(patrol.tokens))))
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any, who: str) -> None:
        _aim(case)
        response = case.call_and_validate(app=patrol.app, headers=bearer(patrol.tokens[who]),
                                          checks=CHECKS)
        kind = str(response.headers.get("content-type"))
        if who in SCOPED and response.status_code < 300 and response.content and (
                "application/json" in kind or "text/csv" in kind):
            assert _sites_in(_data(response)) <= {"tower-a"}, response.text

    run()


def _data(response: Any) -> Any:
    """The answer as data: its JSON, or the rows of a CSV file (the NC register)."""
    if any(kind.startswith("text/csv") for kind in response.headers.get("content-type", [])):
        return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    return response.json()


def _sites_in(body: Any) -> set[str | None]:
    """Every `site_id` in an answer (NCs, feed events, compliance rows, webhooks, and the
    lists of a silence's matchers)."""
    if isinstance(body, list):
        return set().union(*map(_sites_in, body)) if body else set()
    if isinstance(body, dict):
        site = body.get("site_id")
        found = set(site) if isinstance(site, list) else {site} if "site_id" in body else set()
        return found.union(*map(_sites_in, body.values()))
    return set()


def test_every_operation_is_covered() -> None:
    assert len(OPERATIONS) >= 15
    assert ("POST", "/api/v1/nonconformances/{nc_id}/{action}") in OPERATIONS
    assert ("POST", "/api/v1/events") in OPERATIONS


# --- what the fuzzer found -------------------------------------------------------------


@pytest.fixture
def raw_client(patrol: Patrol) -> Iterator[TestClient]:
    with TestClient(patrol.app, raise_server_exceptions=False) as client:
        client.headers.update(bearer(patrol.token))
        yield client


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_webhook_id_beyond_the_column_is_not_a_server_error(raw_client: TestClient,
                                                             method: str) -> None:
    response = raw_client.request(method, f"/api/v1/webhooks/{2**63}")
    assert response.status_code in (404, 422), response.text
