"""Patrol's own metrics and degraded health (issue 17): counters moved by real traffic
(pymodbus's server, the machine's Mosquitto, a TSDB port nobody answers on), both
endpoints (the agent's `metrics:` listener and the API's GET /metrics with its loopback
rule), and health that says degraded, with the reason, while it serves."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from agent.buffer import Buffer
from agent.forward import Forwarder
from agent.metrics import AgentProbe, HealthConfig, MetricsConfig, MetricsServer
from agent.pipeline import Pipeline
from agent.runtime import run_site
from agent.site import load_site
from agent.yamldoc import ConfigError
from api.app import create_app
from api.auth import create_token
from api.store import Database
from collector.modbus.config import ModbusPoint
from collector.reading import Reading
from common import metrics
from rules.engine import Engine
from tests.conftest import free_port
from tests.integration.conftest import MOSQUITTO, ModbusServerThread, publish_json
from tests.integration.test_tsdb import fill_with_events, limit_pages

SUPPLY = ModbusPoint(asset="CH-1", metric="chw_supply_temp", address=100, type="float32")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text page, by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(page: Samples, name: str, **labels: str) -> float:
    """One sample; 0 when absent (a labelled counter not yet touched)."""
    return page.get((name, frozenset(labels.items())), 0.0)


def site_yaml(tmp: Path, *, modbus_port: int, api_port: int, metrics_port: int,
              prefix: str, listen_host: str = "127.0.0.1") -> Path:
    (tmp / "standards").mkdir()
    (tmp / "standards" / "plant.yaml").write_text("""
standards:
  - id: ENV-ROOM-TEMP
    title: Room below 30 degC
    category: environment
    applies_to: {assets: [PR-1]}
    metric: air_temp
    check: {max: 30}
    severity: minor
""")
    path = tmp / "site.yaml"
    path.write_text(f"""
site: {{id: tower-a}}
assets:
  - {{id: CH-1, type: chiller}}
  - {{id: PR-1, type: room}}
modbus:
  devices:
    - {{name: ch1-plc, host: 127.0.0.1, port: {modbus_port}, unit_id: 1, interval: 200ms,
       timeout: 1s, points: [{{asset: CH-1, metric: chw_supply_temp, address: 100,
       type: float32}}]}}
mqtt:
  url: mqtt://{MOSQUITTO[0]}:{MOSQUITTO[1]}
  client_id: {prefix}-agent
  clean_session: true
  subscriptions:
    - topic: {prefix}/{{asset}}/env
      metrics: {{air_temp: $.temperature, humidity: $.humidity}}
influxdb:                      # nobody answers here: readings wait, writes fail
  url: http://127.0.0.1:{free_port()}
  bucket: b
  flush_interval: 100ms
  max_backoff: 500ms
metrics: {{listen: 127.0.0.1:{metrics_port}}}
health: {{tsdb_lag: 1s, source_silent: 0s}}
standards: [standards/*.yaml]
server: {{listen: {listen_host}:{api_port}, database: sqlite:///data/patrol.sqlite}}
buffer: {{path: data/buffer.sqlite}}
""")
    return path


@contextlib.asynccontextmanager
async def running(site: Path, mode: str) -> AsyncIterator[None]:
    """`run_site` in this loop until the block ends."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_site(load_site(site), mode=mode, stop=stop,
                                        on_ready=lambda _url: ready.set()))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    try:
        yield
    finally:
        stop.set()
        await task


async def until(scrape: Callable[[], Any], check: Callable[[Any], bool],
                patience: float = 8.0) -> Any:
    """`await scrape()` until `check` holds on its answer; the last answer in the error."""
    deadline = time.monotonic() + patience
    got = None
    while time.monotonic() < deadline:
        got = await scrape()
        if check(got):
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"not met in {patience}s; last: {got}")


def outside_address() -> str | None:
    """This machine's address on a network other than loopback, if it has one."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))  # no packet leaves: only picks the route's source
        address = s.getsockname()[0]
        return None if address.startswith("127.") else address
    return None


def test_patrol_run_counts_real_traffic_on_both_endpoints(tmp_path: Path) -> None:
    """`patrol run` with Modbus, MQTT and a TSDB that never answers: the listener and
    GET /metrics show the same counters, each moved by what was sent; health turns
    degraded (tsdb_lag) and still answers 200; off loopback /metrics wants a token."""
    prefix = f"metrics-{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}/{{asset}}/env"
    outside = outside_address()
    api_port, metrics_port = free_port(), free_port()
    modbus = ModbusServerThread().start()
    modbus.set(SUPPLY, 7.0)
    site = site_yaml(tmp_path, modbus_port=modbus.port, api_port=api_port,
                     metrics_port=metrics_port, prefix=prefix,
                     listen_host="0.0.0.0" if outside else "127.0.0.1")
    database = Database(load_site(site).config.server.database)
    with database.session() as session:
        token = create_token(session, name="scraper", role="tracker")
    database.close()
    listener = f"http://127.0.0.1:{metrics_port}/metrics"
    api = f"http://127.0.0.1:{api_port}"

    async def scenario() -> None:
        async with running(site, "run"), httpx.AsyncClient(timeout=5) as client:
            async def scrape() -> Samples:
                response = await client.get(listener)
                assert response.status_code == 200, response.text
                return samples(response.text)

            before = await scrape()
            events_before = value(before, "patrol_rules_events_total",
                                  type="violation_started")
            messages = [{"temperature": 35.0 + i, "humidity": 40} for i in range(5)]
            await asyncio.to_thread(publish_json, f"{prefix}/PR-1/env", messages)
            after = await until(scrape, lambda page: value(
                page, "patrol_mqtt_messages_total", subscription=topic) == 5)
            # five messages of two metrics each, on a subscription new to this process
            assert value(after, "patrol_readings_total", source="mqtt", device=topic) == 10
            assert value(after, "patrol_mqtt_refused_total", subscription=topic,
                         reason="bad_payload") == 0
            assert value(after, "patrol_mqtt_connects_total") >= 1
            assert value(after, "patrol_mqtt_connected") == 1
            assert time.time() - 10 < value(
                after, "patrol_source_last_reading_timestamp_seconds", source="mqtt",
                device=topic) <= time.time()
            # Modbus: one point a cycle; each request timed
            assert value(after, "patrol_readings_total", source="modbus",
                         device="ch1-plc") >= 1
            assert value(after, "patrol_modbus_request_duration_seconds_count",
                         device="ch1-plc") >= 1
            assert value(after, "patrol_bad_readings_total", source="modbus",
                         device="ch1-plc", reason="unavailable") == 0
            # 35 degC breaks the room standard: one violation, judged and raised
            after = await until(scrape, lambda page: value(
                page, "patrol_rules_events_total", type="violation_started")
                == events_before + 1)
            assert value(after, "patrol_rules_readings_total") >= 10
            assert value(after, "patrol_rules_pairs") == 1

            # the TSDB never answers: readings wait, errors are counted, health degrades.
            # A judged reading is stored at the next group commit (buffer.commit_every),
            # so the MQTT readings may reach the buffer a moment after their events count.
            after = await until(scrape, lambda page: value(
                page, "patrol_degraded", reason="tsdb_lag") == 1 and value(
                page, "patrol_buffer_readings") >= 10)
            assert value(after, "patrol_tsdb_write_errors_total", kind="unreachable") >= 1
            assert value(after, "patrol_tsdb_readings_written_total") == 0
            assert value(after, "patrol_buffer_oldest_reading_age_seconds") > 1
            assert value(after, "patrol_buffer_bytes") > 0
            assert value(after, "patrol_buffer_writable") == 1
            health = (await client.get(f"{api}/api/v1/health")).json()
            assert health["status"] == "degraded" and health["database"] == "ok"
            assert [r["code"] for r in health["reasons"]] == ["tsdb_lag"]
            assert "wait for the TSDB" in health["reasons"][0]["detail"]
            # the NC event reached the API in this process
            assert value(await scrape(), "patrol_forward_events_delivered_total") >= 1

            # GET /metrics on the API: the same registry, from loopback without a token
            response = await client.get(f"{api}/metrics")
            assert response.status_code == 200
            page = samples(response.text)
            assert value(page, "patrol_mqtt_messages_total", subscription=topic) == 5
            assert value(page, "patrol_http_requests_total", method="GET",
                         route="/api/v1/health", status="2xx") >= 1
            if outside is not None:  # the same server reached over the network
                url = f"http://{outside}:{api_port}/metrics"
                assert (await client.get(url)).status_code == 401
                assert (await client.get(url, headers={
                    "Authorization": "Bearer pat_wrong"})).status_code == 401
                response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 200
                assert "patrol_readings_total" in response.text
            page = samples((await client.get(f"{api}/metrics")).text)
            assert value(page, "patrol_http_requests_total", method="GET",
                         route="unmatched", status="4xx") >= (2 if outside else 0)

        # stopped: the listener's port is free again
        with socket.create_server(("127.0.0.1", metrics_port)):
            pass

    try:
        asyncio.run(scenario())
    finally:
        modbus.stop()


@pytest.fixture
def api_db(tmp_path: Path) -> Any:
    database = Database(f"sqlite:///{tmp_path / 'patrol.sqlite'}")
    yield database
    database.close()


@pytest.mark.parametrize(("client", "needs_token"), [
    (("127.0.0.1", 50000), False), (("127.8.9.10", 50000), False), (("::1", 50000), False),
    (("::ffff:127.0.0.1", 50000), False), (("192.0.2.7", 50000), True),
    (("2001:db8::7", 50000), True), (("testclient", 50000), True)])
def test_metrics_are_role_free_on_loopback_and_need_any_token_elsewhere(
        api_db: Database, client: tuple[str, int], needs_token: bool) -> None:
    with api_db.session() as session:
        tracker = create_token(session, name="t", role="tracker")
    http = TestClient(create_app(api_db), client=client)
    response = http.get("/metrics")
    assert response.status_code == (401 if needs_token else 200), response.text
    wrong = http.get("/metrics", headers={"Authorization": "Bearer pat_not-a-token"})
    assert wrong.status_code == (401 if needs_token else 200)
    right = http.get("/metrics", headers={"Authorization": f"Bearer {tracker}"})
    assert right.status_code == 200
    assert right.headers["content-type"].startswith("text/plain")
    assert "# TYPE patrol_http_requests_total counter" in right.text
    # the health route stays open to all
    assert http.get("/api/v1/health").json()["status"] == "ok"


def test_health_says_degraded_while_the_buffer_cannot_take_readings(
        tmp_path: Path, api_db: Database) -> None:
    """A full disk (the buffer may not grow): readings wait in memory, health answers 200
    `degraded` with `buffer_unwritable`, the metrics say so; room again: `ok`."""
    buffer = Buffer(tmp_path / "buffer.sqlite")
    limit_pages(buffer)
    fill_with_events(buffer)
    http = TestClient(create_app(api_db), client=("127.0.0.1", 50000))

    async def scenario() -> None:
        pipeline = Pipeline(Engine("plant-1", [], []), buffer)
        forwarder = Forwarder(buffer, _never_sent, asyncio.Event())
        probe = AgentProbe(buffer_path=buffer.path, max_size=buffer.max_size,
                           pipeline=pipeline, sources=[], forwarder=forwarder, tsdb=None,
                           dropped=lambda: buffer.dropped, config=HealthConfig())
        unregister = probe.register()
        running = asyncio.create_task(pipeline.run())
        try:
            assert http.get("/api/v1/health").json()["status"] == "ok"
            pipeline.emit([Reading("A", "m", float(i), time.time()) for i in range(5000)])
            health = await until(lambda: asyncio.to_thread(
                lambda: http.get("/api/v1/health")), lambda r: r.json()["status"] == "degraded")
            assert health.status_code == 200
            reasons = health.json()["reasons"]
            assert [r["code"] for r in reasons] == ["buffer_unwritable"]
            assert "disk full" in reasons[0]["detail"]
            page = samples(await asyncio.to_thread(lambda: http.get("/metrics").text))
            assert value(page, "patrol_buffer_writable") == 0
            assert value(page, "patrol_degraded", reason="buffer_unwritable") == 1
            assert value(page, "patrol_degraded", reason="tsdb_lag") == 0

            buffer._db.execute("PRAGMA max_page_count = 1000000")  # room again
            await until(lambda: asyncio.to_thread(lambda: http.get("/api/v1/health")),
                        lambda r: r.json() == {**r.json(), "status": "ok", "reasons": []},
                        patience=5)
            page = samples(await asyncio.to_thread(lambda: http.get("/metrics").text))
            assert value(page, "patrol_buffer_readings") == 5000
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            unregister()

    try:
        asyncio.run(scenario())
    finally:
        buffer.close()
    # unregistered: no agent left in this process to speak of
    assert http.get("/api/v1/health").json()["status"] == "ok"
    assert "patrol_buffer_writable" not in http.get("/metrics").text


async def _never_sent(bodies: list[dict[str, Any]]) -> set[str]:
    raise AssertionError("nothing is forwarded in this test")


def test_a_taken_metrics_port_is_one_clear_error_and_a_stop_frees_it() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"^metrics: cannot listen on 127\.0\.0\.1:{port}: "):
            MetricsServer(MetricsConfig(listen=f"127.0.0.1:{port}"))
    server = MetricsServer(MetricsConfig(listen="127.0.0.1:0"))
    body = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
    assert "# TYPE patrol_tsdb_write_duration_seconds histogram" in body
    server.close()
    assert not server._thread.is_alive()
    with socket.create_server(("127.0.0.1", server.port)):
        pass


def test_metrics_and_health_sections_are_checked_like_the_others(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "site: {id: plant-1}\n"
        "metrics: {listen: localhost}\n"
        "health: {tsdb_lag: soon, extra: 1}\n")
    with pytest.raises(ConfigError) as caught:
        load_site(tmp_path / "site.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert any(re.search(r"site\.yaml:2: metrics\.listen: .*not host:port", p)
               for p in problems), problems
    assert any(re.search(r"site\.yaml:3: health\.tsdb_lag: .*not a duration", p)
               for p in problems), problems
    assert any("site.yaml:3: health.extra" in p for p in problems), problems
    (tmp_path / "site.yaml").write_text("site: {id: plant-1}\nmetrics: {}\n")
    config = load_site(tmp_path / "site.yaml").config
    assert config.metrics is not None and config.metrics.listen == "127.0.0.1:9273"
    assert config.health.tsdb_lag == 300.0 and config.health.source_silent == 900.0


def test_every_metric_is_documented_once_and_nothing_else_is() -> None:
    page = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(patrol_[a-z_]+)`", page, re.MULTILINE))
    assert documented == set(metrics.names())
