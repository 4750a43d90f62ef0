"""The errors the rules layer raises on purpose, under one root (the tree is drawn in
rules/__init__.py). Each also subclasses the built-in its callers have always caught:
pydantic reports a ValueError raised in a validator at the key that holds it, and
arithmetic callers catch ArithmeticError.
"""

from __future__ import annotations


class RulesError(Exception):
    """Root of the rules layer's own errors: `except RulesError` catches each of them."""


class ExprError(RulesError, ValueError):
    """The expression uses something outside the whitelist, or is not an expression."""


class ScheduleError(RulesError, ValueError):
    """The schedule text cannot be read; the message shows the expected form."""


class UnknownCheck(RulesError, ValueError):
    """A standard's check is of a kind no checker judges (the message names the kind)."""


class Undefined(RulesError, ArithmeticError):
    """The expression has no finite real value for these inputs; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
