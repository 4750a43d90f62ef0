"""MQTT messages to `Reading`s, from config alone: one `PayloadMapper` per subscription.

Pure and synchronous so the collector can run it on the event loop and tests can run it
without a broker. Everything that can be prepared (topic levels in `topics`, JSON paths in
`jsonpath`) is compiled once per subscription; values and timestamps are read by `values`.

Errors (see `collector.errors`)::

    SettingError        a subscription that cannot be compiled (raised at start)
    PayloadError        one message that cannot be mapped (counted, logged, never fatal)

A message is refused whole (`PayloadError`) when it is too large, not UTF-8, not JSON, has a
bad timestamp, or when none of its metrics maps. When some metrics map and others do not
(a path missing, a value not numeric), `map` returns the readings that did map together
with a `PayloadError` per metric that did not, in `Mapped.problems`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from collector.errors import PayloadError
from collector.mqtt.config import Subscription
from collector.mqtt.jsonpath import WHOLE, JsonPath
from collector.mqtt.topics import TopicMatcher
from collector.mqtt.values import coerce_value, parse_json, parse_timestamp, payload_text
from collector.reading import GOOD, Reading

__all__ = [  # the mapping's public face, wherever each part lives
    "JsonPath",
    "Mapped",
    "PayloadError",
    "PayloadMapper",
    "TopicMatcher",
    "coerce_value",
    "compile_subscriptions",
    "parse_timestamp",
]


class Mapped(NamedTuple):
    """What one message gave: readings, and a problem per metric that did not map."""

    readings: list[Reading]
    problems: list[PayloadError]


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
            metrics = ((metric, None, WHOLE, units.get(metric, "")),)
        else:
            named = ((name.replace("{metric}", topic_metric) if topic_metric else name, path)
                     for name, path in self._metrics)
            metrics = tuple((name, _one_key(path), path, units.get(name, ""))
                            for name, path in named)
        return _Topic(asset, metrics, None, f"mqtt:{topic}")

    def map_planned(self, plan: _Topic, payload: bytes, arrival_ts: float) -> Mapped:
        """`map` for a topic already planned."""
        readings: list[Reading] = []
        problems = self.map_into(plan, payload, arrival_ts, readings)
        return Mapped(readings, list(problems))

    def map_into(self, plan: _Topic, payload: bytes, arrival_ts: float,
                 out: list[Reading]) -> Sequence[PayloadError]:
        """Append the readings of one message to `out` and return a problem per metric that
        did not map; PayloadError (nothing appended) when the message as a whole is refused.

        The collector's hot loop: no object per message beyond the JSON and the readings.
        A metric whose path is one key is read by subscripting, a finite float is taken as
        it is; anything else (and every miss) goes the checked way, which words the error.
        """
        if plan.refused is not None:
            raise PayloadError(plan.refused)
        if len(payload) > self.max_payload:
            raise PayloadError(
                f"payload of {len(payload)} bytes is larger than max_payload {self.max_payload}"
            )
        asset, source = plan.asset, plan.source
        if self._number:
            ((metric, _, _, unit),) = plan.metrics
            value = coerce_value(payload_text(payload))
            out.append(Reading(asset, metric, value, arrival_ts, GOOD, unit, source))
            return ()
        doc = parse_json(payload)
        stamp = self._timestamp
        ts = arrival_ts if stamp is None else parse_timestamp(stamp.get(doc))
        problems: list[PayloadError] | None = None
        for metric, key, path, unit in plan.metrics:
            try:
                if key is None:
                    value = path.get(doc)
                else:
                    try:
                        value = doc[key]  # type: ignore[index]
                    except (KeyError, TypeError):
                        value = path.get(doc)  # raises, naming what is missing
                # x - x is 0.0 for a finite float only (NaN and infinity give NaN)
                if type(value) is not float or value - value != 0.0:
                    value = coerce_value(value)
            except PayloadError as exc:
                if problems is None:
                    problems = []
                problems.append(PayloadError(f"{metric}: {exc.reason}"))
                continue
            out.append(Reading(asset, metric, value, ts, GOOD, unit, source))
        if problems is None:
            return ()
        if len(problems) == len(plan.metrics):
            raise PayloadError("; ".join(p.reason for p in problems))
        return problems


class _Topic(NamedTuple):
    """A topic's share of the mapping: asset, its metrics, and source."""

    asset: str
    metrics: tuple[tuple[str, str | None, JsonPath, str], ...]
    """(metric, the path's key when it is one key (`$.t`), else None; path, unit) each."""
    refused: str | None  # why every message on this topic is refused
    source: str


def _one_key(path: JsonPath) -> str | None:
    """The key of a path that is one key (`$.t`): subscripted straight on the hot loop."""
    steps = path.steps
    return steps[0] if len(steps) == 1 and type(steps[0]) is str else None


def compile_subscriptions(
    subscriptions: Sequence[Subscription], *, max_payload: int
) -> list[PayloadMapper]:
    """One mapper per subscription (the config has checked paths and repeats)."""
    return [PayloadMapper(sub, max_payload=max_payload) for sub in subscriptions]
