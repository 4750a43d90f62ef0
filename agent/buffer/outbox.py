"""The NC event outbox, the rules engine's saved state and the dead letters: small, never
dropped to make room, and the first things salvaged from a corrupt file."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from agent.buffer.file import BufferFile

QUEUE_EVENT = "INSERT OR IGNORE INTO outbox (event_id, body) VALUES (?, ?)"
"""An event already queued is kept as it is."""
SAVE_STATE = ("INSERT INTO state (name, body) VALUES (?, ?) ON CONFLICT (name) "
              "DO UPDATE SET body = excluded.body")
DEAD_LETTER = "INSERT INTO dead_letters (at, line, error, kind) VALUES (?, ?, ?, ?)"
PACK_LEVEL = 6
"""zlib's default level. Level 1 took a third of its CPU but left a rule state's core, saved
every 30 s and with every event, a third larger (and a snapshot, a history): that CPU is
milliseconds a save, the bytes are written twice (docs/footprint.md)."""


def event_rows(events: Iterable[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """(event id, body) of each event, for QUEUE_EVENT: its JSON compressed (`packed`). A
    compliance snapshot of a large site is a megabyte of JSON a minute, written twice
    (WAL and file) and deleted once delivered; compressed it is a twentieth of that."""
    return [(e["id"], packed(e)) for e in events]


def state_rows(states: Iterable[tuple[str, Any]]) -> list[tuple[str, bytes]]:
    """(name, body) of named states, for SAVE_STATE, compressed (`packed`). The rule state
    is saved often (rules.saved) and its readings are megabytes of numbers on a large
    site: compressed they are a fraction of the pages each save writes twice."""
    return [(name, packed(value)) for name, value in states]


def packed(value: Any) -> bytes:
    """A body as the buffer stores it: its JSON, compressed with zlib (`PACK_LEVEL`)."""
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), PACK_LEVEL)


def unpacked(body: bytes | str) -> Any:
    """A stored body's value: compressed JSON, or plain JSON text as buffers written
    before 2026-12 hold it."""
    return json.loads(zlib.decompress(body) if isinstance(body, bytes) else body)


class Outbox(BufferFile):
    """Events wait here, in the order they were raised, until the API confirms them."""

    def pending_events(self, limit: int = 100) -> list[tuple[int, dict[str, Any]]]:
        """The oldest undelivered events, in the order they were raised."""
        rows = self._guard(lambda: self._db.execute(
            "SELECT seq, body FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall())
        return [(seq, unpacked(body)) for seq, body in rows]

    def ack_events(self, seqs: Sequence[int]) -> None:
        """Delivered: forget the events with these outbox positions (`pending_events`)."""
        if seqs:
            self._in_transaction(("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs]))

    def dead_letter_event(self, seq: int, body: dict[str, Any], error: str) -> None:
        """Move an event the API refuses for good out of the outbox, for a person."""
        self._in_transaction(
            (DEAD_LETTER, [(time.time(), json.dumps(body), error, "event")]),
            ("DELETE FROM outbox WHERE seq = ?", [(seq,)]))

    def dead_letter(self, rejected: Sequence[tuple[int, str, str]]) -> None:
        """Move readings the TSDB refused (id, line, server's message) aside, for a person."""
        now = time.time()
        self._in_transaction(
            (DEAD_LETTER, [(now, line, error, "reading") for _, line, error in rejected]),
            ("DELETE FROM readings WHERE id = ?", [(i,) for i, _, _ in rejected]))

    def load_state(self, name: str) -> Any:
        """A state saved with `Buffer.put(..., states=[(name, ...)])`, or None."""
        row = self._guard(lambda: self._db.execute("SELECT body FROM state WHERE name = ?",
                                                   (name,)).fetchone())
        return None if row is None else unpacked(row[0])
