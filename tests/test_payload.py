"""Topic matching, JSON paths, value and timestamp coercion, and every bad-payload kind."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from collector.mqtt.config import MqttConfig, Subscription
from collector.mqtt.payload import (
    JsonPath,
    PayloadError,
    PayloadMapper,
    TopicMatcher,
    coerce_value,
    parse_timestamp,
)

ARRIVAL = 1_800_000_000.0


def mapper(max_payload: int = 256 * 1024, **sub: Any) -> PayloadMapper:
    return PayloadMapper(Subscription(**sub), max_payload=max_payload)


def values(mapped: Any) -> dict[str, float]:
    return {r.metric: r.value for r in mapped.readings}


# --- topics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("site/{asset}/state", "site/boiler-1/state", ("boiler-1", None)),
        ("site/{asset}/{metric}", "site/boiler-1/temp", ("boiler-1", "temp")),
        ("{metric}/x/{asset}", "temp/x/b1", ("b1", "temp")),
        ("site/+/{asset}", "site/hall/b1", ("b1", None)),
        ("site/{asset}/#", "site/b1/a/b/c", ("b1", None)),
        ("site/{asset}/#", "site/b1", ("b1", None)),  # `#` also matches the parent level
        ("site/#", "site", (None, None)),
        ("#", "anything/at/all", (None, None)),
        ("site/{asset}/state", "site/b1/other", None),
        ("site/{asset}/state", "site/b1/state/extra", None),
        ("site/{asset}/state", "site/state", None),
        ("site/{asset}", "other/b1", None),
        ("#", "$SYS/broker/uptime", None),  # wildcards never match `$` topics at level one
        ("+/{asset}", "$SYS/b1", None),
        ("$SYS/{asset}", "$SYS/b1", ("b1", None)),
    ],
)
def test_topic_match(pattern: str, topic: str, expected: tuple[str | None, ...] | None) -> None:
    assert TopicMatcher(pattern).match(topic) == expected


@pytest.mark.parametrize(
    ("pattern", "broker"),
    [
        ("site/{asset}/{metric}", "site/+/+"),
        ("site/{asset}/#", "site/+/#"),
        ("zigbee2mqtt/{asset}", "zigbee2mqtt/+"),
        ("#", "#"),
        ("a/+/b", "a/+/b"),
    ],
)
def test_subscribe_topic_replaces_placeholders(pattern: str, broker: str) -> None:
    assert TopicMatcher(pattern).subscribe_topic == broker


def test_asset_from_config_when_topic_has_none() -> None:
    m = mapper(topic="plant/boiler", asset="boiler-1", metrics={"t": "$.t"})
    assert m.match("plant/boiler") == ("boiler-1", None)
    assert m.map("plant/boiler", b'{"t": 1}', ARRIVAL).readings[0].asset == "boiler-1"


def test_topic_that_does_not_match_is_refused() -> None:
    with pytest.raises(PayloadError, match="does not match"):
        mapper(topic="a/{asset}", metrics={"t": "$.t"}).map("b/x", b'{"t": 1}', ARRIVAL)


def test_empty_asset_level_is_refused() -> None:
    with pytest.raises(PayloadError, match="empty"):
        mapper(topic="a/{asset}/s", metrics={"t": "$.t"}).map("a//s", b'{"t": 1}', ARRIVAL)


def test_a_topic_holding_a_lone_surrogate_is_refused_not_stored() -> None:
    """Its asset could not be stored: the buffer's UnicodeEncodeError ended the pipeline."""
    sub = mapper(topic="a/{asset}/s", metrics={"t": "$.t"})
    with pytest.raises(PayloadError, match="not valid UTF-8"):
        sub.map("a/\ud800/s", b'{"t": 1}', ARRIVAL)
    assert sub.map("a/\u00e9\U0001f321/s", b'{"t": 1}', ARRIVAL).readings[0].asset == \
        "\u00e9\U0001f321"


# --- JSON paths -----------------------------------------------------------------------

DOC = {
    "a": {"b": 1, "list": [{"b": 2}, {"b": 3}]},
    "key with space": 4,
    "it's": 5,
    "dotted.key": 6,
    "arr": [[7, 8]],
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("$", DOC),
        ("$.a.b", 1),
        ("$.a.list[0].b", 2),
        ("$.a.list[1].b", 3),
        ("$.a.list[-1].b", 3),
        ("$['key with space']", 4),
        ('$["key with space"]', 4),
        ("$['it\\'s']", 5),
        ("$['dotted.key']", 6),
        ("$.arr[0][1]", 8),
        ("$['a'].b", 1),
    ],
)
def test_json_path(path: str, value: object) -> None:
    assert JsonPath.compile(path).get(DOC) == value


@pytest.mark.parametrize("path", ["a.b", "$a", "$.a[x]", "$.", "$.a[0", "$['open]", "$..a"])
def test_bad_json_path_fails_at_compile(path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        JsonPath.compile(path)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("$.nope", "no key 'nope'"),
        ("$.a.list[5].b", "no item [5]"),
        ("$.a.b.c", "no key 'c'"),  # into a number
        ("$.a[0]", "no item [0]"),  # an index into an object
    ],
)
def test_missing_path(path: str, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        JsonPath.compile(path).get(DOC)


def test_bad_path_in_subscription_is_a_config_error_naming_the_metric() -> None:
    with pytest.raises(ValidationError, match=re.escape("t: path '$.t[x]': cannot read")):
        Subscription(topic="a/{asset}", metrics={"t": "$.t[x]"})


def test_repeated_subscription_topic_is_refused() -> None:
    sub = {"topic": "a/{asset}", "metrics": {"t": "$.t"}}
    with pytest.raises(ValidationError, match="appears twice"):
        MqttConfig.model_validate({"subscriptions": [sub, sub]})


# --- values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (21, 21.0),
        (21.5, 21.5),
        (-3, -3.0),
        (True, 1.0),
        (False, 0.0),
        ("ON", 1.0),
        ("off", 0.0),
        ("True", 1.0),
        ("FALSE", 0.0),
        ("open", 1.0),
        ("Closed", 0.0),
        ("21.5", 21.5),
        (" -4 ", -4.0),
        ("1e3", 1000.0),
        (".5", 0.5),
    ],
)
def test_coerce_value(raw: object, value: float) -> None:
    assert coerce_value(raw) == value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("warm", "not a number"),
        ("1_000", "not a number"),  # Python's float() would take it; JSON people would not
        ("", "not a number"),
        (None, "null"),
        ({"x": 1}, "JSON object"),
        ([1], "JSON array"),
        (float("nan"), "NaN"),
        (float("inf"), "NaN and Infinity"),
        ("NaN", "NaN"),
        ("-Infinity", "NaN and Infinity"),
        ("1e999", "NaN and Infinity"),
        (10**400, "too large"),
    ],
)
def test_coerce_value_refuses(raw: object, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        coerce_value(raw)


# --- timestamps -----------------------------------------------------------------------

T = datetime(2026, 11, 25, 8, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("raw", "ts"),
    [
        (T, T),
        (int(T), T),
        (T * 1000, T),  # milliseconds
        (int(T * 1000) + 250, T + 0.25),
        (str(int(T)), T),
        ("2026-11-25T08:00:00Z", T),
        ("2026-11-25T08:00:00.250Z", T + 0.25),
        ("2026-11-25T09:00:00+01:00", T),
        ("2026-11-25T03:00:00-05:00", T),
        ("2026-11-25T08:00:00", T),  # naive: UTC
        ("2026-11-25 08:00:00", T),
        (" 2026-11-25T08:00:00Z ", T),
        ("2026-11-25", T - 8 * 3600),
        (f"{T:.1f}", T),
        (f"{T * 1000:.0f}", T),
    ],
)
def test_parse_timestamp(raw: object, ts: float) -> None:
    assert parse_timestamp(raw) == pytest.approx(ts, abs=1e-6)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("yesterday", "not ISO 8601"),
        ("2026-13-01T00:00:00", "not ISO 8601"),
        (True, "not a time"),
        (None, "not a time"),
        ({"s": 1}, "not a time"),
        (-5, "positive"),
        (0, "positive"),
        (T * 1e6, "beyond"),  # microseconds: not a unit we guess
        ("1e999", "positive finite"),
    ],
)
def test_parse_timestamp_refuses(raw: object, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_timestamp(raw)


def test_timestamp_from_payload_else_arrival() -> None:
    m = mapper(topic="s/{asset}", metrics={"t": "$.t"}, timestamp="$.ts")
    assert m.map("s/a", b'{"t": 1, "ts": "2026-11-25T08:00:00Z"}', ARRIVAL).readings[0].ts == T
    plain = mapper(topic="s/{asset}", metrics={"t": "$.t"})
    assert plain.map("s/a", b'{"t": 1, "ts": 5}', ARRIVAL).readings[0].ts == ARRIVAL


def test_missing_or_bad_timestamp_refuses_the_message() -> None:
    m = mapper(topic="s/{asset}", metrics={"t": "$.t"}, timestamp="$.ts")
    with pytest.raises(PayloadError, match=r"\$.ts: no key 'ts'"):
        m.map("s/a", b'{"t": 1}', ARRIVAL)
    with pytest.raises(PayloadError, match="not ISO 8601"):
        m.map("s/a", b'{"t": 1, "ts": "soon"}', ARRIVAL)


# --- whole messages -------------------------------------------------------------------


def test_zigbee2mqtt_state() -> None:
    m = mapper(
        topic="zigbee2mqtt/{asset}",
        metrics={
            "temperature": "$.temperature",
            "humidity": "$.humidity",
            "battery": "$.battery",
            "linkquality": "$.linkquality",
        },
        units={"temperature": "degC", "humidity": "%", "battery": "%"},
    )
    payload = b'{"temperature":21.4,"humidity":48,"battery":97,"linkquality":120}'
    mapped = m.map("zigbee2mqtt/cold-room-1", payload, ARRIVAL)
    assert values(mapped) == {
        "temperature": 21.4, "humidity": 48.0, "battery": 97.0, "linkquality": 120.0,
    }
    assert mapped.problems == []
    first = mapped.readings[0]
    assert (first.asset, first.unit, first.ts, first.good) == ("cold-room-1", "degC", ARRIVAL, True)
    assert first.source == "mqtt:zigbee2mqtt/cold-room-1"
    assert mapped.readings[3].unit == ""


def test_tasmota_sensor() -> None:
    m = mapper(
        topic="tele/{asset}/SENSOR",
        metrics={"energy_total": "$.ENERGY.Total", "power": "$.ENERGY.Power"},
        timestamp="$.Time",
        units={"energy_total": "kWh", "power": "W"},
    )
    payload = b'{"Time":"2026-11-25T08:00:00","ENERGY":{"Total":123.4,"Power":56}}'
    mapped = m.map("tele/press-3/SENSOR", payload, ARRIVAL)
    assert values(mapped) == {"energy_total": 123.4, "power": 56.0}
    assert {r.ts for r in mapped.readings} == {T}
    assert {r.asset for r in mapped.readings} == {"press-3"}


def test_tasmota_power_state_as_number_format() -> None:
    m = mapper(topic="stat/{asset}/POWER", format="number", metric="power_on")
    (reading,) = m.map("stat/pump-2/POWER", b"ON", ARRIVAL).readings
    assert (reading.asset, reading.metric, reading.value) == ("pump-2", "power_on", 1.0)


def test_metric_from_topic_with_whole_json_payload() -> None:
    m = mapper(topic="sensors/{asset}/{metric}", units={"temp": "degC"})
    (reading,) = m.map("sensors/oven/temp", b"182.5", ARRIVAL).readings
    assert (reading.asset, reading.metric, reading.value, reading.unit) == (
        "oven", "temp", 182.5, "degC",
    )
    assert m.map("sensors/oven/temp", b'"182.5"', ARRIVAL).readings[0].value == 182.5


def test_metric_placeholder_in_metric_names() -> None:
    m = mapper(topic="sensors/{asset}/{metric}", metrics={"{metric}": "$.value"}, timestamp="$.t")
    (reading,) = m.map("sensors/oven/temp", b'{"value": 3, "t": 1764057600000}', ARRIVAL).readings
    assert (reading.metric, reading.value, reading.ts) == ("temp", 3.0, 1764057600.0)


def test_partial_message_maps_the_rest_and_reports_the_missing() -> None:
    m = mapper(topic="z/{asset}", metrics={"t": "$.t", "h": "$.h", "p": "$.p"})
    mapped = m.map("z/a", b'{"t": 20, "p": "warm"}', ARRIVAL)
    assert values(mapped) == {"t": 20.0}
    assert [p.reason for p in mapped.problems] == [
        "h: $.h: no key 'h'",
        "p: value 'warm' is not a number or ON/OFF-like word",
    ]


def test_message_where_nothing_maps_is_refused_with_every_reason() -> None:
    m = mapper(topic="z/{asset}", metrics={"t": "$.t", "h": "$.h"})
    with pytest.raises(PayloadError) as info:
        m.map("z/a", b'{"other": 1}', ARRIVAL)
    assert info.value.reason == "t: $.t: no key 't'; h: $.h: no key 'h'"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON: Expecting value at line 1 column 1"),
        (b'{"t": 1', "not JSON"),
        (b"", "not JSON"),
        (b'{"t": "\xff"}', "not UTF-8 \\(byte 7\\)"),
        (b'{"t": NaN}', "JSON contains NaN"),
        (b'{"t": -Infinity}', "JSON contains -Infinity"),
        (b'{"t": 1e999}', "NaN and Infinity are refused"),
        (b'{"t": "NaN"}', "NaN and Infinity are refused"),
        (b'{"t": null}', "value is null"),
        (b'{"t": [1, 2]}', "JSON array"),
        (b'{"t": "hot"}', "not a number"),
        (b'{"u": 1}', "no key 't'"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"x" * 1001, "1001 bytes is larger than max_payload 1000"),
    ],
)
def test_bad_payloads(payload: bytes, reason: str) -> None:
    m = mapper(max_payload=1000 if len(payload) < 2000 else 10**6,
               topic="z/{asset}", metrics={"t": "$.t"})
    with pytest.raises(PayloadError, match=reason) as info:
        m.map("z/a", payload, ARRIVAL)
    assert info.value.reason == str(info.value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"warm", "not a number"),
        (b"nan", "NaN and Infinity"),
        (b"\xfe", "not UTF-8"),
        (b"1" * 65, "larger than max_payload"),
    ],
)
def test_bad_number_payloads(payload: bytes, reason: str) -> None:
    m = mapper(max_payload=64, topic="n/{asset}/{metric}", format="number")
    with pytest.raises(PayloadError, match=reason):
        m.map("n/a/t", payload, ARRIVAL)


def test_number_format_refuses_json_paths() -> None:
    with pytest.raises(ValueError, match="number payload"):
        mapper(topic="n/{asset}/{metric}", format="number", timestamp="$.t")


# --- round trips ----------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)


@given(finite)
def test_any_finite_float_round_trips_as_bare_number(value: float) -> None:
    for fmt in ("number", "json"):
        m = mapper(topic="r/{asset}/{metric}", format=fmt)
        (reading,) = m.map("r/a/x", repr(value).encode(), ARRIVAL).readings
        assert reading.value == value
        assert math.copysign(1, reading.value) == math.copysign(1, value)


@given(finite)
def test_any_finite_float_round_trips_in_json(value: float) -> None:
    m = mapper(topic="r/{asset}", metrics={"x": "$.data[0]['the value']"})
    payload = json.dumps({"data": [{"the value": value}]}).encode()
    assert m.map("r/a", payload, ARRIVAL).readings[0].value == value


def test_the_topic_plan_is_cached_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = mapper(topic="z/{asset}", metrics={"t": "$.t"}, units={"t": "degC"})
    payload = b'{"t": 1.5}'
    plan = m.plan("z/a")
    assert plan is not None and plan.source == "mqtt:z/a" and plan.asset == "a"
    assert m.plan("z/a") is plan
    assert m.plan("y/a") is None and m.plan("y/a") is None
    assert m.map_planned(plan, payload, ARRIVAL) == m.map("z/a", payload, ARRIVAL)
    (reading,) = m.map("z/a", payload, ARRIVAL).readings
    assert (reading.asset, reading.unit, reading.value) == ("a", "degC", 1.5)
    monkeypatch.setattr(PayloadMapper, "TOPIC_CACHE", 3)
    for i in range(10):
        assert m.map(f"z/d{i}", payload, ARRIVAL).readings[0].asset == f"d{i}"
        assert len(m._topics) <= 3


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=10,
)


_MISSING = object()


def _walk(doc: object, keys: list[str]) -> object:
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            return _MISSING
        doc = doc[key]
    return doc


@given(json_values, st.lists(st.sampled_from(["a", "b", "", "0"]), max_size=3))
def test_a_key_path_finds_what_a_checked_walk_finds(doc: object, keys: list[str]) -> None:
    path = JsonPath.compile("$" + "".join(f"['{k}']" for k in keys))
    assert path.keys_only
    want = _walk(doc, keys)
    if want is _MISSING:
        with pytest.raises(PayloadError, match="no key"):
            path.get(doc)
    else:
        assert path.get(doc) == want
