"""The closed loop with real peers: a Modbus value out of range raises an NC, people
acknowledge and rectify it over HTTP, and the sensor verifies (or refutes) the fix.

`patrol run` as a process, pymodbus's own server, SQLite on disk, tokens made by
`patrol token create`. Compliance snapshots every second and `verify_for: 4s` keep each
loop within seconds.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.integration.conftest import Api, ModbusServerThread, PatrolProcess, patrol
from tests.integration.test_end_to_end import SUPPLY

STANDARD_ID = "HVAC-CHW-SUPPLY"
IN_RANGE, OUT_OF_RANGE = 7.0, 9.5


def write_site(tmp: Path, modbus_port: int, api_port: int, *, for_: str) -> Path:
    (tmp / "standards").mkdir(exist_ok=True)
    (tmp / "standards" / "plant.yaml").write_text(f"""
standards:
  - id: {STANDARD_ID}
    version: 2
    title: Chilled water supply temperature 6-8 degC
    clause: O&M manual 4.2
    applies_to: {{assets: [CH-1]}}
    metric: chw_supply_temp
    check: {{min: 6, max: 8}}
    for: {for_}
    severity: major
    rectify_within: 1h
    verify_for: 4s
""")
    site = tmp / "site.yaml"
    site.write_text(f"""
site: {{id: tower-a, timezone: Asia/Shanghai}}
assets: [{{id: CH-1, type: chiller, department: engineering}}]
modbus:
  devices:
    - name: plc
      host: 127.0.0.1
      port: {modbus_port}
      interval: 250ms
      points: [{{asset: CH-1, metric: chw_supply_temp, address: 100, type: float32}}]
standards: [standards/*.yaml]
rules: {{snapshot_every: 1s, save_every: 1s}}
server: {{listen: 127.0.0.1:{api_port}, database: sqlite:///data/patrol.sqlite}}
buffer: {{path: data/buffer.sqlite}}
""")
    return site


def parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class Client(Api):
    """The integration tests' stdlib reader, plus POST for actions."""

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = httpx.post(self.base + path, json=body, headers=headers, timeout=10)
        return response.status_code, response.json()


@dataclass
class Plant:
    """One site: its Modbus server, `patrol run`, and a client per token."""

    tmp: Path
    site: Path
    modbus: ModbusServerThread
    base: str
    tokens: dict[str, str]
    process: PatrolProcess | None = None

    def start(self) -> PatrolProcess:
        self.process = PatrolProcess("run", "-c", self.site, cwd=self.tmp)
        self.process.wait_for_output("Patrol API on")
        return self.process

    def stop(self) -> None:
        assert self.process is not None
        code = self.process.stop(signal.SIGTERM)
        assert code == 0, self.process.output
        assert "Traceback" not in self.process.output, self.process.output

    def as_(self, name: str) -> Client:
        return Client(self.base, self.tokens[name])

    def nc(self, nc_id: str) -> dict[str, Any]:
        status, body = self.as_("reader").get(f"/nonconformances/{nc_id}")
        assert status == 200, body
        return body

    def wait_nc(self, nc_id: str, predicate: Callable[[dict[str, Any]], bool],
                timeout: float = 30) -> dict[str, Any]:
        return self.as_("reader").wait_for(f"/nonconformances/{nc_id}", predicate, timeout)

    def raised(self) -> dict[str, Any]:
        """Wait for the one NC of the out-of-range supply temperature."""
        body = self.as_("reader").wait_for(
            f"/nonconformances?standard_id={STANDARD_ID}&state=open",
            lambda b: len(b["items"]) == 1, timeout=30)
        return body["items"][0]

    def history(self, nc_id: str) -> list[dict[str, Any]]:
        status, body = self.as_("reader").get(f"/nonconformances/{nc_id}/history")
        assert status == 200, body
        return body["items"]

    def act(self, who: str, nc_id: str, action: str, body: dict[str, Any] | None = None
            ) -> tuple[int, Any]:
        return self.as_(who).post(f"/nonconformances/{nc_id}/{action}", body)

    def ok(self, who: str, nc_id: str, action: str, body: dict[str, Any] | None = None
           ) -> dict[str, Any]:
        status, answer = self.act(who, nc_id, action, body)
        assert status == 200, answer
        return answer


TOKENS = {"reader": "tracker", "engineer": "engineer", "qa-1": "quality", "qa-2": "quality"}


def create_tokens(site: Path, roles: dict[str, str]) -> dict[str, str]:
    """`patrol token create` for each name: the first alone (it creates the schema), the
    others at once."""

    def create(name: str) -> str:
        result = patrol("token", "create", "-c", site, "--role", roles[name], "--name", name)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    first, *others = roles
    tokens = {first: create(first)}
    with ThreadPoolExecutor(len(others) or 1) as pool:
        tokens.update(zip(others, pool.map(create, others), strict=True))
    return tokens


def make_plant(tmp_path: Path, modbus_server: ModbusServerThread, for_: str) -> Plant:
    api_port = free_port()
    site = write_site(tmp_path, modbus_server.port, api_port, for_=for_)
    tokens = create_tokens(site, TOKENS)
    modbus_server.set(SUPPLY, OUT_OF_RANGE)
    return Plant(tmp_path, site, modbus_server, f"http://127.0.0.1:{api_port}/api/v1", tokens)


@pytest.fixture
def plant(request: pytest.FixtureRequest, tmp_path: Path,
          modbus_server: ModbusServerThread) -> Iterator[Plant]:
    """A running `patrol run`; an indirect parameter changes the standard's `for` (1s)."""
    site = make_plant(tmp_path, modbus_server, getattr(request, "param", "1s"))
    site.start()
    try:
        yield site
    finally:
        site.stop()


def actions(history: list[dict[str, Any]]) -> list[str]:
    return [entry["action"] for entry in history]


def test_rectified_then_back_in_range_closes_by_sensor_after_verify_for(plant: Plant) -> None:
    nc = plant.raised()
    assert (nc["asset_id"], nc["state"], nc["condition"]) == ("CH-1", "open", "violating")
    assert nc["evidence"]["value"] == OUT_OF_RANGE and nc["verification"] is None

    acknowledged = plant.ok("engineer", nc["id"], "acknowledge", {"note": "on my way"})
    assert acknowledged["state"] == "acknowledged"
    rectified = plant.ok("engineer", nc["id"], "rectify",
                         {"action": "cleaned the strainer, reset the chiller setpoint"})
    assert rectified["state"] == "pending_verification"
    assert rectified["rectification"]["action"].startswith("cleaned the strainer")
    assert rectified["rectification"]["by"] == "engineer"
    rectified_at = time.time()
    plant.modbus.set(SUPPLY, IN_RANGE)  # the fix works: back within 6-8 seconds later

    closed = plant.wait_nc(nc["id"], lambda n: n["state"] != "pending_verification",
                           timeout=30)
    assert_closed_by_sensor(closed, since=rectified_at)
    history = plant.history(nc["id"])
    assert actions(history) == ["raised", "acknowledge", "rectify", "cleared", "verified"]
    assert [(h["from_state"], h["to_state"]) for h in history] == [
        (None, "open"), ("open", "acknowledged"), ("acknowledged", "pending_verification"),
        ("pending_verification", "pending_verification"),
        ("pending_verification", "closed")]


def assert_closed_by_sensor(nc: dict[str, Any], *, since: float) -> None:
    """Closed by the sensor: compliant readings covered verify_for, after `since`."""
    assert nc["state"] == "closed", nc
    took = parse(nc["closed_at"]) - since
    assert 4.0 <= took < 20, took
    assert nc["condition"] == "normal" and nc["cleared_at"] is not None
    verification = nc["verification"]
    assert verification["method"] == "sensor" and verification["result"] == "pass"
    assert verification["verify_for"] == 4.0
    window = verification["window"]
    start, end = parse(window["from"]), parse(window["to"])
    assert end - start >= 4.0 - 0.01  # compliant readings covered verify_for ...
    assert start >= parse(nc["cleared_at"]) - 0.01  # ... counted from the recovery
    assert start >= since - 1.0
    assert parse(nc["closed_at"]) == end
    assert verification["samples"] >= 8  # 250 ms polls over >= 4 s, with slack


def back_in_range(plant: Plant, nc_id: str) -> dict[str, Any]:
    """The fix takes: readings back within limits, the condition cleared, and a
    compliance snapshot taken after the recovery applied."""
    plant.modbus.set(SUPPLY, IN_RANGE)
    cleared = plant.wait_nc(nc_id, lambda n: n["condition"] == "normal", timeout=15)
    plant.as_("reader").wait_for(
        f"/compliance?asset_id=CH-1&standard_id={STANDARD_ID}",
        lambda b: b["items"][0]["state"] == "ok"
        and parse(b["items"][0]["updated_at"]) > parse(cleared["cleared_at"]), timeout=15)
    return cleared


def test_fixed_then_rectified_closes_by_sensor_after_verify_for(plant: Plant) -> None:
    nc = plant.raised()
    assert (nc["asset_id"], nc["state"], nc["condition"]) == ("CH-1", "open", "violating")
    assert nc["evidence"]["value"] == OUT_OF_RANGE and nc["verification"] is None

    acknowledged = plant.ok("engineer", nc["id"], "acknowledge", {"note": "on my way"})
    assert acknowledged["state"] == "acknowledged"
    back_in_range(plant, nc["id"])  # the engineer fixes it, then records the fix
    rectified = plant.ok("engineer", nc["id"], "rectify",
                         {"action": "cleaned the strainer, reset the chiller setpoint"})
    assert rectified["state"] == "pending_verification"
    assert rectified["rectification"]["by"] == "engineer"
    rectified_at = parse(rectified["rectification"]["at"])

    closed = plant.wait_nc(nc["id"], lambda n: n["state"] != "pending_verification",
                           timeout=30)
    assert_closed_by_sensor(closed, since=rectified_at)
    assert closed["reopen_count"] == 0
    history = plant.history(nc["id"])
    assert actions(history) == ["raised", "acknowledge", "cleared", "rectify", "verified"]
    assert [(h["from_state"], h["to_state"]) for h in history] == [
        (None, "open"), ("open", "acknowledged"), ("acknowledged", "acknowledged"),
        ("acknowledged", "pending_verification"), ("pending_verification", "closed")]
    assert [(h["actor"], h["role"]) for h in history] == [
        ("patrol", "system"), ("engineer", "engineer"), ("patrol", "system"),
        ("engineer", "engineer"), ("patrol", "system")]
    assert history[1]["note"] == "on my way"
    assert history[4]["changes"]["state"] == ["pending_verification", "closed"]

    status, body = plant.act("engineer", nc["id"], "rectify", {"action": "again"})
    assert status == 409 and "allowed: reopen" in body["detail"]


def test_a_fault_returning_during_verification_reopens_the_nc(plant: Plant) -> None:
    nc = plant.raised()
    back_in_range(plant, nc["id"])
    plant.ok("engineer", nc["id"], "rectify", {"action": "replaced the valve actuator"})
    wait_covered(plant, nc["id"], 0.5)  # verification under way
    plant.modbus.set(SUPPLY, OUT_OF_RANGE + 0.5)  # the fault is back within verify_for

    reopened = plant.wait_nc(nc["id"], lambda n: n["state"] != "pending_verification",
                             timeout=15)
    assert reopened["state"] == "open" and reopened["reopen_count"] == 1
    assert reopened["closed_at"] is None
    verification = reopened["verification"]
    assert verification["method"] == "sensor" and verification["result"] == "fail"
    evidence = verification["evidence"]  # the episode's readings, or the snapshot's time
    assert evidence.get("value") == OUT_OF_RANGE + 0.5 or \
        evidence["snapshot"]["seconds"]["violating"] > 0, evidence
    history = plant.history(nc["id"])
    assert actions(history)[:4] == ["raised", "cleared", "rectify", "reopened"]
    assert history[3]["from_state"] == "pending_verification"
    assert history[3]["to_state"] == "open"
    assert history[3]["changes"]["reopen_count"] == [0, 1]
    # the new episode is on the NC, not on a new one
    episode = plant.wait_nc(nc["id"], lambda n: n["occurrences"] == 2, timeout=15)
    assert episode["condition"] == "violating" and episode["state"] == "open"
    status, body = plant.as_("reader").get(f"/nonconformances?standard_id={STANDARD_ID}")
    assert status == 200 and [n["id"] for n in body["items"]] == [nc["id"]]

    # the loop goes round again: a second fix, and this time the sensor confirms it
    back_in_range(plant, nc["id"])
    again = plant.ok("engineer", nc["id"], "rectify", {"action": "replaced the chiller pump"})
    assert again["verification"] is None
    closed = plant.wait_nc(nc["id"], lambda n: n["state"] != "pending_verification",
                           timeout=30)
    assert_closed_by_sensor(closed, since=parse(again["rectification"]["at"]))
    assert closed["reopen_count"] == 1
    assert actions(plant.history(nc["id"]))[-3:] == ["cleared", "rectify", "verified"]


def stored_progress(plant: Plant, nc_id: str) -> tuple[str, dict[str, Any]]:
    """State and verification-by-sensor progress (`verify_progress`, not in the NC JSON)
    of an NC, read from the SQLite file itself; {} before a snapshot has counted."""
    pk = int(nc_id.removeprefix("NC-"))
    with contextlib.closing(sqlite3.connect(plant.tmp / "data" / "patrol.sqlite")) as conn:
        state, progress = conn.execute(
            "SELECT state, verify_progress FROM nonconformances WHERE pk = ?", (pk,)).fetchone()
    return state, json.loads(progress or "{}")


def wait_covered(plant: Plant, nc_id: str, seconds: float) -> None:
    """Wait until the stored coverage of compliant readings reaches `seconds`."""
    deadline = time.monotonic() + 20
    while stored_progress(plant, nc_id)[1].get("covered", 0) < seconds:
        assert time.monotonic() < deadline, (plant.nc(nc_id), stored_progress(plant, nc_id))
        time.sleep(0.1)


def test_verification_continues_across_a_restart(plant: Plant) -> None:
    nc = plant.raised()
    back_in_range(plant, nc["id"])
    plant.ok("engineer", nc["id"], "rectify", {"action": "recharged refrigerant"})
    wait_covered(plant, nc["id"], 0.5)
    plant.stop()  # SIGTERM in the middle of pending_verification

    state, progress = stored_progress(plant, nc["id"])
    assert state == "pending_verification", progress
    assert 0 < progress["covered"] < 4.0
    restarted_at = time.time()
    assert "rule state restored for 1 of 1" in plant.start().output

    closed = plant.wait_nc(nc["id"], lambda n: n["state"] == "closed", timeout=30)
    verification = closed["verification"]
    assert verification["method"] == "sensor" and verification["result"] == "pass"
    assert verification["window"]["from"] == progress["from"]  # the same window, continued
    assert parse(closed["closed_at"]) >= restarted_at
    assert verification["samples"] >= progress["samples"]
    assert actions(plant.history(nc["id"])) == ["raised", "cleared", "rectify", "verified"]


def test_a_quality_token_cannot_verify_its_own_rectification(plant: Plant) -> None:
    nc = plant.raised()  # the value stays out of range: only people verify here
    rectified = plant.ok("qa-1", nc["id"], "rectify", {"action": "tightened the sensor"})
    assert rectified["rectification"]["by"] == "qa-1"

    status, body = plant.act("qa-1", nc["id"], "verify", {"result": "pass"})
    assert status == 403 and "independent verification" in body["detail"]
    status, body = plant.act("engineer", nc["id"], "verify", {"result": "pass"})
    assert status == 403 and "needs quality" in body["detail"]
    assert plant.nc(nc["id"])["state"] == "pending_verification"

    verified = plant.ok("qa-2", nc["id"], "verify", {"result": "pass", "note": "inspected"})
    assert verified["state"] == "closed" and verified["closed_at"] is not None
    assert verified["verification"]["method"] == "manual"
    assert verified["verification"]["by"] == "qa-2"
    history = plant.history(nc["id"])
    assert actions(history) == ["raised", "rectify", "verify"]  # refusals left no trace
    assert [(h["actor"], h["role"]) for h in history[1:]] == [("qa-1", "quality"),
                                                                ("qa-2", "quality")]


@pytest.mark.parametrize("plant", ["3s"], indirect=True)
def test_violating_readings_within_the_on_delay_reopen_the_nc(plant: Plant) -> None:
    """Readings out of limits during verification are never compliant coverage, even
    while the standard's `for` has not yet raised them as a new episode."""
    nc = plant.raised()
    back_in_range(plant, nc["id"])
    plant.ok("engineer", nc["id"], "rectify", {"action": "adjusted the setpoint"})
    wait_covered(plant, nc["id"], 1.0)
    plant.modbus.set(SUPPLY, OUT_OF_RANGE)  # the fault is back, and stays

    after = plant.wait_nc(nc["id"], lambda n: n["state"] != "pending_verification",
                          timeout=15)
    assert after["verification"]["result"] == "fail", after["verification"]
    assert after["state"] == "open" and after["reopen_count"] == 1
