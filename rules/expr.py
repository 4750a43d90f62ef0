"""`expr:` in a standard: a safe arithmetic expression over one asset's latest metrics.

Parsed once at load with Python's own parser, then checked against a short whitelist
(numbers, metric names, + - * / % **, unary minus, comparisons, and/or/not, abs, min, max)
and compiled into nested closures. Nothing is ever passed to `eval`; attribute access,
subscripts, imports, lambdas and every other call are refused with the reason, and so is
an expression past the size limits below (Python's parser and the closures recurse: a
3,000-term sum would stop a reload with RecursionError instead of a config problem).

Evaluating never returns an undefined value: a result that is not a finite real number
(division by zero, overflow, a complex power such as `(a - b) ** 0.5` with a < b) raises
`Undefined`, which the engine counts as a refused reading for that standard.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from collections.abc import Callable, Mapping

from rules.errors import ExprError, Undefined

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

MAX_LENGTH = 2000
"""Characters an expression may have."""
MAX_NODES = 500
"""Numbers, names, operations and calls an expression may have."""
MAX_DEPTH = 50
"""How deeply they may nest (`a + b + c` is 3 deep: sums group from the left)."""


class Expr:
    """A compiled expression; `metrics` names what it reads (`inputs`: the same, as a set)."""

    __slots__ = ("_fn", "inputs", "metrics", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        if len(text) > MAX_LENGTH:
            raise ExprError(f"the expression has {len(text):,} characters; at most "
                            f"{MAX_LENGTH:,} are allowed")
        try:
            with warnings.catch_warnings():  # e.g. "invalid decimal literal" on stderr,
                warnings.simplefilter("ignore", SyntaxWarning)  # outside FILE:LINE
                tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            where = f" at column {exc.offset}" if exc.offset else ""
            raise ExprError(f"not an expression: {exc.msg}{where}") from None
        except (RecursionError, MemoryError, ValueError):  # the parser's own limits
            raise ExprError(f"the expression is nested too deeply (at most {MAX_DEPTH} "
                            "levels)") from None
        _check_size(tree.body)
        names: set[str] = set()
        self._fn = _compile(tree.body, names)
        if not names:
            raise ExprError("the expression reads no metric")
        self.metrics = tuple(sorted(names))
        self.inputs = frozenset(names)

    def __call__(self, values: Values) -> float:
        """The value; `Undefined` when it is not a finite real number."""
        try:
            result = self._fn(values)
            if type(result) is not float:  # a complex power, or an int restored from JSON
                if isinstance(result, complex):
                    raise Undefined(f"not a real number ({result:.6g})")
                result = float(result)
        except ZeroDivisionError:
            raise Undefined("division by zero") from None
        except OverflowError:
            raise Undefined("overflow") from None
        except (TypeError, ValueError) as exc:  # e.g. a complex compared with a number
            raise Undefined(f"not a real number ({exc})") from None
        if math.isfinite(result):
            return result
        raise Undefined(f"not finite ({result})")


def _check_size(root: ast.expr) -> None:
    """ExprError past MAX_NODES or MAX_DEPTH; iterative, so no limit of its own applies."""
    nodes, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ExprError(f"the expression has more than {MAX_NODES} numbers, names and "
                            "operations")
        if depth > MAX_DEPTH:
            raise ExprError(f"the expression is nested more than {MAX_DEPTH} levels deep "
                            "(a long sum counts one level per term)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node)
                     if isinstance(child, ast.expr))


def _compile(node: ast.AST, names: set[str]) -> _Fn:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
            and not isinstance(node.value, bool):
        try:
            constant = float(node.value)
        except OverflowError:
            raise ExprError("a number in the expression is too large") from None
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
