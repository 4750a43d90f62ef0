"""python -m bench.console [--quick] [--backend sqlite|postgresql] [--requests N]

The console's pages over a big NC store: 100,000 NCs and 1,000,000 history rows
(bench.api's fill, `--quick`: 10,000), one uvicorn worker serving the app in a subprocess,
and a signed-in person (a session cookie, as a browser holds) asking, one request at a
time:

- the NC list `/ncs` (the first page of 50, newest first),
- the list filtered `/ncs?state=open&severity=major`,
- a page ten pages down the same list (`&cursor=...`),
- a search of the list (`?text=AHU-00042 supply`: words in the id, title, asset...),
- one NC's page `/ncs/NC-...` (summary, evidence, forms, history).

Prints p50 and p95 latency per page (ms, loopback HTTP included, so an upper bound on
the server's time) and the page's size. Target: the NC list's p95 < 150 ms at 100,000 NCs.
PostgreSQL: `$PATROL_BENCH_PG` (default the local `test` database), a fresh schema
dropped afterwards.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from api.console.users import add_user
from api.store import Database, make_engine
from bench.api import database, fill, server

PASSWORD = "bench-password"
TARGET_MS = 150.0


def sign_in(client: httpx.Client) -> None:
    form = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf, form
    answer = client.post("/login", data={"name": "bench", "password": PASSWORD,
                                         "csrf": csrf.group(1)})
    assert answer.status_code == 200 and "/ncs" in str(answer.url), answer.text[:500]


def timed(client: httpx.Client, path: str, n: int) -> tuple[float, float, int]:
    """p50 and p95 in ms of `n` GETs of `path`, and the page's bytes."""
    times, size = [], 0
    for _ in range(n):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
        size = len(answer.content)
    return statistics.median(times), statistics.quantiles(times, n=20)[-1], size


def run(backend: str, quick: bool, requests: int) -> None:
    n = 10_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as directory, database(backend, Path(directory)) as url:
        Database(url).close()  # migrated
        engine = make_engine(url)
        seconds = fill(engine, n)
        engine.dispose()
        db = Database(url)
        with db.write() as session:
            add_user(session, name="bench", password=PASSWORD, role="quality")
            session.commit()
        db.close()
        print(f"{backend}: {n:,} NCs with history in {seconds:.0f} s", flush=True)
        with server(url, Path(directory)) as (base, _pid), \
                httpx.Client(base_url=base, follow_redirects=True, timeout=30) as client:
            sign_in(client)
            first = client.get("/ncs?state=open&severity=major").text
            cursor = re.search(r'href="(/ncs\?[^"]*cursor=[^"]+)"', first)
            path = cursor.group(1).replace("&amp;", "&") if cursor else "/ncs"
            for _ in range(9):
                page = client.get(path).text
                found = re.search(r'href="(/ncs\?[^"]*cursor=[^"]+)"', page)
                path = found.group(1).replace("&amp;", "&") if found else path
            nc = re.search(r'data-id="(NC-\d+)"', first)
            cases = [("list", "/ncs"), ("filtered", "/ncs?state=open&severity=major"),
                     ("ten pages down", path), ("search", "/ncs?text=AHU-00042+supply"),
                     ("one NC", f"/ncs/{nc.group(1)}" if nc else "/ncs")]
            for name, target in cases:
                timed(client, target, 5)  # warm
                p50, p95, size = timed(client, target, requests)
                flag = "" if name != "list" or p95 < TARGET_MS else f"  OVER {TARGET_MS:g} ms"
                print(f"  {backend:10} {name:15} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms   "
                      f"{size / 1024:5.1f} KB{flag}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    for backend in args.backend or ("sqlite", "postgresql"):
        run(backend, args.quick, args.requests)


if __name__ == "__main__":
    main()
