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
  Every other write (deletes, dead letters, acknowledged events) raises `BufferFull` too
  on a full disk, never a raw sqlite3 error, and has changed nothing.
- The file (and its -wal, -shm) is 0600, directories it creates 0700: dead letters hold
  what sensors said, and events name the plant's assets.
- A corrupt file is moved aside (`<name>.corrupt-<time>`) after what is still readable
  (events, rule state, counters, dead letters, readings) was copied into a fresh buffer
  (`agent/salvage.py`); the log says how much was saved and lost. The agent keeps running.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from collector.reading import GOOD, Reading, bad
from common.recent import Recent

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
        private_dirs(path.parent)
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
        try:  # stored: a failure to trim now must not make the caller store it again
            self._enforce_size()
        except BufferFull as exc:
            log.warning("could not trim the buffer to its max_size: %s", exc)

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
            if not self._drop_oldest(fraction=0.1, why="the disk is full"):
                raise BufferFull(f"{self.path}: disk full, nothing left to drop") from None
            try:
                self._insert(readings, bodies, state)
            except sqlite3.OperationalError as again:
                if _is_full(again):
                    raise BufferFull(f"{self.path}: disk full, even after dropping the "
                                     "oldest readings") from None
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

        self._write(run)

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

        self._write(run)

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

        self._write(run)

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

        self._write(run)

    def ack_events(self, seqs: Sequence[int]) -> None:
        """Delivered: forget the events with these outbox positions (`pending_events`)."""
        if not seqs:
            return

        def run() -> None:
            with self._transaction():
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

        self._write(run)

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
        """Drop about `fraction` of the readings, oldest first; BufferFull when even the
        DELETE finds no room (then nothing was dropped, and nothing counted)."""
        first, last = self._db.execute("SELECT min(id), max(id) FROM readings").fetchone()
        if first is None:
            return 0
        cut = first + max(1, math.ceil((last - first + 1) * fraction))

        def run() -> tuple[int, float | None, float | None]:
            with self._transaction():
                gone = self._db.execute("SELECT count(*), min(ts), max(ts) FROM readings "
                                        "WHERE id < ?", (cut,)).fetchone()
                self._db.execute("DELETE FROM readings WHERE id < ?", (cut,))
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES ('dropped', ?) ON CONFLICT "
                    "(name) DO UPDATE SET value = value + excluded.value", (gone[0],))
            return gone

        gone = self._write(run)
        self.dropped += gone[0]  # only once the DELETE is on disk
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
            self._replace_corrupt(exc)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        private_file(self.path)
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

    def _replace_corrupt(self, exc: Exception) -> None:
        """Salvage what the corrupt file still gives into a fresh one, move the corrupt
        one aside and put the fresh one in its place."""
        from agent.salvage import salvage  # only ever needed after a corruption

        stamp = time.strftime("%Y%m%dT%H%M%S")
        fresh = Path(f"{self.path}.salvage")
        for suffix in ("", "-wal", "-shm", "-journal"):  # a salvage cut short before
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        try:
            private_file(fresh)
            with contextlib.closing(sqlite3.connect(f"file:{quote(str(fresh))}", uri=True,
                                                    isolation_level=None)) as db:
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                report = salvage(self.path, db)
        except (sqlite3.OperationalError, OSError) as failed:
            fresh.unlink(missing_ok=True)
            if not _no_room(failed, self.path.parent):
                raise
            # no room for the copy: keep the corrupt file where it is, so nothing in it is
            # lost, and salvage it when there is room
            raise BufferFull(f"{self.path} is corrupt ({exc}) and the disk has no room to "
                             "salvage it; it stays as it is until there is room") from None
        descriptor = os.open(fresh, os.O_RDONLY)
        try:  # the salvage ran without syncs: one sync before the copy takes over
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(f"{self.path}.corrupt-{stamp}{suffix}")
        os.replace(fresh, self.path)
        log.error("buffer %s is corrupt (%s): moved it aside to %s.corrupt-%s and started "
                  "a new one with what could be read: %s", self.path, exc, self.path, stamp,
                  report)

    def _guard(self, operation: Callable[[], T]) -> T:
        """Run `operation`; if the file turns out corrupt, move it aside and retry once."""
        try:
            return operation()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            self._db.close()
            try:
                self._replace_corrupt(exc)
            except BufferFull:  # the corrupt file, until there is room to salvage it
                self._db = sqlite3.connect(self.path, isolation_level=None,
                                           check_same_thread=False)
                raise
            self._db = self._connect()
            return operation()

    def _write(self, operation: Callable[[], T]) -> T:
        """`_guard` for a write: a full disk is BufferFull (the transaction rolled back)."""
        try:
            return self._guard(operation)
        except sqlite3.OperationalError as exc:
            if _is_full(exc):
                raise BufferFull(f"{self.path}: disk full ({exc})") from None
            raise

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


def private_dirs(directory: Path) -> None:
    """Create `directory` and missing parents 0700; existing ones are left as they are."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for one in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            one.mkdir(mode=0o700)
        one.chmod(0o700)  # mkdir's mode passes through the umask


def private_file(path: Path) -> None:
    """Make `path` (created empty if missing) and its -wal and -shm 0600 before SQLite
    opens it: SQLite gives the -wal and -shm files the database file's mode."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


def _no_room(exc: BaseException, directory: Path) -> bool:
    """A failure to write for want of space: SQLITE_FULL, ENOSPC, or an I/O error (a
    -shm that cannot grow) on a disk with less than a MiB left."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    if isinstance(exc, sqlite3.Error) and _is_full(exc):
        return True
    space = os.statvfs(directory)
    return getattr(exc, "sqlite_errorname", "").startswith("SQLITE_IOERR") and \
        space.f_bavail * space.f_frsize < 1 << 20


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "is full" in str(exc)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return True
    return "malformed" in str(exc) or "not a database" in str(exc)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
