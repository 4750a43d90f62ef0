"""Readings from collectors -> rules engine -> durable buffer, on one asyncio loop.

Collectors call `emit` on the loop's thread; the pipeline batches what has queued up,
asks the engine for events, and commits readings and events together. Sources are
acknowledged (`on_stored`) only after that commit. A separate `tick` task lets on-delays
and off-delays fire when readings stop.

When the disk is full and the buffer cannot make room, judged batches wait in memory
(sources not acknowledged, so MQTT keeps its messages) and are retried every second; past
`MAX_HELD` readings the oldest held ones that no source waits for are dropped, counted
and logged.

Nothing one reading holds ends a task: the engine refuses what it cannot judge per pair
(rules.refusals), a reading dated more than `MAX_AHEAD` ahead of this machine's clock is
stored as bad quality and never judged (its NC events would be dated in the future, which
the API refuses), and an event that cannot be written out is logged and left out. What
does end `run` or `tick` is a fault every later batch would meet too (the buffer itself
failing): the runtime then stops with one error line and exit status 1.

Backpressure: `backlog` counts readings emitted and not yet judged. When it reaches
`high_water` the pipeline tells its `on_backlog` listeners `True` (an MQTT collector then
stops reading its socket and the broker holds the rest), and `False` once it is back down
to `low_water`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.buffer import Buffer, BufferFull
from collector.reading import Reading, bad
from common.metrics import RULES_EVENTS
from rules import saved
from rules.engine import Engine
from rules.events import Event, SiteCatalog, Snapshot

log = logging.getLogger("patrol.pipeline")

MAX_BATCH = 5000
MAX_HELD = 200_000
MAX_AHEAD = 300.0
"""Seconds a reading may be dated ahead of this machine's clock and still be judged."""
MAX_WAITING = 1000
"""Judged batches waiting for the next commit at which it happens at once."""
ACKS_WAITING = 10
"""Sources' acknowledgements waiting for the next commit at which it happens at once: a
broker sends a client only so many unacknowledged QoS 1 messages (Mosquitto: 20), so
holding back more would hold back the flow."""
HELD_READINGS = MAX_BATCH
"""Readings waiting for the next commit at which it happens at once: under a flood a
commit of 5,000 costs as little a reading as a larger one, and what waits in memory stays
bounded (half a second of a flood held 70,000 readings: 15 MB more at the peak)."""
HIGH_WATER = 20_000
"""Readings queued and not yet judged at which sources are asked to pause."""
LOW_WATER = 5_000
"""... and at which they are told to go on."""
ENGINE_STATE, HISTORY_STATE = "engine", "engine.history"
"""The buffer's names for the engine's state: its core, and its pairs' readings."""
_Item = tuple[Sequence[Reading], Callable[[], None] | None]


def saved_state(buffer: Buffer) -> dict[str, Any] | None:
    """The engine's state as last saved, for `Engine.restore`: its core with the pairs'
    readings saved last beside it (older than the core by up to `save_history_every`)."""
    state = buffer.load_state(ENGINE_STATE)
    history = buffer.load_state(HISTORY_STATE)
    if isinstance(state, dict) and isinstance(history, dict) and \
            saved.joins(state.get("v"), history.get("v")):
        state["history"] = history.get("history")
    return state


@dataclass
class _Judged:
    """A batch the engine has seen, waiting for the disk."""

    readings: list[Reading]
    events: list[dict[str, Any]]
    acks: list[Callable[[], None]] = field(default_factory=list)
    save_state: bool = False


class Pipeline:
    def __init__(self, engine: Engine, buffer: Buffer, *,
                 clock: Callable[[], float] = time.time, tick_every: float = 1.0,
                 snapshot_every: float = 60.0, save_every: float = 30.0,
                 save_history_every: float = 600.0,
                 max_ahead: float = MAX_AHEAD, high_water: int = HIGH_WATER,
                 low_water: int = LOW_WATER, commit_every: float = 0.0) -> None:
        self.engine = engine
        self.buffer = buffer
        self.clock = clock
        self.tick_every = tick_every
        self.snapshot_every = snapshot_every
        self.save_every = save_every
        self.max_ahead = max_ahead
        self.ahead = 0  # readings stored as bad quality: dated too far ahead of the clock
        self._ahead_logged = -math.inf
        self.unstorable = 0  # readings the buffer refused alone (not for a full disk)
        self._unstorable_logged = -math.inf
        self._snapshot_due = clock() + snapshot_every
        self._save_due = clock() + save_every
        self.save_history_every = save_history_every
        self._history_due = clock() + save_history_every
        self.events_ready = asyncio.Event()
        self.readings = 0
        self.events = 0
        self.dropped_held = 0
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._held: deque[_Judged] = deque()
        self.commit_every = commit_every
        """Seconds judged batches may wait to be stored together (`buffer.commit_every`):
        one transaction for all of them writes each page once, where a transaction per
        small batch rewrites the same last pages (WAL, then the file) again and again.
        Sources are acknowledged only once stored, as always. 0: each batch at once."""
        self._held_since: float | None = None  # monotonic: when the oldest waiting one came
        self._full_logged = False
        self.full_since: float | None = None
        """When the buffer last refused readings for a full disk; None once it takes them."""
        self.backlog = 0
        """Readings emitted and not yet judged (read from any thread: an int is atomic)."""
        self.high_water, self.low_water = high_water, low_water
        self.on_backlog: list[Callable[[bool], None]] = []
        """Called on the loop thread: True at `high_water`, False back at `low_water`."""
        self._pressed = False
        self.passes = 0
        """Passes of `run` (a batch judged, or held batches retried): its sign of life."""
        self.ticked = time.monotonic()
        """When `tick` last ran (monotonic)."""
        self._watched = (0, self.ticked)  # (passes, since when) as `stalled` last saw them

    def emit(self, readings: Sequence[Reading],
             on_stored: Callable[[], None] | None = None) -> None:
        """Called by collectors on the loop thread; never blocks."""
        if readings or on_stored:
            self._queue.put_nowait((readings, on_stored))
            self.backlog += len(readings)
            if not self._pressed and self.backlog >= self.high_water:
                self._press(True)

    def _press(self, pressed: bool) -> None:
        self._pressed = pressed
        for listener in self.on_backlog:
            try:
                listener(pressed)
            except Exception:
                log.exception("a backlog listener failed")

    async def run(self) -> None:
        """Process batches until cancelled; on cancel, whatever was queued is still stored."""
        try:
            while True:
                if self._held:
                    try:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a
                        # cancellation that meets a finished get(), and a stop then hung
                        async with asyncio.timeout(self._held_wait()):
                            first = await self._queue.get()
                    except TimeoutError:
                        self._store_held()
                        self.passes += 1
                        continue
                else:
                    first = await self._queue.get()
                self._process(*self._drain(first))
                self.passes += 1
        except asyncio.CancelledError:
            if not self._queue.empty():
                self._process(*self._drain(self._queue.get_nowait()))
            self._store_held()  # what waited for the next commit
            if self._held:
                log.error("stopping with %d readings not stored (disk full)",
                          sum(len(j.readings) for j in self._held))
            raise

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_every)
            self.tick_once(self.clock())
            self.ticked = time.monotonic()

    def stalled(self, now: float, limit: float) -> str:
        """For the systemd watchdog (agent.sdnotify): readings queued with no pass of `run`
        for `limit` seconds, or no tick for that long. Idle (nothing queued) is not stalled,
        however long the sources stay silent."""
        if self._queue.empty() or self.passes != self._watched[0]:
            self._watched = (self.passes, now)
        elif now - self._watched[1] > limit:
            return (f"pipeline: {self._queue.qsize()} batches queued, none taken for "
                    f"{now - self._watched[1]:.0f}s")
        if now - self.ticked > limit + self.tick_every:
            return f"pipeline: no timer tick for {now - self.ticked:.0f}s"
        return ""

    def tick_once(self, now: float) -> None:
        """Timers, the periodic compliance snapshot, and the periodic save of rule state."""
        events = self.engine.tick(now)
        bodies = _wire(events)
        if now >= self._snapshot_due:
            bodies += _wire([self.engine.snapshot(now)])
            self._snapshot_due = now + self.snapshot_every
        save = bool(events) or now >= self._save_due
        if bodies or save:
            self._judged(_Judged([], bodies, save_state=save))
            self._log_events(events)

    def save_state(self) -> None:
        """Store the engine's whole state now (at a clean stop), with whatever waits."""
        self._history_due = -math.inf
        self._held.append(_Judged([], [], save_state=True))
        self._store_held()

    def publish(self, catalog: SiteCatalog) -> None:
        """Queue the site catalog for the API, in order with the engine's events: the
        forwarder delivers it as it delivers them (agent.catalog)."""
        bodies = _wire([catalog])
        if bodies:
            self._judged(_Judged([], bodies))

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
        self._refuse_ahead(batch)
        try:
            events = self.engine.observe(batch)
        finally:
            self.backlog -= len(batch)
            if self._pressed and self.backlog <= self.low_water:
                self._press(False)
        self.readings += len(batch)
        self._judged(_Judged(batch, _wire(events), acks, save_state=bool(events)))
        self._log_events(events)

    def _refuse_ahead(self, batch: list[Reading]) -> None:
        """Readings dated beyond the clock + max_ahead: bad quality, so never judged (one
        comparison a reading). A device clock years ahead would date NC events in the
        future, and hold back every later reading of its series as out of order."""
        now = self.clock()
        limit = now + self.max_ahead
        for reading in batch:
            if reading.ts <= limit or not reading.quality.good:
                continue
            ahead = reading.ts - now  # NaN too: not a time, never judged
            reading.quality = bad(f"timestamp ahead of clock by {_roughly(ahead)}")
            self.ahead += 1
            if now - self._ahead_logged >= 60.0:
                self._ahead_logged = now
                log.warning("%s/%s: a reading dated %s ahead of this machine's clock (more "
                            "than %s) is stored as bad quality, not judged (%d so far); check "
                            "the device's clock", reading.asset, reading.metric,
                            _roughly(ahead), _roughly(self.max_ahead), self.ahead)

    def _judged(self, judged: _Judged) -> None:
        self._held.append(judged)
        if self._held_since is None:
            self._held_since = time.monotonic()
        if self.commit_every <= 0 or self.full_since is not None or \
                len(self._held) >= MAX_WAITING or self._held_wait() <= 0 or \
                sum(len(j.acks) for j in self._held) >= ACKS_WAITING or \
                sum(len(j.readings) for j in self._held) >= HELD_READINGS:
            self._store_held()

    def _held_wait(self) -> float:
        """Seconds until held batches are stored: at their commit time, or every second
        while the disk is full (to try again)."""
        if self.full_since is not None or self._held_since is None:
            return 1.0
        return max(0.0, self._held_since + self.commit_every - time.monotonic())

    def _store_held(self) -> None:
        """Store held batches in order, in one transaction when there are several (one
        at a time when that fails for anything but a full disk, which isolates a reading
        the buffer refuses); stop at the first the disk cannot take."""
        if len(self._held) > 1:
            try:
                self._store_together()
            except BufferFull as exc:
                self._full(exc)
                return
            except Exception:  # one at a time below finds which batch, which reading
                pass
            else:
                return
        self._store_each()

    def _store_together(self) -> None:
        batches = list(self._held)
        save = any(judged.save_state for judged in batches)
        states = self._states() if save else []
        self.buffer.put([r for judged in batches for r in judged.readings],
                        [e for judged in batches for e in judged.events], states)
        for judged in batches:
            self._held.popleft()
            self._stored(judged, states if judged.save_state else [])
        self._held_since = None

    def _full(self, exc: BufferFull) -> None:
        if not self._full_logged:
            log.error("%s: holding readings in memory, sources not acknowledged", exc)
            self._full_logged = True
            self.full_since = self.clock()
        self._bound_held()

    def _states(self) -> list[tuple[str, Any]]:
        """The engine's state to save: its core always, the pairs' readings (the bulk)
        once `save_history_every` has passed or at a clean stop (rules.saved)."""
        state = self.engine.state(history=self.clock() >= self._history_due)
        history = state.pop("history", None)
        if history is None:
            return [(ENGINE_STATE, state)]
        return [(ENGINE_STATE, state), (HISTORY_STATE, {"v": state["v"], "history": history})]

    def _stored(self, judged: _Judged, states: list[tuple[str, Any]]) -> None:
        """A batch is on disk: count it, wake the forwarder, acknowledge its sources."""
        self._full_logged, self.full_since = False, None
        if states:
            self._save_due = self.clock() + self.save_every
        if len(states) > 1:
            self._history_due = self.clock() + self.save_history_every
        if judged.events:
            self.events += len(judged.events)
            self.events_ready.set()
        for ack in judged.acks:  # only now that the readings are on disk
            try:
                ack()
            except Exception:
                log.exception("acknowledging stored readings to their source failed")

    def _store_each(self) -> None:
        while self._held:
            judged = self._held[0]
            states = self._states() if judged.save_state else []
            try:
                try:
                    self.buffer.put(judged.readings, judged.events, states)
                except BufferFull:
                    raise
                except Exception as exc:  # not the disk: one reading, or the buffer itself
                    self._store_apart(judged, states, exc)
            except BufferFull as exc:
                self._full(exc)
                return
            self._held.popleft()
            self._stored(judged, states)
        self._held_since = None

    def _store_apart(self, judged: _Judged, states: list[tuple[str, Any]],
                     error: Exception) -> None:
        """A batch the buffer refused whole, not for a full disk: its events and state alone
        (refused too: the buffer itself is failing, raised and the task ends), then each
        reading alone. A reading refused again (e.g. a name SQLite cannot encode) is
        dropped, counted and logged; its source is acknowledged, as it would only be
        refused again."""
        self.buffer.put([], judged.events, states)
        if judged.events:
            self.events += len(judged.events)
            self.events_ready.set()
        judged.events, judged.save_state = [], False
        readings, judged.readings = judged.readings, []
        for i, reading in enumerate(readings):
            try:
                self.buffer.put([reading])
            except BufferFull:
                judged.readings = readings[i:]  # the rest waits with the held batches
                raise
            except Exception as exc:
                self.unstorable += 1
                now = self.clock()
                if now - self._unstorable_logged >= 60.0:
                    self._unstorable_logged = now
                    log.error("a reading the buffer cannot store is dropped (%d so far): "
                              "%r/%r: %s: %s (the batch failed with %s)", self.unstorable,
                              reading.asset, reading.metric, type(exc).__name__, exc,
                              type(error).__name__)

    def _bound_held(self) -> None:
        """Past MAX_HELD readings, drop the oldest held ones that no source waits for;
        events are always kept.

        A batch with acknowledgements to send (MQTT QoS 1) is never dropped: its source
        holds back its next acknowledgements, and stops reading, until this one is stored,
        so dropping it would stall that source for good; and that source's messages are
        already bounded by the collector's inbox and the broker's in-flight window."""
        held = sum(len(j.readings) for j in self._held)
        for judged in self._held:
            if held <= MAX_HELD:
                break
            if judged.acks:
                continue
            dropped = len(judged.readings)
            judged.readings = []
            held -= dropped
            self.dropped_held += dropped
            log.error("disk full: dropped %d held readings (%d in all)", dropped,
                      self.dropped_held)
        self._held = deque(j for j in self._held if j.readings or j.events)

    @staticmethod
    def _log_events(events: Sequence[Any]) -> None:
        for event in events:  # a few a day: counted one by one
            RULES_EVENTS.labels(event.type).inc()
            log.info("%s: %s %s (event %s)", event.type, event.asset_id, event.standard_id,
                     event.id)


def _wire(items: Sequence[Event | Snapshot | SiteCatalog]) -> list[dict[str, Any]]:
    """The wire form of each event; one that cannot be written out is logged, left out."""
    bodies = []
    for item in items:
        try:
            bodies.append(item.to_dict())
        except Exception as exc:
            log.error("%s of %s could not be written out and is dropped: %s: %s", item.type,
                      getattr(item, "standard_id", item.site_id), type(exc).__name__, exc)
    return bodies


def _roughly(seconds: float) -> str:
    """`1095.0d`, `2.5h`, `301s`: a duration for a person, to a tenth of its unit."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
