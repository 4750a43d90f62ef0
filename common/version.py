"""Patrol's version as installed (the wheel's), for the API and the agent's heartbeat."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("facility-patrol")
except PackageNotFoundError:  # running from a source tree
    VERSION = "0+unknown"
