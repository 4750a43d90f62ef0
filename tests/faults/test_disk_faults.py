"""The agent's disk: full (a real tmpfs that fills up) and a corrupt buffer file."""

from __future__ import annotations

import contextlib
import errno
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.chain import Chain, Load
from tests.faults.checks import (
    assert_invariants,
    assert_one_nc_per_episode,
    assert_readings_once,
    assert_stops_cleanly,
)


def fill(directory: Path) -> Path:
    """Write a ballast file until the file system says it is full."""
    ballast = directory / "ballast"
    chunk = b"\0" * 65536
    with ballast.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return ballast


@pytest.mark.buffer_tmpfs("16m")
def test_full_disk_holds_readings_and_recovers_when_space_returns(
        chain: Chain, start_load: Callable[..., Load]) -> None:
    load = start_load()
    time.sleep(1)
    chain.tsdb.stop()  # readings pile up in the buffer
    ballast = fill(chain.buffer_dir)
    assert chain.agent is not None
    deadline = time.monotonic() + 30
    while not re.search(r"disk (is )?full", chain.agent.output):  # room made, or held
        assert chain.agent.proc.poll() is None and time.monotonic() < deadline, chain.output()
        time.sleep(0.1)
    time.sleep(3)  # full for a while, under load
    assert chain.agent.proc.poll() is None, chain.output()
    ballast.unlink()  # space returns
    chain.tsdb.start()
    said = re.findall(r"(\d+) dropped in all", chain.agent.output)
    assert_invariants(chain, load, may_miss=int(said[-1]) if said else 0)


# --- a corrupt buffer ---------------------------------------------------------------------


def corrupt_readings_pages(path: Path) -> tuple[int, int]:
    """Overwrite every page of the readings table with noise; the file's header, the
    outbox and the rule state stay readable. Returns (readings, events) it held."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        readings, = db.execute("SELECT count(*) FROM readings").fetchone()
        events, = db.execute("SELECT count(*) FROM outbox").fetchone()
        page_size, = db.execute("PRAGMA page_size").fetchone()
        pages = [row[0] for row in db.execute("SELECT pageno FROM dbstat WHERE name = ?",
                                               ("readings",))]
    rng = random.Random(11)
    with path.open("r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(rng.randbytes(page_size))
    return readings, events


@dataclass
class CorruptRun:
    chain: Chain
    load: Load
    first_after: int
    """The first reading published after the agent stopped: none from here on is lost."""
    events: int
    """NC events the outbox held, undelivered, when its file was damaged."""

    @property
    def clean_episodes(self) -> set[tuple[str, int]]:
        """Episodes after the first one past the restart. That first one may fold into an
        NC whose clear was lost with the file (an occurrence, not a new NC); its own clear
        closes that NC, so every later episode is one NC of its own."""
        return self.load.episodes(self.first_after + 2 * self.load.block)


@pytest.fixture(scope="module")
def corrupt_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorruptRun]:
    """TSDB and API down under load, so readings and NC events wait in the buffer; the
    agent stopped, the readings' pages of its buffer overwritten, the agent started again.
    The tests below look at the same run; the last one stops it."""
    chain = Chain(tmp_path_factory.mktemp("corrupt"))
    with contextlib.ExitStack() as stack:
        stack.callback(chain.close)
        chain.start()
        load = Load(chain.broker.port).start()
        stack.callback(load.close)
        time.sleep(1.5)
        chain.tsdb.stop()
        assert chain.api is not None and chain.api.stop() == 0, chain.output()
        time.sleep(3)
        assert chain.agent is not None and chain.agent.stop() == 0, chain.output()
        first_after = load.index_now() + 1  # + 1: the one being published may be split
        readings, events = corrupt_readings_pages(chain.buffer_dir / "buffer.sqlite")
        assert readings > 100 and events > 4  # what the corruption puts at stake
        chain.tsdb.start()
        chain.start_api()
        chain.start_agent()
        time.sleep(2)
        load.finish()
        yield CorruptRun(chain, load, first_after, events)


def test_corrupt_buffer_salvages_undelivered_events_and_rule_state(
        corrupt_run: CorruptRun) -> None:
    """Every episode is still one NC: the outbox and the rule state came through, and the
    log says how many events were kept and lost."""
    chain, load = corrupt_run.chain, corrupt_run.load
    assert_one_nc_per_episode(chain, load.episodes(), wait_for=corrupt_run.clean_episodes)
    assert chain.agent is not None
    said = [line for line in chain.agent.output.splitlines() if "is corrupt" in line]
    assert said and re.search(rf"\b{corrupt_run.events}\b.*\blost\b", said[0]), said


def test_corrupt_buffer_is_moved_aside_and_the_agent_keeps_running(
        corrupt_run: CorruptRun) -> None:
    chain, load, first = corrupt_run.chain, corrupt_run.load, corrupt_run.first_after
    assert chain.agent is not None
    assert "is corrupt" in chain.agent.output and chain.agent.proc.poll() is None
    assert list(chain.buffer_dir.glob("buffer.sqlite.corrupt-*"))
    # what was published after the stop arrives once; what waited in the file may be lost
    earlier = frozenset(load.readings()) - frozenset(load.readings(first))
    assert_readings_once(chain, load.readings(), optional=earlier)
    assert_one_nc_per_episode(chain, corrupt_run.clean_episodes, exact=False)
    assert_stops_cleanly(chain)
