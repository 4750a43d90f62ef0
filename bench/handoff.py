"""python -m bench.handoff [--changes N] [--deliver M] [--endpoints K] [--postgresql URL]:
how fast NC changes leave Patrol, by the feed and by webhooks.

- changes: N NC changes made through the service layer (raise, then acknowledge, assign,
  start, rectify), each recorded with its history entry and feed row, in batches.
- feed: every change read back over HTTP from a uvicorn server, `GET /api/v1/feed` pages of
  1,000 (and, for scale, the same rows read in process without HTTP).
- webhooks: K webhooks, each to its own local receiver (a separate process answering 204
  at once), the dispatcher running in the API's lifespan as in `patrol api`; each webhook
  gets the last M changes, so K x M deliveries.
- breakdown: the dispatcher's steps (fan-out, claim, send, settle) timed one by one on
  another K x M deliveries, to show where a delivery's time goes.

SQLite in a temporary directory by default; `--postgresql URL` uses a fresh schema there.
Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvicorn
from sqlalchemy import func, select, update

from api.app import create_app
from api.auth import Principal, create_token
from api.lifecycle import perform, transition
from api.schemas import ActionBody
from api.service import SYSTEM_ACTOR, feed_after
from api.store import Database, Delivery, FeedEvent, Nonconformance, Webhook
from api.webhooks import (
    UrlChecks,
    _claim,
    _fan_out,
    _settle_all,
    new_secret,
    parse_allow,
    send,
)

TARGET = 1000.0  # webhook deliveries per second with 4 endpoints
STEPS = [("acknowledge", ActionBody()), ("assign", ActionBody(assignee="li.wei")),
         ("start", ActionBody()), ("rectify", ActionBody(action="replaced the valve"))]
STANDARD_INFO = {"title": "Chilled water supply 6-8 degC", "severity": "major",
                 "department": "engineering", "rectify_within": 86400.0}


# --- receivers: a separate process, so they do not share the dispatcher's GIL ---------


async def _serve_204(counter: Any) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                with counter.get_lock():
                    counter.value += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)


def _receivers(counters: list[Any], ports: Any, stop: Any) -> None:
    async def main() -> None:
        servers = [await _serve_204(counter) for counter in counters]
        for server in servers:
            ports.put(server.sockets[0].getsockname()[1])
        await asyncio.to_thread(stop.wait)

    asyncio.run(main())


@contextlib.contextmanager
def receivers(count: int) -> Iterator[tuple[list[int], list[Synchronized[int]]]]:
    """`count` HTTP receivers answering 204 at once: (ports, request counters)."""
    context = multiprocessing.get_context("spawn")
    counters = [context.Value("q", 0) for _ in range(count)]
    ports, stop = context.Queue(), context.Event()
    process = context.Process(target=_receivers, args=(counters, ports, stop), daemon=True)
    process.start()
    try:
        yield [ports.get(timeout=30) for _ in range(count)], counters
    finally:
        stop.set()
        process.join(5)


# --- the database and the server ------------------------------------------------------


@contextlib.contextmanager
def database(postgresql: str | None) -> Iterator[Database]:
    if postgresql is None:
        with tempfile.TemporaryDirectory() as directory:
            db = Database(f"sqlite:///{Path(directory) / 'patrol.sqlite'}")
            yield db
            db.close()
        return
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgresql, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        db = Database(f"{postgresql}?options=-csearch_path%3D{schema}")
        yield db
        db.close()
    finally:
        with psycopg.connect(postgresql, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def api_server(db: Database, *, jobs: bool) -> Iterator[str]:
    """`create_app` under uvicorn in a thread, as `patrol api` runs it; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(db, jobs=jobs, webhooks_allow=["127.0.0.0/8"])  # local receivers
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


# --- the three measures ---------------------------------------------------------------


def make_changes(db: Database, n: int) -> float:
    """n NC changes through the service layer; returns changes per second."""
    ncs = max(1, n // (1 + len(STEPS)))
    principal = Principal(1, "bench", "admin")
    at = datetime.now(UTC) - timedelta(hours=1)
    started = time.perf_counter()
    pks: list[int] = []
    made = 0
    with db.write() as session:
        for i in range(ncs):
            nc = Nonconformance(
                site_id=f"site-{i % 4}", asset_id=f"CH-{i}", standard_id="HVAC-CHW-SUPPLY",
                standard_version=1, metric="chw_supply_temp", title=STANDARD_INFO["title"],
                clause="O&M 4.2", category="equipment", severity="major",
                department="engineering", condition="violating", detected_at=at,
                due_at=at + timedelta(days=1),
                source="auto", standard_info=STANDARD_INFO,
                evidence={"value": 9.4, "limit": {"min": 6, "max": 8},
                          "readings": [[at.isoformat(), 9.4]] * 5})
            transition(session, nc, "raise", SYSTEM_ACTOR, at)
            pks.append(nc.pk)
            made += 1
            if made % 1000 == 0:
                session.commit()
        for name, body in STEPS:
            for pk in pks:
                if made >= n:
                    break
                perform(session, pk, name, body, principal)
                made += 1
                if made % 1000 == 0:
                    session.commit()
        session.commit()
    return made / (time.perf_counter() - started)


def read_feed(db: Database, total: int) -> tuple[float, float]:
    """(events/s over HTTP in pages of 1,000, events/s in process) for the whole feed."""
    with db.session() as session:
        token = create_token(session, name=f"bench-{uuid.uuid4().hex[:6]}", role="tracker")
    with api_server(db, jobs=False) as url, httpx.Client(base_url=url, headers={
            "Authorization": f"Bearer {token}"}, timeout=60) as client:
        started = time.perf_counter()
        after = read = 0
        while True:
            page = client.get("/api/v1/feed", params={"after": after, "limit": 1000})
            page.raise_for_status()
            body = page.json()
            if not body["events"]:
                break
            read += len(body["events"])
            after = body["next"]
        http = read / (time.perf_counter() - started)
    assert read == total, (read, total)
    started = time.perf_counter()
    after = 0
    with db.session() as session:
        while rows := feed_after(session, after, 1000):
            after = rows[-1].seq
    return http, total / (time.perf_counter() - started)


def add_webhooks(db: Database, ports: list[int], last: int) -> list[int]:
    """One webhook per port, each to get the last `last` feed events."""
    with db.write() as session:
        top = session.scalar(select(func.max(FeedEvent.seq))) or 0
        hooks = [Webhook(url=f"http://127.0.0.1:{port}/hook", event_types=[],
                         secret=new_secret(), cursor=max(0, top - last)) for port in ports]
        session.add_all(hooks)
        session.commit()
        return [hook.id for hook in hooks]


def deliver(db: Database, endpoints: int, last: int) -> tuple[float, float, int]:
    """(deliveries/s end to end, seconds to the first, deliveries) through the dispatcher
    in the API's lifespan."""
    with receivers(endpoints) as (ports, counters):
        add_webhooks(db, ports, last)
        expected = endpoints * min(last, _feed_size(db))
        started = time.perf_counter()
        first = 0.0
        with api_server(db, jobs=True):
            while (done := sum(c.value for c in counters)) < expected:
                if done and not first:
                    first = time.perf_counter() - started
                if time.perf_counter() - started > 900:
                    raise RuntimeError(f"only {done} of {expected} delivered in 900 s")
                time.sleep(0.05)
            seconds = time.perf_counter() - started
    with db.session() as session:
        delivered = session.scalar(select(func.count()).select_from(Delivery)
                                   .where(Delivery.status == "delivered"))
    assert delivered >= expected, (delivered, expected)
    return expected / seconds, first, expected


def _feed_size(db: Database) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(FeedEvent)) or 0


def breakdown(db: Database, endpoints: int, last: int) -> dict[str, float]:
    """Milliseconds per delivery in each step of the dispatcher, run one step at a time."""
    with db.write() as session:  # the earlier webhooks are done: keep them out of the way
        session.execute(update(Webhook).values(disabled_at=datetime.now(UTC),
                                               disabled_reason="bench"))
        session.commit()
    spent = {"fan_out": 0.0, "claim": 0.0, "send": 0.0, "settle": 0.0}
    count = 0
    with receivers(endpoints) as (ports, _):
        add_webhooks(db, ports, last)

        async def run() -> int:
            nonlocal count
            async with aiohttp.ClientSession() as client:
                limit = asyncio.Semaphore(32)
                checks = UrlChecks(allow_private=False, allow=parse_allow(["127.0.0.0/8"]))

                async def one(claimed: Any) -> Any:
                    async with limit:
                        return await send(client, claimed, checks)

                while True:
                    t0 = time.perf_counter()
                    await asyncio.to_thread(_fan_out, db.write)
                    t1 = time.perf_counter()
                    claimed = await asyncio.to_thread(_claim, db.write)
                    t2 = time.perf_counter()
                    if not claimed:
                        return count
                    outcomes = await asyncio.gather(*(one(c) for c in claimed))
                    t3 = time.perf_counter()
                    await asyncio.to_thread(_settle_all, db.write, [
                        (c.delivery_id, o) for c, o in zip(claimed, outcomes, strict=True)])
                    t4 = time.perf_counter()
                    for step, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3),
                                             strict=True):
                        spent[step] += seconds
                    count += len(claimed)

        asyncio.run(run())
    return {step: 1000 * seconds / max(count, 1) for step, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.handoff",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--deliver", type=int, default=2_500,
                        help="changes each webhook gets (the last ones)")
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--postgresql", metavar="URL",
                        help="e.g. postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    with database(args.postgresql) as db:
        backend = "PostgreSQL" if args.postgresql else "SQLite"
        print(f"handoff bench on {backend}")
        rate = make_changes(db, args.changes)
        total = _feed_size(db)
        print(f"  changes: {total:,} recorded (NC + history + feed row) at {rate:,.0f}/s")
        http, local = read_feed(db, total)
        print(f"  feed: {http:,.0f} events/s over HTTP in pages of 1,000 "
              f"({local:,.0f} events/s read in process, no HTTP)")
        rate, first, count = deliver(db, args.endpoints, args.deliver)
        verdict = "meets" if rate >= TARGET else "below"
        print(f"  webhooks: {count:,} deliveries to {args.endpoints} endpoints at "
              f"{rate:,.0f}/s ({verdict} the {TARGET:,.0f}/s target); first after "
              f"{first:.2f}s")
        steps = breakdown(db, args.endpoints, args.deliver)
        total_ms = sum(steps.values())
        print(f"  dispatcher steps, one at a time: {1000 / total_ms:,.0f} deliveries/s; "
              "ms per delivery: " + ", ".join(f"{k} {v:.3f}" for k, v in steps.items()))


if __name__ == "__main__":
    main()
