"""What a buffer holds, read the way code outside it can: readings through `Buffer.rows`
and `Buffer.series`, dead letters from the file's `dead_letters` table (where docs/tsdb.md
sends a person to read them)."""

from __future__ import annotations

import contextlib
import math
import sqlite3
from dataclasses import dataclass

from agent.buffer import Buffer
from collector.reading import GOOD, Reading, bad


@dataclass(frozen=True, slots=True)
class Stored:
    """A reading as the buffer holds it, with its row id (the queue position)."""

    id: int
    reading: Reading


def stored(buffer: Buffer, limit: int) -> list[Stored]:
    """Up to `limit` of the oldest readings, in the order they were stored."""
    out = []
    for row_id, series, ts, value, reason in buffer.rows(limit):
        asset, metric, unit, source = buffer.series(series)
        quality = GOOD if reason is None else bad(reason)
        out.append(Stored(row_id, Reading(asset, metric, math.nan if value is None else value,
                                          ts, quality, unit, source)))
    return out


def dead_letters(buffer: Buffer, kind: str = "reading", limit: int = 100
                 ) -> list[tuple[float, str, str]]:
    """(at, line or event JSON, error) of each dead letter of `kind`, oldest first."""
    uri = f"file:{buffer.path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        return db.execute("SELECT at, line, error FROM dead_letters WHERE kind = ? "
                          "ORDER BY id LIMIT ?", (kind, limit)).fetchall()
