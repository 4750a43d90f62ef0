"""The rule state in the buffer: saved compressed (it is megabytes on a large site and is
written every 30 s and with every event), read back equal, and a buffer written before
that change (plain JSON text) still restores."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
from pathlib import Path

from agent.buffer import Buffer


def a_state(pairs: int = 2000) -> dict[str, object]:
    """Shaped like Engine.state(): per pair its evidence (50 timestamped readings)."""
    rng = random.Random(7)
    start = 1_764_800_000.0
    return {"v": 2, "tracks": {
        f"AHU-{i // 20}|STD-{i % 20}|1": ["ok", 0.0, 0.0, False, False, [],
                                         [[start + 5 * k, round(rng.gauss(21, 2), 2)]
                                          for k in range(50)], start, "ok", start, {}, {},
                                         None] for i in range(pairs)}}


def test_the_state_is_saved_compressed_and_read_back_equal(tmp_path: Path) -> None:
    state = a_state()
    buffer = Buffer(tmp_path / "buffer.sqlite")
    buffer.put([], [], ("engine", state))
    assert buffer.load_state("engine") == state
    buffer.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "buffer.sqlite")) as db:
        body, = db.execute("SELECT body FROM state WHERE name = 'engine'").fetchone()
    text = json.dumps(state, separators=(",", ":")).encode()
    assert isinstance(body, bytes)
    assert len(body) < len(text) / 2.5, (len(body), len(text))  # what each save writes
    again = Buffer(tmp_path / "buffer.sqlite")  # and after a restart
    assert again.load_state("engine") == state
    again.close()


def test_a_state_saved_as_plain_json_by_an_older_agent_still_restores(tmp_path: Path) -> None:
    Buffer(tmp_path / "buffer.sqlite").close()
    state = a_state(3)
    with contextlib.closing(sqlite3.connect(tmp_path / "buffer.sqlite")) as db:
        db.execute("INSERT INTO state (name, body) VALUES ('engine', ?)", (json.dumps(state),))
        db.commit()
    buffer = Buffer(tmp_path / "buffer.sqlite")
    assert buffer.load_state("engine") == state
    buffer.close()
