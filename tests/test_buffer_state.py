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
    buffer.put([], [], [("engine", state)])
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


def test_batches_wait_for_one_commit_and_sources_are_acknowledged_only_then(
        tmp_path: Path) -> None:
    """`buffer.commit_every`: judged batches are stored together at the commit time (one
    transaction), or at once when ACKS_WAITING acknowledgements wait; a source's
    acknowledgement comes only with its batch's commit."""
    import asyncio
    import time as clock

    from agent.pipeline import ACKS_WAITING, Pipeline
    from collector.reading import Reading
    from rules.engine import Engine

    async def scenario() -> None:
        buffer = Buffer(tmp_path / "commit.sqlite")
        pipeline = Pipeline(Engine("s", [], []), buffer, commit_every=0.3)
        task = asyncio.create_task(pipeline.run())
        acked: list[float] = []
        began = clock.monotonic()
        for n in range(3):  # three batches, each with one acknowledgement
            pipeline.emit([Reading("CH-1", "t", 7.0 + n, clock.time())],
                          lambda: acked.append(clock.monotonic() - began))
            await asyncio.sleep(0.02)
        assert buffer.count()["readings"] == 0 and acked == []  # waiting for the commit
        await asyncio.sleep(0.5)
        assert buffer.count()["readings"] == 3 and len(acked) == 3
        assert all(0.25 <= t < 0.6 for t in acked), acked  # all at the one commit
        for _ in range(ACKS_WAITING):  # enough acknowledgements waiting: at once
            pipeline.emit([Reading("CH-1", "t", 8.0, clock.time())], lambda: None)
        await asyncio.sleep(0.05)
        assert buffer.count()["readings"] == 3 + ACKS_WAITING
        pipeline.emit([Reading("CH-1", "t", 9.0, clock.time())])
        await asyncio.sleep(0.05)
        task.cancel()  # a stop stores what waits
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert buffer.count()["readings"] == 4 + ACKS_WAITING
        buffer.close()

    asyncio.run(scenario())


def test_the_pairs_readings_are_saved_apart_less_often_and_a_restart_joins_the_two(
        tmp_path: Path) -> None:
    """The core of the rule state (episodes, compliance) is saved with every event and every
    `save_every`; the pairs' readings (evidence, a window's values: the bulk) only every
    `save_history_every` and at a stop. A restart joins the last of each: the episode is
    not raised again, and the window holds the readings saved last."""
    from agent.pipeline import HISTORY_STATE, Pipeline, saved_state
    from collector.reading import Reading
    from rules.engine import Engine
    from rules.standard import Asset, Standard

    t0 = 1_772_445_600.0
    now = [t0]
    standards = [Standard.model_validate(s) for s in (
        {"id": "MEAN", "title": "mean", "metric": "t",
         "check": {"kind": "window", "agg": "mean", "over": "10m", "max": 10}},
        {"id": "HIGH", "title": "high", "metric": "t", "check": {"max": 100}},
    )]

    def engine() -> Engine:
        return Engine("s", [Asset(id="CH-1")], standards, started=now[0])

    def body(name: str) -> bytes | None:
        row = buffer._db.execute("SELECT body FROM state WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    buffer = Buffer(tmp_path / "buffer.sqlite")
    line = Pipeline(engine(), buffer, clock=lambda: now[0], save_every=1,
                    save_history_every=100)
    line._process([Reading("CH-1", "t", 20.0, t0)], [])  # the mean over 10: an event
    assert [e["type"] for _, e in buffer.pending_events()] == ["violation_started"]
    assert body("engine") is not None and body(HISTORY_STATE) is None  # the core alone

    now[0] = t0 + 150  # both due
    line._process([Reading("CH-1", "t", 22.0, t0 + 150)], [])
    line.tick_once(now[0])
    history = body(HISTORY_STATE)
    assert history is not None
    now[0] = t0 + 200  # the core due, the readings not yet
    line._process([Reading("CH-1", "t", 24.0, t0 + 200)], [])
    core = body("engine")
    line.tick_once(now[0])
    assert body(HISTORY_STATE) == history and body("engine") != core

    again = engine()  # a crash now: the readings as saved at t0 + 150
    assert again.restore(saved_state(buffer) or {}) == 2
    window = next(t.checker for t in again._tracks if t.standard.id == "MEAN")
    assert list(window.values) == [20.0, 22.0]
    assert again.observe([Reading("CH-1", "t", 30.0, t0 + 210)]) == []  # not raised again

    line.save_state()  # a clean stop saves the readings too
    fresh = engine()
    fresh.restore(saved_state(buffer) or {})
    window = next(t.checker for t in fresh._tracks if t.standard.id == "MEAN")
    assert list(window.values) == [20.0, 22.0, 24.0]
    buffer.close()


def test_a_state_saved_whole_by_an_older_agent_still_restores() -> None:
    """Version 2 saved each pair's readings in its row: an upgrade keeps the episodes."""
    from collector.reading import Reading
    from rules import saved
    from rules.engine import Engine
    from rules.standard import Asset, Standard

    t0 = 1_772_445_600.0
    standard = Standard.model_validate({"id": "MEAN", "title": "mean", "metric": "t", "check": {
        "kind": "window", "agg": "mean", "over": "10m", "max": 10}})
    old = Engine("s", [Asset(id="CH-1")], [standard], started=t0)
    assert old.observe([Reading("CH-1", "t", 20.0, t0)])
    state = old.state()
    state["tracks"] = {key: saved.row(core, state["history"][key], state["history"])
                       for key, core in saved.cores(state).items()}
    state["last_ts"] = list(map(list, saved.streams(state)))
    state["v"] = 2  # as version 2 wrote it: whole rows, no history beside them
    del state["pairs"]
    del state["history"]
    new = Engine("s", [Asset(id="CH-1")], [standard], started=t0 + 5)
    assert new.restore(json.loads(json.dumps(state))) == 1
    assert new.observe([Reading("CH-1", "t", 30.0, t0 + 10)]) == []
    assert list(new._tracks[0].checker.values) == [20.0, 30.0]


def test_events_wait_in_the_outbox_compressed_and_older_plain_ones_still_read(
        tmp_path: Path) -> None:
    """A compliance snapshot of a large site is a megabyte of JSON a minute: the outbox
    keeps it compressed, and events queued as text by an older agent are still sent."""
    snapshot = {"id": "snap-1", "type": "compliance_snapshot",
                "items": [{"asset_id": f"AHU-{i // 20}", "standard_id": f"STD-{i % 20}",
                           "compliance": "compliant", "seconds": {"compliant": 60.0}}
                          for i in range(2000)]}
    buffer = Buffer(tmp_path / "buffer.sqlite")
    buffer._db.execute("INSERT INTO outbox (event_id, body) VALUES (?, ?)",
                       ("old-1", json.dumps({"id": "old-1", "type": "violation_started"})))
    buffer.put([], [snapshot])
    assert [seq_body[1] for seq_body in buffer.pending_events()] == [
        {"id": "old-1", "type": "violation_started"}, snapshot]
    body, = buffer._db.execute("SELECT body FROM outbox WHERE event_id = 'snap-1'").fetchone()
    assert isinstance(body, bytes)
    assert len(body) < len(json.dumps(snapshot)) / 10, len(body)
    buffer.close()


def test_the_checks_of_one_series_save_its_evidence_once_and_each_gets_it_back() -> None:
    """A series' range, window and stale checks judge the same readings: the second and
    third name the first pair instead of repeating its 50 readings; a check whose
    evidence differs (another metric) keeps its own."""
    from collector.reading import Reading
    from rules.engine import Engine
    from rules.standard import Asset, Standard

    t0 = 1_772_445_600.0
    standards = [Standard.model_validate(s) for s in (
        {"id": "HIGH", "title": "high", "metric": "t", "check": {"max": 100}},
        {"id": "MEAN", "title": "mean", "metric": "t",
         "check": {"kind": "window", "agg": "mean", "over": "10m", "max": 50}},
        {"id": "STALE", "title": "stale", "metric": "t", "check": {"kind": "stale",
                                                                    "after": "5m"}},
        {"id": "RH", "title": "rh", "metric": "rh", "check": {"max": 100}},
    )]
    old = Engine("s", [Asset(id="CH-1")], standards, started=t0)
    old.observe([Reading("CH-1", metric, 20.0 + i, t0 + i)
                 for i in range(60) for metric in ("t", "rh")])
    state = json.loads(json.dumps(old.state()))
    evidence = {key.split("|")[1]: h[0] for key, h in state["history"].items()}
    assert evidence["MEAN"] == evidence["STALE"] == "CH-1|HIGH|1"
    assert len(evidence["HIGH"]) == len(evidence["RH"]) == 50
    new = Engine("s", [Asset(id="CH-1")], standards, started=t0 + 61)
    assert new.restore(state) == 4
    for before, after in zip(old._tracks, new._tracks, strict=True):
        assert new._evidence.recent(after) == old._evidence.recent(before)


def test_a_flood_is_committed_by_the_readings_waiting_not_held_in_memory(
        tmp_path: Path) -> None:
    """Under a flood, readings waiting for the commit time would pile up in memory (half a
    second held 70,000): HELD_READINGS waiting are stored at once."""
    import asyncio
    import time as clock

    from agent.pipeline import HELD_READINGS, Pipeline
    from collector.reading import Reading
    from rules.engine import Engine

    async def scenario() -> None:
        buffer = Buffer(tmp_path / "flood.sqlite")
        pipeline = Pipeline(Engine("s", [], []), buffer, commit_every=30)
        task = asyncio.create_task(pipeline.run())
        now = clock.time()
        pipeline.emit([Reading("CH-1", "t", 1.0, now)] * (HELD_READINGS - 1))
        await asyncio.sleep(0.1)
        assert buffer.count()["readings"] == 0  # fewer: they wait for the commit time
        pipeline.emit([Reading("CH-1", "t", 2.0, now + 1)])
        await asyncio.sleep(0.1)
        assert buffer.count()["readings"] == HELD_READINGS  # at once, not in 30 s
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        buffer.close()

    asyncio.run(scenario())


def _site_engine(t0: float) -> object:
    """40 pairs of four kinds over ten assets, fed readings: a range check in an episode
    (one asset hot), windows, rates and stale checks with readings to keep."""
    from collector.reading import Reading
    from rules.engine import Engine
    from rules.standard import Asset, Standard

    standards = [Standard.model_validate(s) for s in (
        {"id": "HIGH", "title": "high", "metric": "t", "check": {"max": 30}, "for": "1m"},
        {"id": "MEAN", "title": "mean", "metric": "t",
         "check": {"kind": "window", "agg": "mean", "over": "10m", "max": 50}},
        {"id": "RATE", "title": "rate", "metric": "t",
         "check": {"kind": "rate", "max": 5, "per": "1m"}},
        {"id": "STALE", "title": "stale", "metric": "rh", "check": {"kind": "stale",
                                                                     "after": "5m"}},
    )]
    engine = Engine("s", [Asset(id=f"CH-{i}") for i in range(10)], standards, started=t0)
    for k in range(40):
        engine.observe([Reading(f"CH-{i}", metric, (35.0 if i == 3 else 20.0) + k % 3,
                                t0 + 10 * k + 0.137 * i)
                        for i in range(10) for metric in ("t", "rh")])
        engine.tick(t0 + 10 * k + 5)
    return engine


def _as_version_3(state: dict[str, object]) -> dict[str, object]:
    """A state as version 3 wrote it: a core row per pair, the streams as triples."""
    from rules import saved

    old = {**state, "v": 3, "tracks": saved.cores(state),
           "last_ts": [list(s) for s in saved.streams(state)]}
    del old["pairs"]
    return old


def test_the_pairs_cores_are_saved_as_columns_and_restore_equal() -> None:
    """Version 4 saves the cores a column per field, the pairs named by standard: a third
    of the bytes of a row per pair compressed (zlib finds the columns' runs), and a
    restart gets every pair back as it was (its seconds to the millisecond)."""
    from agent.buffer.outbox import packed
    from rules import saved
    from rules.engine import Engine

    t0 = 1_772_445_600.0
    engine = _site_engine(t0)
    assert isinstance(engine, Engine)
    state = json.loads(json.dumps(engine.state()))
    assert state["v"] == saved.STATE_VERSION and "tracks" not in state
    assert [s[0] for s in state["pairs"]["standards"]] == ["HIGH", "MEAN", "RATE", "STALE"]
    rows = saved.cores(state)
    assert rows["CH-3|HIGH|1"][0] == "violating" and rows["CH-4|HIGH|1"][0] == "ok"
    core = {k: v for k, v in state.items() if k != "history"}
    assert len(packed(core)) < 0.8 * len(packed(_as_version_3(core)))  # 0.71 here
    again = Engine("s", engine.assets, engine.standards, started=t0 + 400)
    assert again.restore(state) == 40
    assert json.loads(json.dumps(again.state())) == state
    for before, after in zip(engine._tracks, again._tracks, strict=True):
        assert (after.status, after.since, after.last_good, after.checker.value) == \
            (before.status, before.since, before.last_good, before.checker.value)
        assert after.seconds == {k: round(v, 3) for k, v in before.seconds.items()}


def test_a_version_3_state_still_restores_and_its_history_joins_a_newer_core(
        tmp_path: Path) -> None:
    """An upgrade: the buffer holds version 3's core and history; the new agent restores
    them, and once it saved a version 4 core (every 30 s) the history saved before (every
    10 min) still joins it, so a restart in between keeps the pairs' readings."""
    from agent.pipeline import ENGINE_STATE, HISTORY_STATE, saved_state
    from rules.engine import Engine

    t0 = 1_772_445_600.0
    engine = _site_engine(t0)
    assert isinstance(engine, Engine)
    state = json.loads(json.dumps(engine.state()))
    history = {"v": 3, "history": state.pop("history")}
    buffer = Buffer(tmp_path / "buffer.sqlite")
    buffer.put([], [], [(ENGINE_STATE, _as_version_3(state)), (HISTORY_STATE, history)])
    old = saved_state(buffer)
    assert old is not None and old["v"] == 3
    first = Engine("s", engine.assets, engine.standards, started=t0 + 400)
    assert first.restore(old) == 40
    buffer.put([], [], [(ENGINE_STATE, first.state(history=False))])  # a 30 s save
    joined = saved_state(buffer)
    assert joined is not None and joined["v"] == 4 and joined["history"] == history["history"]
    second = Engine("s", engine.assets, engine.standards, started=t0 + 430)
    assert second.restore(joined) == 40
    for before, after in zip(engine._tracks, second._tracks, strict=True):
        assert second._evidence.recent(after) == engine._evidence.recent(before)
        assert (after.status, after.since, after.last_good) == \
            (before.status, before.since, before.last_good)
    buffer.close()


def test_states_and_events_are_compressed_harder_than_zlibs_quickest_level() -> None:
    """A save is written twice (WAL, file) and the core goes with every event: zlib's
    default level is milliseconds a save and a quarter fewer bytes than level 1 (0.74 here)."""
    import zlib

    from agent.buffer.outbox import packed, unpacked

    state = a_state(300)
    text = json.dumps(state, separators=(",", ":")).encode()
    assert unpacked(packed(state)) == state
    assert len(packed(state)) < 0.9 * len(zlib.compress(text, 1))
