"""MQTT: subscribes with paho-mqtt and maps each message to readings.

Laid out like `collector.modbus`, one concern per module:

- `config`: site.yaml's `mqtt:` section (`MqttConfig`, `Subscription`);
- `payload`: a message to readings (`PayloadMapper`), from `topics` (topic patterns),
  `jsonpath` (compiled JSON paths) and `values` (numbers, words, timestamps, JSON);
- `client`: `MqttCollector`, the `Collector`: one broker connection, or two when QoS 0 and
  QoS 1 subscriptions are mixed (why: its docstring);
- `connection`: one paho client with its inbox, drain and callbacks; `status` its
  counters and log; `routing` which subscriptions map a message, with their warnings;
- `acks`: QoS 1 PUBACKs held until the readings are stored; `flow`: backpressure;
- `fastpath`: `FastClient`, the only subclass of paho (and what to delete if paho grows a
  fast path); `paholog`: paho's own log lines;
- `stats`: the counters.

Importing this package loads only the config; `MqttCollector` and the other runtime names
are loaded (with paho) when first asked for, so the agent's and the API's config code does
not pull in paho.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collector.mqtt.config import MqttConfig, Subscription

if TYPE_CHECKING:
    from collector.mqtt.client import MqttCollector
    from collector.mqtt.connection import DRAIN_DELAY, DRAIN_MAX
    from collector.mqtt.routing import WARN_EVERY
    from collector.mqtt.stats import MqttStats, SubscriptionStats

_LAZY = {
    "MqttCollector": "collector.mqtt.client",
    "DRAIN_DELAY": "collector.mqtt.connection",
    "DRAIN_MAX": "collector.mqtt.connection",
    "WARN_EVERY": "collector.mqtt.routing",
    "MqttStats": "collector.mqtt.stats",
    "SubscriptionStats": "collector.mqtt.stats",
}

__all__ = ["DRAIN_DELAY", "DRAIN_MAX", "WARN_EVERY", "MqttCollector", "MqttConfig",
           "MqttStats", "Subscription", "SubscriptionStats"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
