"""python -m bench.reports [--quick] [--backend sqlite|postgresql] [--repeat N]

The compliance report (`GET /api/v1/reports/compliance`) over a year: 1,000 (asset,
standard) pairs (100 assets x 10 standards), 100,030 NCs detected in the reported year
(the issue's 100,000; until 2026-12-04 the bench made 82,398) and as many in the year
before (the previous period the report sets beside it), each with its history through
the lifecycle, and 730 days of compliance seconds per pair
(730,000 `compliance_days` rows, and their monthly roll-up `compliance_months`, written by
api.ingest.add_seconds as snapshots write them). The store is filled by
tests/reports_seed.py (the generator the report tests check every figure against), in
bulk, then analysed (`ANALYZE`, as a running PostgreSQL's autovacuum would; SQLite's
planner is left as is).

Timed: the whole request through the app in process (ASGI test client, so JSON encoding
included), for each grouping; then CSV and XLSX for one. Prints the best of `--repeat`
runs (default 3) per case, and the median. Target: < 1 s per report on both databases.
`--quick`: 10,000 NCs a year. PostgreSQL: `$PATROL_BENCH_PG` (default the local `test`
database) in a fresh schema, dropped afterwards; SQLite in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from api.auth import create_token
from api.store import Database
from bench.api import database
from common.sqlite_tuning import without_memory_statistics
from tests.reports_seed import Spec, catalog, seed

END = datetime(2026, 12, 1, tzinfo=UTC)
WINDOW = {"from": "2025-12-01", "to": "2026-11-30"}
"""The reported year (site time, Asia/Shanghai); the previous period is the year before."""
GROUPINGS = ("site", "standard", "department", "asset", "root_cause", "month")
TARGET = 1.0


def spec(quick: bool) -> Spec:
    return Spec(end=END, days=730, assets=100, standards=10, standards_per_asset=10,
                ncs_per_pair=20.0 if quick else 310.0, bursts=40, pace=0.2,
                manual_per_asset=1.0, seed=7)


def run(backend: str, quick: bool, repeat: int) -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory() as directory, database(backend, Path(directory)) as url:
        db = Database(url)
        started = time.perf_counter()
        counts = seed(db, spec(quick))
        if backend == "postgresql":  # as autovacuum would: statistics, and the visibility
            # map that lets a report read ix_nc_report alone (an index-only scan)
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        with db.engine.begin() as conn:
            in_year = conn.execute(text(
                "SELECT count(*) FROM nonconformances WHERE detected_at >= :a"),
                {"a": datetime(2025, 11, 30, 16, tzinfo=UTC)}).scalar()
        print(f"{backend}: seeded {counts['ncs']:,} NCs ({in_year:,} in the reported year), "
              f"{counts['history']:,} history rows, {counts['compliance_days']:,} "
              f"compliance days in {time.perf_counter() - started:.0f} s")
        if backend == "sqlite":  # as api.store left them at import (docs/reports.md)
            print("sqlite: memory statistics "
                  f"{'off' if without_memory_statistics() else 'ON (reads on threads queue)'}")
        assets, _ = catalog(spec(quick))
        app = create_app(db, assets={a.id: a.type for a in assets},
                         timezone="Asia/Shanghai")
        with db.session() as session:
            token = create_token(session, name="bench", role="tracker")
        results = []
        with TestClient(app) as client:
            cases = [(g, {"group_by": g}) for g in GROUPINGS] + [
                ("department csv", {"group_by": "department", "format": "csv"}),
                ("department xlsx", {"group_by": "department", "format": "xlsx"})]
            for name, params in cases:
                times = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    response = client.get("/api/v1/reports/compliance",
                                          params={**WINDOW, **params},
                                          headers={"Authorization": f"Bearer {token}"})
                    times.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                best, median = min(times), statistics.median(times)
                flag = "" if best < TARGET else f"  OVER {TARGET:g} s"
                print(f"  {backend:10} {name:16} best {best * 1000:6.0f} ms   "
                      f"median {median * 1000:6.0f} ms{flag}", flush=True)
                results.append((name, best))
        db.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for backend in args.backend or ("sqlite", "postgresql"):
        run(backend, args.quick, args.repeat)


if __name__ == "__main__":
    main()
