"""The buffer file's tables, how a value is stored, and the migration of older files."""

from __future__ import annotations

import logging
import sqlite3

from agent.lineprotocol import sql_line, value_text

log = logging.getLogger("patrol.buffer")

READINGS = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    series INTEGER NOT NULL, ts REAL NOT NULL,
    value,  -- no type, so no affinity: text (finite, exact), real (+-inf), NULL (NaN)
    bad TEXT
)"""

SCHEMA = READINGS + """;
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    asset TEXT NOT NULL, metric TEXT NOT NULL, unit TEXT NOT NULL, source TEXT NOT NULL,
    UNIQUE (asset, metric, unit, source)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL, line TEXT NOT NULL, error TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'reading'  -- reading: line protocol; event: the event's JSON
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, body TEXT NOT NULL);
"""

SCHEMA_VERSION = 2
"""PRAGMA user_version; 0/1 held readings.value as REAL (migrated on open)."""

HEADS = "CREATE TEMP TABLE IF NOT EXISTS heads (series INTEGER PRIMARY KEY, head TEXT NOT NULL)"
"""Each series' line protocol head (measurement and tags), for `LINES`; per connection."""

LINES = f"""
SELECT count(*), count(line), min(id), max(id), CAST(group_concat(line, char(10)) AS BLOB)
FROM (
    SELECT r.id AS id, {sql_line("h.head", "r.value", "r.bad", "r.ts")} AS line
    FROM readings AS r LEFT JOIN temp.heads AS h ON h.series = r.series
    WHERE r.id > ? ORDER BY r.id LIMIT ?)
"""
"""One batch of line protocol built by SQLite, as UTF-8 bytes (`agent.lineprotocol`).
group_concat follows the order of the subquery's rows (a LIMIT subquery is not flattened)."""


stored_value = value_text
"""How a reading's value is stored: exact text, +-inf as a real, NaN as NULL (the line
protocol's own rule, so SQLite never formats a float)."""


def migrate(db: sqlite3.Connection) -> None:
    """Bring a buffer written by an older Patrol to SCHEMA_VERSION, keeping every reading."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    columns = {row[1]: row[2] for row in db.execute("PRAGMA table_info(readings)")}
    db.execute("BEGIN IMMEDIATE")
    try:
        if columns.get("value") == "REAL":  # version 1: values as reals, NaN as NULL
            db.execute("ALTER TABLE readings RENAME TO readings_v1")
            db.execute(READINGS)
            old = db.execute("SELECT id, series, ts, value, bad FROM readings_v1 ORDER BY id")
            while chunk := old.fetchmany(10_000):
                db.executemany(
                    "INSERT INTO readings (id, series, ts, value, bad) VALUES (?, ?, ?, ?, ?)",
                    [(i, s, ts, None if v is None else stored_value(v), b)
                     for i, s, ts, v, b in chunk])
            db.execute("DROP TABLE readings_v1")
            log.info("buffer: converted the stored readings to schema version %d",
                     SCHEMA_VERSION)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
