"""The buffer when the disk is full for real (a small tmpfs mounted for it), when its file
is corrupt, and the modes of what it creates.

The suite runs as root, so the tmpfs is mounted here (no skip); it is unmounted after.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import random
import re
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.buffer import Buffer, BufferFull
from agent.tsdb import InfluxConfig, LineSerializer, TsdbWriter, make_sender
from collector.reading import Reading
from tests.buffer_contents import dead_letters, stored
from tests.held_readings import acks_once_there_is_room
from tests.integration.webhook_receiver import (  # noqa: F401 (fixture)
    Answer,
    WebhookReceiver,
    receiver_fixture,
)


def numbered(first: int, last: int, asset: str = "CH-1") -> list[Reading]:
    return [Reading(asset, "temp", float(i), 1_700_000_000 + i) for i in range(first, last)]


def events(n: int, prefix: str = "ev") -> list[dict[str, object]]:
    return [{"id": f"{prefix}_{i}", "type": "violation_started"} for i in range(n)]


# --- a full disk ------------------------------------------------------------------------


class SmallDisk:
    """A tmpfs of a few MB, and a filler file that takes every byte left on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self, leave: int = 0) -> None:
        """Take every byte but `leave`."""
        descriptor = os.open(self.filler, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            chunk = 1 << 20
            while chunk:
                try:
                    os.write(descriptor, bytes(chunk))
                except OSError:
                    chunk //= 2
            assert os.statvfs(self.root).f_bavail == 0
            os.ftruncate(descriptor, os.fstat(descriptor).st_size - leave)
        finally:
            os.close(descriptor)

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(root)],
                   check=True)
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


@pytest.fixture
def full(disk: SmallDisk) -> Iterator[tuple[Buffer, SmallDisk]]:
    """A buffer with 40,000 readings, 50 events and a dead letter on a disk now full."""
    buffer = Buffer(disk.root / "buffer" / "buffer.sqlite")
    for first in range(0, 40_000, 2000):
        buffer.put(numbered(first, first + 2000))
    buffer.put([], events(50), states=[("engine", {"pairs": 1})])
    buffer.dead_letter([(stored(buffer, 1)[0].id, "a line", "refused")])
    disk.fill()
    yield buffer, disk
    buffer.close()


def counters(buffer: Buffer) -> tuple[dict[str, int], object]:
    return buffer.count(), buffer.load_state("engine")


def test_every_write_on_a_full_disk_is_buffer_full_and_changes_nothing(
        full: tuple[Buffer, SmallDisk]) -> None:
    buffer, disk = full
    before = counters(buffer)
    first, last = stored(buffer, 1)[0].id, stored(buffer, 1000)[-1].id
    seq, body = buffer.pending_events(1)[0]
    writes = {
        "put readings": lambda: buffer.put(numbered(40_000, 45_000)),
        "put events": lambda: buffer.put([], events(5, "more")),
        "save state": lambda: buffer.put([], states=[("engine", {"pairs": 2})]),
        "delete_range": lambda: buffer.delete_range(first, last),
        "delete": lambda: buffer.delete([first, first + 2, first + 4]),
        "dead_letter": lambda: buffer.dead_letter([(first, "line", "refused")]),
        "dead_letter_event": lambda: buffer.dead_letter_event(seq, body, "refused"),
        "ack_events": lambda: buffer.ack_events([seq]),
    }
    for name, write in writes.items():
        with pytest.raises(BufferFull):
            write()
        assert counters(buffer) == before, name  # nothing changed, nothing counted
    assert buffer.dropped == 0  # the drop-oldest DELETE failed too: nothing was dropped

    disk.free()  # space returns: every write works again
    for write in writes.values():
        write()
    after = buffer.count()
    assert after["events"] == 50 + 5 - 1  # dead-lettered, then acknowledged: one event
    assert after["dead_letters"] == 1 + 1 + 1
    assert buffer.load_state("engine") == {"pairs": 2}
    assert after["readings"] == 40_000 - 1 + 5000 - 1000  # -1: the dead letter before
    buffer.close()
    reopened = Buffer(buffer.path)
    assert reopened.dropped == 0 and reopened.count() == {**after, "dropped": 0}
    reopened.close()


def test_the_pipeline_holds_readings_in_memory_and_stores_them_once_there_is_room(
        full: tuple[Buffer, SmallDisk]) -> None:
    buffer, disk = full
    acks = acks_once_there_is_room(buffer, numbered(50_000, 52_000), disk.free, full_for=1.5)
    assert acks == [1]
    assert buffer.count()["readings"] == 40_000 - 1 + 2000 and buffer.dropped == 0


def test_the_tsdb_writer_never_resends_a_batch_a_full_disk_kept_it_from_deleting(
        full: tuple[Buffer, SmallDisk], receiver: WebhookReceiver) -> None:
    buffer, disk = full
    receiver.answer(then=Answer(204))
    config = InfluxConfig(url=f"http://127.0.0.1:{receiver.port}", api="v1", bucket="patrol",
                          batch_size=10_000, flush_interval=0.05)
    send, close = make_sender(config)
    writer = TsdbWriter(buffer, config, LineSerializer("patrol", "plant-1", {}), send)

    async def flush(times: int) -> None:
        for _ in range(times):
            await writer.flush_once()

    try:
        asyncio.run(flush(6))  # two batches in flight, acknowledged; neither deleted
        assert len(receiver.received) == 2 and buffer.count()["readings"] == 39_999
        disk.free()
        asyncio.run(flush(6))
    finally:
        close()
    lines = sum(gzip.decompress(r.body).count(b"\n") + 1 for r in receiver.received)
    assert lines == 39_999 and len(receiver.received) == 4  # each batch sent once
    assert buffer.count()["readings"] == 0 and writer.written == 39_999


# --- modes ------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_buffer_and_the_directories_it_creates_are_private(tmp_path: Path) -> None:
    os.umask(0o022)
    path = tmp_path / "var" / "patrol" / "buffer.sqlite"
    existing = mode(tmp_path)
    buffer = Buffer(path)
    buffer.put(numbered(0, 10), events(1))
    for part in ("", "-wal", "-shm"):
        assert mode(Path(f"{path}{part}")) == 0o600, part
    assert mode(tmp_path / "var") == 0o700 and mode(tmp_path / "var" / "patrol") == 0o700
    assert mode(tmp_path) == existing  # a directory it did not create is left alone
    buffer.close()

    path.chmod(0o644)  # a buffer written by an older Patrol
    Buffer(path).close()
    assert mode(path) == 0o600


# --- corruption ---------------------------------------------------------------------------


def pages_of(path: Path, table: str) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [n for (n,) in db.execute("SELECT pageno FROM dbstat WHERE name = ? AND "
                                         "pagetype = 'leaf' ORDER BY pageno", (table,))]


def test_a_corrupt_buffer_gives_up_its_events_rule_state_and_readable_readings(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "buffer.sqlite"
    old = Buffer(path)
    old.put([], events(30), states=[("engine", {"pairs": 7, "open": ["CH-1"]})])
    for first in range(0, 20_000, 1000):
        old.put(numbered(first, first + 1000))
    old.dead_letter([(stored(old, 1)[0].id, "a refused line", "bad field")])
    old.close()
    damage_readings(path)

    with caplog.at_level(logging.ERROR, logger="patrol.buffer"):
        buffer = Buffer(path)
    assert [body["id"] for _, body in buffer.pending_events(100)] == [
        f"ev_{i}" for i in range(30)]
    assert buffer.load_state("engine") == {"pairs": 7, "open": ["CH-1"]}
    assert [line for _, line, _ in dead_letters(buffer)] == ["a refused line"]
    saved = [int(s.reading.value) for s in stored(buffer, 30_000)]
    assert 10_000 < len(saved) < 20_000 - 1  # the readings on the bad pages are lost
    assert saved == sorted(saved) and set(saved) <= set(range(1, 20_000))
    [said] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "is corrupt" in said and "moved it aside" in said
    assert "NC events: 30 saved, 0 lost" in said and "rule state kept" in said
    got = re.search(r"readings: (\d+) saved, (?:up to )?(\d+) lost", said)
    assert got and int(got[1]) == len(saved) and int(got[2]) >= 19_999 - len(saved)
    assert list(tmp_path.glob("buffer.sqlite.corrupt-*"))
    assert mode(path) == 0o600
    buffer.put(numbered(30_000, 30_010))  # and the new file works
    assert buffer.count()["readings"] == len(saved) + 10
    buffer.close()


def test_a_buffer_corrupt_beyond_reading_is_replaced_and_says_what_was_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "buffer.sqlite"
    path.write_bytes(b"this is not a database, just garbage\n" * 500)
    with caplog.at_level(logging.ERROR, logger="patrol.buffer"):
        buffer = Buffer(path)
    [said] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "NC events: 0 saved, an unknown number lost" in said
    assert "rule state lost" in said
    assert buffer.count()["events"] == 0
    buffer.put(numbered(0, 10), events(1))
    assert buffer.count()["readings"] == 10
    buffer.close()


def damage_readings(path: Path) -> None:
    """Random bytes over two stretches of the readings table's leaf pages."""
    leaves = pages_of(path, "readings")
    with path.open("r+b") as f:
        rng = random.Random(3)
        for page in leaves[10:20] + leaves[40:45]:
            f.seek((page - 1) * 4096)
            f.write(rng.randbytes(4096))


def test_a_corrupt_buffer_on_a_full_disk_is_kept_until_there_is_room_to_salvage_it(
        disk: SmallDisk) -> None:
    path = disk.root / "buffer.sqlite"
    old = Buffer(path)
    old.put([], events(30))
    for first in range(0, 20_000, 1000):
        old.put(numbered(first, first + 1000))
    old.close()
    damage_readings(path)
    disk.fill(leave=64 * 1024)  # room to open it (its -shm), not to copy it
    with pytest.raises(BufferFull, match="no room to salvage"):
        Buffer(path)
    assert not list(disk.root.glob("buffer.sqlite.*"))  # nothing moved, no half copy
    disk.free()
    buffer = Buffer(path)
    assert buffer.count()["events"] == 30
    buffer.close()
