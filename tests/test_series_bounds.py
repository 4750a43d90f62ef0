"""Per-series caches are bounded (issue 12, item 9): `Recent`, the buffer's series ids and
line heads, the line serializer's prefixes; and `accept_unknown_assets` in site.yaml."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.buffer import SERIES_CACHE, Buffer
from agent.tsdb import LineSerializer
from collector.reading import Reading
from common.recent import Recent
from tests.buffer_contents import stored

MANY = 2 * SERIES_CACHE + 5_000  # more series than the caches may hold


def test_recent_keeps_its_working_set_and_forgets_the_rest() -> None:
    cache: Recent[int, str] = Recent(100)
    for key in range(10_000):
        cache[key] = str(key)
        assert len(cache) <= 200
    assert cache.get(0) is None  # long unused: forgotten
    assert cache.get(9_999) == "9999"
    working = Recent[int, int](100)
    for key in range(100):
        working[key] = key
    for round_ in range(50):  # a set of 100 keys in use, new keys passing through
        for key in range(100):
            assert working.get(key) == key
        working[1_000 + round_] = round_
    assert working.pop(5) == 5 and working.get(5) is None


def reading(n: int) -> Reading:
    return Reading(f"asset-{n}", "power", float(n), 1_700_000_000.0 + n, source=f"mqtt:t/{n}")


def test_buffer_series_ids_are_bounded_and_every_line_keeps_its_head(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "buffer.db")
    serializer = LineSerializer("patrol", "site-1", {})
    for start in range(0, MANY, 5_000):
        buffer.put([reading(n) for n in range(start, min(start + 5_000, MANY))])
    assert len(buffer._series) <= 2 * SERIES_CACHE
    assert len(buffer._series_by_id) <= 2 * SERIES_CACHE
    # The oldest series are no longer cached: their heads and keys come from the file.
    batch = buffer.line_batch(MANY, 0, serializer.head)
    assert batch is not None and batch.count == MANY
    lines = batch.body.decode().split("\n")
    assert lines[0].startswith("patrol,asset=asset-0,metric=power,site=site-1,source=mqtt:t/0 ")
    assert all(f"asset=asset-{n}," in line for n, line in enumerate(lines))
    first = stored(buffer, 1)[0].reading
    assert (first.asset, first.source) == ("asset-0", "mqtt:t/0")
    (row,) = buffer.rows(1)
    assert buffer.series(row[1]) == ("asset-0", "power", "", "mqtt:t/0")
    assert len(buffer._series_by_id) <= 2 * SERIES_CACHE
    # A series seen again after it was forgotten keeps its id (no second row).
    buffer.put([reading(0)])
    assert buffer._db.execute("SELECT count(*) FROM series").fetchone()[0] == MANY
    assert len(serializer._prefix) <= 2 * SERIES_CACHE
    buffer.close()


def test_buffer_reopened_with_more_series_than_it_caches(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "buffer.db")
    buffer.put([reading(n) for n in range(MANY)])
    buffer.close()
    again = Buffer(tmp_path / "buffer.db")
    assert len(again._series) <= 2 * SERIES_CACHE
    again.put([reading(1)])  # an old series, not cached: found in the file
    assert again._db.execute("SELECT count(*) FROM series").fetchone()[0] == MANY
    batch = again.line_batch(10, MANY, LineSerializer("patrol", "s", {}).head)
    assert batch is not None and b"asset=asset-1," in batch.body
    again.close()


SITE = """\
site: {id: plant}
assets: [{id: m-1, type: meter}]
mqtt:
  url: mqtt://127.0.0.1:1883
  subscriptions:
    - topic: meters/{asset}/{metric}
      format: number
      accept_unknown_assets: true
"""


def test_check_accepts_accept_unknown_assets_and_the_schema_has_it(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    check = subprocess.run([sys.executable, "-m", "agent.cli", "check", "-c", str(site)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    site.write_text(SITE.replace("accept_unknown_assets: true", "accept_unknown_assets: maybe"))
    check = subprocess.run([sys.executable, "-m", "agent.cli", "check", "-c", str(site)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and "accept_unknown_assets" in check.stdout + check.stderr
    schema = subprocess.run([sys.executable, "-m", "agent.cli", "schema"], capture_output=True,
                            text=True, timeout=60, check=True)
    subscription = json.loads(schema.stdout)["$defs"]["Subscription"]["properties"]
    assert subscription["accept_unknown_assets"]["type"] == "boolean"
