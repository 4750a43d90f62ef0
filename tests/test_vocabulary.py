"""Each word of the contract is spelled once (common/vocabulary.py): the published OpenAPI
enums, the state machine's table and the roles' rights all come from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest

from api import auth, workflow
from api.app import create_app
from api.inspections import config as inspection_config
from api.notify import config as notify
from api.notify import history, silences
from api.reports import schemas as report_schemas
from api.routes.reports import GroupBy
from api.store import Database
from common import vocabulary as words
from common.health import REASON_CODES, HealthStatus
from common.vocabulary import WindowState
from rules.events import EventType

OTHER_ENUMS = {
    ("ok",), get_args(HealthStatus), REASON_CODES,  # health
    ("pass", "fail"),  # verify's result
    ("pending", "delivered", "dead"),  # webhook deliveries
    ("compliance_snapshot",),
    get_args(EventType),
    get_args(words.OnRecovery),
    get_args(words.GatewayStatus),  # the fleet's gateways (SPEC 7.5)
    # notifications (SPEC 7.2), spelled once in api/notify/ and api/schemas.py
    notify.MATCH_KEYS,
    history.NOTIFICATION_STATUSES,
    get_args(history.NotificationEvent),
    silences.SILENCE_STATES,
    get_args(silences.SilenceFilter),
    # reports, inspections, out of service (SPEC 7.3)
    get_args(report_schemas.Status),
    get_args(GroupBy),
    ("json", "csv"), ("json", "csv", "xlsx"),  # the formats of the register and the report
    ("count", "violating_s"),  # a Pareto list's measure
    get_args(inspection_config.Result),
    get_args(inspection_config.ItemResult),
    ("pair", "manual"),  # an inspection item's kind
    get_args(WindowState),
}
"""Enums of the API that are no vocabulary of section 5 or 6."""


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('vocabulary') / 'patrol.sqlite'}")
    try:
        return create_app(db).openapi()
    finally:
        db.close()


def enums(node: Any, where: str = "") -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(where, values) of every enum in an OpenAPI document."""
    if isinstance(node, dict):
        if "enum" in node:
            yield where, tuple(node["enum"])
        for key, value in node.items():
            yield from enums(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from enums(value, f"{where}/{index}")


def enum_at(openapi: dict[str, Any], prefix: str) -> set[tuple[Any, ...]]:
    found = {values for where, values in enums(openapi) if where.startswith(prefix)}
    assert found, f"no enum under {prefix}"
    return found


def parameter(openapi: dict[str, Any], path: str, name: str) -> str:
    """Where the named parameter of GET/POST `path` sits in the document."""
    for method, operation in openapi["paths"][path].items():
        for index, param in enumerate(operation.get("parameters", [])):
            if param["name"] == name:
                return f"/paths/{path}/{method}/parameters/{index}"
    raise AssertionError(f"{path} has no parameter {name}")


def test_every_enum_of_the_api_is_a_vocabulary(openapi: dict[str, Any]) -> None:
    vocabularies = {words.COMPLIANCE_STATES, words.NC_STATES, words.ROLES,
                    get_args(words.ActorRole), words.ACTION_NAMES, words.FEED_TYPES,
                    words.SEVERITIES, words.CATEGORIES}
    strays = {(where, values) for where, values in enums(openapi)
              if values not in vocabularies | OTHER_ENUMS}
    assert strays == set()


@pytest.mark.parametrize(("where", "vocabulary"), [
    ("/components/schemas/NonconformancePublic/properties/state", words.NC_STATES),
    ("/components/schemas/NonconformancePublic/properties/severity", words.SEVERITIES),
    ("/components/schemas/HistoryPublic/properties/role", get_args(words.ActorRole)),
    ("/components/schemas/HistoryPublic/properties/to_state", words.NC_STATES),
    ("/components/schemas/CompliancePublic/properties/state", words.COMPLIANCE_STATES),
    ("/components/schemas/ComplianceItem/properties/state", words.COMPLIANCE_STATES),
    ("/components/schemas/WebhookCreate/properties/event_types", words.FEED_TYPES),
    ("/components/schemas/ManualNonconformance/properties/category", words.CATEGORIES),
])
def test_schema_fields_take_their_enum_from_the_vocabulary(
        openapi: dict[str, Any], where: str, vocabulary: tuple[str, ...]) -> None:
    assert enum_at(openapi, where) == {vocabulary}


@pytest.mark.parametrize(("path", "name", "vocabulary"), [
    ("/api/v1/nonconformances", "state", words.NC_STATES),
    ("/api/v1/nonconformances", "severity", words.SEVERITIES),
    ("/api/v1/compliance", "state", words.COMPLIANCE_STATES),
    ("/api/v1/nonconformances/{nc_id}/{action}", "action", words.ACTION_NAMES),
])
def test_parameters_take_their_enum_from_the_vocabulary(
        openapi: dict[str, Any], path: str, name: str, vocabulary: tuple[str, ...]) -> None:
    assert enum_at(openapi, parameter(openapi, path, name)) == {vocabulary}


def test_the_state_machine_speaks_the_vocabulary() -> None:
    assert tuple(workflow.ACTIONS) == words.ACTION_NAMES
    assert workflow.STATES == words.NC_STATES
    for action in workflow.ACTIONS.values():
        assert set(action.sources) <= set(words.OPEN_STATES + words.ENDED_STATES)
        assert action.to is None or action.to in words.NC_STATES
        assert set(action.roles) <= set(words.ROLES)
    for action in workflow.TRANSITIONS.values():
        assert action.feed is None or action.feed in words.FEED_TYPES, action.name
    assert {a.feed for a in workflow.TRANSITIONS.values()} - {None} == set(words.FEED_TYPES)


def test_every_role_has_its_rights() -> None:
    assert set(auth.IMPLIES) == set(words.ROLES) == set(auth.ROLES)
    assert all(implied <= set(words.ROLES) for implied in auth.IMPLIES.values())


def test_no_vocabulary_is_spelled_out_again() -> None:
    """A second spelling of a whole vocabulary (a Literal or tuple of its words) in the
    code: it is imported from common/vocabulary.py instead."""
    root = Path(__file__).parent.parent
    spelled = {
        name: ", ".join(f'"{word}"' for word in vocabulary)
        for name, vocabulary in (("compliance", words.COMPLIANCE_STATES),
                                 ("nc states", words.NC_STATES), ("roles", words.ROLES),
                                 ("actions", words.ACTION_NAMES),
                                 ("feed types", words.FEED_TYPES),
                                 ("severities", words.SEVERITIES),
                                 ("categories", words.CATEGORIES))}
    offenders = []
    for package in ("agent", "api", "collector", "common", "rules"):
        for module in sorted((root / package).rglob("*.py")):
            if module.name == "vocabulary.py" or "migrations" in module.parts:
                continue
            text = " ".join(module.read_text().split())
            offenders += [f"{module.relative_to(root)}: {name}"
                          for name, start in spelled.items() if start in text]
    assert offenders == []
