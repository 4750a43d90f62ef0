"""`expr:` in a standard: a safe arithmetic expression over one asset's latest metrics.

Parsed once at load with Python's own parser, then checked against a short whitelist
(numbers, metric names, + - * / % **, unary minus, comparisons, and/or/not, abs, min, max)
and compiled into nested closures. Nothing is ever passed to `eval`; attribute access,
subscripts, imports, lambdas and every other call are refused with the reason.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping

Values = Mapping[str, float]
_Fn = Callable[[Values], float]

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE: dict[type, Callable[[float, float], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"abs": abs, "min": min, "max": max}


class ExprError(ValueError):
    """The expression uses something outside the whitelist, or is not an expression."""


class Expr:
    """A compiled expression; `metrics` names what it reads (`inputs`: the same, as a set)."""

    __slots__ = ("_fn", "inputs", "metrics", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExprError(f"not an expression: {exc.msg} at column {exc.offset}") from None
        names: set[str] = set()
        self._fn = _compile(tree.body, names)
        if not names:
            raise ExprError("the expression reads no metric")
        self.metrics = tuple(sorted(names))
        self.inputs = frozenset(names)

    def __call__(self, values: Values) -> float:
        """The value, or NaN when it is undefined (division by zero, overflow)."""
        try:
            result = float(self._fn(values))
        except (ZeroDivisionError, OverflowError, ValueError):
            return math.nan
        return result if math.isfinite(result) else math.nan


def _compile(node: ast.AST, names: set[str]) -> _Fn:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
            and not isinstance(node.value, bool):
        constant = float(node.value)
        return lambda _v: constant
    if isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            raise ExprError(f"{node.id} is a function: call it, e.g. {node.id}(a, b)")
        name = node.id
        names.add(name)
        return lambda v: v[name]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op, left, right = _BINARY[type(node.op)], _compile(node.left, names), \
            _compile(node.right, names)
        return lambda v: op(left(v), right(v))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
        inner = _compile(node.operand, names)
        if isinstance(node.op, ast.USub):
            return lambda v: -inner(v)
        if isinstance(node.op, ast.Not):
            return lambda v: float(not inner(v))
        return inner
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        first = _compile(node.left, names)
        pairs = [(_COMPARE[type(op)], _compile(right, names))
                 for op, right in zip(node.ops, node.comparators, strict=True)]

        def compare(v: Values) -> float:
            left = first(v)
            for op, right_fn in pairs:
                right = right_fn(v)
                if not op(left, right):
                    return 0.0
                left = right
            return 1.0

        return compare
    if isinstance(node, ast.BoolOp):
        parts = [_compile(value, names) for value in node.values]
        if isinstance(node.op, ast.And):
            return lambda v: float(all(part(v) for part in parts))
        return lambda v: float(any(part(v) for part in parts))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in _FUNCTIONS and not node.keywords:
        function = _FUNCTIONS[node.func.id]
        args = [_compile(arg, names) for arg in node.args]
        if function is abs and len(args) != 1:
            raise ExprError("abs takes one argument")
        if function is not abs and len(args) < 2:
            raise ExprError(f"{node.func.id} takes two or more arguments")
        return lambda v: function(*(arg(v) for arg in args))
    raise ExprError(f"{_describe(node)} is not allowed (only numbers, metric names, "
                    "+ - * / % **, comparisons, and/or/not, abs, min, max)")


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return "attribute access"
    if isinstance(node, ast.Call):
        return "that call"
    if isinstance(node, ast.Constant):
        return f"the constant {node.value!r}"
    return type(node).__name__
