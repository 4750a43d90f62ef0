"""Readings from collectors -> rules engine -> durable buffer, on one asyncio loop.

Collectors call `emit` on the loop's thread; the pipeline batches what has queued up,
asks the engine for events, and commits readings and events together. A separate
`tick` task lets on-delays and off-delays fire when readings stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from agent.buffer import Buffer
from collector.reading import Reading
from rules.engine import Engine

log = logging.getLogger("patrol.pipeline")

MAX_BATCH = 5000
_Item = tuple[Sequence[Reading], Callable[[], None] | None]


class Pipeline:
    def __init__(self, engine: Engine, buffer: Buffer, *,
                 clock: Callable[[], float] = time.time, tick_every: float = 1.0) -> None:
        self.engine = engine
        self.buffer = buffer
        self.clock = clock
        self.tick_every = tick_every
        self.events_ready = asyncio.Event()
        self.readings = 0
        self.events = 0
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()

    def emit(self, readings: Sequence[Reading],
             on_stored: Callable[[], None] | None = None) -> None:
        """Called by collectors on the loop thread; never blocks."""
        if readings or on_stored:
            self._queue.put_nowait((readings, on_stored))

    async def run(self) -> None:
        """Process batches until cancelled; on cancel, whatever was queued is still stored."""
        try:
            while True:
                first = await self._queue.get()
                self._process(*self._drain(first))
        except asyncio.CancelledError:
            if not self._queue.empty():
                self._process(*self._drain(self._queue.get_nowait()))
            raise

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_every)
            events = self.engine.tick(self.clock())
            if events:
                self._store([], events)

    def _drain(self, first: _Item) -> tuple[list[Reading], list[Callable[[], None]]]:
        batch: list[Reading] = []
        acks: list[Callable[[], None]] = []
        item: _Item | None = first
        while item is not None:
            readings, on_stored = item
            batch.extend(readings)
            if on_stored is not None:
                acks.append(on_stored)
            item = (self._queue.get_nowait()
                    if len(batch) < MAX_BATCH and not self._queue.empty() else None)
        return batch, acks

    def _process(self, batch: list[Reading], acks: list[Callable[[], None]]) -> None:
        events = self.engine.observe(batch)
        self._store(batch, events)
        self.readings += len(batch)
        for ack in acks:  # only now that the readings are on disk
            try:
                ack()
            except Exception:
                log.exception("acknowledging stored readings to their source failed")

    def _store(self, batch: list[Reading], events: list) -> None:
        self.buffer.put(batch, [event.to_dict() for event in events])
        for event in events:
            log.info("%s: %s %s (event %s)", event.type, event.asset_id, event.standard_id,
                     event.id)
        if events:
            self.events += len(events)
            self.events_ready.set()
