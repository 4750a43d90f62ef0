"""No reading and no standards file stops a running `patrol`: real Mosquitto, a process.

Before: an MQTT message whose values made a standard's `expr` complex ended the pipeline
task, so `patrol run` stopped (and its unacknowledged QoS 1 message came back after every
restart); a reading dated years ahead raised an NC dated years ahead; a reload onto a
standards file with a 3,000-term `expr` ended the reload task with RecursionError, and the
process with it.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

from agent.buffer import Buffer
from tests.buffer_contents import stored
from tests.conftest import free_port
from tests.integration.conftest import (
    MOSQUITTO,
    Api,
    PatrolProcess,
    patrol,
    publish_json,
    write_site_folder,
)

STANDARDS = """
standards:
  - id: SQRT
    title: square root of a - b below 1
    applies_to: {assets: [CH-1]}
    expr: (a - b) ** 0.5
    check: {max: 1}
  - id: PLAIN
    title: a below 100
    applies_to: {assets: [CH-1]}
    metric: a
    check: {max: 100}
"""
YEAR = 365 * 86400


def write_site(tmp: Path, api_port: int, prefix: str) -> Path:
    return write_site_folder(tmp, standards=STANDARDS, site=f"""
site: {{id: tower-a}}
assets: [{{id: CH-1, type: chiller}}]
mqtt:
  url: mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}
  client_id: {prefix}-agent
  qos: 1
  subscriptions:
    - topic: {prefix}/{{asset}}/data
      metrics: {{a: $.a, b: $.b}}
      timestamp: $.ts
""", api_port=api_port)


def admin_token(site: Path) -> str:
    result = patrol("token", "create", "-c", site, "--role", "admin", "--name", "t")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def readings_in(tmp: Path) -> list[tuple[str, float, float, str | None]]:
    """(metric, ts, value, bad reason) of every reading in the buffer, in order."""
    buffer = Buffer(tmp / "data" / "buffer.sqlite")
    try:
        return [(s.reading.metric, s.reading.ts, s.reading.value,
                 None if s.reading.quality.good else s.reading.quality.reason)
                for s in stored(buffer, 1000)]
    finally:
        buffer.close()


def start(tmp: Path, prefix: str) -> tuple[PatrolProcess, Api]:
    api_port = free_port()
    site = write_site(tmp, api_port, prefix)
    api = Api(f"http://127.0.0.1:{api_port}/api/v1", admin_token(site))
    process = PatrolProcess("run", "-c", site, cwd=tmp)
    process.wait_for_output("Patrol API on")
    process.wait_for_output("subscribing to")
    return process, api


def test_a_message_no_expr_can_judge_or_dated_years_ahead_stops_nothing(
        tmp_path: Path) -> None:
    prefix = f"patrol-iso-{uuid.uuid4().hex[:8]}"
    process, api = start(tmp_path, prefix)
    topic = f"{prefix}/CH-1/data"
    try:
        now = time.time()
        publish_json(topic, [{"a": 1, "b": 2, "ts": now - 3}])  # sqrt(-1): complex
        process.wait_for_output("rules: SQRT: cannot judge asset CH-1")
        publish_json(topic, [{"a": 150, "b": 1, "ts": now + 3 * YEAR}])  # a device clock ahead
        publish_json(topic, [{"a": 5, "b": 1, "ts": now - 2}])  # sqrt(4) = 2 > 1: raised
        body = api.wait_for("/nonconformances", lambda b: len(b["items"]) == 1, timeout=30)
        (nc,) = body["items"]
        assert nc["standard_id"] == "SQRT" and nc["condition"] == "violating"
        publish_json(topic, [{"a": 1.5, "b": 1, "ts": now - 1}])  # sqrt(0.5): cleared
        api.wait_for("/nonconformances", lambda b: b["items"][0]["condition"] == "normal",
                     timeout=30)
        assert process.proc.poll() is None
        _, all_ncs = api.get("/nonconformances")
        assert [nc["standard_id"] for nc in all_ncs["items"]] == ["SQRT"]  # no PLAIN in 2029
    finally:
        code = process.stop(signal.SIGTERM)
    assert code == 0, process.output
    assert "Traceback" not in process.output
    rows = readings_in(tmp_path)
    assert rows[:2] == [("a", now - 3, 1.0, None), ("b", now - 3, 2.0, None)]  # as stored
    ahead = [row for row in rows if row[1] > now + YEAR]
    assert [(m, v) for m, _, v, _ in ahead] == [("a", 150.0), ("b", 1.0)]
    assert all(reason.startswith("timestamp ahead of clock by 109") for *_, reason in ahead)

    # It was acknowledged once stored: the broker does not send it again to our session.
    again = PatrolProcess("run", "-c", tmp_path / "site.yaml", cwd=tmp_path)
    try:
        again.wait_for_output("subscribing to")
        publish_json(topic, [{"a": 200, "b": 1, "ts": time.time()}])  # after any redelivery
        api.wait_for("/nonconformances?standard_id=PLAIN", lambda b: len(b["items"]) == 1,
                     timeout=30)
    finally:
        assert again.stop(signal.SIGTERM) == 0, again.output
    assert "cannot judge" not in again.output
    assert [row for row in readings_in(tmp_path) if row[1] == now - 3] == rows[:2]


def test_a_reload_onto_a_standards_file_the_parser_cannot_take_keeps_the_old_set(
        tmp_path: Path) -> None:
    prefix = f"patrol-iso-{uuid.uuid4().hex[:8]}"
    process, api = start(tmp_path, prefix)
    try:
        long_sum = " + ".join(["a"] * 3000)
        (tmp_path / "standards" / "plant.yaml").write_text(
            f"standards:\n  - id: LONG\n    title: t\n    expr: {long_sum}\n"
            f"    check: {{max: 1}}\n")
        process.proc.send_signal(signal.SIGHUP)
        output = process.wait_for_output("kept the previous 2 standards")
        assert ("reload refused: standards/plant.yaml:4: standards[0].expr: the expression "
                "has 11,997 characters; at most 2,000 are allowed") in output
        publish_json(f"{prefix}/CH-1/data", [{"a": 150, "b": 1, "ts": time.time()}])
        body = api.wait_for("/nonconformances", lambda b: len(b["items"]) == 2, timeout=30)
        assert sorted(nc["standard_id"] for nc in body["items"]) == ["PLAIN", "SQRT"]
        assert process.proc.poll() is None
    finally:
        code = process.stop(signal.SIGTERM)
    assert code == 0, process.output
    assert "Traceback" not in process.output


def test_a_saved_rule_state_this_version_cannot_read_does_not_stop_a_start(
        tmp_path: Path) -> None:
    """`patrol run` exited 1 at every start on such a state: a crash loop."""
    buffer = Buffer(tmp_path / "data" / "buffer.sqlite")
    buffer.put([], [], [("engine", {"v": 3, "last_ts": [["CH-1", "a"]]})])
    buffer.close()
    prefix = f"patrol-iso-{uuid.uuid4().hex[:8]}"
    process, api = start(tmp_path, prefix)
    try:
        assert "rule state not restored (ValueError: " in process.output
        publish_json(f"{prefix}/CH-1/data", [{"a": 150, "b": 1, "ts": time.time()}])
        body = api.wait_for("/nonconformances", lambda b: len(b["items"]) == 2, timeout=30)
        assert sorted(nc["standard_id"] for nc in body["items"]) == ["PLAIN", "SQRT"]
    finally:
        code = process.stop(signal.SIGTERM)
    assert code == 0, process.output
    assert "Traceback" not in process.output
