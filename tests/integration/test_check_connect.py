"""`patrol check --connect` against real peers: pymodbus's own server, Mosquitto,
VictoriaMetrics and `patrol api`; then the same site with every peer gone, where each
line names what failed and the exit status is 1."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.servers import VictoriaMetrics
from tests.conftest import free_port
from tests.integration.conftest import Api, ModbusServerThread, PatrolProcess
from tests.integration.test_handoff import central_site, tokens


def site_yaml(directory: Path, *, modbus: int, broker: int, tsdb: int, api: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    site = directory / "site.yaml"
    site.write_text(f"""
site: {{id: tower-a}}
assets:
  - {{id: CH-1, type: chiller}}
  - {{id: RM-1, type: room}}
modbus:
  devices:
    - {{name: plc, host: 127.0.0.1, port: {modbus}, unit_id: 1, timeout: 1s, retries: 0,
       points: [{{asset: CH-1, metric: chw_supply_temp, address: 100, type: float32}}]}}
mqtt:
  url: mqtt://127.0.0.1:{broker}
  subscriptions:
    - {{topic: "sensors/{{asset}}/state", metrics: {{temp: $.t}}}}
influxdb: {{url: 'http://127.0.0.1:{tsdb}', bucket: plant, timeout: 2s}}
forward: {{url: 'http://127.0.0.1:{api}', token_env: CHECK_TOKEN, gateway_id: cabinet-3}}
buffer: {{path: data/buffer.sqlite}}
""")
    return site


def check(site: Path, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "check", "--connect", "-c",
                           str(site)], capture_output=True, text=True, timeout=60,
                          env={"CHECK_TOKEN": token, "PATH": "/usr/bin:/bin"})


def test_every_peer_answers_and_each_says_so_in_one_line(tmp_path: Path,
                                                          pg_url: str) -> None:
    api_port = free_port()
    central = central_site(tmp_path / "central", api_port, pg_url)
    agent, reader = tokens(pg_url, "agent", "tracker")
    modbus = ModbusServerThread().start()
    api = PatrolProcess("api", "-c", central, cwd=central.parent)
    try:
        with VictoriaMetrics(tmp_path / "vm") as vm:
            api.wait_for_output("Patrol API on")
            site = site_yaml(tmp_path / "edge", modbus=modbus.port, broker=1883,
                             tsdb=vm.port, api=api_port)
            done = check(site, agent)
            assert done.returncode == 0, done.stdout + done.stderr
            lines = done.stdout.splitlines()
            assert lines[0].startswith("site.yaml: ok")
            probes = lines[1:]
            assert [line.split(":")[0].split()[0] for line in probes] == [
                "modbus", "mqtt", "tsdb", "central"]
            assert all(": ok: " in line for line in probes), probes
            assert "read holding 100-101" in probes[0]
            assert "subscribed to 1 topic" in probes[1]
            assert "this clock is" in probes[3]
            deadline = time.monotonic() + 10
            while not any(name == "patrol_check_ok" for (name, _, _), _ in vm.samples()):
                assert time.monotonic() < deadline, vm.samples()
                time.sleep(0.3)
            gateways = Api(f"http://127.0.0.1:{api_port}/api/v1", reader).get("/gateways")[1]
            assert [g["gateway_id"] for g in gateways["items"]] == ["cabinet-3"]
    finally:
        api.stop()
        modbus.stop()


def test_with_every_peer_gone_each_line_names_what_failed(tmp_path: Path) -> None:
    closed = [free_port() for _ in range(4)]
    site = site_yaml(tmp_path, modbus=closed[0], broker=closed[1], tsdb=closed[2],
                     api=closed[3])
    began = time.monotonic()
    done = check(site, "not-a-token")
    assert done.returncode == 1, done.stdout + done.stderr
    probes = done.stdout.splitlines()[1:]
    assert [line.split(":")[0].split()[0] for line in probes] == [
        "modbus", "mqtt", "tsdb", "central"]
    assert all(": FAILED: " in line for line in probes), probes
    assert "cannot connect" in probes[0] and f"127.0.0.1:{closed[0]}" in probes[0]
    assert "cannot connect" in probes[1]
    assert "unreachable" in probes[2] and "unreachable" in probes[3]
    assert "Traceback" not in done.stderr
    assert time.monotonic() - began < 30


def test_json_logs_are_one_object_per_line_and_hold_no_secret(tmp_path: Path) -> None:
    """`--log-format json` for a log shipper: every line of a running agent's log parses,
    with its level and logger, and the token it sends is never in it."""
    import json
    import signal

    closed = [free_port() for _ in range(4)]
    site = site_yaml(tmp_path, modbus=closed[0], broker=closed[1], tsdb=closed[2],
                     api=closed[3])
    secret = "s3cret-agent-token-0123456789"
    agent = PatrolProcess("--log-format", "json", "agent", "-c", site, cwd=tmp_path,
                          env={"CHECK_TOKEN": secret})
    try:
        agent.wait_for_output("heartbeat not delivered")
    finally:
        assert agent.stop(signal.SIGTERM) == 0, agent.output
    records = [json.loads(line) for line in agent.output.splitlines()]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert all(r["ts"].endswith("Z") for r in records)
    assert any(r["level"] == "warning" and r["logger"] == "patrol.heartbeat"
               for r in records)
    assert any(r["msg"] == "stopped" for r in records)
    assert secret not in agent.output
