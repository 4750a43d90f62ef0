"""TsdbWriter without a server: the line format, and each kind of server answer.

The server is `ScriptedServer`, a fake `send` passed to the writer; waits go to
`RecordingSleep`, so backoff and Retry-After are read from its log, not waited for.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from agent.buffer import Buffer
from agent.lineprotocol import to_ms
from agent.tsdb import (
    AUTH_RETRY,
    MAX_BACKOFF,
    Answer,
    InfluxConfig,
    LineSerializer,
    TsdbWriter,
)
from collector.reading import GOOD, Reading, bad
from common.retry import RETRY_AFTER_FLOOR, retry_after_seconds, retry_delay
from tests.buffer_contents import dead_letters, stored

# --- the line format ------------------------------------------------------------------

names = st.text(alphabet=st.sampled_from(list("ab Z9_-.,=\"'\\\n\t/é°µ")) | st.characters(),
                max_size=12)
values = st.floats(allow_nan=True, allow_infinity=False)
qualities = st.one_of(st.just(GOOD), names.map(bad))


def library_line(measurement: str, site: str, asset_type: str, location: str,
                 reading: Reading) -> str:
    """The same point built with influxdb-client's own Point."""
    point = (Point(measurement).tag("site", site).tag("asset", reading.asset)
             .tag("metric", reading.metric))
    for key, value in (("asset_type", asset_type), ("location", location),
                       ("source", reading.source)):
        if value:
            point.tag(key, value)
    point.field("value", reading.value).field("quality", 1 if reading.quality.good else 0)
    if not reading.quality.good:
        point.field("reason", reading.quality.reason)
    return point.time(to_ms(reading.ts), WritePrecision.MS).to_line_protocol()


@given(measurement=names.filter(lambda s: s and not s.startswith("#")), site=names,
       asset=names, metric=names, source=names, asset_type=names, location=names,
       value=values, quality=qualities, ts=st.floats(0, 4e9), again=values)
@settings(max_examples=400)
def test_line_is_what_influxdb_client_point_writes(
        measurement: str, site: str, asset: str, metric: str, source: str, asset_type: str,
        location: str, value: float, quality: object, ts: float, again: float) -> None:
    serializer = LineSerializer(measurement, site, {asset: (asset_type, location)})
    first = Reading(asset, metric, value, ts, quality, source=source)  # type: ignore[arg-type]
    second = Reading(asset, metric, again, ts + 1, GOOD, source=source)  # a cached prefix
    for reading in (first, second):
        assert serializer.line(reading) == library_line(measurement, site, asset_type,
                                                        location, reading)


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # UTF-8 encodable


@given(readings=st.lists(st.builds(
    Reading, asset=text, metric=text, value=values, ts=st.floats(0, 4e9),
    quality=st.one_of(st.just(GOOD), text.map(bad)), source=text), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_lines_from_buffer_rows_are_the_library_lines(readings: list[Reading]) -> None:
    """Both ways out of the buffer write what Point writes: the batch SQLite builds (the
    writer's hot path) and the per-row lines (for finding refused points)."""
    serializer = LineSerializer("patrol", "plant-1", {})
    with tempfile.TemporaryDirectory() as folder:
        buffer = Buffer(Path(folder) / "b.sqlite")
        try:
            buffer.put(readings)
            lines = serializer.lines(buffer.rows(100), buffer.series)
            batch = buffer.line_batch(100, 0, serializer.head)
        finally:
            buffer.close()
    expected = [library_line("patrol", "plant-1", "", "", r) for r in readings]
    assert lines == expected
    assert batch is not None and batch.count == len(readings)
    assert batch.body == "\n".join(expected).encode()


def test_line_layout() -> None:
    serializer = LineSerializer("patrol", "plant-1", {"ahu 1": ("ahu", "roof, east")})
    good = Reading("ahu 1", "supply_temp", 21.5, 1_700_000_000.123, source="modbus")
    failed = Reading("ahu 1", "supply_temp", math.nan, 1_700_000_001.0, bad('no "reply"'),
                     source="modbus")
    prefix = ("patrol,asset=ahu\\ 1,asset_type=ahu,location=roof\\,\\ east,"
              "metric=supply_temp,site=plant-1,source=modbus ")
    assert serializer.line(good) == prefix + "quality=1i,value=21.5 1700000000123"
    assert serializer.line(failed) == prefix + 'quality=0i,reason="no \\"reply\\"" 1700000001000'


# --- the writer against a scripted server ------------------------------------------------


class ScriptedServer:
    """A fake `send`: answers from a script, then `otherwise`; 400 for any poison line."""

    def __init__(self, script: list[Answer] | None = None, *,
                 poison: frozenset[str] = frozenset(),
                 otherwise: Callable[[list[str]], Answer] | None = None) -> None:
        self.script = list(script or [])
        self.poison = poison
        self.otherwise = otherwise or (lambda lines: Answer(204))
        self.requests: list[list[str]] = []
        self.accepted: list[str] = []

    def __call__(self, body: bytes) -> Answer:
        lines = body.decode().split("\n")
        self.requests.append(lines)
        answer = self.script.pop(0) if self.script else self._judge(lines)
        if answer.ok:
            self.accepted += lines
        return answer

    def _judge(self, lines: list[str]) -> Answer:
        refused = [line for line in lines if line in self.poison]
        if refused:
            return Answer(400, f"unable to parse {refused[0]!r}: bad timestamp")
        return self.otherwise(lines)


class RecordingSleep:
    """An injected `sleep` that only remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


SERIALIZER = LineSerializer("patrol", "site-1", {})


def make_readings(n: int) -> list[Reading]:
    return [Reading(f"asset-{i % 7}", "temp", float(i), 1_700_000_000 + i) for i in range(n)]


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[Buffer]:
    store = Buffer(tmp_path / "buffer.sqlite")
    yield store
    store.close()


def writer_for(buffer: Buffer, server: ScriptedServer, *, batch_size: int = 100
               ) -> tuple[TsdbWriter, RecordingSleep]:
    config = InfluxConfig(url="http://tsdb.test:8086", bucket="patrol", batch_size=batch_size)
    sleep = RecordingSleep()
    return TsdbWriter(buffer, config, SERIALIZER, server, sleep=sleep), sleep


def flush(writer: TsdbWriter, times: int) -> None:
    async def main() -> None:
        for _ in range(times):
            await writer.flush_once()

    asyncio.run(main())


def drain(writer: TsdbWriter, limit: int = 10_000) -> None:
    async def main() -> None:
        for _ in range(limit):
            if not writer.buffer.count()["readings"]:
                return
            await writer.flush_once()
        raise AssertionError("the buffer did not drain")

    asyncio.run(main())


@given(n=st.integers(1, 400), data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_bisect_dead_letters_exactly_the_poison_lines(n: int, data: st.DataObject) -> None:
    poison_at = data.draw(st.sets(st.integers(0, n - 1), max_size=min(n, 6)))
    readings = make_readings(n)
    lines = [SERIALIZER.line(r) for r in readings]
    poison = frozenset(lines[i] for i in poison_at)
    with tempfile.TemporaryDirectory() as directory:
        store = Buffer(Path(directory) / "buffer.sqlite")
        store.put(readings)
        server = ScriptedServer(poison=poison)
        writer, _ = writer_for(store, server, batch_size=128)
        drain(writer)
        letters = dead_letters(store, limit=100)
        store.close()
    assert sorted(line for _, line, _ in letters) == sorted(poison)
    for _, line, error in letters:  # the message the server gave for that line alone
        assert error == f"unable to parse {line!r}: bad timestamp"
    assert sorted(server.accepted) == sorted(set(lines) - poison)  # each good line once
    assert writer.dead_lettered == len(poison) and writer.written == n - len(poison)


def test_bisect_stops_when_the_server_goes_away(buffer: Buffer) -> None:
    readings = make_readings(8)
    buffer.put(readings)
    bad_line = SERIALIZER.line(readings[6])
    # whole batch 400, first half 204, second half 503: the rest waits for the next try
    server = ScriptedServer([Answer(400, "bad"), Answer(204), Answer(503, "restarting")],
                            poison=frozenset({bad_line}))
    writer, _ = writer_for(buffer, server)
    flush(writer, 1)
    assert buffer.count()["readings"] == 4 and not dead_letters(buffer)
    drain(writer)
    assert [line for _, line, _ in dead_letters(buffer)] == [bad_line]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_honoured(buffer: Buffer, status: int) -> None:
    buffer.put(make_readings(10))
    server = ScriptedServer([Answer(status, "slow down", "7"), Answer(status, "", "0.5")])
    writer, sleep = writer_for(buffer, server)
    drain(writer)
    (long, short) = sleep.waits
    assert 7.0 <= long <= 7.0 * 1.25  # honoured, spread a little so clients part
    assert short == RETRY_AFTER_FLOOR  # never sooner than a second
    assert buffer.count()["readings"] == 0


@pytest.mark.parametrize("header", ["0", "-3", "0.01", "nan", "inf", "1e308", "86400"])
def test_retry_after_is_floored_at_a_second_and_capped_at_the_backoff_maximum(
        header: str) -> None:
    for attempt in (1, 5, 50):
        wait = retry_delay(header, attempt, base=0.5, cap=60.0)
        assert RETRY_AFTER_FLOOR <= wait <= 60.0, (header, wait)
    assert retry_delay(0.0, 1, base=0.5, cap=0.2) == RETRY_AFTER_FLOOR  # the floor wins
    assert 0.25 <= retry_delay(None, 1, base=0.5, cap=60.0) <= 0.5  # no header: backoff


def test_retry_after_http_date_is_honoured(buffer: Buffer) -> None:
    buffer.put(make_readings(10))
    server = ScriptedServer([Answer(429, "slow down", formatdate(time.time() + 30,
                                                                  usegmt=True))])
    writer, sleep = writer_for(buffer, server)
    drain(writer)
    assert len(sleep.waits) == 1 and 28 <= sleep.waits[0] <= 30 * 1.25


def test_retry_after_parsing() -> None:
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("86400") == 600.0  # capped at 10 minutes
    assert retry_after_seconds(formatdate(time.time() - 60, usegmt=True)) == 0.0


def test_5xx_and_unreachable_back_off_exponentially_with_jitter_capped(
        buffer: Buffer, caplog: pytest.LogCaptureFixture) -> None:
    buffer.put(make_readings(10))
    failures = 2000  # far past where 2 ** n overflows a float
    script = [Answer(None, "connection refused") if i % 3 else Answer(500, "oops")
              for i in range(failures)]
    server = ScriptedServer(script)
    writer, sleep = writer_for(buffer, server)
    with caplog.at_level(logging.DEBUG, logger="patrol.tsdb"):
        drain(writer, limit=failures + 5)
    waits = sleep.waits
    assert len(waits) == failures
    for n, wait in enumerate(waits):
        ceiling = min(MAX_BACKOFF, 0.5 * 2 ** min(n, 16))
        assert ceiling / 2 <= wait <= ceiling  # jitter takes up to half off
    assert max(waits) <= MAX_BACKOFF
    assert waits[:6] == sorted(waits[:6])  # grows (bounds 0.25-0.5, 0.5-1, 1-2, ...)
    assert len(set(waits[20:])) > 1  # jittered even at the cap
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure; the rest at debug
    assert any("writing to http://tsdb.test:8086 again" in r.message for r in caplog.records)
    assert buffer.count()["readings"] == 0


def test_401_keeps_everything_logs_once_and_retries_slowly(
        buffer: Buffer, caplog: pytest.LogCaptureFixture) -> None:
    buffer.put(make_readings(250))
    server = ScriptedServer(otherwise=lambda lines: Answer(401, "authorization failed"))
    writer, sleep = writer_for(buffer, server)
    with caplog.at_level(logging.INFO, logger="patrol.tsdb"):
        flush(writer, 5)
        assert buffer.count()["readings"] == 250
        assert sleep.waits == [AUTH_RETRY] * 5
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "refused our credentials (401" in errors[0].message
        server.otherwise = lambda lines: Answer(204)  # credentials fixed on the server
        drain(writer)
    assert buffer.count()["readings"] == 0
    assert any("again" in r.message for r in caplog.records if r.levelno == logging.INFO)


def test_403_is_treated_like_401(buffer: Buffer) -> None:
    buffer.put(make_readings(10))
    server = ScriptedServer(otherwise=lambda lines: Answer(403, "forbidden"))
    writer, sleep = writer_for(buffer, server)
    flush(writer, 2)
    assert buffer.count()["readings"] == 10 and sleep.waits == [AUTH_RETRY, AUTH_RETRY]


def test_413_halves_the_batch_size(buffer: Buffer) -> None:
    buffer.put(make_readings(3000))
    server = ScriptedServer(otherwise=lambda lines: Answer(413 if len(lines) > 700 else 204))
    writer, sleep = writer_for(buffer, server, batch_size=5000)
    drain(writer)
    assert writer.batch_size == 375  # half the refused batch: 3000 -> 1500 -> 750 -> 375
    assert [len(r) for r in server.requests[:5]] == [3000, 1500, 1500, 750, 750]  # 2 in flight
    assert buffer.count()["readings"] == 0 and sleep.waits == []
    assert sorted(server.accepted) == sorted(SERIALIZER.line(r) for r in make_readings(3000))


def test_2xx_deletes_only_what_was_sent(buffer: Buffer) -> None:
    buffer.put(make_readings(250))
    server = ScriptedServer()
    writer, _ = writer_for(buffer, server)
    flush(writer, 1)
    assert buffer.count()["readings"] == 150
    assert [s.reading.value for s in stored(buffer, 1)] == [100.0]


def test_a_buffer_from_the_previous_version_is_converted_keeping_every_reading(
        tmp_path: Path) -> None:
    """Version 1 held values as REAL (SQLite would write them with 15 digits): opening it
    converts them to exact text, so the batch SQLite builds is still what Point writes."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript("""
        CREATE TABLE series (id INTEGER PRIMARY KEY, asset TEXT NOT NULL, metric TEXT NOT NULL,
            unit TEXT NOT NULL, source TEXT NOT NULL, UNIQUE (asset, metric, unit, source));
        CREATE TABLE readings (id INTEGER PRIMARY KEY, series INTEGER NOT NULL,
            ts REAL NOT NULL, value REAL, bad TEXT);
        INSERT INTO series VALUES (1, 'ahu-1', 'supply_temp', 'degC', 'modbus');
    """)
    values = [21.299999237060547, 0.1, None, 1e20, -3.0, 127.69235484252135]
    old.executemany("INSERT INTO readings (id, series, ts, value, bad) VALUES (?, 1, ?, ?, ?)",
                    [(10 + i, 1_700_000_000 + i, v, None if v is not None else "timeout")
                     for i, v in enumerate(values)])
    old.close()

    buffer = Buffer(path)
    try:
        kept = stored(buffer, 100)
        serializer = LineSerializer("patrol", "plant-1", {})
        batch = buffer.line_batch(100, 0, serializer.head)
        buffer.put([Reading("ahu-1", "supply_temp", 5.5, 1_700_000_100, unit="degC",
                            source="modbus")])
        assert [s.id for s in stored(buffer, 100)][-1] == 16  # ids continue after the old ones
    finally:
        buffer.close()
    assert [s.id for s in kept] == list(range(10, 16))
    assert [s.reading.value for s in kept if not math.isnan(s.reading.value)] == [
        v for v in values if v is not None]
    assert batch is not None and (batch.first, batch.last, batch.count) == (10, 15, 6)
    assert batch.body.decode().split("\n") == [
        library_line("patrol", "plant-1", "", "", s.reading) for s in kept]
    again = Buffer(path)  # now version 2: opens as it is
    try:
        reopened = again.line_batch(100, 0, serializer.head)
        assert reopened is not None and reopened.count == 7
    finally:
        again.close()
