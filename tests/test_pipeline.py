"""The pipeline with a real engine and a real buffer: what one reading holds ends nothing.

Before: a reading an `expr` could not judge ended the pipeline task (its message never
acknowledged), and a reading dated years ahead raised NC events dated years ahead, which
the API refuses (clock_skew) and the forwarder would retry for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import agent.pipeline as pipeline_module
from agent.buffer import Buffer, BufferFull
from agent.pipeline import Pipeline
from collector.reading import Reading
from rules.engine import Engine
from rules.standard import Asset, Standard
from tests.buffer_contents import stored

T0 = 1_772_445_600.0  # 2026-03-02T10:00:00Z, the pipeline's clock throughout
YEAR = 365 * 86400.0
TOLERANCE = 300.0  # how far ahead a reading may be dated (docs/rules.md)
STANDARDS = [Standard.model_validate(s) for s in (
    {"id": "SQRT", "title": "sqrt", "expr": "(a - b) ** 0.5", "check": {"max": 1}},
    {"id": "PLAIN", "title": "plain", "metric": "a", "check": {"max": 100}},
)]


def pipeline(tmp_path: Path) -> Pipeline:
    engine = Engine("tower-a", [Asset(id="CH-1")], STANDARDS, started=T0)
    return Pipeline(engine, Buffer(tmp_path / "buffer.sqlite"), clock=lambda: T0)


def feed(line: Pipeline, batches: Sequence[list[Reading]]) -> int:
    """Each batch through `run`, waiting for its acknowledgement; returns how many came."""
    acks: list[int] = []

    async def scenario() -> None:
        running = asyncio.create_task(line.run())
        for batch in batches:
            stored = asyncio.Event()
            line.emit(batch, on_stored=lambda s=stored: (acks.append(1), s.set()))
            await asyncio.wait_for(stored.wait(), 5)
            assert not running.done()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    asyncio.run(scenario())
    return len(acks)


def events(buffer: Buffer) -> list[tuple[str, str, str]]:
    return [(b["type"], b["standard_id"], b["at"]) for _, b in buffer.pending_events()]


def test_a_reading_no_expr_can_judge_is_stored_and_acknowledged(tmp_path: Path) -> None:
    line = pipeline(tmp_path)
    complex_ = [Reading("CH-1", "a", 1.0, T0 - 2), Reading("CH-1", "b", 2.0, T0 - 2)]
    violating = [Reading("CH-1", "a", 150.0, T0 - 1)]
    assert feed(line, [complex_, violating]) == 2
    assert line.engine.refused == {"SQRT": 1}
    assert events(line.buffer) == [("violation_started", "SQRT", "2026-03-02T09:59:59Z"),
                                   ("violation_started", "PLAIN", "2026-03-02T09:59:59Z")]
    kept = [(s.reading.metric, s.reading.value, s.reading.quality.good)
              for s in stored(line.buffer, 10)]
    assert kept == [("a", 1.0, True), ("b", 2.0, True), ("a", 150.0, True)]


def test_a_reading_dated_years_ahead_is_stored_as_bad_quality_and_not_judged(
        tmp_path: Path) -> None:
    line = pipeline(tmp_path)
    ahead = Reading("CH-1", "a", 150.0, T0 + 3 * YEAR)
    later = Reading("CH-1", "a", 150.0, T0 + TOLERANCE - 1)  # within the tolerance
    assert feed(line, [[ahead], [later]]) == 2
    # only the later one raised: the one ahead was not judged and moved nothing
    assert events(line.buffer) == [("violation_started", "PLAIN", "2026-03-02T10:04:59Z")]
    assert line.engine.out_of_order == 0 and line.ahead == 1
    first, second = stored(line.buffer, 10)
    assert first.reading.ts == T0 + 3 * YEAR and not first.reading.quality.good
    assert first.reading.quality.reason == "timestamp ahead of clock by 1095.0d"
    assert second.reading.quality.good


def test_a_reading_the_buffer_cannot_store_is_dropped_alone(tmp_path: Path) -> None:
    """A name SQLite cannot encode made the buffer raise, and the pipeline task ended."""
    line = pipeline(tmp_path)
    unstorable = Reading("\ud800", "a", 1.0, T0)
    assert feed(line, [[unstorable, Reading("CH-1", "a", 150.0, T0)],
                       [Reading("CH-1", "a", 10.0, T0 + 1)]]) == 2
    assert [(s.reading.asset, s.reading.value) for s in stored(line.buffer, 10)] == [
        ("CH-1", 150.0), ("CH-1", 10.0)]
    assert events(line.buffer) == [("violation_started", "PLAIN", "2026-03-02T10:00:00Z"),
                                   ("violation_cleared", "PLAIN", "2026-03-02T10:00:01Z")]
    assert line.unstorable == 1


def test_a_full_disk_drops_only_held_readings_no_source_waits_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: past MAX_HELD the oldest held batch was dropped with its acknowledgement,
    so an MQTT QoS 1 connection, which acknowledges in order and counts unstored messages
    against its inbox, waited for it for ever: no PUBACK and no read again."""
    monkeypatch.setattr(pipeline_module, "MAX_HELD", 5)
    line = pipeline(tmp_path)
    full = [True]
    put = line.buffer.put

    def put_unless_full(*args: Any, **kwargs: Any) -> None:
        if full[0]:
            raise BufferFull("disk full (test)")
        put(*args, **kwargs)

    monkeypatch.setattr(line.buffer, "put", put_unless_full)
    acked: list[str] = []

    async def scenario() -> None:
        running = asyncio.create_task(line.run())

        def batch(asset: str, start: float) -> list[Reading]:
            return [Reading(asset, "a", 1.0, start + i) for i in range(3)]

        line.emit(batch("CH-1", T0), on_stored=lambda: acked.append("qos1-a"))
        await asyncio.sleep(0.05)  # one batch at a time, as they would come
        line.emit(batch("CH-1", T0 + 10))  # QoS 0 or Modbus: nobody waits
        await asyncio.sleep(0.05)
        line.emit(batch("CH-1", T0 + 20), on_stored=lambda: acked.append("qos1-c"))
        await asyncio.sleep(0.05)
        full[0] = False
        stored_d = asyncio.Event()
        line.emit(batch("CH-1", T0 + 30), on_stored=stored_d.set)
        await asyncio.wait_for(stored_d.wait(), 5)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    asyncio.run(scenario())
    assert acked == ["qos1-a", "qos1-c"]
    assert line.dropped_held == 3
    kept = sorted(s.reading.ts - T0 for s in stored(line.buffer, 100))
    assert kept == [0, 1, 2, 20, 21, 22, 30, 31, 32]
