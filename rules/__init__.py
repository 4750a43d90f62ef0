"""Inspection standards: schema, evaluation, and the events they raise.

Errors the rules layer raises on purpose (rules/errors.py) share one root; each is also
the built-in its callers have always caught (ValueError for config, ArithmeticError for
arithmetic), so `except ValueError` at a config loader still works:

* RulesError: root; `except RulesError` catches every one below.
  + ExprError (ValueError): an `expr:` outside the whitelist or the size limits (at load).
  + ScheduleError (ValueError): an `active:` schedule that cannot be read (at load).
  + UnknownCheck (ValueError): a check kind no checker judges (building an engine).
  + Undefined (ArithmeticError): an `expr` without a finite real value for these inputs;
    the engine refuses that reading for that standard (rules.refusals), never raises it.
"""

from rules.engine import Engine
from rules.errors import ExprError, RulesError, ScheduleError, Undefined, UnknownCheck
from rules.events import Event
from rules.standard import Asset, Standard, StandardsFile

__all__ = ["Asset", "Engine", "Event", "ExprError", "RulesError", "ScheduleError", "Standard",
           "StandardsFile", "Undefined", "UnknownCheck"]
