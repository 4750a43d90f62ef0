"""Every shipped example loads: a broken example is the first thing a new user meets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.simulate import load_sim_config
from agent.site import load_site
from collector.mqtt.payload import compile_subscriptions

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_example_site_loads_with_its_secrets_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MQTT_PASSWORD", "INFLUX_TOKEN", "PATROL_AGENT_TOKEN", "DINGTALK_URL",
                 "DINGTALK_SECRET"):
        monkeypatch.setenv(name, "s3cret")
    site = load_site(EXAMPLES / "site.yaml")
    assert site.id == "tower-a"
    assert {s.id for s in site.standards} == {
        "HVAC-CHW-SUPPLY", "HVAC-CHILLER-RUNNING", "ENV-PLANT-ROOM-TEMP"}
    assert site.config.buffer.path == EXAMPLES / "data" / "buffer.sqlite"


def test_example_site_names_each_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MQTT_PASSWORD", "INFLUX_TOKEN", "PATROL_AGENT_TOKEN", "DINGTALK_URL",
                 "DINGTALK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Exception) as caught:
        load_site(EXAMPLES / "site.yaml")
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "mqtt.password_env: environment variable MQTT_PASSWORD is not set",
        "influxdb.token_env: environment variable INFLUX_TOKEN is not set",
        "forward.token_env: environment variable PATROL_AGENT_TOKEN is not set",
        "notify.channels[0].url_env: environment variable DINGTALK_URL is not set",
        "notify.channels[0].secret_env: environment variable DINGTALK_SECRET is not set",
    ]


def test_example_sim_config_loads() -> None:
    config = load_sim_config(EXAMPLES / "sim.yaml")
    assert config.modbus.port == 5020 and config.drift_after == 20.0


@pytest.mark.parametrize(("topic", "want"), [
    ("zigbee2mqtt/office-3-sensor",
     {"air_temp": (21.4, "degC"), "humidity": (48.0, "%"), "battery": (97.0, "%")}),
    ("tele/plug-7/SENSOR", {"energy_total": (123.4, "kWh"), "power": (56.0, "W")}),
])
def test_example_firmware_payloads_map_with_the_example_config(
        monkeypatch: pytest.MonkeyPatch, topic: str, want: dict[str, tuple[float, str]]) -> None:
    """The payload written beside each firmware's subscription in examples/site.yaml maps
    with that subscription as shipped: configuration only."""
    for name in ("MQTT_PASSWORD", "INFLUX_TOKEN", "PATROL_AGENT_TOKEN", "DINGTALK_URL",
                 "DINGTALK_SECRET"):
        monkeypatch.setenv(name, "s3cret")
    mqtt = load_site(EXAMPLES / "site.yaml").config.mqtt
    assert mqtt is not None
    (line,) = [line for line in (EXAMPLES / "site.yaml").read_text().splitlines()
               if f"- topic: {topic}" in line]
    payload = line.split("#", 1)[1].split(":", 1)[1].strip().encode()
    mappers = [m for m in compile_subscriptions(mqtt.subscriptions, max_payload=mqtt.max_payload)
               if m.plan(topic) is not None]
    assert len(mappers) == 1
    readings, problems = mappers[0].map(topic, payload, 1.0)
    assert problems == []
    assert {r.metric: (r.value, r.unit) for r in readings} == want
    if "Time" in payload.decode():  # Tasmota's own timestamp, read as UTC
        assert readings[0].ts == datetime(2026, 11, 25, 8, tzinfo=UTC).timestamp()
