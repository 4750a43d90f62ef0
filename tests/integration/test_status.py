"""`patrol status` beside running processes: an edge agent (its buffer read-only, the
rest from the central API) and `patrol run` (the rest from its own NC database)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port
from tests.integration.conftest import (
    Api,
    ModbusServerThread,
    PatrolProcess,
    write_site_folder,
)
from tests.integration.test_handoff import SUPPLY, agent_site, central_site, tokens

STANDARDS = """
standards:
  - id: HVAC-CHW-SUPPLY
    title: Chilled water supply 6-8 degC
    applies_to: {asset_types: [chiller]}
    metric: chw_supply_temp
    check: {min: 6, max: 8}
    for: 1s
"""


def plc_run_site(directory: Path, modbus_port: int, api_port: int, extra: str = "") -> Path:
    """A `patrol run` site: one chiller read from a PLC every 300 ms, judged 6-8 degC,
    SQLite under directory/data; `extra` is more site.yaml."""
    return write_site_folder(directory, standards=STANDARDS, site=f"""site: {{id: tower-a}}
assets: [{{id: CH-1, type: chiller}}]
modbus:
  devices:
    - {{name: plc, host: 127.0.0.1, port: {modbus_port}, unit_id: 1, interval: 300ms,
       points: [{{asset: CH-1, metric: chw_supply_temp, address: 100, type: float32}}]}}
{extra}""", api_port=api_port)


def status(site: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "agent.cli", "status", "-c", str(site)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def line(screen: str, prefix: str) -> str:
    found = [row for row in screen.splitlines() if row.startswith(prefix)]
    assert len(found) == 1, (prefix, screen)
    return found[0]


def test_status_of_an_edge_agent_reads_its_buffer_and_the_central_api(
        tmp_path: Path, pg_url: str) -> None:
    modbus = ModbusServerThread().start()
    modbus.set(SUPPLY, 9.5)  # violating: one open NC
    api_port = free_port()
    central = central_site(tmp_path / "central", api_port, pg_url)
    agent_token, reader = tokens(pg_url, "agent", "tracker")
    site = agent_site(tmp_path / "edge", "tower-a", modbus.port, 1, api_port, "AGENT_TOKEN")
    site.write_text(site.read_text().replace(
        "token_env: AGENT_TOKEN}", "token_env: AGENT_TOKEN, heartbeat: 1s, gateway_id: pi-7}"))
    env = {"AGENT_TOKEN": agent_token}
    api = PatrolProcess("api", "-c", central, cwd=central.parent)
    agent = None
    try:
        api.wait_for_output("Patrol API on")
        before = status(site, env)
        assert "not there yet" in line(before, "buffer")
        assert "no heartbeat from pi-7 yet" in line(before, "api")
        agent = PatrolProcess("agent", "-c", site, cwd=site.parent, env=env)
        client = Api(f"http://127.0.0.1:{api_port}/api/v1", reader)
        client.wait_for("/nonconformances", lambda b: len(b["items"]) == 1)
        client.wait_for("/gateways", lambda b: bool(b["items"]) and "modbus:plc" in
                        b["items"][0]["sources"])
        screen = status(site, env)
        assert "source  modbus plc (127.0.0.1:" in screen
        assert "last reading" in line(screen, "source  modbus plc")
        assert "readings and" in line(screen, "buffer")  # no TSDB here: readings wait
        assert "none configured" in line(screen, "tsdb")
        assert "online, last heartbeat" in line(screen, "api")
        assert line(screen, "ncs") == "ncs     1 open (1 open)"
        agent.stop()
        agent = None
        api.stop()
        down = status(site, env)
        assert "cannot be asked" in line(down, "api")
        assert "buffer  " in down  # still shown
    finally:
        if agent is not None:
            agent.stop()
        api.stop()
        modbus.stop()


def test_status_of_patrol_run_reads_its_own_database(tmp_path: Path) -> None:
    modbus = ModbusServerThread().start()
    modbus.set(SUPPLY, 9.5)
    site = plc_run_site(tmp_path, modbus.port, free_port())
    run = PatrolProcess("run", "-c", site, cwd=tmp_path)
    try:
        run.wait_for_output("patrol run started")
        deadline = time.monotonic() + 30
        while "ncs     1 open" not in (screen := status(site)) or \
                "last reading" not in line(screen, "source  modbus plc"):
            assert time.monotonic() < deadline, screen
            time.sleep(0.5)
        assert "database sqlite:///" in line(screen, "api")
        assert "online" in line(screen, "api")
    finally:
        run.stop()
        modbus.stop()
