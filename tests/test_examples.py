"""Every shipped example loads: a broken example is the first thing a new user meets."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_site
from agent.simulate import load_sim_config

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_example_site_loads_with_its_secrets_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MQTT_PASSWORD", "INFLUX_TOKEN", "PATROL_AGENT_TOKEN"):
        monkeypatch.setenv(name, "s3cret")
    site = load_site(EXAMPLES / "site.yaml")
    assert site.id == "tower-a"
    assert {s.id for s in site.standards} == {
        "HVAC-CHW-SUPPLY", "HVAC-CHILLER-RUNNING", "ENV-PLANT-ROOM-TEMP"}
    assert site.config.buffer.path == EXAMPLES / "data" / "buffer.sqlite"


def test_example_site_names_each_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MQTT_PASSWORD", "INFLUX_TOKEN", "PATROL_AGENT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Exception) as caught:
        load_site(EXAMPLES / "site.yaml")
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "mqtt.password_env: environment variable MQTT_PASSWORD is not set",
        "influxdb.token_env: environment variable INFLUX_TOKEN is not set",
        "forward.token_env: environment variable PATROL_AGENT_TOKEN is not set",
    ]


def test_example_sim_config_loads() -> None:
    config = load_sim_config(EXAMPLES / "sim.yaml")
    assert config.modbus.port == 5020 and config.drift_after == 20.0
