"""Which broker connections `MqttCollector` opens, and the collector's exception root."""

from __future__ import annotations

import subprocess
import sys

import pytest

import collector
from collector.mqtt import MqttCollector
from collector.mqtt.client import QOS0_SUFFIX
from collector.mqtt.config import MqttConfig, Subscription


def plans(**config: object) -> list[tuple[str, bool, list[tuple[str, int]], bool, list[str]]]:
    collector = MqttCollector(MqttConfig(**config))  # type: ignore[arg-type]
    return [(p.client_id, p.persistent, p.filters, p.follows_pipeline, p.stale)
            for p, _ in collector._plans]


def test_one_qos_is_one_connection_under_the_configured_id() -> None:
    subs = [Subscription(topic="a/{asset}/{metric}", format="number"),
            Subscription(topic="b/{asset}/{metric}", format="number")]
    assert plans(client_id="gw", subscriptions=subs) == [
        ("gw", True, [("a/+/+", 1), ("b/+/+", 1)], True, [])]
    assert plans(client_id="gw", qos=0, subscriptions=subs) == [
        ("gw", True, [("a/+/+", 0), ("b/+/+", 0)], True, [])]


def test_mixed_qos_gets_a_qos0_connection_of_its_own() -> None:
    subs = [Subscription(topic="a/{asset}/{metric}", format="number", qos=0),
            Subscription(topic="b/{asset}/{metric}", format="number"),
            # shares a's filter and wants QoS 1: the filter goes to the QoS 1 connection
            Subscription(topic="c/{asset}/{metric}", format="number", qos=0),
            Subscription(topic="c/+/{metric}", format="number", asset="x", qos=1)]
    assert plans(client_id="gw", subscriptions=subs) == [
        ("gw", True, [("b/+/+", 1), ("c/+/+", 1)], False, ["a/+/+"]),
        ("gw" + QOS0_SUFFIX, False, [("a/+/+", 0)], True, []),
    ]


def test_a_generated_id_is_clean_on_both_connections() -> None:
    subs = [Subscription(topic="a/{asset}/{metric}", format="number", qos=0),
            Subscription(topic="b/{asset}/{metric}", format="number", qos=1)]
    (one, _, _, _, _), (zero, persistent, _, _, _) = plans(subscriptions=subs)
    assert zero == one + QOS0_SUFFIX and not persistent
    assert not MqttCollector(MqttConfig(subscriptions=subs)).persistent


def test_the_config_loads_without_paho_and_without_the_mapper() -> None:
    """No import circle between the config and the payload mapper, and config users (the
    agent's and the API's settings) do not pay for paho."""
    code = ("import sys, collector.mqtt.config\n"
            "print(sorted(m for m in sys.modules if m.startswith(('paho', "
            "'collector.mqtt.payload', 'collector.mqtt.client'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("error", [collector.SettingError, collector.PayloadError,
                                   collector.DecodeError, collector.NoValue])
def test_every_collector_error_is_under_one_root_and_still_a_value_error(
        error: type[Exception]) -> None:
    assert issubclass(error, collector.CollectorError)
    assert issubclass(error, ValueError)


def test_config_problems_are_setting_errors() -> None:
    from collector.modbus.config import ModbusPoint
    from collector.mqtt.jsonpath import JsonPath

    with pytest.raises(collector.SettingError):
        JsonPath.compile("no.dollar")
    with pytest.raises(ValueError, match="scale 0"):  # pydantic wraps it, as before
        ModbusPoint(asset="a", metric="m", address=0, scale=0)
