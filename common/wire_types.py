"""The value types of JSON bodies, kept within what a database can store and pydantic
serialize: text without NUL, aware times within reason, free JSON of bounded depth.

The event contract (rules/events.py) and the API's own bodies (api/schemas.py) share
them, so a value the API would fail on at INSERT or at every later answer is refused
where it arrives, as a 422 naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator

MAX_INT = 2**31 - 1
"""Counters and versions fit a 32-bit INTEGER column on every database."""
MAX_SECONDS = 10 * 366 * 86400.0
"""Durations past ten years are mistakes, and would overflow date arithmetic."""
MAX_DEPTH = 32
"""Nesting levels of JSON in a body (evidence, asset data): engines send three or four;
pydantic refuses to serialize a few hundred, which would fail every later answer."""


def _plausible(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a time needs a time zone, e.g. 2026-11-25T08:00:00Z")
    if not 1970 <= moment.year <= 2200:
        raise ValueError("a time must lie between the years 1970 and 2200")
    return moment


Moment = Annotated[datetime, AfterValidator(_plausible)]
"""An aware time within reason: event times feed date arithmetic and the database."""


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError(f"text holds a NUL character (at {text.index(chr(0))}), which a "
                         "database text column cannot store")
    return text


def _storable(value: Any, depth: int = 0) -> Any:
    """Free JSON (evidence, asset data) as a database can keep it and pydantic serialize
    it: no half surrogate pair (\\ud800, which no UTF-8 can hold; `str` fields refuse it
    themselves), no NUL (\\u0000, which PostgreSQL text cannot), at most MAX_DEPTH deep.
    Refused here as 422, not met as a 500 at INSERT or at every later answer."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"text holds a lone surrogate ({exc.object[exc.start]!r} at "
                             f"{exc.start}): not valid Unicode") from None
        _no_nul(value)
    elif isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key in value:
                _storable(key)
        for item in value.values() if isinstance(value, dict) else value:
            _storable(item, depth + 1)
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string field of a request body (pydantic itself refuses half surrogate pairs)."""
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]
"""Free JSON in a request body."""
