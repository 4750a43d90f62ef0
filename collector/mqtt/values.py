"""Payload values and timestamps as numbers: what one JSON value or a whole text payload
means as a reading, and the JSON parse itself. Every refusal is a `PayloadError` whose
reason a person can act on."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime

import orjson

from collector.errors import PayloadError

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORDS = {"on": 1.0, "off": 0.0, "true": 1.0, "false": 0.0, "open": 1.0, "closed": 0.0}
_NOT_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
_MAX_TS = 253402300800.0  # 10000-01-01: beyond it a "timestamp" is a unit mistake
_MS_ABOVE = 1e11  # seconds reach 1e11 in the year 5138; milliseconds passed it in 1973


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise PayloadError(f"{what} is {value} (NaN and Infinity are refused)")
    return value


def coerce_value(value: object) -> float:
    """A JSON value as a float: numbers, booleans, ON/OFF, true/false, open/closed, "21.5"."""
    if type(value) is float:  # the common case first: a JSON number with a fraction
        if math.isfinite(value):
            return value
        raise PayloadError(f"value is {value} (NaN and Infinity are refused)")
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise PayloadError(f"value {value} is too large for a float") from None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            return _finite(float(value), "value")
        except OverflowError:
            raise PayloadError(f"value {value} is too large for a float") from None
    if isinstance(value, str):
        text = value.strip()
        word = _WORDS.get(text.lower())
        if word is not None:
            return word
        if _NUMBER.fullmatch(text):
            return _finite(float(text), "value")
        if text.lower() in _NOT_FINITE:
            raise PayloadError(f"value is {text!r} (NaN and Infinity are refused)")
        raise PayloadError(f"value {_short(text)!r} is not a number or ON/OFF-like word")
    if value is None:
        raise PayloadError("value is null")
    kind = {dict: "a JSON object", list: "a JSON array"}.get(type(value), type(value).__name__)
    raise PayloadError(f"value is {kind}, not a number")


def parse_timestamp(value: object) -> float:
    """Epoch seconds from epoch s, epoch ms (> 1e11) or ISO 8601 (naive ISO means UTC)."""
    if type(value) is str and value[4:5] == "-":  # the usual ISO text, parsed first
        try:
            return _iso_seconds(value)
        except ValueError:
            pass  # the checked way below strips it, or words the refusal
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"timestamp {value!r} is not a time")
    if isinstance(value, str) and (
        (value[4:5] == "-" and value[:4].isdigit()) or not _NUMBER.fullmatch(value.strip())
    ):
        try:
            return _iso_seconds(value.strip())
        except ValueError:
            raise PayloadError(f"timestamp {_short(value)!r} is not ISO 8601 or epoch") from None
    if isinstance(value, str | int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise PayloadError(f"timestamp {value} is out of range") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise PayloadError(f"timestamp {value!r} is not a positive finite epoch")
        if seconds > _MS_ABOVE:
            seconds /= 1000.0
        if seconds >= _MAX_TS:
            raise PayloadError(f"timestamp {value!r} is beyond the year 9999 even as ms")
        return seconds
    raise PayloadError(f"timestamp is {type(value).__name__}, not a time")


def _iso_seconds(text: str) -> float:
    """Epoch seconds of ISO 8601 text (naive means UTC); ValueError when it is not."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _reject_constant(name: str) -> float:
    raise PayloadError(f"JSON contains {name} (NaN and Infinity are refused)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # built once, not per message


def parse_json(payload: bytes) -> object:
    """orjson (a fifth of the time; it checks the UTF-8 itself), and for what it refuses
    the standard library, which decides and words the error: not UTF-8, NaN, integers
    beyond 64 bits, lone surrogates."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    try:
        return _DECODER.decode(payload_text(payload))
    except json.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PayloadError("not JSON we accept: nested too deeply") from None


def payload_text(payload: bytes) -> str:
    """The payload as text; PayloadError naming the first byte that is not UTF-8."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8 (byte {exc.start})") from None
