"""The buffer's SQLite file: opening it, transactions, a full disk and a corrupt file.

Every operation runs through `_guard` (a corrupt file is salvaged into a fresh one and the
operation tried once more) and every write through `_write` (a full disk is `BufferFull`,
never a raw sqlite3 error, and the transaction rolled back). The classes above this one
(`Outbox`, `Buffer`) add what the file holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from agent.buffer.disk import fsync_file, is_corrupt, is_full, no_room, private_file
from agent.buffer.schema import HEADS, SCHEMA, SCHEMA_VERSION, migrate
from agent.errors import BufferFull
from common.sqlite_tuning import without_memory_statistics

log = logging.getLogger("patrol.buffer")

without_memory_statistics()  # before this process opens a database: see the module

T = TypeVar("T")
PAGE_SIZE = 1024
"""Bytes a page, for a new buffer file (an existing one keeps its own). Each commit writes
the readings table's last pages whole into the WAL, each fsync making the OS write its
partly filled block again, and the checkpoint writes them once more: with a few seconds
of readings a commit, SQLite's default 4,096-byte pages wrote 6x the readings' size to
disk, 1,024-byte pages 4x (docs/footprint.md), at the same speed in and out."""
CHECKPOINT_PAGES = 10_000
"""WAL pages at which the WAL is copied into the file (SQLite's default: 1,000). A page
written again and again between two checkpoints (the readings table's last one, the rule
state's) is copied once: a WAL of up to 10 MB beside the file, 0.6x fewer bytes written."""


class BufferFile:
    """One SQLite file in WAL mode with `synchronous=FULL`, written by one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = self._open()

    def close(self) -> None:
        self._db.close()

    def _opened(self, db: sqlite3.Connection) -> None:
        """Called on every (re)connection, before it is used: load what is kept in memory."""

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not is_corrupt(exc):
                raise
            self._replace_corrupt(exc)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        private_file(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # a new file only: kept once written
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
            db.executescript(SCHEMA)
            migrate(db)
            db.execute(HEADS)
            self._opened(db)
        except BaseException:
            db.close()
            raise
        return db

    def _replace_corrupt(self, exc: Exception) -> None:
        """Salvage what the corrupt file still gives into a fresh one, move the corrupt
        one aside and put the fresh one in its place."""
        from agent.buffer.salvage import salvage  # only ever needed after a corruption

        stamp = time.strftime("%Y%m%dT%H%M%S")
        fresh = Path(f"{self.path}.salvage")
        for suffix in ("", "-wal", "-shm", "-journal"):  # a salvage cut short before
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
        try:
            private_file(fresh)
            with contextlib.closing(sqlite3.connect(f"file:{quote(str(fresh))}", uri=True,
                                                    isolation_level=None)) as db:
                db.executescript(SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                report = salvage(self.path, db)
        except (sqlite3.OperationalError, OSError) as failed:
            fresh.unlink(missing_ok=True)
            if not no_room(failed, self.path.parent):
                raise
            # no room for the copy: keep the corrupt file where it is, so nothing in it is
            # lost, and salvage it when there is room
            raise BufferFull(f"{self.path} is corrupt ({exc}) and the disk has no room to "
                             "salvage it; it stays as it is until there is room") from None
        fsync_file(fresh)  # the salvage ran without syncs: once before the copy takes over
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
            if not is_corrupt(exc):
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
            if is_full(exc):
                raise BufferFull(f"{self.path}: disk full ({exc})") from None
            raise

    def _in_transaction(self, *statements: tuple[str, list[tuple[object, ...]]]) -> None:
        """Run `executemany` statements in one write transaction."""

        def run() -> None:
            with self._transaction():
                for sql, rows in statements:
                    self._db.executemany(sql, rows)

        self._write(run)

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
