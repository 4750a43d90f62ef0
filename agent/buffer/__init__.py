"""The agent's durable store: readings queue, NC event outbox and dead letters in one
SQLite file (WAL), written by one thread.

- Readings and the events they caused commit in one transaction: a crash keeps both or
  neither. `synchronous=FULL`: a commit that returned is on disk, so what was acknowledged
  to a source survives a power cut.
- Series (asset, metric, unit, source) are stored once and referenced by id, so a reading
  costs about 30 bytes on disk.
- A finite value is stored as its shortest exact decimal text (line protocol's float rule,
  `agent.lineprotocol`), so the TSDB writer has SQLite assemble whole batches of line
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
  (`salvage.py`); the log says how much was saved and lost. The agent keeps running.

Modules, by concern: `readings` (the `Buffer` class: the readings queue and its size),
`outbox` (NC events, rule state, dead letters), `file` (opening, transactions, a full disk,
a corrupt file), `schema` (tables, stored values, migrations), `disk` (file modes, SQLite
errors told apart), `salvage` (what a corrupt file still gives).
"""

from agent.buffer.readings import SERIES_CACHE, Buffer, Head, LineBatch, Row
from agent.buffer.schema import stored_value
from agent.errors import BufferFull

__all__ = ["SERIES_CACHE", "Buffer", "BufferFull", "Head", "LineBatch", "Row", "stored_value"]
