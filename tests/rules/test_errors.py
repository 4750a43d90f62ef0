"""The rules layer's errors: one root, each kind named, and no check kind judged by the
wrong checker.

Before: `make_checker` built a TransitionsChecker for any check it did not know, so a kind
added to the schema without its checker was judged as transitions without a word.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, ValidationError

import rules
from rules.checks import make_checker
from rules.engine import Engine
from rules.errors import ExprError, RulesError, ScheduleError, Undefined, UnknownCheck
from rules.expr import Expr
from rules.standard import Asset, Standard


class DriftCheck(BaseModel):
    """A check kind the schema does not hold, shaped so a TransitionsChecker would take it."""

    kind: str = "drift"
    to: float = 1.0
    max: int = 3
    per: float = 60.0


def drift_standard() -> Standard:
    """A standard with an unknown kind, built without validation (config loading refuses
    it: see the last test)."""
    valid = Standard.model_validate({"id": "DRIFT-1", "title": "drift", "metric": "a",
                                     "check": {"max": 1}})
    return valid.model_copy(update={"check": DriftCheck()})


def test_make_checker_raises_on_an_unknown_kind_naming_it_and_the_standard() -> None:
    with pytest.raises(UnknownCheck, match=r"standard DRIFT-1: .*kind 'drift'"):
        make_checker(drift_standard(), zone=ZoneInfo("UTC"), started=0.0)


def test_an_engine_over_an_unknown_kind_is_refused_with_the_kind_named() -> None:
    """Where make_checker is reached: building an engine, at start and at each reload."""
    assets = [Asset(id="CH-1")]
    with pytest.raises(UnknownCheck, match="kind 'drift'"):
        Engine("site", assets, [drift_standard()])
    ok = Engine("site", assets, [])
    with pytest.raises(UnknownCheck, match="kind 'drift'"):
        ok.reloaded(assets, [drift_standard()], now=0.0)


def test_config_loading_names_an_unknown_kind_before_any_engine_is_built() -> None:
    with pytest.raises(ValidationError, match="drift"):
        Standard.model_validate({"id": "X", "title": "x", "metric": "a",
                                 "check": {"kind": "drift"}})


def test_every_rules_error_is_a_rules_error_and_keeps_the_builtin_callers_catch() -> None:
    assert issubclass(ExprError, ValueError) and issubclass(ScheduleError, ValueError)
    assert issubclass(UnknownCheck, ValueError) and issubclass(Undefined, ArithmeticError)
    for error in (ExprError, ScheduleError, UnknownCheck, Undefined):
        assert issubclass(error, RulesError)
        assert error.__name__ in (rules.__doc__ or ""), f"{error.__name__} not in the tree"
    with pytest.raises(RulesError):
        Expr("a / b")({"a": 1.0, "b": 0.0})
