"""The readings queue: stored with the events they caused, read back as line protocol in
batches, deleted once the TSDB acknowledged them, the oldest dropped past `max_size`."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.buffer.disk import is_full, private_dirs
from agent.buffer.outbox import QUEUE_EVENT, SAVE_STATE, Outbox, event_rows, state_rows
from agent.buffer.schema import LINES, stored_value
from agent.errors import BufferFull
from collector.reading import Reading
from common.recent import Recent

log = logging.getLogger("patrol.buffer")

TRIM_MARGIN = 0.05
"""When over `max_size`, trim to this fraction below it, so trimming is not per batch."""

SERIES_CACHE = 10_000
"""Series ids kept in memory (`Recent`: up to twice this); the rest are looked up in the
file, so a flood of new topics costs rows in `series`, not memory."""

VALUE_TEXTS = 4096
"""Values whose stored text `Buffer` keeps (forgotten all at once when full)."""

Series = tuple[str, str, str, str]
"""(asset, metric, unit, source)."""
Row = tuple[int, int, float, float | None, str | None]
"""A stored reading as `rows` returns it: id, series id, ts, value (None: NaN), bad reason."""
Head = Callable[[Series], str]
"""(asset, metric, unit, source) -> the start of its lines: measurement, tags and a space."""


@dataclass(frozen=True, slots=True)
class LineBatch:
    """The oldest readings after some row, as one text of line protocol."""

    first: int
    last: int
    count: int
    """Readings in it: every stored row with first <= id <= last."""
    body: bytes
    """Their lines, UTF-8, one per reading, joined by newlines."""


class Buffer(Outbox):
    """Single-writer store; every method runs on the caller's thread, quickly."""

    def __init__(self, path: Path, max_size: int = 10**9) -> None:
        self.max_size = max_size
        self.dropped = 0
        """Readings dropped (oldest first) to stay under max_size, since this file began."""
        private_dirs(path.parent)
        self._series: Recent[Series, int] = Recent(SERIES_CACHE)
        self._series_by_id: Recent[int, Series] = Recent(SERIES_CACHE)
        self._resolved: list[Series] = []  # by the open transaction
        self._head: Head | None = None
        self._texts: dict[float, str | float | None] = {}  # value -> stored_value, see _rows
        super().__init__(path)

    def _opened(self, db: sqlite3.Connection) -> None:
        self._head = None
        self._series.clear()
        self._series_by_id.clear()
        for series, *key in db.execute("SELECT id, asset, metric, unit, source FROM series "
                                       "ORDER BY id DESC LIMIT ?", (SERIES_CACHE,)):
            self._series[tuple(key)] = series  # type: ignore[index]
            self._series_by_id[series] = tuple(key)  # type: ignore[assignment]
        row = db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        self.dropped = row[0] if row else 0

    # --- writing ----------------------------------------------------------------------

    def put(self, readings: Sequence[Reading], events: Iterable[dict[str, Any]] = (),
            states: Sequence[tuple[str, Any]] = ()) -> None:
        """Store readings, events and named states (replacing those saved under the same
        names) in one transaction.

        The rules engine's state is saved with the events it raised, so a restart never
        raises an episode twice. An event already queued is kept as it is.
        """
        bodies = event_rows(events)
        if not readings and not bodies and not states:
            return
        saved = state_rows(states)
        self._guard(lambda: self._put(readings, bodies, saved))
        try:  # stored: a failure to trim now must not make the caller store it again
            self._enforce_size()
        except BufferFull as exc:
            log.warning("could not trim the buffer to its max_size: %s", exc)

    def _put(self, readings: Sequence[Reading], bodies: list[tuple[str, bytes]],
             states: list[tuple[str, bytes]]) -> None:
        try:
            self._insert(readings, bodies, states)
        except sqlite3.OperationalError as exc:
            if not is_full(exc):
                raise
            # The disk is full: reuse the pages of the oldest readings, then try once more.
            if not self._drop_oldest(fraction=0.1, why="the disk is full"):
                raise BufferFull(f"{self.path}: disk full, nothing left to drop") from None
            try:
                self._insert(readings, bodies, states)
            except sqlite3.OperationalError as again:
                if is_full(again):
                    raise BufferFull(f"{self.path}: disk full, even after dropping the "
                                     "oldest readings") from None
                raise

    def _insert(self, readings: Sequence[Reading], bodies: list[tuple[str, bytes]],
                states: list[tuple[str, bytes]]) -> None:
        self._resolved.clear()
        try:
            with self._transaction():
                self._db.executemany(SAVE_STATE, states)
                rows = self._rows(readings)
                self._db.executemany(
                    "INSERT INTO readings (series, ts, value, bad) VALUES (?, ?, ?, ?)", rows)
                self._db.executemany(QUEUE_EVENT, bodies)
        except BaseException:
            # The rollback took back the series rows this transaction inserted: forget
            # their ids too, or the next new series reuses one and takes their readings.
            for key in self._resolved:
                series = self._series.pop(key)
                if series is not None:
                    self._series_by_id.pop(series)
            raise

    def _rows(self, readings: Sequence[Reading]) -> Iterator[tuple[int, float, Any, str | None]]:
        """The readings as rows of `readings`, for the agent's hot path.

        Built a column at a time and zipped as executemany reads them: no tuple per reading
        outlives its row, so none piles up for the garbage collector (which each survivor
        brings nearer to a full collection of the agent's large heap). Series ids are looked
        up in a dict of this batch's own before the bounded cache. A value's text is kept
        too (`VALUE_TEXTS` of them): sensors repeat a few values (a tenth of a degree), and
        a dict lookup costs a fifth of formatting a float. Zero is never kept: 0.0 and -0.0
        are one key but "0" and "-0" as text."""
        ids: dict[Series, int] = {}
        series = []
        add = series.append
        for r in readings:
            key = (r.asset, r.metric, r.unit, r.source)
            found = ids.get(key)
            if found is None:
                found = ids[key] = self._series_id(key)
            add(found)
        texts = self._texts
        if len(texts) >= VALUE_TEXTS:
            texts.clear()
        values = []
        add = values.append
        for r in readings:
            value = r.value
            text = texts.get(value)
            if text is None:
                text = stored_value(value)
                if value:
                    texts[value] = text
            add(text)
        bad = [None if r.quality.good else r.quality.reason for r in readings]
        return zip(series, [r.ts for r in readings], values, bad, strict=True)

    def _series_id(self, key: Series) -> int:
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

    # --- reading back -----------------------------------------------------------------

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
            row = self._db.execute(LINES, (after, limit)).fetchone()
            if row[0] and row[1] != row[0]:  # series without a head yet: add theirs, again
                self._add_heads(head, after, limit)
                row = self._db.execute(LINES, (after, limit)).fetchone()
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

    def series(self, series_id: int) -> Series:
        """(asset, metric, unit, source) of a series id of `rows`."""
        key = self._series_by_id.get(series_id)
        if key is None:
            asset, metric, unit, source = self._db.execute(
                "SELECT asset, metric, unit, source FROM series WHERE id = ?",
                (series_id,)).fetchone()
            key = self._series_by_id[series_id] = (asset, metric, unit, source)
        return key

    # --- forgetting -------------------------------------------------------------------

    def delete_range(self, first: int, last: int) -> None:
        """Forget a `LineBatch` the TSDB acknowledged."""
        self._in_transaction(("DELETE FROM readings WHERE id BETWEEN ? AND ?",
                              [(first, last)]))

    def delete(self, ids: Sequence[int]) -> None:
        """Forget readings the TSDB acknowledged (ids of one batch, in order)."""
        if not ids:
            return
        if ids[-1] - ids[0] + 1 == len(ids):  # contiguous
            self.delete_range(ids[0], ids[-1])
        else:
            self._in_transaction(("DELETE FROM readings WHERE id = ?", [(i,) for i in ids]))

    # --- size, health -----------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of the file in use (free pages excluded: SQLite reuses them)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def count(self) -> dict[str, int]:
        """Rows per table, and readings dropped to stay under max_size."""

        def one(sql: str) -> int:
            return int(self._db.execute(sql).fetchone()[0])

        return {
            "readings": one("SELECT count(*) FROM readings"),
            "events": one("SELECT count(*) FROM outbox"),
            "dead_letters": one("SELECT count(*) FROM dead_letters"),
            "dropped": self.dropped,
        }

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


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
