"""A reading's whole path: Modbus register and MQTT message -> rules -> NC in the HTTP API.

Real peers only: pymodbus's own server, the machine's Mosquitto, `patrol` as a process,
SQLite on disk, and the API over HTTP with a token made by `patrol token create`.
"""

from __future__ import annotations

import signal
import socket
import time
import uuid
from pathlib import Path

from collector.modbus.config import ModbusPoint
from tests.conftest import free_port
from tests.integration.conftest import (
    MOSQUITTO,
    Api,
    ModbusServerThread,
    PatrolProcess,
    patrol,
    publish_json,
    write_site_folder,
)

SUPPLY = ModbusPoint(asset="CH-1", metric="chw_supply_temp", address=100, type="float32")
RETURN = ModbusPoint(asset="CH-1", metric="chw_return_temp", address=102, type="float32",
                     order="CDAB")
STANDARDS = """
standards:
  - id: HVAC-CHW-SUPPLY
    version: 3
    title: Chilled water supply temperature 6-8 degC
    clause: O&M manual 4.2
    applies_to: {asset_types: [chiller]}
    metric: chw_supply_temp
    check: {min: 6, max: 8}
    for: 2s
    severity: major
    rectify_within: 24h
  - id: ENV-PLANT-ROOM-TEMP
    title: Plant room below 30 degC
    category: environment
    applies_to: {assets: [PR-1]}
    metric: air_temp
    check: {max: 30}
    severity: minor
"""


def write_site(tmp: Path, modbus_port: int, api_port: int, prefix: str) -> Path:
    return write_site_folder(tmp, standards=STANDARDS, site=f"""
site: {{id: tower-a, name: Tower A, timezone: Asia/Shanghai}}
assets:
  - {{id: CH-1, type: chiller, department: engineering}}
  - {{id: PR-1, type: room, department: facilities}}
modbus:
  devices:
    - name: ch1-plc
      host: 127.0.0.1
      port: {modbus_port}
      unit_id: 1
      interval: 500ms
      timeout: 1s
      points:
        - {{asset: CH-1, metric: chw_supply_temp, address: 100, type: float32, unit: degC}}
        - {{asset: CH-1, metric: chw_return_temp, address: 102, type: float32, order: CDAB}}
mqtt:
  url: mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}
  client_id: {prefix}-agent
  clean_session: true
  subscriptions:
    - topic: {prefix}/{{asset}}/env
      metrics: {{air_temp: $.temperature, humidity: $.humidity}}
""", api_port=api_port)


def token(site: Path, role: str) -> str:
    """A token from `patrol token create`; an agent's reaches the edge's site, tower-a."""
    scope = ["--site", "tower-a"] if role == "agent" else []
    result = patrol("token", "create", "-c", site, "--role", role, "--name", f"test-{role}",
                    *scope)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_modbus_and_mqtt_readings_raise_ncs_seen_through_the_api(
        tmp_path: Path, modbus_server: ModbusServerThread) -> None:
    prefix = f"patrol-test-{uuid.uuid4().hex[:8]}"
    api_port = free_port()
    site = write_site(tmp_path, modbus_server.port, api_port, prefix)
    modbus_server.set(SUPPLY, 9.5)  # out of 6-8 from the start
    modbus_server.set(RETURN, 12.25)
    admin, engineer = token(site, "admin"), token(site, "engineer")

    process = PatrolProcess("run", "-c", site, cwd=tmp_path)
    try:
        process.wait_for_output("Patrol API on")
        process.wait_for_output("subscribing to")
        publish_json(f"{prefix}/PR-1/env", [{"temperature": 31.5, "humidity": 40}])
        api = Api(f"http://127.0.0.1:{api_port}/api/v1", admin)
        body = api.wait_for("/nonconformances", lambda b: len(b["items"]) == 2, timeout=30)

        by_standard = {nc["standard_id"]: nc for nc in body["items"]}
        chiller = by_standard["HVAC-CHW-SUPPLY"]
        assert chiller["asset_id"] == "CH-1" and chiller["site_id"] == "tower-a"
        assert chiller["standard_version"] == 3 and chiller["clause"] == "O&M manual 4.2"
        assert chiller["state"] == "open" and chiller["condition"] == "violating"
        assert chiller["department"] == "engineering" and chiller["severity"] == "major"
        assert chiller["evidence"]["value"] == 9.5
        assert chiller["evidence"]["limit"] == {"min": 6.0, "max": 8.0}
        # the on-delay of 2 s at 500 ms polls: at least 4 violating readings led to it
        readings = chiller["evidence"]["readings"]
        assert len(readings) >= 4 and all(value == 9.5 for _, value in readings)
        assert chiller["due_at"] > chiller["detected_at"]

        room = by_standard["ENV-PLANT-ROOM-TEMP"]
        assert room["asset_id"] == "PR-1" and room["evidence"]["value"] == 31.5
        assert room["department"] == "facilities" and room["category"] == "environment"

        # filters and one NC by id
        status, only = api.get("/nonconformances?asset_id=CH-1")
        assert status == 200 and [nc["id"] for nc in only["items"]] == [chiller["id"]]
        status, one = api.get(f"/nonconformances/{chiller['id']}")
        assert status == 200 and one == chiller

        # any role reads; none without a token; agents only post events
        assert Api(api.base, engineer).get("/nonconformances")[0] == 200
        assert Api(api.base, None).get("/nonconformances")[0] == 401
        assert Api(api.base, "pat_not-a-token").get("/nonconformances")[0] == 401
        assert Api(api.base, None).get("/health")[0] == 200

        # the violation goes on: still one NC per (asset, standard), no new occurrence
        modbus_server.set(SUPPLY, 9.75)
        time.sleep(1.5)  # three more polls of a violation that never stopped
        status, again = api.get("/nonconformances?standard_id=HVAC-CHW-SUPPLY")
        assert [nc["occurrences"] for nc in again["items"]] == [1]
    finally:
        code = process.stop(signal.SIGTERM)
    assert code == 0, process.output
    assert "Traceback" not in process.output
    assert "stopped" in process.output


def test_invalid_config_starts_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site: {id: tower-a}\nassets:\n  - {id: CH-1, colour: red}\n")
    result = patrol("run", "-c", site, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "site.yaml:3: assets[0].colour: unknown key"
    assert not (tmp_path / "data").exists()


def test_api_port_taken_is_one_clear_error(tmp_path: Path, modbus_server: ModbusServerThread
                                           ) -> None:
    prefix = f"patrol-test-{uuid.uuid4().hex[:8]}"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        site = write_site(tmp_path, modbus_server.port, taken.getsockname()[1], prefix)
        result = patrol("run", "-c", site, cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_edge_agent_keeps_events_while_the_central_api_is_down(
        tmp_path: Path, modbus_server: ModbusServerThread) -> None:
    """`patrol agent` raises on its own, holds the event in its outbox, delivers it later."""
    api_port = free_port()
    central_dir, edge_dir = tmp_path / "central", tmp_path / "edge"
    central_dir.mkdir()
    edge_dir.mkdir()
    central = central_dir / "site.yaml"
    central.write_text(f"site: {{id: central}}\nserver: {{listen: 127.0.0.1:{api_port}, "
                       "database: sqlite:///central.sqlite}\n")
    edge = write_site(edge_dir, modbus_server.port, free_port(), "unused")
    edge.write_text(edge.read_text().replace("mqtt:", "unused_mqtt:").split("unused_mqtt:")[0]
                    + "standards: [standards/*.yaml]\nbuffer: {path: data/buffer.sqlite}\n"
                    f"forward: {{url: 'http://127.0.0.1:{api_port}', "
                    "token_env: PATROL_AGENT_TOKEN}\n")
    modbus_server.set(SUPPLY, 5.0)  # below 6: violating
    agent_token, reader = token(central, "agent"), token(central, "quality")

    agent = PatrolProcess("agent", "-c", edge, cwd=edge_dir,
                          env={"PATROL_AGENT_TOKEN": agent_token})
    api = None
    try:
        agent.wait_for_output("violation_started: CH-1 HVAC-CHW-SUPPLY", timeout=30)
        agent.wait_for_output("cannot deliver NC events yet", timeout=30)
        api = PatrolProcess("api", "-c", central, cwd=central_dir)
        api.wait_for_output("Patrol API on")
        client = Api(f"http://127.0.0.1:{api_port}/api/v1", reader)
        body = client.wait_for("/nonconformances", lambda b: len(b["items"]) == 1, timeout=60)
        nc = body["items"][0]
        assert (nc["site_id"], nc["asset_id"], nc["standard_id"]) == (
            "tower-a", "CH-1", "HVAC-CHW-SUPPLY")
        assert nc["evidence"]["value"] == 5.0 and nc["occurrences"] == 1
    finally:
        assert agent.stop() == 0, agent.output
        if api is not None:
            assert api.stop() == 0, api.output
    assert "buffer holds" in agent.output and "0 undelivered events" in agent.output
