"""Buffer -> TsdbWriter -> a real TSDB, read back through the server's own query API.

VictoriaMetrics (Debian's `victoria-metrics`) takes the v2 write API; InfluxDB 1.6
(Debian's `influxd`) the v1 one. Both run on free ports in the test's directory
(`bench/servers.py`). Samples are compared point by point with what was put in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import queue
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.buffer import Buffer, BufferFull
from agent.tsdb import AUTH_RETRY, InfluxConfig, LineSerializer, TsdbWriter, make_sender
from bench.servers import InfluxDB1, Sample, VictoriaMetrics
from collector.reading import GOOD, Reading, bad
from tests.buffer_contents import dead_letters, stored
from tests.held_readings import acks_once_there_is_room
from tests.integration import tsdb_crash_worker as worker

SITE = "plant-1"
ASSETS = {"chiller 1": ("chiller", "Hall 2, line=3"), 'ahu "2"': ("ahu", ""),
          "pump,3": ("", "roof")}
SERIES = (("chiller 1", "supply temp", "modbus:plc 1"), ('ahu "2"', "rh=%", ""),
          ("pump,3", "flow", "mqtt"))
ROOT = Path(__file__).resolve().parents[2]


# --- servers and helpers ----------------------------------------------------------------


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path / "vm") as server:
        yield server


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxDB1]:
    with InfluxDB1(tmp_path / "influxdb") as server:
        yield server


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[Buffer]:
    store = Buffer(tmp_path / "buffer.sqlite")
    yield store
    store.close()


class RecordingSleep:
    """An injected `sleep` that returns at once and remembers what it was asked."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def now_ms() -> int:
    return int(time.time()) * 1000


def sample_readings(per_series: int, start_ms: int, seed: int = 1) -> list[Reading]:
    """Good readings, bad ones without a value (NaN) and bad ones with a value."""
    rng = random.Random(seed)
    out = []
    for i in range(per_series):
        for asset, metric, source in SERIES:
            ts = (start_ms + 10 * i) / 1000
            if i % 50 == 7:
                out.append(Reading(asset, metric, math.nan, ts,
                                   bad(f'timeout, unit 3 "no reply" #{i}'), source=source))
            elif i % 50 == 13:
                out.append(Reading(asset, metric, 250.0 + i, ts, bad("above range=200"),
                                   source=source))
            else:
                out.append(Reading(asset, metric, round(rng.uniform(-40, 150), 3), ts, GOOD,
                                   source=source))
    return out


def labels(reading: Reading, assets: dict[str, tuple[str, str]] = ASSETS,
           site: str = SITE) -> frozenset[tuple[str, str]]:
    asset_type, location = assets.get(reading.asset, ("", ""))
    tags = {"site": site, "asset": reading.asset, "asset_type": asset_type,
            "location": location, "metric": reading.metric, "source": reading.source}
    return frozenset((k, v) for k, v in tags.items() if v)


def vm_expected(readings: Sequence[Reading], assets: dict[str, tuple[str, str]] = ASSETS,
                site: str = SITE) -> dict[Sample, float]:
    """What VictoriaMetrics should hold: one metric per field, `patrol_<field>`."""
    out: dict[Sample, float] = {}
    for r in readings:
        key, ts = labels(r, assets, site), round(r.ts * 1000)
        if not math.isnan(r.value):
            out[("patrol_value", key, ts)] = r.value
        out[("patrol_quality", key, ts)] = 1 if r.quality.good else 0
        if not r.quality.good:
            # VictoriaMetrics keeps a string field as a metric with the value 0: the
            # reason's text is lost there (InfluxDB keeps it).
            out[("patrol_reason", key, ts)] = 0
    return out


def assert_same(got: dict[Any, Any], expected: dict[Any, Any]) -> None:
    """Point by point, with a readable summary when they differ."""
    missing = expected.keys() - got.keys()
    extra = got.keys() - expected.keys()
    wrong = {k: (got[k], expected[k]) for k in expected.keys() & got.keys()
             if got[k] != expected[k]}
    assert not (missing or extra or wrong), (
        f"{len(missing)} missing (e.g. {sorted(missing, key=str)[:3]}), "
        f"{len(extra)} extra (e.g. {sorted(extra, key=str)[:3]}), "
        f"{len(wrong)} differ (e.g. {list(wrong.items())[:3]})")


def config(url: str, api: str = "v2", **kwargs: Any) -> InfluxConfig:
    return InfluxConfig(url=url, api=api, bucket="patrol", flush_interval=0.05, **kwargs)


async def until_empty(writer: TsdbWriter) -> None:
    """Run the writer until the buffer holds no reading (at most 30 s)."""
    task = asyncio.create_task(writer.run())
    try:
        deadline = time.monotonic() + 30
        while writer.buffer.count()["readings"]:
            if task.done():
                task.result()
            assert time.monotonic() < deadline, "the writer did not empty the buffer"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def write_all(buffer: Buffer, cfg: InfluxConfig, readings: Sequence[Reading],
              assets: dict[str, tuple[str, str]] = ASSETS) -> TsdbWriter:
    for start in range(0, len(readings), 500):
        buffer.put(readings[start:start + 500])
    send, close = make_sender(cfg)
    writer = TsdbWriter(buffer, cfg, LineSerializer("patrol", SITE, assets), send)
    try:
        asyncio.run(until_empty(writer))
    finally:
        close()
    return writer


def influx_points(influx: InfluxDB1, where: str = "") -> dict[tuple[Any, int], tuple]:
    """{(tags, ts_ms): (value, quality, reason)} from InfluxQL."""
    out = {}
    sql = f'SELECT "value", "quality", "reason" FROM "patrol" {where} GROUP BY *'
    for series in influx.query(sql):
        tags = frozenset((k, v) for k, v in series["tags"].items() if v)
        for row in series["values"]:
            record = dict(zip(series["columns"], row, strict=True))
            out[(tags, record["time"])] = (record["value"], record["quality"],
                                           record["reason"])
    return out


def influx_expected(readings: Sequence[Reading]) -> dict[tuple[Any, int], tuple]:
    return {(labels(r), round(r.ts * 1000)): (None if math.isnan(r.value) else r.value,
                                              1 if r.quality.good else 0,
                                              None if r.quality.good else r.quality.reason)
            for r in readings}


# --- delivery, point by point ---------------------------------------------------------


def test_victoriametrics_v2_holds_every_reading(vm: VictoriaMetrics, buffer: Buffer) -> None:
    readings = sample_readings(1000, now_ms() - 3_600_000)
    writer = write_all(buffer, config(vm.url, batch_size=1000), readings)
    expected = vm_expected(readings)
    assert_same(vm.export(expect=len(expected)), expected)
    assert len(vm.samples()) == len(expected)  # no sample twice
    assert buffer.count()["readings"] == 0 and writer.written == 3000


def test_influxdb1_v1_holds_every_reading_with_its_reason(influx: InfluxDB1,
                                                          buffer: Buffer) -> None:
    readings = sample_readings(1000, now_ms() - 3_600_000, seed=2)
    write_all(buffer, config(influx.url, api="v1", batch_size=1000), readings)
    assert_same(influx_points(influx), influx_expected(readings))
    assert buffer.count()["readings"] == 0 and not dead_letters(buffer)


# --- outage, crash -----------------------------------------------------------------------


def outage_reading(i: int, start_ms: int) -> Reading:
    asset, metric, source = SERIES[i % 3]
    return Reading(asset, metric, i * 0.25, (start_ms + i) / 1000, source=source)


# SIGTERM only: a SIGKILLed VictoriaMetrics loses the samples it acknowledged in its last
# second or so (they sit in memory before its own flush), which no client can see coming.
@pytest.mark.parametrize("sig", [signal.SIGTERM], ids=["sigterm"])
def test_outage_under_steady_ingest_delivers_each_reading_once(
        vm: VictoriaMetrics, buffer: Buffer, sig: int,
        caplog: pytest.LogCaptureFixture) -> None:
    start_ms = now_ms() - 600_000
    per_tick, ticks = 30, 500  # 3,000 readings/s for about 6 s
    cfg = config(vm.url, batch_size=1000)
    send, close = make_sender(cfg)
    writer = TsdbWriter(buffer, cfg, LineSerializer("patrol", SITE, ASSETS), send)
    held = []

    async def feed() -> None:
        for tick in range(ticks):
            buffer.put([outage_reading(i, start_ms)
                        for i in range(tick * per_tick, (tick + 1) * per_tick)])
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        writing = asyncio.create_task(writer.run())
        feeding = asyncio.create_task(feed())
        await asyncio.sleep(1.5)
        await asyncio.to_thread(vm.stop, sig)
        await asyncio.sleep(3)
        held.append(buffer.count()["readings"])
        await asyncio.to_thread(vm.start)
        await feeding
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing
        await until_empty(writer)

    with caplog.at_level(logging.INFO, logger="patrol.tsdb"):
        asyncio.run(scenario())
    close()
    readings = [outage_reading(i, start_ms) for i in range(per_tick * ticks)]
    expected = vm_expected(readings)
    assert_same(vm.export(expect=len(expected)), expected)
    assert len(vm.samples()) == len(expected)
    assert held[0] > 3000  # the outage was real: readings waited in the buffer
    messages = [r.message for r in caplog.records]
    assert any(m.startswith("cannot write to") for m in messages)
    assert any(m.startswith("writing to") and m.endswith("again") for m in messages)


class WorkerProcess:
    """tsdb_crash_worker in a subprocess, its stdout read line by line in a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.tsdb_crash_worker", *args], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def wait_for(self, prefix: str | tuple[str, ...], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} from the worker: {self.output}") from None
            self.output.append(line)
            if line.startswith(prefix):
                return line
            if "Traceback" in line or "Error" in line:
                raise AssertionError(f"worker failed: {self.output}")

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no cleanup at all
        self.proc.wait(10)


def test_kill_9_mid_flush_loses_nothing_and_corrupts_nothing(
        vm: VictoriaMetrics, tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    start_ms, total = now_ms() - 600_000, 60_000
    args = (str(path), vm.url, str(start_ms), str(total))
    rng = random.Random()
    for round_ in range(8):
        process = WorkerProcess(*args)
        try:
            process.wait_for("started")
            if round_ % 2 == 0:
                # right after the server acknowledged a batch, before the buffer forgot it;
                # on a slow machine earlier rounds may have sent everything already
                process.wait_for(("acked", "drained"))
            else:
                time.sleep(rng.uniform(0.05, 1.2))  # anywhere: feeding, flushing, deleting
        finally:
            process.kill()
    process = WorkerProcess(*args)
    try:
        process.wait_for("drained", timeout=60)
        assert process.proc.wait(10) == 0
    finally:
        process.kill()
    readings = [worker.crash_reading(i, start_ms) for i in range(total)]
    expected = vm_expected(readings, worker.ASSETS, worker.SITE)
    assert_same(vm.export(expect=len(expected)), expected)
    assert len(vm.samples()) == len(expected)  # resent samples replaced themselves (dedup)
    assert vm.metric("vm_rows_inserted_total") > len(expected)  # and some were resent
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM readings").fetchone() == (0,)
    assert not list(tmp_path.glob("*.corrupt-*"))


# --- answers: poison, credentials ---------------------------------------------------------


def test_poison_point_is_dead_lettered_and_the_other_9999_land(
        influx: InfluxDB1, buffer: Buffer) -> None:
    recent = now_ms() - 3_600_000
    old = recent - 30 * 86_400_000  # another shard: InfluxDB types fields per shard
    poisoned = Reading("chiller 1", "poisoned", 1.5, (old + 1) / 1000, source="modbus:plc 1")
    series = LineSerializer("patrol", SITE, ASSETS).line(poisoned).rsplit(" ", 2)[0]
    influx.write(f'{series} value="text" {old}\n'.encode())  # `value` is a string there
    readings = sample_readings(3333, recent, seed=3)
    readings.insert(6001, poisoned)
    assert len(readings) == 10_000

    write_all(buffer, config(influx.url, api="v1"), readings)

    letters = dead_letters(buffer)
    assert len(letters) == 1
    _, line, error = letters[0]
    assert line == LineSerializer("patrol", SITE, ASSETS).line(poisoned)
    assert "field type conflict" in error and '"value"' in error
    good = [r for r in readings if r is not poisoned]
    assert_same(influx_points(influx, f"WHERE time >= {recent}ms"), influx_expected(good))
    # the poisoned series holds only the string written first, not our float
    poisoned_rows = {kind: [row for series in influx.query(
        f"SELECT \"value\"::{kind} FROM \"patrol\" WHERE metric = 'poisoned'")
        for row in series["values"]] for kind in ("string", "float")}
    assert poisoned_rows == {"string": [[old, "text"]], "float": []}
    assert buffer.count()["readings"] == 0


@pytest.mark.parametrize("server", ["victoriametrics-v2", "influxdb1-v1"])
def test_wrong_credentials_keep_everything_and_log_once(
        server: str, tmp_path: Path, buffer: Buffer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATROL_TEST_SECRET", "wrong")
    stack = contextlib.ExitStack()
    if server == "victoriametrics-v2":
        tsdb: Any = stack.enter_context(VictoriaMetrics(tmp_path / "vm", username="patrol",
                                                        password="right"))
        cfg = config(tsdb.url, token_env="PATROL_TEST_SECRET")
    else:
        tsdb = stack.enter_context(InfluxDB1(tmp_path / "influxdb", admin=("patrol", "right")))
        cfg = config(tsdb.url, api="v1", username="patrol", password_env="PATROL_TEST_SECRET")
    with stack:
        readings = sample_readings(100, now_ms() - 60_000)
        buffer.put(readings)
        send, close = make_sender(cfg)
        sleep = RecordingSleep()
        writer = TsdbWriter(buffer, cfg, LineSerializer("patrol", SITE, ASSETS), send,
                            sleep=sleep)

        async def flush(times: int) -> None:
            for _ in range(times):
                await writer.flush_once()

        with caplog.at_level(logging.INFO, logger="patrol.tsdb"):
            asyncio.run(flush(4))
        close()
        assert buffer.count()["readings"] == len(readings)
        assert sleep.waits == [AUTH_RETRY] * 4
        errors = [r.message for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "refused our credentials (401" in errors[0]

        # the credentials are fixed (VictoriaMetrics' -httpAuth takes HTTP Basic, not a
        # token, on /api/v2/write too): writing resumes
        monkeypatch.setenv("PATROL_TEST_SECRET", "right")
        if server == "victoriametrics-v2":
            cfg = config(tsdb.url, username="patrol", password_env="PATROL_TEST_SECRET")
        writer.send, close = make_sender(cfg)
        with caplog.at_level(logging.INFO, logger="patrol.tsdb"):
            asyncio.run(flush(1))
        close()
        assert buffer.count()["readings"] == 0
        assert caplog.records[-1].message == f"writing to {tsdb.url} again"


# --- the buffer on its own: full, corrupt, disk full -------------------------------------


def numbered(first: int, last: int) -> list[Reading]:
    """Readings whose value is their number, one series per asset of SERIES."""
    return [Reading(SERIES[i % 3][0], SERIES[i % 3][1], float(i), 1_700_000_000 + i)
            for i in range(first, last)]


def test_full_buffer_drops_the_oldest_and_says_how_many(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    max_size, total = 200_000, 50_000
    buffer = Buffer(tmp_path / "buffer.sqlite", max_size=max_size)
    with caplog.at_level(logging.WARNING, logger="patrol.buffer"):
        for first in range(0, total, 1000):
            buffer.put(numbered(first, first + 1000))
    kept = [int(s.reading.value) for s in stored(buffer, total)]
    assert buffer.used_bytes() <= max_size
    assert kept == list(range(total - len(kept), total))  # the newest, in order, no gap
    assert 1000 < len(kept) < total
    assert buffer.dropped == total - len(kept) == buffer.count()["dropped"]
    said = [int(m.group(1)) for r in caplog.records
            if r.levelno == logging.WARNING
            and (m := re.match(r"dropped the (\d+) oldest readings", r.message))]
    assert said and sum(said) == buffer.dropped
    assert f"{buffer.dropped} dropped in all" in caplog.records[-1].message
    buffer.close()
    assert Buffer(tmp_path / "buffer.sqlite", max_size=max_size).dropped == total - len(kept)


@pytest.mark.parametrize("damage", ["garbage file", "garbage pages"])
def test_corrupt_buffer_is_moved_aside_and_a_new_one_works(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "buffer.sqlite"
    old = Buffer(path)
    old.put(numbered(0, 20_000))
    old.close()
    if damage == "garbage file":
        path.write_bytes(b"this is not a database, just garbage\n" * 500)
    else:  # the header survives, the b-tree pages do not
        with path.open("r+b") as f:
            size = f.seek(0, os.SEEK_END)
            rng = random.Random(7)
            for offset in range(4096, size, 4096 * 3):
                f.seek(offset)
                f.write(rng.randbytes(4096))
    with caplog.at_level(logging.ERROR, logger="patrol.buffer"):
        buffer = Buffer(path)
    moved = list(tmp_path.glob("buffer.sqlite.corrupt-*"))
    assert moved, list(tmp_path.iterdir())
    errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "is corrupt" in errors[0] and "moved it aside" in errors[0]
    salvaged = buffer.count()["readings"]  # what whole pages still held, if any
    buffer.put(numbered(0, 10))
    values = [s.reading.value for s in stored(buffer, 30_000)]
    assert len(values) == salvaged + 10 and values[salvaged:] == [float(i) for i in range(10)]
    buffer.close()


def fill_with_events(buffer: Buffer) -> int:
    """Queue events until the (simulated) disk is full; events are never dropped."""
    n = 0
    for pad in (300, 30, 0):  # big ones first, then fill the gaps
        while True:
            try:
                buffer.put([], [{"id": f"event-{n}", "pad": "x" * pad}])
            except BufferFull:
                break
            n += 1
    return n


def limit_pages(buffer: Buffer, extra: int = 0) -> None:
    """Simulate a full disk: the file may not grow past its size now (+ extra pages)."""
    pages = buffer._db.execute("PRAGMA page_count").fetchone()[0]
    buffer._db.execute(f"PRAGMA max_page_count = {pages + extra}")


def test_full_disk_costs_the_oldest_readings_then_raises_buffer_full(
        buffer: Buffer, caplog: pytest.LogCaptureFixture) -> None:
    buffer.put(numbered(0, 20_000))
    limit_pages(buffer)
    with caplog.at_level(logging.WARNING, logger="patrol.buffer"):
        for first in range(20_000, 30_000, 1000):
            buffer.put(numbered(first, first + 1000))  # room made by dropping the oldest
    kept = [int(s.reading.value) for s in stored(buffer, 30_000)]
    assert kept == list(range(30_000 - len(kept), 30_000))
    assert buffer.dropped == 30_000 - len(kept) > 0
    assert any("because the disk is full" in r.message for r in caplog.records)

    buffer.delete([s.id for s in stored(buffer, 30_000)])  # sent; now only events remain
    assert fill_with_events(buffer) > 0
    with pytest.raises(BufferFull):  # nothing left to drop
        buffer.put([Reading("new asset", "m", float(i), i) for i in range(1000)])
    assert buffer.count()["readings"] == 0

    # once there is room again, the buffer carries on, each reading with its own series
    buffer._db.execute("PRAGMA max_page_count = 1000000")
    buffer.put([Reading("other asset", "m", 2.0, 2.0), Reading("new asset", "m", 3.0, 3.0)])
    assert [(s.reading.asset, s.reading.value) for s in stored(buffer, 10)] == [
        ("other asset", 2.0), ("new asset", 3.0)]


def test_pipeline_acknowledges_only_once_the_disk_took_the_readings(buffer: Buffer) -> None:
    limit_pages(buffer)
    fill_with_events(buffer)

    def held() -> None:
        assert buffer.count()["readings"] == 0  # BufferFull: held, no ack

    def make_room() -> None:
        buffer._db.execute("PRAGMA max_page_count = 1000000")

    acks = acks_once_there_is_room(buffer, numbered(0, 2000), make_room, full_for=0.3,
                                   while_held=held, site=SITE)
    assert acks == [1]
    assert [s.reading.value for s in stored(buffer, 5000)] == [float(i) for i in range(2000)]
