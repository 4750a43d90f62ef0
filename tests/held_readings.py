"""A pipeline over a buffer that cannot take its readings (a full disk): the readings are
held in memory, their source is not acknowledged, and once there is room they are stored
and acknowledged once. Shared by the tmpfs and the max_page_count versions of the test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from agent.buffer import Buffer
from agent.pipeline import Pipeline
from collector.reading import Reading
from rules.engine import Engine


def acks_once_there_is_room(buffer: Buffer, readings: Sequence[Reading],
                            make_room: Callable[[], None], *, full_for: float,
                            while_held: Callable[[], None] = lambda: None,
                            site: str = "plant-1") -> list[int]:
    """Emit `readings` with an acknowledgement callback; after `full_for` seconds check
    that the pipeline still runs and acknowledged nothing (and `while_held`), make room,
    and wait for the acknowledgement. Returns the acknowledgements made (one each)."""
    acks: list[int] = []

    async def scenario() -> None:
        stored = asyncio.Event()

        def on_stored() -> None:
            acks.append(1)
            stored.set()

        pipeline = Pipeline(Engine(site, [], []), buffer)
        running = asyncio.create_task(pipeline.run())
        pipeline.emit(list(readings), on_stored=on_stored)
        await asyncio.sleep(full_for)  # a retry or two against the full disk
        assert not running.done(), running  # no raw sqlite3 error ended it
        assert acks == []  # held in memory: the source is not acknowledged
        while_held()
        make_room()
        await asyncio.wait_for(stored.wait(), 10)  # the pipeline retries every second
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running

    asyncio.run(scenario())
    return acks
