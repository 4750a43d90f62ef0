"""The line protocol is defined once (agent/lineprotocol.py) and written out twice: as
Python and as the SQL that builds the buffer's batches. Both must give the same bytes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import (
    _ESCAPE_MEASUREMENT,
    _ESCAPE_STRING,
    _append_tags,
    _escape_key,
)

from agent.buffer import Buffer, stored_value
from agent.lineprotocol import STRING_ESCAPES, head, line, sql_line
from collector.reading import Reading

AWKWARD = ["plain", "with space", "a,comma", "equals=sign", 'a "quote"', "back\\slash",
           "trailing\\", '\\"', "ünïcödé °C µS", "日本語", "emoji 🌡", "tab\tand\nnewline",
           "", "'single'", "a\\\\b", "=,\" \\"]
VALUES = [0.0, -0.0, 1.0, 21.5, -3.0, 0.1, 1e20, 1e-7, 123456789.123456789,
          21.299999237060547, float("inf"), float("-inf")]
HEAD = "patrol,asset=x "


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    yield connection
    connection.close()


def by_sql(db: sqlite3.Connection, head: str, ts: float, value: float,
           reason: str | None) -> str:
    """The line as the buffer's SQL builds it, over a value stored as the buffer stores it."""
    expr = sql_line(":head", ":value", ":bad", ":ts")
    row = db.execute(f"SELECT {expr}", {"head": head, "value": stored_value(value),
                                         "bad": reason, "ts": ts}).fetchone()
    return row[0]


@pytest.mark.parametrize("reason", [None, *AWKWARD])
@pytest.mark.parametrize("value", VALUES)
def test_sql_and_python_write_the_same_line(db: sqlite3.Connection, value: float,
                                            reason: str | None) -> None:
    ts = 1_700_000_000.1235
    assert by_sql(db, HEAD, ts, value, reason) == line(HEAD, ts, value, reason)


@given(reason=st.none() | st.text(st.characters(exclude_categories=("Cs",))),
       value=st.floats(allow_nan=False), ts=st.floats(-4e9, 4e9))
@settings(max_examples=500)
def test_sql_and_python_agree_on_any_text_value_and_time(value: float, reason: str | None,
                                                         ts: float) -> None:
    with sqlite3.connect(":memory:") as db:
        assert by_sql(db, HEAD, ts, value, reason) == line(HEAD, ts, value, reason)


def test_string_escapes_are_influxdb_clients() -> None:
    assert {ord(raw): escaped for raw, escaped in STRING_ESCAPES} == _ESCAPE_STRING


@pytest.mark.parametrize("text", AWKWARD)
def test_head_is_influxdb_clients(text: str) -> None:
    """The agent writes a series' head itself, so it need not import influxdb-client."""
    tags = {"site": text, "asset": "a", text or "empty": "x", "metric": text + "\\",
            "source": None, "location": ""}
    assert head(text, tags) == _escape_key(text, _ESCAPE_MEASUREMENT) + _append_tags(tags)


def test_the_buffer_writes_a_repeated_value_as_line_does(tmp_path: Path) -> None:
    """The buffer keeps the text of values it has seen: 0.0 and -0.0 (one dict key) too."""
    values = [*VALUES, *VALUES, -0.0, 0.0, -0.0, float("nan")]
    buffer = Buffer(tmp_path / "buffer.sqlite")
    try:
        for value in values:  # a batch each: the texts outlive a batch
            buffer.put([Reading("x", "m", value, 1_700_000_000.5)])
        batch = buffer.line_batch(100, 0, lambda series: HEAD)
        assert batch is not None
        assert batch.body.decode().split("\n") == [
            line(HEAD, 1_700_000_000.5, value, None) for value in values]
    finally:
        buffer.close()
