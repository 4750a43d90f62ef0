"""What a corrupt buffer still gives: copied into a fresh one before it is moved aside.

A damaged page costs the rows on it, not the file: undelivered NC events, the rules
engine's state (without it a restart raises open episodes again), counters and dead
letters are small and copied first; then readings, whose series must come through too.
Each table is copied in key ranges inside SQLite (INSERT ... SELECT over an ATTACHed
read-only file); a range that fails is narrowed down to the rows that fail, which are
skipped, so one bad page loses about its own rows.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

CHUNK = 20_000
"""Rows per INSERT ... SELECT while nothing fails."""

_TABLES = (  # in order of worth; series before the readings that need them
    ("outbox", "seq, event_id, body"),
    ("state", "name, body"),
    ("counters", "name, value"),
    ("dead_letters", "id, at, line, error, kind"),
    ("series", "id, asset, metric, unit, source"),
    ("readings", "id, series, ts, value, bad"),
)


@dataclass
class Salvaged:
    """Rows copied per table, and rows the corrupt file had but did not give (None when
    even their number could not be read)."""

    copied: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int | None] = field(default_factory=dict)
    estimated: set[str] = field(default_factory=set)
    """Tables whose rows could not be counted: `lost` is an upper bound from the rowids."""

    def __str__(self) -> str:
        def part(table: str, what: str) -> str:
            lost = self.lost.get(table)
            gone = ("an unknown number lost" if lost is None else
                    f"up to {lost} lost" if table in self.estimated else f"{lost} lost")
            return f"{what}: {self.copied.get(table, 0)} saved, {gone}"

        state = "kept" if self.copied.get("state") else "lost (rules start afresh)"
        return "; ".join([part("outbox", "NC events"), part("readings", "readings"),
                          f"rule state {state}", part("dead_letters", "dead letters")])


def salvage(corrupt: Path, fresh: sqlite3.Connection) -> Salvaged:
    """Copy what `corrupt` still gives into `fresh` (the buffer's schema, empty)."""
    report = Salvaged()
    fresh.execute("PRAGMA journal_mode=MEMORY")  # a salvage cut short is done again
    fresh.execute("PRAGMA synchronous=OFF")  # the caller syncs the file once, at the end
    try:
        fresh.execute("ATTACH DATABASE ? AS old",
                      (f"file:{quote(str(corrupt.resolve()))}?mode=ro",))
    except sqlite3.Error as exc:
        if not _unreadable(exc):
            raise
        for table, _ in _TABLES:
            report.copied[table], report.lost[table] = 0, None
        return report
    for table, columns in _TABLES:
        where = " AND series IN (SELECT id FROM main.series)" if table == "readings" else ""
        report.copied[table], report.lost[table], counted = _copy(fresh, table, columns,
                                                                 where)
        if not counted:
            report.estimated.add(table)
    with contextlib.suppress(sqlite3.Error):
        fresh.execute("DETACH DATABASE old")
    return report


def _copy(db: sqlite3.Connection, table: str, columns: str, where: str
          ) -> tuple[int, int | None, bool]:
    """Copy `table` in rowid ranges; returns (rows copied, rows lost or None, whether the
    rows could be counted)."""
    try:
        # apart, each is one descent of the b-tree; together they scan the whole table
        low = db.execute(f"SELECT min(rowid) FROM old.{table}").fetchone()[0]
        high = db.execute(f"SELECT max(rowid) FROM old.{table}").fetchone()[0]
    except sqlite3.Error as exc:
        if not _unreadable(exc):
            raise
        return 0, None, False
    if low is None:
        return 0, 0, True
    copied = 0
    start, step = low, CHUNK
    insert = (f"INSERT OR IGNORE INTO main.{table} ({columns}) SELECT {columns} "
              f"FROM old.{table} WHERE rowid BETWEEN ? AND ?{where}")
    while start <= high:
        end = min(high, start + step - 1)
        try:
            copied += db.execute(insert, (start, end)).rowcount
        except sqlite3.Error as exc:
            if not _unreadable(exc):
                raise  # no room for the copy, an I/O error: not what the file holds
            if step > 1:  # narrow down to the rows that fail
                step = max(1, step // 16)
                continue
            start = _next_readable(db, table, start, high)
            continue
        start, step = end + 1, min(CHUNK, step * 16)
    try:
        total, counted = db.execute(f"SELECT count(*) FROM old.{table}").fetchone()[0], True
    except sqlite3.Error:
        total, counted = high - low + 1, False  # at most: rowids have gaps
    return copied, max(0, total - copied), counted


def _next_readable(db: sqlite3.Connection, table: str, bad: int, high: int) -> int:
    """The first rowid after `bad` (unreadable) that can be read: found by leaps that
    double, then halving back, so a damaged page costs about its own rows."""
    leap, good = 1, bad + 1
    while not _readable(db, table, good):
        if good > high:
            return good
        bad, leap = good, leap * 2
        good = min(bad + leap, high + 1)
    while good - bad > 1:
        middle = (bad + good) // 2
        if _readable(db, table, middle):
            good = middle
        else:
            bad = middle
    return good


def _readable(db: sqlite3.Connection, table: str, rowid: int) -> bool:
    try:
        db.execute(f"SELECT * FROM old.{table} WHERE rowid = ?", (rowid,)).fetchall()
    except sqlite3.Error:
        return False
    return True


def _unreadable(exc: sqlite3.Error) -> bool:
    """An error about what the corrupt file holds, not about this machine (full disk, I/O,
    a file that cannot be opened), which the caller must hear about."""
    name = getattr(exc, "sqlite_errorname", "")
    return not name.startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN",
                                "SQLITE_NOMEM"))
