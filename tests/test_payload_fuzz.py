"""10,000 hostile MQTT messages through the payload mapping and on through the pipeline.

Topics and payloads as a broken or hostile device sends them (invalid UTF-8, huge and
non-finite numbers, deep JSON, lone surrogates, huge strings, odd types) go through every
kind of subscription (collector.mqtt.payload), then through a real `Pipeline` with a real
`Engine` and a real `Buffer`, as collector.mqtt hands them on. No exception may leave the
mapping or the pipeline: each message is mapped to readings (stored, good or bad quality,
and acknowledged) or refused with a reason, and the pipeline task keeps running.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.buffer import Buffer
from agent.pipeline import Pipeline
from collector.mqtt.config import Subscription
from collector.mqtt.payload import PayloadError, PayloadMapper
from collector.reading import Reading
from rules.engine import Engine
from rules.standard import Asset, Standard

MAX_PAYLOAD = 64 * 1024
SUBSCRIPTIONS = [
    Subscription(topic="fz/{asset}/env", metrics={"a": "$.a", "b": "$.b", "c": "$.deep[0].x"},
                 timestamp="$.ts"),
    Subscription(topic="fz/{asset}/{metric}", format="number"),
    Subscription(topic="fz/raw/{asset}/{metric}"),
    Subscription(topic="fz/fixed/#", asset="CH-1", metrics={"a": "$['a']", "b": "$.b[-1]"}),
]
STANDARDS = [Standard.model_validate(s) for s in (
    {"id": "SQRT", "title": "t", "expr": "(a - b) ** 0.5", "check": {"max": 1}},
    {"id": "RATIO", "title": "t", "expr": "a / b", "check": {"min": -5, "max": 5}},
    {"id": "PLAIN", "title": "t", "metric": "a", "check": {"max": 100}, "for": "1s"},
    {"id": "SUM", "title": "t", "metric": "b",
     "check": {"kind": "window", "agg": "sum", "over": "1h", "max": 1e300}},
    {"id": "RATE", "title": "t", "metric": "c", "check": {"kind": "rate", "max": 1, "per": "1m"}},
)]
NOW = 1_772_445_600.0

# JSON tokens as they appear on the wire, valid or not
TOKENS = ["0", "-0", "1.5", "21.5", "-40", "1e308", "-1e308", "1e999", "-1e999", "NaN",
          "Infinity", "-Infinity", "123456789012345678901234567890", "9" * 500, "true",
          "false", "null", '"21.5"', '" 7 "', '"ON"', '"off"', '"1e400"', '"nan"', '""',
          '"\\ud800"', '"\\udc00x"', '"\\u0000"', '"x"', "[1]", "[]", "{}", '{"x": 1}',
          '"2026-03-02T10:00:00"', '"2026-03-02T10:00:00+08:00"', '"2026-13-45"',
          "1772445600", "1772445600000", "253402300800000", "1e11", "-5", '"1772445600"',
          "0.000001", "4.9e-324", "[" * 5000 + "]" * 5000, '"' + "x" * 70000 + '"']
NUMBERS = ["1", "2", "0.5", "150", "-3", "1e-300", "3.5"]  # a < b makes sqrt(a - b) complex
GOOD_TS = ["1772445600", "1772445599.5", '"2026-03-02T10:00:00Z"', "1772445600000"]
tokens = st.one_of(st.sampled_from(TOKENS), st.sampled_from(NUMBERS))
timestamps = st.one_of(st.sampled_from(GOOD_TS), tokens)
levels = st.one_of(st.sampled_from(["CH-1", "CH-2", "a", "b", "c", "", "+", "#", "$SYS",
                                    "\ud800", "\udcff", "\x00", "\ufffd", "x" * 5000]),
                   st.text(max_size=8))


WELL_FORMED = ["fz/CH-1/env", "fz/CH-2/env", "fz/CH-1/a", "fz/CH-1/b", "fz/CH-1/c",
               "fz/raw/CH-1/a", "fz/raw/CH-1/b", "fz/fixed", "fz/fixed/x/y", "fz/CH-9/env"]


@st.composite
def odd_topics(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["fz", "fz/raw", "fz/fixed", "other", "$SYS", "fz/fixed/x",
                                   ""]))
    rest = draw(st.lists(st.one_of(levels, st.sampled_from(["env", "a", "b", "c"])),
                         min_size=0, max_size=3))
    return "/".join([prefix, *rest])


well_formed = st.sampled_from(WELL_FORMED)
odd_levels = st.builds("fz/{}/{}".format, levels, st.sampled_from(["env", "a", "b"]))
topics = st.one_of(well_formed, well_formed, well_formed, odd_levels, odd_topics())


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
              st.sampled_from([10**400, "ON", " 21.5 ", "\ud800", "2026-03-02T10:00:00Z"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "b", "c", "x", "ts", "deep"]),
                                            inner, max_size=4)),
    max_leaves=8)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(-3, 4))
    if kind <= 0:  # a template with wire tokens where values go
        fields = draw(st.dictionaries(st.sampled_from(["a", "b", "c", "deep"]), tokens,
                                      max_size=4))
        if draw(st.integers(0, 5)):
            fields["ts"] = draw(timestamps)
        if "deep" in fields and draw(st.booleans()):
            fields["deep"] = f'[{{"x": {draw(tokens)}}}]'
        text = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
        return text.encode("utf-8", "surrogatepass")
    if kind == 1:  # a document, serialised (NaN, huge ints, surrogates and all)
        doc = draw(json_values)
        try:
            text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
        except ValueError:
            text = "{}"
        return text.encode("utf-8", "surrogatepass")
    if kind == 2:  # a bare token (the number format)
        return draw(tokens).encode("utf-8", "surrogatepass")
    if kind == 3:  # bytes: invalid UTF-8, overlong forms, encoded surrogates
        return draw(st.one_of(st.binary(max_size=40), st.sampled_from(
            [b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80", b'{"a": "\xff"}', b"\x00", b"",
             b" 21.5\n", b'{"a": 1.5}\x00', b"\xef\xbb\xbf{\"a\": 1}"])))
    return b'{"a": ' + draw(tokens).encode() + b', "pad": "' + b"x" * draw(
        st.sampled_from([0, MAX_PAYLOAD])) + b'"}'


class Harness:
    """The mappers, the pipeline's loop and task, and the tally of what happened."""

    def __init__(self, tmp: Path) -> None:
        self.mappers = [PayloadMapper(s, max_payload=MAX_PAYLOAD) for s in SUBSCRIPTIONS]
        engine = Engine("tower-a", [Asset(id="CH-1"), Asset(id="CH-2")], STANDARDS,
                        started=NOW)
        self.buffer = Buffer(tmp / "buffer.sqlite")
        self.loop = asyncio.new_event_loop()
        self.pipeline = Pipeline(engine, self.buffer, clock=lambda: NOW)
        self.task = self.loop.create_task(self.pipeline.run())
        self.messages = self.mapped = self.refused = self.unmatched = self.readings = 0

    def messages_in(self, batch: list[tuple[str, bytes, float]]) -> None:
        """Each message as collector.mqtt hands it on, then wait until all are stored."""
        self.loop.run_until_complete(self._stored([self.message(*m) for m in batch]))
        assert self.buffer.count()["readings"] == self.readings

    def message(self, topic: str, payload: bytes, arrival: float) -> asyncio.Event:
        """Map one message and emit its readings; the event is set once they are stored."""
        self.messages += 1
        readings: list[Reading] = []
        matched = False
        for mapper in self.mappers:
            plan = mapper.plan(topic)
            if plan is None:
                continue
            matched = True
            try:
                mapped, problems = mapper.map_planned(plan, payload, arrival)
            except PayloadError as exc:
                assert exc.reason
                self.refused += 1
                continue
            assert all(p.reason for p in problems)
            for reading in mapped:
                assert math.isfinite(reading.value) and math.isfinite(reading.ts)
                assert reading.asset and isinstance(reading.value, float)
            readings += mapped
        self.unmatched += not matched
        self.mapped += bool(readings)
        self.readings += len(readings)
        stored = asyncio.Event()
        self.pipeline.emit(readings, on_stored=stored.set)
        return stored

    async def _stored(self, events: list[asyncio.Event]) -> None:
        waiting = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in events)))
        await asyncio.wait([waiting, self.task], timeout=10,
                           return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():  # the pipeline ended: its exception is the finding
            waiting.cancel()
            self.task.result()
        assert waiting.done(), "not stored within 10 s"

    def close(self) -> None:
        self.task.cancel()
        self.loop.run_until_complete(asyncio.gather(self.task, return_exceptions=True))
        self.loop.close()
        self.buffer.close()


@pytest.fixture
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    # On tmpfs when there is one: a buffer commit is fsynced, 10,000 of them take a while.
    shm = Path("/dev/shm")
    base = Path(tmp_path_factory.mktemp("fuzz", numbered=True))
    if shm.is_dir():
        base = shm / f"patrol-fuzz-{base.name}-{id(base)}"
        base.mkdir()
    h = Harness(base)
    yield h
    h.close()
    if base.is_relative_to(shm):
        for file in base.iterdir():
            file.unlink()
        base.rmdir()


messages = st.tuples(topics, payloads(), st.sampled_from([NOW - 60, NOW, NOW + 1e9]))


@settings(max_examples=1_000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(batch=st.lists(messages, min_size=10, max_size=10))
def test_no_message_raises_out_of_mapping_or_pipeline(
        harness: Harness, batch: list[tuple[str, bytes, float]]) -> None:
    """1,000 examples of 10 messages each: 10,000 messages (about 1,400 map to readings,
    140 of which an expr cannot judge, 370 dated ahead; the rest refused or unmatched)."""
    harness.messages_in(batch)


def test_the_fuzz_reached_every_outcome(harness: Harness) -> None:
    """The harness itself: a plain message maps, a bad one is refused, a stray unmatched."""
    harness.messages_in([("fz/CH-1/env", b'{"a": 1, "b": 2, "ts": 1772445600}', NOW),
                         ("fz/CH-1/env", b'{"a": 1, "b": 2, "ts": "2026-13-45"}', NOW),
                         ("elsewhere", b"1", NOW)])
    assert (harness.mapped, harness.refused, harness.unmatched) == (1, 3, 1)  # the number
    # subscription fz/{asset}/{metric} refuses both JSON payloads
    assert harness.pipeline.engine.refused == {"SQRT": 1}
