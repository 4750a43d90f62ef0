"""MQTT topic and payload mapping: bytes on a topic to `Reading`s, from config alone.

Pure and synchronous so the collector can run it on the event loop and tests can run it
without a broker. Everything that can be prepared (topic levels, JSON paths) is compiled
once per subscription by `PayloadMapper`.

Errors::

    ValueError          a subscription that cannot be compiled (raised at start)
    PayloadError        one message that cannot be mapped (counted, logged, never fatal)

A message is refused whole (`PayloadError`) when it is too large, not UTF-8, not JSON, has a
bad timestamp, or when none of its metrics maps. When some metrics map and others do not
(a path missing, a value not numeric), `map` returns the readings that did map together
with a `PayloadError` per metric that did not, in `Mapped.problems`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

import orjson

from collector.reading import Reading

if TYPE_CHECKING:
    from collector.mqtt_config import Subscription

__all__ = [
    "JsonPath",
    "Mapped",
    "PayloadError",
    "PayloadMapper",
    "TopicMatcher",
    "coerce_value",
    "compile_subscriptions",
    "parse_timestamp",
]


class PayloadError(ValueError):
    """One message (or one metric of it) cannot be mapped; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- topics ---------------------------------------------------------------------------


class TopicMatcher:
    """A topic pattern: literal levels, `+`, `#`, and `{asset}`/`{metric}` (one level each)."""

    __slots__ = ("_asset_at", "_levels", "_metric_at", "_multi", "pattern", "subscribe_topic")

    def __init__(self, pattern: str) -> None:
        levels = pattern.split("/")
        self.pattern = pattern
        self._multi = levels[-1] == "#"
        if self._multi:
            levels = levels[:-1]
        self._asset_at = levels.index("{asset}") if "{asset}" in levels else None
        self._metric_at = levels.index("{metric}") if "{metric}" in levels else None
        # None matches any one level; a string must be equal.
        self._levels: tuple[str | None, ...] = tuple(
            None if level in ("+", "{asset}", "{metric}") else level for level in levels
        )
        self.subscribe_topic = "/".join(
            "+" if level in ("{asset}", "{metric}") else level for level in pattern.split("/")
        )

    def match(self, topic: str) -> tuple[str | None, str | None] | None:
        """(asset, metric) taken from the topic (None where the pattern has no placeholder)."""
        parts = topic.split("/")
        n = len(self._levels)
        if self._multi:
            # `a/#` also matches `a` itself (MQTT 3.1.1, 4.7.1.2).
            if len(parts) < n:
                return None
        elif len(parts) != n:
            return None
        # Wildcards at the first level never match `$SYS/...` and other `$` topics (4.7.2).
        if topic.startswith("$") and (n == 0 or self._levels[0] is None):
            return None
        for want, got in zip(self._levels, parts, strict=False):
            if want is not None and want != got:
                return None
        asset = parts[self._asset_at] if self._asset_at is not None else None
        metric = parts[self._metric_at] if self._metric_at is not None else None
        return asset, metric


# --- JSON paths -----------------------------------------------------------------------

_NAME = re.compile(r"\.([^.\[\]]+)")
_INDEX = re.compile(r"\[(-?\d+)\]")
_QUOTED = re.compile(r"""\[(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\]""")
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A compiled `$.a.b`, `$.a[0].b`, `$['key with space']` or `$`: keys and indices."""

    text: str
    steps: tuple[str | int, ...] = field(default=())
    keys_only: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys_only", all(type(s) is str for s in self.steps))

    @classmethod
    def compile(cls, text: str) -> JsonPath:
        """Parse the path once; ValueError names what is wrong with it."""
        if not text.startswith("$"):
            raise ValueError(f"path {text!r} must start with $")
        steps: list[str | int] = []
        pos = 1
        while pos < len(text):
            if m := _NAME.match(text, pos):
                steps.append(m.group(1))
            elif m := _INDEX.match(text, pos):
                steps.append(int(m.group(1)))
            elif m := _QUOTED.match(text, pos):
                raw = m.group(1) if m.group(1) is not None else m.group(2)
                steps.append(_ESCAPE.sub(r"\1", raw))
            else:
                raise ValueError(
                    f"path {text!r}: cannot read {text[pos:]!r} "
                    "(use .key, [0] or ['key with space'])"
                )
            pos = m.end()
        return cls(text, tuple(steps))

    def get(self, doc: object) -> object:
        """The value at this path; PayloadError when a step is missing."""
        if self.keys_only:
            # The common case, subscripted straight: JSON keys are strings, so a miss is a
            # KeyError and a step into a list, string or number a TypeError.
            try:
                value = doc
                for key in self.steps:
                    value = value[key]  # type: ignore[index]
                return value
            except (KeyError, TypeError):
                pass  # the checked walk below says what is missing
        value = doc
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(value, list) or not -len(value) <= step < len(value):
                    raise PayloadError(f"{self.text}: no item [{step}]")
                value = value[step]
            else:
                if not isinstance(value, dict) or step not in value:
                    raise PayloadError(f"{self.text}: no key {step!r}")
                value = value[step]
        return value


# --- values and timestamps ------------------------------------------------------------

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
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"timestamp {value!r} is not a time")
    if isinstance(value, str) and (
        (value[4:5] == "-" and value[:4].isdigit()) or not _NUMBER.fullmatch(value.strip())
    ):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise PayloadError(f"timestamp {_short(value)!r} is not ISO 8601 or epoch") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
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


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _reject_constant(name: str) -> float:
    raise PayloadError(f"JSON contains {name} (NaN and Infinity are refused)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # built once, not per message


def _parse_json(payload: bytes) -> object:
    """orjson (a fifth of the time; it checks the UTF-8 itself), and for what it refuses
    the standard library, which decides and words the error: not UTF-8, NaN, integers
    beyond 64 bits, lone surrogates."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    try:
        return _DECODER.decode(_text(payload))
    except json.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PayloadError("not JSON we accept: nested too deeply") from None


# --- subscriptions --------------------------------------------------------------------


class Mapped(NamedTuple):
    """What one message gave: readings, and a problem per metric that did not map."""

    readings: list[Reading]
    problems: list[PayloadError]


_WHOLE = JsonPath("$")


class PayloadMapper:
    """A `Subscription` compiled once: matches topics and maps payloads to readings.

    `metrics` keys name the readings; a key may contain `{metric}`, replaced by that topic
    level (so `sensors/{asset}/{metric}` with `{"{metric}": "$.value"}` works). Without
    `metrics`, the whole payload is the value of the topic's `{metric}`, else of `metric`.
    A `number` payload is the whole payload as text; it has no timestamp (arrival time).
    Naive ISO timestamps are read as UTC: set devices (e.g. Tasmota's local `Time`) to UTC
    or to send an offset.

    The mapper is on the collector's hot path (tens of thousands of messages a second), so
    what depends only on the topic (asset, metric names, units, source) is worked out once
    per topic and kept (`TOPIC_CACHE` topics at most).
    """

    TOPIC_CACHE = 10_000

    def __init__(self, subscription: Subscription, *, max_payload: int) -> None:
        sub = subscription  # paths were checked when the config loaded
        self.subscription = sub
        self.topic = TopicMatcher(sub.topic)
        self.max_payload = max_payload
        self._metrics = tuple((name, JsonPath.compile(p)) for name, p in sub.metrics.items())
        self._timestamp = JsonPath.compile(sub.timestamp) if sub.timestamp else None
        self._units = dict(sub.units)
        self._number = sub.format == "number"
        self._topics: dict[str, _Topic | None] = {}

    @property
    def subscribe_topic(self) -> str:
        """The filter to give the broker: placeholders become `+`."""
        return self.topic.subscribe_topic

    def match(self, topic: str) -> tuple[str, str | None] | None:
        """(asset, metric from the topic or config) when the topic is ours, else None."""
        found = self.topic.match(topic)
        if found is None:
            return None
        asset, metric = found
        return asset or self.subscription.asset or "", metric or self.subscription.metric

    def map(self, topic: str, payload: bytes, arrival_ts: float) -> Mapped:
        """Readings from one message; PayloadError when the message as a whole is refused."""
        plan = self.plan(topic)
        if plan is None:
            raise PayloadError(f"topic {topic!r} does not match {self.topic.pattern!r}")
        return self.map_planned(plan, payload, arrival_ts)

    def plan(self, topic: str) -> _Topic | None:
        """What mapping a message on `topic` takes (None: not our topic), cached per topic."""
        try:
            return self._topics[topic]
        except KeyError:
            pass
        found = self.match(topic)
        plan = None if found is None else self._plan(topic, *found)
        if len(self._topics) >= self.TOPIC_CACHE:
            self._topics.clear()  # topics churn (device ids in them): start over
        self._topics[topic] = plan
        return plan

    def _plan(self, topic: str, asset: str, topic_metric: str | None) -> _Topic:
        units = self._units
        if not asset or topic_metric == "":
            return _Topic(asset, (), f"topic {topic!r} has an empty {{asset}} or {{metric}} level",
                          "")
        if not topic.isascii():
            try:  # a lone surrogate names no asset the buffer (or a TSDB) can store
                topic.encode("utf-8")
            except UnicodeEncodeError:
                return _Topic(asset, (), f"topic {topic!r} is not valid UTF-8", "")
        if self._number or not self._metrics:
            metric = topic_metric or ""
            metrics = ((metric, _WHOLE, units.get(metric, "")),)
        else:
            named = ((name.replace("{metric}", topic_metric) if topic_metric else name, path)
                     for name, path in self._metrics)
            metrics = tuple((name, path, units.get(name, "")) for name, path in named)
        return _Topic(asset, metrics, None, f"mqtt:{topic}")

    def map_planned(self, plan: _Topic, payload: bytes, arrival_ts: float) -> Mapped:
        """`map` for a topic already planned: the collector's hot loop."""
        if plan.refused is not None:
            raise PayloadError(plan.refused)
        if len(payload) > self.max_payload:
            raise PayloadError(
                f"payload of {len(payload)} bytes is larger than max_payload {self.max_payload}"
            )
        asset, source = plan.asset, plan.source
        if self._number:
            ((metric, _, unit),) = plan.metrics
            value = coerce_value(_text(payload))
            return Mapped([Reading(asset, metric, value, arrival_ts, unit=unit, source=source)],
                          [])
        doc = _parse_json(payload)
        ts = parse_timestamp(self._timestamp.get(doc)) if self._timestamp else arrival_ts
        readings: list[Reading] = []
        problems: list[PayloadError] = []
        for metric, path, unit in plan.metrics:
            try:
                value = coerce_value(path.get(doc))
            except PayloadError as exc:
                problems.append(PayloadError(f"{metric}: {exc.reason}"))
                continue
            readings.append(Reading(asset, metric, value, ts, unit=unit, source=source))
        if not readings:
            raise PayloadError("; ".join(p.reason for p in problems))
        return Mapped(readings, problems)


class _Topic(NamedTuple):
    """A topic's share of the mapping: asset, (metric, path, unit) each, and source."""

    asset: str
    metrics: tuple[tuple[str, JsonPath, str], ...]
    refused: str | None  # why every message on this topic is refused
    source: str


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8 (byte {exc.start})") from None


def compile_subscriptions(
    subscriptions: Sequence[Subscription], *, max_payload: int
) -> list[PayloadMapper]:
    """One mapper per subscription (the config has checked paths and repeats)."""
    return [PayloadMapper(sub, max_payload=max_payload) for sub in subscriptions]
