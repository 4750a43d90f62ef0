"""The agent's durable store: readings queue, NC event outbox and dead letters in one
SQLite file (WAL), written by one thread.

- Readings and the events they caused commit in one transaction: a crash keeps both or
  neither. `synchronous=FULL`: a commit that returned is on disk, so what was acknowledged
  to a source survives a power cut.
- Series (asset, metric, unit, source) are stored once and referenced by id, so a reading
  costs about 30 bytes on disk.
- A finite value is stored as its shortest exact decimal text (Python's repr, line
  protocol's float rule), so the TSDB writer has SQLite assemble whole batches of line
  protocol in C (`line_batch`): SQLite's own float-to-text keeps only 15 digits.
- Bounded by `max_size`: past it the oldest readings are dropped, counted and logged;
  the newest are always kept. Events and dead letters are never dropped.
- A disk that fills up first costs the oldest readings (their pages are reused); only when
  that cannot make room does `put` raise `BufferFull`, and the caller keeps the batch.
- A corrupt file is moved aside (`<name>.corrupt-<time>`) with an error in the log, and a
  fresh buffer takes its place: the agent keeps running.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from collector.reading import GOOD, Reading, bad
from collector.recent import Recent

log = logging.getLogger("patrol.buffer")

_READINGS = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    series INTEGER NOT NULL, ts REAL NOT NULL,
    value,  -- no type, so no affinity: text (finite, exact), real (+-inf), NULL (NaN)
    bad TEXT
)"""

_SCHEMA = _READINGS + """;
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

TRIM_MARGIN = 0.05
"""When over `max_size`, trim to this fraction below it, so trimming is not per batch."""

SCHEMA_VERSION = 2
"""PRAGMA user_version; 0/1 held readings.value as REAL (migrated on open)."""

_HEADS = "CREATE TEMP TABLE IF NOT EXISTS heads (series INTEGER PRIMARY KEY, head TEXT NOT NULL)"

_LINES = r"""
SELECT count(*), count(line), min(id), max(id), CAST(group_concat(line, char(10)) AS BLOB)
FROM (
    SELECT r.id AS id, CASE
        WHEN r.bad IS NULL AND typeof(r.value) = 'text'  -- the usual reading
        THEN h.head || 'quality=1i,value=' || r.value || ' '
             || CAST(round(r.ts * 1000) AS INTEGER)  -- not format(): %s stops at a NUL
        ELSE h.head
            || CASE WHEN r.bad IS NULL THEN 'quality=1i'
                    ELSE 'quality=0i,reason="'
                         || replace(replace(r.bad, '\', '\\'), '"', '\"') || '"' END
            || CASE WHEN typeof(r.value) = 'text' THEN ',value=' || r.value ELSE '' END
            || ' ' || CAST(round(r.ts * 1000) AS INTEGER)
        END AS line
    FROM readings AS r LEFT JOIN temp.heads AS h ON h.series = r.series
    WHERE r.id > ? ORDER BY r.id LIMIT ?)
"""
"""One batch of line protocol built by SQLite, as UTF-8 bytes: fields in key order as
influxdb-client writes them, the time rounded half away from zero (`to_ms`). group_concat
follows the order of the subquery's rows (a LIMIT subquery is not flattened)."""

SERIES_CACHE = 10_000
"""Series ids kept in memory (`Recent`: up to twice this); the rest are looked up in the
file, so a flood of new topics costs rows in `series`, not memory."""

T = TypeVar("T")
Row = tuple[int, int, float, float | None, str | None]
"""A stored reading as `rows` returns it: id, series id, ts, value (None: NaN), bad reason."""


class BufferFull(Exception):
    """Nothing could be dropped to make room: the disk itself is full."""


@dataclass(frozen=True, slots=True)
class LineBatch:
    """The oldest readings after some row, as one text of line protocol."""

    first: int
    last: int
    count: int
    """Readings in it: every stored row with first <= id <= last."""
    body: bytes
    """Their lines, UTF-8, one per reading, joined by newlines."""


Head = Callable[[tuple[str, str, str, str]], str]
"""(asset, metric, unit, source) -> the start of its lines: measurement, tags and a space."""


def stored_value(value: float) -> str | float | None:
    """How a reading's value is stored: exact text, +-inf as a real, NaN as NULL."""
    text = repr(float(value))  # float(): a numpy scalar's repr is not a number
    if text.endswith(".0"):
        return text[:-2]
    if text[-1] in "nf":  # nan, inf, -inf (a number's repr ends in a digit)
        return None if text == "nan" else float(value)
    return text


def loaded_value(value: str | float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True, slots=True)
class Stored:
    """A reading as the buffer holds it, with its row id (the queue position)."""

    id: int
    reading: Reading


class Buffer:
    """Single-writer store; every method runs on the caller's thread, quickly."""

    def __init__(self, path: Path, max_size: int = 10**9) -> None:
        self.path = path
        self.max_size = max_size
        self.dropped = 0
        """Readings dropped (oldest first) to stay under max_size, since this file began."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._series: Recent[tuple[str, str, str, str], int] = Recent(SERIES_CACHE)
        self._series_by_id: Recent[int, tuple[str, str, str, str]] = Recent(SERIES_CACHE)
        self._resolved: list[tuple[str, str, str, str]] = []  # by the open transaction
        self._head: Head | None = None
        self._db = self._open()

    # --- writing ----------------------------------------------------------------------

    def put(self, readings: Sequence[Reading], events: Iterable[dict[str, Any]] = (),
            state: tuple[str, Any] | None = None) -> None:
        """Store readings, events and (optionally) a named state in one transaction.

        The rules engine's state is saved with the events it raised, so a restart never
        raises an episode twice. An event already queued is kept as it is.
        """
        bodies = [(e["id"], json.dumps(e, separators=(",", ":"))) for e in events]
        if not readings and not bodies and state is None:
            return
        saved = None if state is None else (state[0], json.dumps(state[1],
                                                                  separators=(",", ":")))
        self._guard(lambda: self._put(readings, bodies, saved))
        self._enforce_size()

    def load_state(self, name: str) -> Any:
        """A state saved with `put(..., state=(name, ...))`, or None."""
        row = self._guard(lambda: self._db.execute("SELECT body FROM state WHERE name = ?",
                                                   (name,)).fetchone())
        return None if row is None else json.loads(row[0])

    def _put(self, readings: Sequence[Reading], bodies: list[tuple[str, str]],
             state: tuple[str, str] | None) -> None:
        try:
            self._insert(readings, bodies, state)
        except sqlite3.OperationalError as exc:
            if not _is_full(exc):
                raise
            # The disk is full: reuse the pages of the oldest readings, then try once more.
            freed = self._drop_oldest(fraction=0.1, why="the disk is full")
            try:
                if not freed:
                    raise
                self._insert(readings, bodies, state)
            except sqlite3.OperationalError as again:
                if _is_full(again):
                    raise BufferFull(f"{self.path}: disk full, nothing left to drop") from None
                raise

    def _insert(self, readings: Sequence[Reading], bodies: list[tuple[str, str]],
                state: tuple[str, str] | None) -> None:
        self._resolved.clear()
        try:
            with self._transaction():
                if state is not None:
                    self._db.execute("INSERT INTO state (name, body) VALUES (?, ?) ON CONFLICT "
                                     "(name) DO UPDATE SET body = excluded.body", state)
                rows = [(self._series_id(r), r.ts, stored_value(r.value),
                         None if r.quality.good else r.quality.reason) for r in readings]
                self._db.executemany(
                    "INSERT INTO readings (series, ts, value, bad) VALUES (?, ?, ?, ?)", rows)
                self._db.executemany(
                    "INSERT OR IGNORE INTO outbox (event_id, body) VALUES (?, ?)", bodies)
        except BaseException:
            # The rollback took back the series rows this transaction inserted: forget
            # their ids too, or the next new series reuses one and takes their readings.
            for key in self._resolved:
                series = self._series.pop(key)
                if series is not None:
                    self._series_by_id.pop(series)
            raise

    def _series_id(self, reading: Reading) -> int:
        key = (reading.asset, reading.metric, reading.unit, reading.source)
        series = self._series.get(key)
        if series is None:
            self._db.execute("INSERT OR IGNORE INTO series (asset, metric, unit, source) "
                             "VALUES (?, ?, ?, ?)", key)
            series = self._db.execute(
                "SELECT id FROM series WHERE asset=? AND metric=? AND unit=? AND source=?",
                key).fetchone()[0]
            self._series[key], self._series_by_id[series] = series, key
            self._resolved.append(key)
        return series

    # --- the readings queue -----------------------------------------------------------

    def oldest(self, limit: int) -> list[Stored]:
        """Up to `limit` readings in the order they were stored."""
        rows = self._guard(lambda: self._db.execute(
            "SELECT id, series, ts, value, bad FROM readings ORDER BY id LIMIT ?",
            (limit,)).fetchall())
        out = []
        for row_id, series, ts, value, reason in rows:
            asset, metric, unit, source = self.series(series)
            quality = GOOD if reason is None else bad(reason)
            out.append(Stored(row_id, Reading(asset, metric, loaded_value(value), ts, quality,
                                              unit, source)))
        return out

    def rows(self, limit: int, after: int = 0) -> list[Row]:
        """Up to `limit` raw rows (id, series, ts, value, bad) after row `after`, in order."""
        rows = self._guard(lambda: self._db.execute(
            "SELECT id, series, ts, value, bad FROM readings WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit)).fetchall())
        return [(i, s, ts, None if v is None else float(v), b) for i, s, ts, v, b in rows]

    def line_batch(self, limit: int, after: int, head: Head) -> LineBatch | None:
        """Up to `limit` of the oldest readings after row `after` as line protocol, built
        inside SQLite: the TSDB writer's hot path, no Python object per reading."""

        def run() -> tuple[int, int, int | None, int | None, bytes | None]:
            self._sync_heads(head)
            row = self._db.execute(_LINES, (after, limit)).fetchone()
            if row[0] and row[1] != row[0]:  # series without a head yet: add theirs, again
                self._add_heads(head, after, limit)
                row = self._db.execute(_LINES, (after, limit)).fetchone()
            return row

        count, lines, first, last, body = self._guard(run)
        if not count:
            return None
        if lines != count:  # a series without a head: cannot happen, never send a gap
            raise RuntimeError(f"{self.path}: {count - lines} readings have no series head")
        return LineBatch(first, last, count, body)

    def _sync_heads(self, head: Head) -> None:
        if head != self._head:
            self._db.execute("DELETE FROM temp.heads")
            self._head = head

    def _add_heads(self, head: Head, after: int, limit: int) -> None:
        """Heads for the series of the batch `line_batch` is building that have none yet
        (new since the last batch), from the file: the series cache is bounded."""
        missing = self._db.execute(
            "SELECT id, asset, metric, unit, source FROM series WHERE id IN "
            "(SELECT series FROM readings WHERE id > ? ORDER BY id LIMIT ?) "
            "AND id NOT IN (SELECT series FROM temp.heads)", (after, limit)).fetchall()
        self._db.executemany("INSERT INTO temp.heads (series, head) VALUES (?, ?)",
                             [(sid, head((a, m, u, s))) for sid, a, m, u, s in missing])

    def series(self, series_id: int) -> tuple[str, str, str, str]:
        """(asset, metric, unit, source) of a series id of `rows`."""
        key = self._series_by_id.get(series_id)
        if key is None:
            asset, metric, unit, source = self._db.execute(
                "SELECT asset, metric, unit, source FROM series WHERE id = ?",
                (series_id,)).fetchone()
            key = self._series_by_id[series_id] = (asset, metric, unit, source)
        return key

    def delete_range(self, first: int, last: int) -> None:
        """Forget a `LineBatch` the TSDB acknowledged."""

        def run() -> None:
            with self._transaction():
                self._db.execute("DELETE FROM readings WHERE id BETWEEN ? AND ?", (first, last))

        self._guard(run)

    def delete(self, ids: Sequence[int]) -> None:
        """Forget readings the TSDB acknowledged (ids of one batch, in order)."""
        if not ids:
            return
        contiguous = ids[-1] - ids[0] + 1 == len(ids)

        def run() -> None:
            with self._transaction():
                if contiguous:
                    self._db.execute("DELETE FROM readings WHERE id BETWEEN ? AND ?",
                                     (ids[0], ids[-1]))
                else:
                    self._db.executemany("DELETE FROM readings WHERE id = ?",
                                         [(i,) for i in ids])

        self._guard(run)

    def dead_letter(self, rejected: Sequence[tuple[int, str, str]]) -> None:
        """Move readings the TSDB refused (id, line, server's message) aside, for a person."""
        now = time.time()

        def run() -> None:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO dead_letters (at, line, error) VALUES (?, ?, ?)",
                    [(now, line, error) for _, line, error in rejected])
                self._db.executemany("DELETE FROM readings WHERE id = ?",
                                     [(i,) for i, _, _ in rejected])

        self._guard(run)

    def dead_letters(self, limit: int = 100, kind: str = "reading"
                     ) -> list[tuple[float, str, str]]:
        return self._db.execute("SELECT at, line, error FROM dead_letters WHERE kind = ? "
                                "ORDER BY id LIMIT ?", (kind, limit)).fetchall()

    # --- the event outbox -------------------------------------------------------------

    def pending_events(self, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """The oldest undelivered events, in the order they were raised."""
        rows = self._guard(lambda: self._db.execute(
            "SELECT seq, body FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall())
        return [(seq, json.loads(body)) for seq, body in rows]

    def dead_letter_event(self, seq: int, body: dict[str, Any], error: str) -> None:
        """Move an event the API refuses for good out of the outbox, for a person."""

        def run() -> None:
            with self._transaction():
                self._db.execute("INSERT INTO dead_letters (at, line, error, kind) "
                                 "VALUES (?, ?, ?, 'event')",
                                 (time.time(), json.dumps(body), error))
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

        self._guard(run)

    def ack_events(self, up_to_seq: int) -> None:
        """Delivered: forget every event up to and including `up_to_seq`."""

        def run() -> None:
            with self._transaction():
                self._db.execute("DELETE FROM outbox WHERE seq <= ?", (up_to_seq,))

        self._guard(run)

    # --- size, health -----------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of the file in use (free pages excluded: SQLite reuses them)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def count(self) -> dict[str, int]:
        def one(sql: str) -> int:
            return int(self._db.execute(sql).fetchone()[0])

        return {
            "readings": one("SELECT count(*) FROM readings"),
            "events": one("SELECT count(*) FROM outbox"),
            "dead_letters": one("SELECT count(*) FROM dead_letters"),
            "dropped": self.dropped,
        }

    def close(self) -> None:
        self._db.close()

    def _enforce_size(self) -> None:
        # Rows differ in size (a value's text, a reason), so dropping a fraction of the rows
        # may free a little less than that fraction of the pages: measure again.
        while (used := self.used_bytes()) > self.max_size:
            excess = (used - self.max_size * (1 - TRIM_MARGIN)) / used
            if not self._drop_oldest(excess, f"the buffer passed its max_size of "
                                             f"{self.max_size} bytes"):
                return  # only events and dead letters left: those are never dropped

    def _drop_oldest(self, fraction: float, why: str) -> int:
        first, last = self._db.execute("SELECT min(id), max(id) FROM readings").fetchone()
        if first is None:
            return 0
        cut = first + max(1, math.ceil((last - first + 1) * fraction))
        with self._transaction():
            gone = self._db.execute("SELECT count(*), min(ts), max(ts) FROM readings "
                                    "WHERE id < ?", (cut,)).fetchone()
            self._db.execute("DELETE FROM readings WHERE id < ?", (cut,))
            self.dropped += gone[0]
            self._db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                             "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                             (gone[0],))
        log.warning("dropped the %d oldest readings (%s .. %s) because %s; %d dropped in all",
                    gone[0], _when(gone[1]), _when(gone[2]), why, self.dropped)
        return int(gone[0])

    # --- opening, transactions, corruption ---------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _is_corrupt(exc):
                raise
            self._move_aside(exc)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
            db.executescript(_SCHEMA)
            _migrate(db)
            db.execute(_HEADS)
            self._head = None
            self._series.clear()
            self._series_by_id.clear()
            for series, *key in db.execute("SELECT id, asset, metric, unit, source FROM series "
                                           "ORDER BY id DESC LIMIT ?", (SERIES_CACHE,)):
                self._series[tuple(key)] = series  # type: ignore[index]
                self._series_by_id[series] = tuple(key)  # type: ignore[assignment]
            row = db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
            self.dropped = row[0] if row else 0
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(f"{self.path}.corrupt-{stamp}{suffix}")
        log.error("buffer %s is corrupt (%s): moved it aside to %s.corrupt-%s and started "
                  "a new one; readings in the old file were not sent", self.path, exc,
                  self.path, stamp)

    def _guard(self, operation: Callable[[], T]) -> T:
        """Run `operation`; if the file turns out corrupt, move it aside and retry once."""
        try:
            return operation()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            self._db.close()
            self._move_aside(exc)
            self._db = self._connect()
            return operation()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a buffer written by an older Patrol to SCHEMA_VERSION, keeping every reading."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    columns = {row[1]: row[2] for row in db.execute("PRAGMA table_info(readings)")}
    db.execute("BEGIN IMMEDIATE")
    try:
        if columns.get("value") == "REAL":  # version 1: values as reals, NaN as NULL
            db.execute("ALTER TABLE readings RENAME TO readings_v1")
            db.execute(_READINGS)
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


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "is full" in str(exc)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return True
    return "malformed" in str(exc) or "not a database" in str(exc)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
