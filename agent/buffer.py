"""The agent's durable store: readings queue and NC event outbox in one SQLite file (WAL).

Readings and the events they caused are written in one transaction, so a crash keeps
both or neither. `synchronous=FULL`: a commit that returned is on disk, so what was
acknowledged to a source survives a power cut.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from collector.reading import Reading

log = logging.getLogger("patrol.buffer")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL, asset TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
    bad TEXT, unit TEXT NOT NULL DEFAULT '', source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
"""


class Buffer:
    """Single-writer store; every method runs on the caller's thread, quickly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def put(self, readings: Sequence[Reading], events: Iterable[dict[str, Any]] = ()) -> None:
        """Store readings and events in one transaction (an event already queued is kept)."""
        rows = [(r.ts, r.asset, r.metric, None if r.value != r.value else r.value,
                 None if r.quality.good else r.quality.reason, r.unit, r.source)
                for r in readings]
        bodies = [(e["id"], json.dumps(e, separators=(",", ":"))) for e in events]
        if not rows and not bodies:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO readings (ts, asset, metric, value, bad, unit, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox (event_id, body) VALUES (?, ?)", bodies)

    def pending_events(self, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """The oldest undelivered events, in the order they were raised."""
        cursor = self._db.execute("SELECT seq, body FROM outbox ORDER BY seq LIMIT ?", (limit,))
        return [(seq, json.loads(body)) for seq, body in cursor]

    def ack_events(self, up_to_seq: int) -> None:
        """Delivered: forget every event up to and including `up_to_seq`."""
        with self._transaction():
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,))

    def count(self) -> dict[str, int]:
        readings = self._db.execute("SELECT count(*) FROM readings").fetchone()[0]
        events = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return {"readings": readings, "events": events}

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
