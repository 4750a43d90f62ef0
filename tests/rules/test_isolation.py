"""What one reading raises while judged refuses only that reading, for that standard.

Before: `(a - b) ** 0.5` with a < b made a complex, `float()` raised TypeError out of
`Engine.observe`, and the agent's pipeline task ended on it. Expressions past the size
limits now fail at load with a reason, not with RecursionError.
"""

from __future__ import annotations

import logging
import warnings

import pytest
from pydantic import ValidationError

from collector.reading import Reading
from rules.engine import Engine
from rules.expr import MAX_DEPTH, MAX_LENGTH, MAX_NODES, Expr, ExprError, Undefined
from rules.standard import Asset, Standard

T0 = 1_772_445_600.0  # 2026-03-02T10:00:00Z


def standard(id_: str, **fields: object) -> Standard:
    return Standard.model_validate({"id": id_, "title": id_, **fields})


SQRT = standard("SQRT", expr="(a - b) ** 0.5", check={"max": 1})
RATIO = standard("RATIO", expr="a / b", check={"max": 10})
PLAIN = standard("PLAIN", metric="a", check={"max": 100})


class Clock:
    """A monotonic clock the test moves (it only spaces the engine's log lines)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def engine(*standards: Standard, clock: Clock | None = None) -> Engine:
    return Engine("tower-a", [Asset(id="CH-1")], standards, started=T0,
                  monotonic=clock or Clock())


def reading(metric: str, value: float, at: float) -> Reading:
    return Reading("CH-1", metric, value, T0 + at)


def kinds(events: list) -> list[tuple[str, str]]:
    return [(e.type, e.standard_id) for e in events]


def test_a_complex_result_refuses_that_reading_for_that_standard_only() -> None:
    rules = engine(SQRT, PLAIN)
    assert rules.observe([reading("a", 1.0, 1), reading("b", 2.0, 1),  # sqrt(-1)
                          reading("a", 0.5, 2)]) == []  # sqrt(-1.5)
    assert rules.refused == {"SQRT": 2}
    started = rules.observe([reading("a", 150.0, 3)])  # sqrt(148) > 1, and 150 > 100
    assert kinds(started) == [("violation_started", "SQRT"), ("violation_started", "PLAIN")]
    sqrt = started[0]
    assert sqrt.readings == ((T0 + 3, pytest.approx(148 ** 0.5)),)  # nothing refused in it
    cleared = rules.observe([reading("a", 2.5, 4)])  # sqrt(0.5)
    assert kinds(cleared) == [("violation_cleared", "SQRT"), ("violation_cleared", "PLAIN")]
    assert rules.refused == {"SQRT": 2}
    items = {i["standard_id"]: i for i in rules.snapshot(T0 + 5).items}
    assert items["SQRT"]["readings"] == 2 and items["PLAIN"]["readings"] == 4


def test_division_by_zero_is_refused_and_counted_then_judging_goes_on() -> None:
    rules = engine(RATIO)
    assert rules.observe([reading("a", 5.0, 1), reading("b", 0.0, 1)]) == []
    assert rules.refused == {"RATIO": 1}
    assert kinds(rules.observe([reading("b", 0.25, 2)])) == [("violation_started", "RATIO")]


def test_refusals_are_logged_once_a_minute_per_standard_with_a_sample(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rules = engine(SQRT, RATIO, clock=clock)
    caplog.set_level(logging.WARNING, logger="patrol.rules")
    rules.observe([reading("a", 1.0, 1), reading("b", 0.0, 1)])  # RATIO: 1 / 0
    clock.now = 30.0
    rules.observe([reading("b", 2.0, 2), reading("b", 3.0, 3)])  # SQRT: twice sqrt(< 0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    sqrt = next(line for line in lines if line.startswith("rules: SQRT"))
    assert "asset CH-1: b=2.0" in sqrt and "not a real number" in sqrt
    assert "(a - b) ** 0.5" in sqrt and "1 refused in all" in sqrt
    assert any("RATIO" in line and "division by zero" in line for line in lines)
    caplog.clear()
    clock.now = 90.0  # a minute after the SQRT warning
    rules.observe([reading("b", 4.0, 4)])
    (line,) = [r.getMessage() for r in caplog.records]
    assert "SQRT" in line and "b=4.0" in line and "3 refused in all; 1 more since" in line
    assert rules.refused == {"SQRT": 3, "RATIO": 1}


def test_a_reading_the_engine_cannot_look_at_is_counted_and_the_rest_judged() -> None:
    rules = engine(PLAIN)
    odd = Reading("CH-1", "a", 1.0, "soon")  # type: ignore[arg-type]
    events = rules.observe([odd, reading("a", 150.0, 1)])
    assert kinds(events) == [("violation_started", "PLAIN")]
    assert rules.refused == {"*": 1}


def test_refusal_counts_survive_a_reload() -> None:
    rules = engine(SQRT)
    rules.observe([reading("a", 1.0, 1), reading("b", 2.0, 1)])
    again = rules.reloaded([Asset(id="CH-1")], [SQRT, RATIO], T0 + 2)
    again.observe([reading("b", 3.0, 2)])
    assert again.refused == {"SQRT": 2}


@pytest.mark.parametrize(("text", "values", "reason"), [
    ("(a - b) ** 0.5", {"a": 1.0, "b": 2.0}, "not a real number"),
    ("(a - b) ** 0.5 > 1", {"a": 1.0, "b": 2.0}, "not a real number"),
    ("a / b", {"a": 1.0, "b": 0.0}, "division by zero"),
    ("a % b", {"a": 1.0, "b": 0.0}, "division by zero"),
    ("b ** -1", {"b": 0.0}, "division by zero"),
    ("a ** b", {"a": 10.0, "b": 400.0}, "overflow"),
    ("a * b", {"a": 1e308, "b": 10.0}, "not finite"),
])
def test_an_expression_without_a_finite_real_value_says_why(
        text: str, values: dict[str, float], reason: str) -> None:
    with pytest.raises(Undefined, match=reason):
        Expr(text)(values)


def test_expressions_past_the_limits_are_refused_at_load_with_the_limit() -> None:
    long_sum = " + ".join(["a"] * 3000)
    with pytest.raises(ExprError, match=f"at most {MAX_LENGTH:,} are allowed"):
        Expr(long_sum)
    with pytest.raises(ValidationError, match="at most 2,000"):  # not RecursionError
        standard("LONG", expr=long_sum, check={"max": 1})
    Expr("+".join(["a"] * MAX_DEPTH))
    with pytest.raises(ExprError, match=f"more than {MAX_DEPTH} levels"):
        Expr("+".join(["a"] * (MAX_DEPTH + 1)))
    with pytest.raises(ExprError, match=f"more than {MAX_NODES} numbers"):
        Expr(f"max({','.join(['a'] * MAX_NODES)})")
    with pytest.raises(ExprError, match="too large"):
        Expr("a * " + "9" * 400)
    for deep in ("-" * 1500 + "a", "(" * 300 + "a" + ")" * 300, "**".join(["a"] * 600)):
        with pytest.raises(ExprError):
            Expr(deep)


def test_a_refused_expression_prints_no_syntax_warning_beside_its_problem() -> None:
    """`1if a else b` printed "SyntaxWarning: invalid decimal literal" on stderr, a line
    without FILE:LINE in the middle of `patrol check`'s output."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ExprError, match="IfExp is not allowed"):
            Expr("1if a else b")
    assert [str(w.message) for w in caught] == []


def test_a_window_near_the_float_limit_restores_after_a_restart() -> None:
    """Two readings of 9e307 in a sum window: restoring the saved state raised
    OverflowError (math.fsum), so the agent could not start again on its own buffer."""
    window = standard("SUM", metric="a", check={"kind": "window", "agg": "sum", "over": "1h",
                                                "max": 1e308})
    rules = engine(window)
    started = rules.observe([reading("a", 9e307, 1), reading("a", 9e307, 2)])
    assert kinds(started) == [("violation_started", "SUM")]  # the sum is inf
    again = engine(window)
    assert again.restore(rules.state()) == 1
    assert again.observe([reading("a", 1.0, 3)]) == []  # still violating, not raised again
    assert again.refused == {}
