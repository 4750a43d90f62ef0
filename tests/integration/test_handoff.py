"""Hand-off with real processes: webhooks survive a kill -9, replicas deliver each event
once, and edge agents catch up after the central API was away.

Real peers only: `patrol api` and `patrol agent` as processes, PostgreSQL (and SQLite),
pymodbus's own server, and a real HTTP receiver that checks every signature with the
`standardwebhooks` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.buffer import Buffer
from agent.forward import DeliveryError, Forwarder
from api.auth import create_token
from api.store import Database
from collector.modbus.config import ModbusPoint
from rules.events import Event
from tests.conftest import free_port
from tests.integration.conftest import Api, ModbusServerThread, PatrolProcess
from tests.integration.webhook_receiver import (  # noqa: F401 (fixture)
    Answer,
    Received,
    WebhookReceiver,
    receiver_fixture,
)

STANDARD = {"title": "Chilled water supply temperature 6-8 degC", "severity": "major",
            "department": "engineering", "rectify_within": 86400.0}




@pytest.fixture(params=["sqlite", "postgresql"])
def central_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.sqlite'}"
    return request.getfixturevalue("pg_url")


def central_site(directory: Path, port: int, database: str, **server: str) -> Path:
    """A central API's site.yaml (`patrol api`): `server` adds keys to its section."""
    directory.mkdir(parents=True, exist_ok=True)
    site = directory / "site.yaml"
    extra = "".join(f", {key}: {value}" for key, value in server.items())
    site.write_text(f"site: {{id: central}}\nserver: {{listen: '127.0.0.1:{port}', "
                    f"database: '{database}', webhooks_allow: [127.0.0.0/8]{extra}}}\n")
    return site


def tokens(database: str, *roles: str) -> list[str]:
    db = Database(database)
    try:
        with db.write() as session:
            return [create_token(session, name=f"{role}-{uuid.uuid4().hex[:6]}", role=role)
                    for role in roles]
    finally:
        db.close()


def call(base: str, method: str, path: str, token: str, body: Any = None
         ) -> tuple[int, Any]:
    """One JSON request with the stdlib, independent of the code under test."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def ok(result: tuple[int, Any]) -> Any:
    status, body = result
    assert 200 <= status < 300, (status, body)
    return body


def violations(assets: list[str], site: str = "tower-a") -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(minutes=5)
    return [Event(type="violation_started", site_id=site, asset_id=asset,
                  standard_id="HVAC-CHW-SUPPLY", standard_version=1, metric="chw_supply_temp",
                  episode_start=start.timestamp(), at=start.timestamp(), value=9.4,
                  limit={"min": 6, "max": 8}, standard=STANDARD).to_dict()
            for asset in assets]


def whole_feed(base: str, token: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = ok(call(base, "GET", f"/feed?after={events[-1]['seq'] if events else 0}"
                                    "&limit=1000", token))
        if not page["events"]:
            return events
        events += page["events"]


def nc_ids(base: str, token: str, **filters: str) -> dict[str, str]:
    """asset id -> NC id of every NC (one page is enough here)."""
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    items = ok(call(base, "GET", f"/nonconformances?limit=500&{query}", token))["items"]
    return {nc["asset_id"]: nc["id"] for nc in items}


def delivered_once(received: list[Received]) -> Counter[str]:
    return Counter(r.webhook_id for r in received if 200 <= r.status < 300)


def assert_in_order_per_nc(received: list[Received]) -> None:
    per_nc: dict[str, list[int]] = {}
    for request in received:
        if 200 <= request.status < 300:
            per_nc.setdefault(request.nc_id, []).append(request.seq)
    for nc, seqs in per_nc.items():
        assert seqs == sorted(seqs), (nc, seqs)


def test_deliveries_pending_when_the_api_is_killed_resume_after_restart(
        tmp_path: Path, central_db: str, receiver: WebhookReceiver) -> None:
    port = free_port()
    site = central_site(tmp_path, port, central_db)
    admin, agent, engineer = tokens(central_db, "admin", "agent", "engineer")
    base = f"http://127.0.0.1:{port}/api/v1"
    seen: set[str] = set()

    def first_attempt_fails(request: Received) -> Answer | None:
        if request.webhook_id in seen:
            return None
        seen.add(request.webhook_id)
        return Answer(500)

    receiver.rule = first_attempt_fails
    api = PatrolProcess("api", "-c", site, cwd=tmp_path)
    try:
        api.wait_for_output("Patrol API on")
        created = ok(call(base, "POST", "/webhooks", admin, {"url": receiver.url}))
        receiver.secret, hook = created["secret"], created["id"]
        assets = [f"CH-{n}" for n in range(1, 21)]
        ok(call(base, "POST", "/events", agent, {"events": violations(assets)}))
        ids = nc_ids(base, admin)
        for asset in assets[:10]:  # queued behind their NC's failing first delivery
            ok(call(base, "POST", f"/nonconformances/{ids[asset]}/acknowledge", engineer, {}))

        def settled(rows: list[dict[str, Any]]) -> bool:
            tried = [d for d in rows if d["attempts"]]
            return len(rows) == 30 and len(tried) == 20 and all(
                d["status"] == "pending" and d["last_status"] == 500 for d in tried)

        Api(base, admin).wait_for(f"/webhooks/{hook}/deliveries?limit=1000", settled,
                                  timeout=30)
        api.stop(signal.SIGKILL)  # every delivery pending, waiting for its retry
        assert api.proc.returncode == -signal.SIGKILL

        api = PatrolProcess("api", "-c", site, cwd=tmp_path)
        api.wait_for_output("Patrol API on")
        feed = whole_feed(base, admin)
        assert len(feed) == 30
        expected = {f"msg_{e['seq']}_{hook}" for e in feed}
        got = receiver.wait_until(lambda r: set(delivered_once(r)) >= expected, timeout=40,
                                  what="every event delivered after the restart")
        deliveries = Api(base, admin).wait_for(
            f"/webhooks/{hook}/deliveries?limit=1000",
            lambda rows: {d["status"] for d in rows} == {"delivered"}, timeout=10)
    finally:
        code = api.stop()
    assert code == 0, api.output
    assert set(delivered_once(got)) == expected  # none lost
    assert set(delivered_once(got).values()) == {1}  # killed between attempts: none twice
    assert all(r.verified for r in got), [r.error for r in got if not r.verified]
    assert_in_order_per_nc(got)
    assert {d["attempts"] for d in deliveries} == {2}  # each failed once, then delivered


def _socket_owners(pids: list[int]) -> dict[int, int]:
    """Local TCP port -> pid, for the sockets these processes hold (Linux /proc)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    owners = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                owners[int(fields[1].rsplit(":", 1)[1], 16)] = inodes[fields[9]]
    return owners


def test_two_replicas_deliver_each_event_once_and_serve_one_feed(
        tmp_path: Path, pg_url: str, receiver: WebhookReceiver) -> None:
    ports = [free_port(), free_port()]
    sites = [central_site(tmp_path / f"replica-{n}", port, pg_url)
             for n, port in enumerate(ports)]
    admin, agent, engineer = tokens(pg_url, "admin", "agent", "engineer")
    bases = [f"http://127.0.0.1:{port}/api/v1" for port in ports]
    receiver.answer(then=Answer(200, delay=0.005))  # a receiver that takes a moment
    replicas = [PatrolProcess("api", "-c", site, cwd=site.parent) for site in sites]
    follower: list[dict[str, Any]] = []
    stop_following = threading.Event()

    def follow() -> None:
        """A tracker long-polling the feed, alternating between the replicas."""
        after, turn = 0, 0
        while not stop_following.is_set():
            page = ok(call(bases[turn % 2], "GET", f"/feed?after={after}&limit=50&wait=1s",
                           admin))
            follower.extend(page["events"])
            after, turn = page["next"], turn + 1

    try:
        for replica in replicas:
            replica.wait_for_output("Patrol API on")
        created = ok(call(bases[0], "POST", "/webhooks", admin, {"url": receiver.url}))
        receiver.secret, hook = created["secret"], created["id"]
        reader = threading.Thread(target=follow)
        reader.start()
        # each replica takes half the changes, at the same time
        halves = [[f"CH-{n}" for n in range(k, 160, 2)] for k in (0, 1)]
        posters = [threading.Thread(target=lambda b=base, h=half: ok(call(
            b, "POST", "/events", agent, {"events": violations(h)})))
            for base, half in zip(bases, halves, strict=True)]
        for poster in posters:
            poster.start()
        for poster in posters:
            poster.join(60)
        ids = nc_ids(bases[0], admin)
        assert len(ids) == 160
        for n, asset in enumerate(sorted(ids)[:60]):
            ok(call(bases[n % 2], "POST", f"/nonconformances/{ids[asset]}/acknowledge",
                    engineer, {}))
        got = receiver.wait_until(lambda r: len(delivered_once(r)) >= 220, timeout=40,
                                  what="220 deliveries")
        owners = _socket_owners([r.proc.pid for r in replicas])
        feeds = [whole_feed(base, admin) for base in bases]
        deliveries = Api(bases[1], admin).wait_for(
            f"/webhooks/{hook}/deliveries?limit=1000",
            lambda rows: {d["status"] for d in rows} == {"delivered"}, timeout=10)
        stop_following.set()
        reader.join(10)
    finally:
        stop_following.set()
        codes = [replica.stop() for replica in replicas]
    assert codes == [0, 0], [r.output for r in replicas]

    assert feeds[0] == feeds[1] and len(feeds[0]) == 220
    seqs = [e["seq"] for e in feeds[0]]
    assert seqs == sorted(seqs)
    # a follower switching replicas mid-stream skipped nothing and saw nothing twice
    assert [e["seq"] for e in follower] == seqs

    counts = delivered_once(receiver.received)
    assert set(counts) == {f"msg_{seq}_{hook}" for seq in seqs}
    assert set(counts.values()) == {1}, [i for i, c in counts.items() if c > 1]
    assert len(receiver.received) == 220  # no attempt at all beyond the one
    assert all(r.verified for r in got)
    assert_in_order_per_nc(got)
    assert {(d["status"], d["attempts"]) for d in deliveries} == {("delivered", 1)}
    assert len(deliveries) == 220
    # both replicas took part: the connections each holds sent some of the deliveries
    senders = Counter(owners.get(r.client_port) for r in got)
    assert {r.proc.pid for r in replicas} <= set(senders), senders


SUPPLY = ModbusPoint(asset="CH-1", metric="chw_supply_temp", address=100, type="float32")
RETURN = ModbusPoint(asset="CH-1", metric="chw_return_temp", address=102, type="float32")


def agent_site(directory: Path, site_id: str, modbus_port: int, unit: int, api_port: int,
               token_env: str) -> Path:
    (directory / "standards").mkdir(parents=True)
    (directory / "standards" / "plant.yaml").write_text("""
standards:
  - id: HVAC-CHW-SUPPLY
    title: Chilled water supply 6-8 degC
    applies_to: {asset_types: [chiller]}
    metric: chw_supply_temp
    check: {min: 6, max: 8}
    for: 1s
    severity: major
  - id: HVAC-CHW-RETURN
    title: Chilled water return below 14 degC
    applies_to: {asset_types: [chiller]}
    metric: chw_return_temp
    check: {max: 14}
    for: 1s
    severity: minor
""")
    site = directory / "site.yaml"
    site.write_text(f"""
site: {{id: {site_id}}}
assets:
  - {{id: CH-1, type: chiller, department: engineering}}
modbus:
  devices:
    - name: plc
      host: 127.0.0.1
      port: {modbus_port}
      unit_id: {unit}
      interval: 300ms
      timeout: 1s
      points:
        - {{asset: CH-1, metric: chw_supply_temp, address: 100, type: float32}}
        - {{asset: CH-1, metric: chw_return_temp, address: 102, type: float32}}
standards: [standards/*.yaml]
buffer: {{path: data/buffer.sqlite}}
rules: {{snapshot_every: 2s}}
forward: {{url: 'http://127.0.0.1:{api_port}', token_env: {token_env}}}
""")
    return site


def wait_for_new_output(process: PatrolProcess, text: str, since: int,
                        timeout: float = 20) -> None:
    """Wait for `text` in what `process` wrote after offset `since`."""
    deadline = time.monotonic() + timeout
    while text not in process.output[since:]:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} within {timeout}s:\n{process.output}")
        time.sleep(0.1)


def test_two_edge_agents_keep_raising_while_the_central_api_is_down(
        tmp_path: Path, pg_url: str) -> None:
    modbus = ModbusServerThread(units=(1, 2)).start()
    api_port = free_port()
    central = central_site(tmp_path / "central", api_port, pg_url)
    token_a, token_b, reader = tokens(pg_url, "agent", "agent", "tracker")
    base = f"http://127.0.0.1:{api_port}/api/v1"
    client = Api(base, reader)
    for unit in (1, 2):
        modbus.set(SUPPLY, 9.0, unit)  # violating from the start
        modbus.set(RETURN, 12.0, unit)
    api = PatrolProcess("api", "-c", central, cwd=central.parent)
    api.wait_for_output("Patrol API on")
    agents = [PatrolProcess("agent", "-c", agent_site(tmp_path / name, name, modbus.port,
                                                      unit, api_port, "PATROL_AGENT_TOKEN"),
                            cwd=tmp_path / name, env={"PATROL_AGENT_TOKEN": token})
              for name, unit, token in (("tower-a", 1, token_a), ("tower-b", 2, token_b))]
    try:
        client.wait_for("/nonconformances", lambda b: len(b["items"]) == 2, timeout=30)
        away = [len(agent.output) for agent in agents]
        assert api.stop() == 0, api.output

        # the API is away: the agents see the supply recover and fail again (a new
        # episode, an occurrence), and the return temperature go out of range (a new NC)
        for unit in (1, 2):
            modbus.set(SUPPLY, 7.0, unit)
        for agent, since in zip(agents, away, strict=True):
            wait_for_new_output(agent, "violation_cleared: CH-1 HVAC-CHW-SUPPLY", since)
        for unit in (1, 2):
            modbus.set(SUPPLY, 9.5, unit)
            modbus.set(RETURN, 16.0, unit)
        for agent, since in zip(agents, away, strict=True):
            wait_for_new_output(agent, "violation_started: CH-1 HVAC-CHW-SUPPLY", since)
            wait_for_new_output(agent, "violation_started: CH-1 HVAC-CHW-RETURN", since)
            wait_for_new_output(agent, "cannot deliver NC events yet", since)
        restart = [len(agent.output) for agent in agents]

        api = PatrolProcess("api", "-c", central, cwd=central.parent)
        api.wait_for_output("Patrol API on")

        def caught_up(body: dict[str, Any]) -> bool:
            supply = [nc for nc in body["items"] if nc["standard_id"] == "HVAC-CHW-SUPPLY"]
            return len(body["items"]) == 4 and all(
                nc["occurrences"] == 2 and nc["condition"] == "violating" for nc in supply)

        items = client.wait_for("/nonconformances?limit=100", caught_up, timeout=45)["items"]
        for agent, since in zip(agents, restart, strict=True):
            wait_for_new_output(agent, "NC events flowing again", since)
            assert "violation_started" not in agent.output[since:]  # raised once, before
        only_b = ok(call(base, "GET", "/nonconformances?site_id=tower-b", reader))["items"]
        feed = whole_feed(base, reader)
        compliance = client.wait_for(
            "/compliance", lambda b: {c["site_id"] for c in b["items"]} == {"tower-a",
                                                                            "tower-b"})
    finally:  # the agents first: their last snapshots still reach the API
        codes = [agent.stop() for agent in agents]
        api_code = api.stop()
        modbus.stop()
    assert codes == [0, 0], [a.output for a in agents]
    assert api_code == 0, api.output

    keys = Counter((nc["site_id"], nc["asset_id"], nc["standard_id"]) for nc in items)
    assert keys == {(site, "CH-1", standard): 1 for site in ("tower-a", "tower-b")
                    for standard in ("HVAC-CHW-SUPPLY", "HVAC-CHW-RETURN")}
    assert {nc["site_id"] for nc in only_b} == {"tower-b"} and len(only_b) == 2
    for site in ("tower-a", "tower-b"):  # applied in the order the agent saw them
        supply = [e["type"] for e in feed if e["nc"]["site_id"] == site
                  and e["nc"]["standard_id"] == "HVAC-CHW-SUPPLY"]
        assert supply == ["raised", "cleared", "occurrence"], (site, supply)
    assert len(compliance["items"]) == 4
    for agent in agents:
        assert "0 undelivered events" in agent.output


class ScriptedSink:
    """An API that takes or refuses each batch as scripted (True: taken), then takes all."""

    def __init__(self, *script: bool, expect: int) -> None:
        self.script = list(script)
        self.taken: list[str] = []
        self.expect = expect
        self.done = asyncio.Event()

    async def __call__(self, bodies: list[dict[str, Any]]) -> set[str]:
        if self.script and not self.script.pop(0):
            raise DeliveryError("http://central/api/v1/events unreachable: refused")
        self.taken += [body["id"] for body in bodies]
        if len(self.taken) >= self.expect:
            self.done.set()
        return {body["id"] for body in bodies}


def test_an_outage_right_after_a_recovery_is_reported_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Down, back for one batch, down again within one drain: both outages are warned
    about and the recovery between them is logged (warning / info, repeats at debug)."""
    buffer = Buffer(tmp_path / "buffer.sqlite")
    buffer.put([], [{"id": f"ev_{n}", "type": "violation_started"} for n in range(3)])
    caplog.set_level(logging.DEBUG, logger="patrol.forward")

    async def drain() -> ScriptedSink:
        sink = ScriptedSink(False, True, False, expect=3)
        forwarder = Forwarder(buffer, sink, asyncio.Event(), batch=1, max_backoff=0.2)
        task = asyncio.create_task(forwarder.run())
        await sink.done.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return sink

    sink = asyncio.run(asyncio.wait_for(drain(), 10))
    buffer.close()
    assert sink.taken == ["ev_0", "ev_1", "ev_2"]
    said = [(r.levelname, r.getMessage().split(" (")[0].split(" after")[0])
            for r in caplog.records]
    assert said == [("WARNING", "cannot deliver NC events yet"),
                    ("INFO", "NC events flowing again"),
                    ("WARNING", "cannot deliver NC events yet"),
                    ("INFO", "NC events flowing again")]
