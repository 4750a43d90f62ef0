"""Inspection standards: schema, evaluation, and the events they raise."""

from rules.engine import Engine
from rules.events import Event
from rules.standard import Asset, Standard, StandardsFile

__all__ = ["Asset", "Engine", "Event", "Standard", "StandardsFile"]
