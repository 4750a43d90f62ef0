"""Rule state across restarts and reloads, with `patrol run` as a real process."""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path

from tests.conftest import free_port
from tests.integration.conftest import Api, ModbusServerThread, PatrolProcess, patrol
from tests.integration.test_end_to_end import SUPPLY

STANDARD = """
standards:
  - id: HVAC-CHW-SUPPLY
    version: {version}
    title: Chilled water supply temperature
    applies_to: {{assets: [CH-1]}}
    metric: chw_supply_temp
    check: {{min: 6, max: {high}}}
    for: {for_}
"""


def write_site(tmp: Path, modbus_port: int, api_port: int) -> Path:
    (tmp / "standards").mkdir(exist_ok=True)
    site = tmp / "site.yaml"
    site.write_text(f"""
site: {{id: tower-a, timezone: Asia/Shanghai}}
assets: [{{id: CH-1, type: chiller}}]
modbus:
  devices:
    - name: plc
      host: 127.0.0.1
      port: {modbus_port}
      interval: 250ms
      points: [{{asset: CH-1, metric: chw_supply_temp, address: 100, type: float32}}]
standards: [standards/*.yaml]
server: {{listen: 127.0.0.1:{api_port}, database: sqlite:///data/patrol.sqlite}}
""")
    return site


def write_standard(tmp: Path, *, version: int = 1, high: float = 8, for_: str = "0s") -> None:
    (tmp / "standards" / "plant.yaml").write_text(
        STANDARD.format(version=version, high=high, for_=for_))


def admin(site: Path) -> str:
    result = patrol("token", "create", "-c", site, "--role", "admin", "--name", "t")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_an_on_delay_survives_a_restart_and_an_episode_is_raised_once(
        tmp_path: Path, modbus_server: ModbusServerThread) -> None:
    api_port = free_port()
    site = write_site(tmp_path, modbus_server.port, api_port)
    write_standard(tmp_path, for_="8s")
    token = admin(site)
    api = Api(f"http://127.0.0.1:{api_port}/api/v1", token)
    modbus_server.set(SUPPLY, 9.5)

    first = PatrolProcess("run", "-c", site, cwd=tmp_path)
    first.wait_for_output("Patrol API on")
    time.sleep(4)  # half the on-delay, then a clean stop
    assert first.stop() == 0, first.output
    restarted_at = time.time()
    second = PatrolProcess("run", "-c", site, cwd=tmp_path)
    try:
        assert "rule state restored for 1 of 1" in second.wait_for_output("Patrol API on")
        body = api.wait_for("/nonconformances", lambda b: len(b["items"]) == 1, timeout=30)
        nc = body["items"][0]
        episode_start = parse(nc["evidence"]["readings"][0][0])
        detected = parse(nc["detected_at"])
        assert episode_start < restarted_at  # the episode began before the restart
        assert detected - episode_start >= 8.0  # the on-delay was honoured ...
        assert detected < restarted_at + 7.0  # ... counted from the first start, not again
    finally:
        assert second.stop() == 0, second.output

    third = PatrolProcess("run", "-c", site, cwd=tmp_path)  # the violation goes on
    try:
        third.wait_for_output("Patrol API on")
        time.sleep(3)
        status, body = api.get("/nonconformances")
        assert status == 200 and [nc["occurrences"] for nc in body["items"]] == [1]
        assert "violation_started" not in third.output
    finally:
        assert third.stop() == 0, third.output


def test_standards_reload_on_change_and_sighup_and_a_bad_set_is_refused(
        tmp_path: Path, modbus_server: ModbusServerThread) -> None:
    api_port = free_port()
    site = write_site(tmp_path, modbus_server.port, api_port)
    write_standard(tmp_path, high=10)  # 9.5 complies
    token = admin(site)
    api = Api(f"http://127.0.0.1:{api_port}/api/v1", token)
    modbus_server.set(SUPPLY, 9.5)
    process = PatrolProcess("run", "-c", site, cwd=tmp_path)
    try:
        process.wait_for_output("Patrol API on")
        time.sleep(1)
        assert api.get("/nonconformances")[1]["items"] == []

        broken = tmp_path / "standards" / "plant.yaml"
        broken.write_text(STANDARD.format(version=2, high=9, for_="0s")
                          .replace("for: 0s", "for: soon"))
        output = process.wait_for_output("kept the previous 1 standards", timeout=15)
        assert "reload refused: standards/plant.yaml:9: standards[0].for: 'soon' is not a " \
               "duration" in output
        assert api.get("/nonconformances")[1]["items"] == []  # the old set still judges

        write_standard(tmp_path, version=2, high=9)  # now 9.5 violates
        process.wait_for_output("reloaded 1 standards", timeout=15)
        body = api.wait_for("/nonconformances", lambda b: len(b["items"]) == 1, timeout=15)
        assert body["items"][0]["standard_version"] == 2

        reloads = process.output.count("reloaded 1 standards")
        process.proc.send_signal(signal.SIGHUP)  # reload on demand, files unchanged
        deadline = time.time() + 10
        while process.output.count("reloaded 1 standards") == reloads:
            assert time.time() < deadline, process.output
            time.sleep(0.1)
    finally:
        assert process.stop() == 0, process.output
