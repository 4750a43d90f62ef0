"""Two `patrol api` processes on one PostgreSQL database, hammered at the same time.

Each test gets a fresh schema. Actions on one NC from both processes at once must
serialize (row locks), so no update is lost: one history entry per 200 answer, each entry
starting where the previous one ended, the NC equal to the last change, its version and
feed counting every change. The background jobs of both processes claim overdue NCs with
`FOR UPDATE SKIP LOCKED`: one `overdue` entry per NC. More concurrent writers than a
process has pooled connections wait their turn and never answer 500.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api.auth import create_token
from api.store import Database
from rules.events import Event
from tests.conftest import free_port
from tests.integration.conftest import PatrolProcess

TOKENS = {"agent": "agent", "eng-a": "engineer", "eng-b": "engineer", "qa": "quality",
          "reader": "tracker"}
STANDARD = {"title": "Supply air temperature 14-18 degC", "clause": "BMS 3.1",
            "category": "equipment", "severity": "major", "department": "engineering",
            "rectify_within": 60.0, "on_recovery": "keep_open"}




@dataclass
class Cluster:
    """Two API processes over one database, and a token per name in TOKENS."""

    url: str
    bases: list[str]
    tokens: dict[str, str]
    processes: list[PatrolProcess]

    def call(self, method: str, path: str, who: str, *, api: int = 0,
             body: Any = None, timeout: float = 30) -> httpx.Response:
        return httpx.request(method, self.bases[api] + path, json=body, timeout=timeout,
                             headers={"Authorization": f"Bearer {self.tokens[who]}"})

    def raise_ncs(self, events: list[dict[str, Any]], api: int = 0) -> None:
        response = self.call("POST", "/events", "agent", api=api, body={"events": events})
        assert response.status_code == 200, response.text
        assert response.json() == {"applied": len(events), "duplicates": 0,
                                   "ids": [event["id"] for event in events]}

    def nc_of(self, asset: str) -> dict[str, Any]:
        response = self.call("GET", f"/nonconformances?asset_id={asset}", "reader")
        assert response.status_code == 200, response.text
        (nc,) = response.json()["items"]
        return nc

    def nc(self, nc_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/nonconformances/{nc_id}", "reader", api=1)
        assert response.status_code == 200, response.text
        return response.json()

    def history(self, nc_id: str) -> list[dict[str, Any]]:
        response = self.call("GET", f"/nonconformances/{nc_id}/history", "reader")
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    ports = [free_port(), free_port()]
    sites = []
    for name, port in zip("ab", ports, strict=True):
        site = tmp_path / f"site-{name}.yaml"
        site.write_text(f"site: {{id: central}}\n"
                        f"server: {{listen: '127.0.0.1:{port}', database: '{pg_url}'}}\n")
        sites.append(site)
    database = Database(pg_url)  # creates the schema, as `patrol token create` would
    try:
        with database.write() as session:
            tokens = {name: create_token(session, name=name, role=role)
                      for name, role in TOKENS.items()}
    finally:
        database.close()
    # started together, so their 15 s job passes run at about the same moments
    processes = [PatrolProcess("api", "-c", site, cwd=tmp_path) for site in sites]
    try:
        for process in processes:
            process.wait_for_output("Patrol API on")
        yield Cluster(pg_url, [f"http://127.0.0.1:{p}/api/v1" for p in ports], tokens,
                      processes)
    finally:
        for process in processes:
            assert process.stop() == 0, process.output
        for process in processes:
            assert "Traceback" not in process.output, process.output


def violation(asset: str, *, detected: datetime, **standard: Any) -> dict[str, Any]:
    """An agent's violation_started event, as rules.events builds it."""
    return Event(
        type="violation_started", site_id="tower-b", asset_id=asset,
        standard_id="HVAC-SUPPLY-AIR", standard_version=1, metric="supply_air_temp",
        episode_start=detected.timestamp() - 60, at=detected.timestamp(), value=21.5,
        limit={"min": 14, "max": 18}, readings=((detected.timestamp(), 21.5),),
        standard={**STANDARD, **standard}, asset={"type": "ahu"},
    ).to_dict()


PER_PROCESS = 10
"""Requests in flight per API process in the races (the last test goes past its pool)."""

Call = tuple[int, Callable[[], httpx.Response]]
"""Which API process a call goes to, and the call."""


def race(calls: list[Call]) -> list[httpx.Response]:
    """Run the calls with PER_PROCESS threads per API process, the threads' first calls
    released at once; answers in call order."""
    by_api: dict[int, list[int]] = {}
    for index, (api, _) in enumerate(calls):
        by_api.setdefault(api, []).append(index)
    sizes = {api: min(PER_PROCESS, len(indices)) for api, indices in by_api.items()}
    barrier = threading.Barrier(sum(sizes.values()))
    local = threading.local()
    answers: dict[int, httpx.Response] = {}

    def run(index: int) -> None:
        if not getattr(local, "started", False):
            local.started = True
            barrier.wait(10)
        answers[index] = calls[index][1]()

    pools = [ThreadPoolExecutor(sizes[api]) for api in by_api]
    try:
        futures = [pool.submit(run, index)
                   for pool, indices in zip(pools, by_api.values(), strict=True)
                   for index in indices]
        for future in futures:
            future.result()
    finally:
        for pool in pools:
            pool.shutdown()
    return [answers[index] for index in range(len(calls))]


def assert_history_chain(history: list[dict[str, Any]]) -> None:
    """Each entry starts in the state the previous one left, and every assignee change
    starts from the assignee the previous change set: nothing was overwritten unseen."""
    assignee: str | None = None
    for before, entry in itertools.pairwise(history):
        assert entry["from_state"] == before["to_state"], (before, entry)
    for entry in history:
        if "assignee" in entry["changes"]:
            old, new = entry["changes"]["assignee"]
            assert old == assignee, entry
            assignee = new


def assert_rows_match(cluster: Cluster, nc_id: str, history: list[dict[str, Any]]) -> None:
    """The optimistic version counts every change, and the feed has one event per change."""
    pk = int(nc_id.removeprefix("NC-"))
    ((version,),) = cluster.sql("SELECT version FROM nonconformances WHERE pk = %s", pk)
    ((feed,),) = cluster.sql("SELECT count(*) FROM feed WHERE nc_pk = %s", pk)
    assert version == len(history)
    assert feed == len(history)


def test_fifty_assigns_from_two_processes_lose_no_update(cluster: Cluster) -> None:
    cluster.raise_ncs([violation("AHU-1", detected=datetime.now(UTC))])
    nc = cluster.nc_of("AHU-1")
    assignees = [f"tech-{i:02d}" for i in range(50)]
    answers = race([(i % 2, lambda who=who, i=i: cluster.call(
        "POST", f"/nonconformances/{nc['id']}/assign", ("eng-a", "eng-b")[i % 2], api=i % 2,
        body={"assignee": who})) for i, who in enumerate(assignees)])

    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 409}, [a.text for a in answers if a.status_code >= 500]
    succeeded = [who for who, a in zip(assignees, answers, strict=True) if a.status_code == 200]
    for who, answer in zip(assignees, answers, strict=True):
        if answer.status_code == 200:
            assert answer.json()["assignee"] == who  # the NC as that change left it
    history = cluster.history(nc["id"])
    assigns = [h for h in history if h["action"] == "assign"]
    assert len(assigns) == len(succeeded) == 50  # assign applies in every open state
    assert sorted(h["changes"]["assignee"][1] for h in assigns) == sorted(succeeded)
    assert {h["actor"] for h in assigns} == {"eng-a", "eng-b"}
    assert_history_chain(history)
    final = cluster.nc(nc["id"])
    assert final["assignee"] == assigns[-1]["changes"]["assignee"][1]
    assert final["state"] == "open"
    assert_rows_match(cluster, nc["id"], history)


def test_acknowledge_and_start_races_have_one_winner(cluster: Cluster) -> None:
    cluster.raise_ncs([violation("AHU-2", detected=datetime.now(UTC))], api=1)
    nc_id = cluster.nc_of("AHU-2")["id"]

    def act(action: str, i: int, body: dict[str, Any] | None = None, who: str = "") -> Call:
        who = who or ("eng-a", "eng-b")[i % 2]
        return i % 2, lambda: cluster.call("POST", f"/nonconformances/{nc_id}/{action}", who,
                                           api=i % 2, body=body)

    for action, state in (("acknowledge", "acknowledged"), ("start", "rectifying")):
        calls = [act(action, i) for i in range(12)]
        calls += [act("assign", i, {"assignee": f"{action}-{i}"}) for i in range(8)]
        answers = race(calls)
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 409}, [a.text for a in answers if a.status_code >= 500]
        assert statuses[:12].count(200) == 1, statuses  # one of the racers wins ...
        assert statuses[12:] == [200] * 8  # ... and assigns apply in any open state
        for answer in answers[:12]:
            if answer.status_code == 409:
                assert re.search(r"cannot \w+ a nonconformance that is \w+; allowed: ",
                                 answer.json()["detail"]), answer.text
            else:
                assert answer.json()["state"] == state

    cancels = race([act("cancel", i, {"reason": "duplicate of a manual finding"}, "qa")
                    for i in range(6)])
    assert sorted(a.status_code for a in cancels) == [200] + [409] * 5

    history = cluster.history(nc_id)
    assert [h["action"] for h in history if h["action"] != "assign"] == [
        "raised", "acknowledge", "start", "cancel"]
    assert len(history) == 1 + 2 + 16 + 1
    assert_history_chain(history)
    final = cluster.nc(nc_id)
    assert final["state"] == history[-1]["to_state"] == "cancelled"
    assert final["assignee"] == [h for h in history if h["action"] == "assign"][-1][
        "changes"]["assignee"][1]
    assert_rows_match(cluster, nc_id, history)


OVERDUE_NCS = 300  # more than one job pass (200) takes: both processes must claim some


def test_both_processes_mark_each_overdue_nc_once(cluster: Cluster) -> None:
    detected = datetime.now(UTC) - timedelta(hours=1)  # due 60 s later: long overdue
    events = [violation(f"AHU-{i:03d}", detected=detected + timedelta(milliseconds=i))
              for i in range(OVERDUE_NCS)]
    half = OVERDUE_NCS // 2
    with ThreadPoolExecutor(2) as pool:  # half through each process, at the same time
        list(pool.map(cluster.raise_ncs, [events[:half], events[half:]], [0, 1]))

    deadline = time.monotonic() + 45  # jobs run every 15 s in each process
    marked: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        marked = cluster.sql("SELECT nc_pk, count(*) FROM nc_history "
                             "WHERE action = 'overdue' GROUP BY nc_pk")
        if len(marked) == OVERDUE_NCS:
            break
        time.sleep(0.5)
    time.sleep(1)  # let a late duplicate, if any, commit
    marked = cluster.sql("SELECT nc_pk, count(*) FROM nc_history "
                         "WHERE action = 'overdue' GROUP BY nc_pk")
    assert len(marked) == OVERDUE_NCS
    assert {count for _, count in marked} == {1}

    # both replicas did part of the work, and together exactly all of it
    done = [sum(int(n) for n in re.findall(r"(\d+) NCs became overdue", p.output))
            for p in cluster.processes]
    assert all(n > 0 for n in done) and sum(done) == OVERDUE_NCS, done
    response = cluster.call("GET", f"/nonconformances?overdue=true&limit={OVERDUE_NCS}",
                            "reader")
    assert len(response.json()["items"]) == OVERDUE_NCS


POOL = 5 + 10  # SQLAlchemy's default QueuePool: size 5, overflow 10


@contextlib.contextmanager
def slow_authentication(cluster: Cluster) -> Iterator[Callable[[], int]]:
    """Hold the token table locked: requests wait in authentication until the block ends,
    then go on together (as concurrent requests do when the database is busy). Yields how
    many are waiting."""
    with psycopg.connect(cluster.url) as conn:
        conn.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
        with psycopg.connect(cluster.url) as watcher:
            yield lambda: watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted "
                "AND relation = 'api_tokens'::regclass").fetchone()[0]


def test_more_concurrent_writers_than_pooled_connections_never_answer_500(
        cluster: Cluster) -> None:
    """All of a process's pooled connections in requests at once, each about to write:
    none may wait for a second connection while holding the first (a request that did
    deadlocked until the pool's 30 s timeout and answered 500)."""
    cluster.raise_ncs([violation("AHU-3", detected=datetime.now(UTC))])
    nc_id = cluster.nc_of("AHU-3")["id"]
    with ThreadPoolExecutor(20) as pool:
        with slow_authentication(cluster) as waiting:
            answers = [pool.submit(cluster.call, "POST", f"/nonconformances/{nc_id}/assign",
                                   "eng-a", body={"assignee": f"tech-{i}"}, timeout=60)
                       for i in range(20)]
            deadline = time.monotonic() + 15
            while waiting() < POOL:  # every pooled connection is in a waiting request
                assert time.monotonic() < deadline, waiting()
                time.sleep(0.1)
        statuses = [answer.result().status_code for answer in answers]
    assert statuses == [200] * 20, statuses
    history = cluster.history(nc_id)
    assert [h["action"] for h in history] == ["raised"] + ["assign"] * 20
    assert_history_chain(history)
    assert_rows_match(cluster, nc_id, history)
