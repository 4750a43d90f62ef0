"""python -m bench.api [--quick] [--backend sqlite|postgresql] [--threads N] [--seconds S]

The REST API under load over a big NC store: 100,000 NCs and 1,000,000 history rows,
bulk-inserted with SQLAlchemy core (not through the API) into the schema `Database(url)`
migrated. One uvicorn worker serves `create_app(Database(url))` in a subprocess; client
threads (http.client, one keep-alive connection each) measure, on SQLite and on PostgreSQL:

- the filtered list `GET /api/v1/nonconformances?state=open&severity=major&limit=50`,
- a page further down the same list (`&cursor=...`, ten pages in),
- an action: `assign` with alternating assignees, each request on another open NC;
- `GET /api/v1/compliance` over 1,000 (asset, standard) pairs with 365 days of seconds each
  (365,000 `compliance_days` rows, whatever `--quick` says): the default answer (first page
  of 100 pairs, the last 30 days), the same page over the whole year, and all 1,000 pairs
  in one page (`limit=1000`) over the last 30 days.

Prints per case: requests/s, p50 / p99 latency (ms) and the server process's CPU time
per request (`cpu ms`: its capacity on one core, whatever else the machine runs; the
database server's own CPU is not in it). Targets: list p99 < 50 ms, actions >= 300/s,
compliance p99 < 50 ms. `--case` runs only the cases named (default: all).
`--quick`: 10,000 NCs and 100,000 history rows, shorter runs. PostgreSQL:
`$PATROL_BENCH_PG` (default the local `test` database), in a fresh schema dropped
afterwards. The API's background jobs are off (they would only add noise).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI
from sqlalchemy import (
    Engine,
    insert,
    literal,
    literal_column,
    select,
    text,
    true,
    union_all,
)

from api.app import create_app
from api.auth import create_token
from api.store import (
    Compliance,
    ComplianceDay,
    Database,
    HistoryEntry,
    Nonconformance,
    derived,
    make_engine,
)
from api.workflow import OPEN_STATES
from bench.servers import free_port

POSTGRES = os.environ.get("PATROL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
HISTORY_PER_NC = 10
STANDARDS = 20
STATES = (["open"] * 30 + ["acknowledged"] * 10 + ["rectifying"] * 10
          + ["pending_verification"] * 5 + ["closed"] * 40 + ["cancelled"] * 5)
SEVERITIES = ["minor"] * 40 + ["major"] * 45 + ["critical"] * 15
LIST = "/api/v1/nonconformances?state=open&severity=major&limit=50"
PAIRS = 1000
"""(asset, standard) pairs with compliance seconds: 50 assets x STANDARDS standards."""
DAYS = 365
COMPLIANCE = "/api/v1/compliance"
CASES = ("list", "cursor", "assign", "compliance")


def app() -> FastAPI:
    """uvicorn's factory (`bench.api:app --factory`): the API over $PATROL_BENCH_DB."""
    return create_app(Database(os.environ["PATROL_BENCH_DB"]))


# --- the data ---------------------------------------------------------------------------


def nc_rows(n: int, now: datetime) -> Iterator[list[dict[str, Any]]]:
    """n NCs in chunks, one per (asset, standard), detected over the past year, newest last."""
    step = timedelta(days=365) / n
    chunk: list[dict[str, Any]] = []
    for i in range(n):
        state = STATES[(i * 7) % len(STATES)]
        detected = now - (n - i) * step
        chunk.append({
            "site_id": f"site-{i % 10}", "asset_id": f"AHU-{i // STANDARDS:05d}",
            "standard_id": f"STD-{i % STANDARDS:02d}", "standard_version": 1,
            "metric": "supply_air_temp", "title": "Supply air temperature 14-18 degC",
            "clause": "BMS 3.1", "category": "equipment",
            "severity": SEVERITIES[(i * 13) % len(SEVERITIES)], "department": "engineering",
            "assignee": None, "description": None, "state": state,
            "open_slot": "open" if state in OPEN_STATES else None,
            "condition": "violating" if state in OPEN_STATES else "normal",
            "detected_at": detected, "cleared_at": None, "due_at": detected + timedelta(days=1),
            "closed_at": detected + timedelta(hours=5) if state == "closed" else None,
            "occurrences": 1, "reopen_count": 0, "recurring": False, "source": "auto",
            "evidence": {"value": 21.5, "limit": {"min": 14, "max": 18},
                         "readings": [[detected.isoformat(), 21.5]]},
            "rectification": None, "verification": None, "external_ref": None,
            "standard_info": {"title": "Supply air temperature 14-18 degC",
                              "severity": "major", "verify_for": 3600.0},
            "rectified_at": None, "rectified_by": None, "overdue_notified": True,
            "updated_at": detected, "version": 1,
        })
        if len(chunk) == 5000:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def fill(engine: Engine, n: int) -> float:
    """Bulk-insert n NCs and HISTORY_PER_NC history rows each; returns the seconds taken."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for chunk in nc_rows(n, now):
            conn.execute(insert(Nonconformance), [row | derived(row) for row in chunk])
        # history in the database itself: every NC times a small table of numbers
        numbers = union_all(*[select(literal(k).label("k")) for k in range(HISTORY_PER_NC)])
        empty = "'{}'::json" if engine.dialect.name == "postgresql" else "'{}'"
        ncs = Nonconformance.__table__
        conn.execute(insert(HistoryEntry).from_select(
            ["nc_pk", "at", "actor", "role", "action", "from_state", "to_state", "changes",
             "note"],
            select(ncs.c.pk, ncs.c.detected_at, literal("patrol"), literal("system"),
                   literal("occurrence"), ncs.c.state, ncs.c.state, literal_column(empty),
                   literal("bench"))
            .select_from(ncs.join(numbers.subquery("numbers"), true()))))
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


def fill_compliance(engine: Engine, today: date) -> float:
    """PAIRS pairs, each with DAYS days of seconds up to today; returns the seconds taken."""
    started = time.perf_counter()
    pairs = [(f"site-{a % 10}", f"AHU-{a:05d}", f"STD-{s:02d}")
             for a in range(PAIRS // STANDARDS) for s in range(STANDARDS)]
    with engine.begin() as conn:
        conn.execute(insert(Compliance), [
            {"site_id": site, "asset_id": asset, "standard_id": standard,
             "standard_version": 1, "state": "ok", "updated_at": datetime.now(UTC)}
            for site, asset, standard in pairs])
        chunk: list[dict[str, Any]] = []
        for back in range(DAYS):
            day = (today - timedelta(days=back)).isoformat()
            for i, (site, asset, standard) in enumerate(pairs):
                violating = float((i * 37 + back * 11) % 600)
                chunk.append({"site_id": site, "asset_id": asset, "standard_id": standard,
                              "day": day, "ok": 86400.0 - violating - 60.0,
                              "violating": violating, "no_data": 60.0, "inactive": 0.0})
            if len(chunk) >= 10_000:
                conn.execute(insert(ComplianceDay), chunk)
                chunk = []
        if chunk:
            conn.execute(insert(ComplianceDay), chunk)
        conn.execute(text("ANALYZE"))
    if engine.dialect.name == "postgresql":  # as autovacuum leaves a table after inserts
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE compliance_days"))
    return time.perf_counter() - started


@contextmanager
def database(backend: str, directory: Path) -> Iterator[str]:
    """A new, empty database URL for `backend`, dropped afterwards (PostgreSQL)."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'bench.sqlite'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- the server and the load ------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(url: str, directory: Path) -> Iterator[tuple[str, int]]:
    """One uvicorn worker serving the API over `url`; yields its base URL and pid."""
    port = free_port()
    log = (directory / f"uvicorn-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.api:app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"],
        env={**os.environ, "PATROL_BENCH_DB": url}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start:\n{Path(log.name).read_text()}")
            time.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@dataclass
class Result:
    name: str
    latencies: list[float]
    errors: int
    seconds: float
    cpu: float = 0.0
    """CPU seconds the server process used meanwhile."""

    def line(self, backend: str, threads: int) -> str:
        ms = sorted(x * 1000 for x in self.latencies)
        p50 = statistics.median(ms) if ms else float("nan")
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan")
        rate = len(ms) / self.seconds if self.seconds else 0.0
        cpu = self.cpu * 1000 / len(ms) if ms else float("nan")
        return (f"{backend:<11} {self.name:<18} {threads:>4} {len(ms):>8} {rate:>7.0f} "
                f"{p50:>7.1f} {p99:>7.1f} {cpu:>7.1f} {self.errors:>6}")


class Client:
    """A keep-alive HTTP/1.1 client on the standard library's http.client: a tenth of
    httpx's CPU per request, so clients sharing the machine's cores take little from the
    server being measured."""

    def __init__(self, base: str, token: str) -> None:
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname or "", parts.port,
                                                     timeout=30)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> int:
        return self._request("GET", path, None, self.headers)

    def post(self, path: str, body: dict[str, Any]) -> int:
        return self._request("POST", path, json.dumps(body).encode(),
                             {**self.headers, "Content-Type": "application/json"})

    def _request(self, method: str, path: str, body: bytes | None,
                 headers: dict[str, str]) -> int:
        self.connection.request(method, path, body, headers)
        response = self.connection.getresponse()
        response.read()
        return response.status

    def close(self) -> None:
        self.connection.close()


def load(name: str, threads: int, seconds: float, base: str, pid: int, token: str,
         request: Callable[[Client, int, int], int]) -> Result:
    """`threads` clients calling `request(client, thread, i)` for `seconds` each."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    barrier = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        client = Client(base, token)
        try:
            for i in range(3):  # warm the connection and the server's caches
                request(client, t, -1 - i)
            barrier.wait()
            end, i = time.perf_counter() + seconds, 0
            while (start := time.perf_counter()) < end:
                status = request(client, t, i)
                latencies[t].append(time.perf_counter() - start)
                errors[t] += status != 200
                i += 1
        finally:
            client.close()

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started, cpu = time.perf_counter(), cpu_seconds(pid)
    for w in workers:
        w.join()
    return Result(name, [x for per in latencies for x in per], sum(errors),
                  time.perf_counter() - started, cpu_seconds(pid) - cpu)


def bench(backend: str, n: int, threads: int, seconds: float,
          cases: tuple[str, ...] = CASES) -> None:
    with tempfile.TemporaryDirectory(prefix="patrol-bench-") as tmp, \
            database(backend, Path(tmp)) as url:
        db = Database(url)
        filled = fill(db.engine, n)
        today = datetime.now(UTC).date()
        if "compliance" in cases:
            spent = fill_compliance(db.engine, today)
            print(f"{backend}: {PAIRS:,} pairs x {DAYS} days of compliance "
                  f"({PAIRS * DAYS:,} rows) inserted in {spent:.1f} s", flush=True)
        with db.write() as session:
            token = create_token(session, name="bench", role="engineer")
        with db.session() as session:
            targets = [f"NC-{pk:06d}" for pk in session.scalars(
                select(Nonconformance.pk).where(Nonconformance.state.in_(OPEN_STATES))
                .order_by(Nonconformance.pk.desc()).limit(20_000))]
        db.close()
        print(f"{backend}: {n:,} NCs and {n * HISTORY_PER_NC:,} history rows inserted in "
              f"{filled:.1f} s", flush=True)
        with server(url, Path(tmp)) as (base, pid):
            headers = {"Authorization": f"Bearer {token}"}
            cursor = None
            for _ in range(10):
                page = httpx.get(base + LIST + (f"&cursor={cursor}" if cursor else ""),
                                 headers=headers, timeout=30).json()
                cursor = page["next_cursor"]
            deep = f"{LIST}&cursor={cursor}"
            per_thread = len(targets) // threads

            def listing(client: Client, _t: int, _i: int) -> int:
                return client.get(LIST)

            def paging(client: Client, _t: int, _i: int) -> int:
                return client.get(deep)

            round_ = [0]

            def assign(client: Client, t: int, i: int) -> int:
                """Each call another NC; the assignee alternates (and changes each round)."""
                nc_id = targets[t * per_thread + i % per_thread]
                who = ("tech-a", "tech-b")[(i + round_[0]) % 2]
                return client.post(f"/api/v1/nonconformances/{nc_id}/assign",
                                   {"assignee": who})

            year = f"{COMPLIANCE}?from={today - timedelta(days=DAYS - 1)}&to={today}"
            paths = {"compliance 30d": COMPLIANCE, "compliance 365d": year,
                     "compliance 1000x30": f"{COMPLIANCE}?limit={PAIRS}"}

            def getter(path: str) -> Callable[[Client, int, int], int]:
                return lambda client, _t, _i: client.get(path)

            runs = [(name, request) for case, name, request in (
                ("list", "list open+major", listing), ("cursor", "list cursor page", paging),
                ("assign", "assign", assign),
                *(("compliance", name, getter(path)) for name, path in paths.items()),
            ) if case in cases]
            for name, request in runs:
                for conc in sorted({1, threads}):
                    round_[0] += 1
                    result = load(name, conc, seconds, base, pid, token, request)
                    print(result.line(backend, conc), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 NCs, 3 s per case")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append",
                        help="default: both")
    parser.add_argument("--threads", type=int, default=4, help="concurrent clients")
    parser.add_argument("--seconds", type=float, help="per case (default 8, quick 3)")
    parser.add_argument("--case", choices=CASES, action="append",
                        help="only these cases (repeat it); default: all")
    args = parser.parse_args()
    n = 10_000 if args.quick else 100_000
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    print(f"one uvicorn worker, http.client clients on this machine ({os.cpu_count()} CPUs); "
          f"cases of {seconds:g} s at 1 and {args.threads} concurrent clients")
    print(f"{'backend':<11} {'case':<18} {'conc':>4} {'requests':>8} {'req/s':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'cpu ms':>7} {'errors':>6}", flush=True)
    for backend in args.backend or ["sqlite", "postgresql"]:
        bench(backend, n, args.threads, seconds, tuple(args.case or CASES))

if __name__ == "__main__":
    main()
