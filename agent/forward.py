"""Drains the outbox of NC events to the API, in order, deleting only what was applied.

The sink is the API's own service (`patrol run`, in process) or an HTTP POST to
`forward.url` (`patrol agent`). Either is idempotent by event id, so redelivery after a
crash is harmless: at least once on the wire, exactly once in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from agent.buffer import Buffer

log = logging.getLogger("patrol.forward")

Sink = Callable[[list[dict[str, Any]]], Awaitable[None]]


class Forwarder:
    def __init__(self, buffer: Buffer, sink: Sink, ready: asyncio.Event, *,
                 batch: int = 100, max_backoff: float = 60.0) -> None:
        self.buffer = buffer
        self.sink = sink
        self.ready = ready
        self.batch = batch
        self.max_backoff = max_backoff
        self.delivered = 0
        self.failures = 0

    async def run(self) -> None:
        backoff = 0.5
        while True:
            self.ready.clear()  # set again by any event stored from here on
            try:
                delivered = await self.deliver_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any sink failure: keep events, retry later
                if not self.failures:
                    backoff = 0.5  # a new outage, after some batches went through
                self.failures += 1
                level = logging.WARNING if self.failures == 1 else logging.DEBUG
                log.log(level, "cannot deliver NC events yet (%s); retrying in %.1fs",
                        exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self._flowing()
            backoff = 0.5
            if not delivered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ready.wait(), timeout=5)

    async def deliver_pending(self) -> int:
        """Deliver every pending event in order; returns how many."""
        total = 0
        while rows := self.buffer.pending_events(self.batch):
            try:
                await self.sink([body for _, body in rows])
            except Rejected:
                total += await self._one_by_one(rows)
                continue
            self.buffer.ack_events(rows[-1][0])
            total += len(rows)
            self.delivered += len(rows)
            self._flowing()
        return total

    def _flowing(self) -> None:
        """A batch went through: log the recovery once, so the next outage warns again."""
        if self.failures:
            log.info("NC events flowing again after %d failed attempts", self.failures)
            self.failures = 0

    async def _one_by_one(self, rows: list[tuple[int, dict[str, Any]]]) -> int:
        """A batch was refused: find the events the API refuses and set them aside."""
        for seq, body in rows:
            try:
                await self.sink([body])
            except Rejected as exc:
                self.buffer.dead_letter_event(seq, body, str(exc))
                log.error("the API refuses event %s (%s) for good: kept in the buffer's "
                          "dead letters: %s", body.get("id"), body.get("type"), exc)
                continue
            self.buffer.ack_events(seq)
            self.delivered += 1
        return len(rows)


class DeliveryError(Exception):
    """The API did not take a batch now; the events stay in the outbox for a retry."""


class Rejected(Exception):
    """The API refuses these events for good (a 4xx other than auth or rate limits)."""


RETRYABLE = (401, 403, 404, 408, 409, 425, 429)
"""4xx answers that may change (credentials fixed, API upgraded, rate limit passed)."""


def http_sink(base_url: str, token: str | None, timeout: float = 10.0) -> Sink:
    """POST batches to `{base_url}/api/v1/events` (stdlib only: the agent stays small)."""
    url = base_url.rstrip("/") + "/api/v1/events"

    def post(bodies: list[dict[str, Any]]) -> None:
        data = json.dumps({"events": bodies}).encode()
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace")
            if 400 <= exc.code < 500 and exc.code not in RETRYABLE:
                raise Rejected(f"{url} answered {exc.code}: {detail}") from None
            raise DeliveryError(f"{url} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"{url} unreachable: {getattr(exc, 'reason', exc)}") from None

    async def send(bodies: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(post, bodies)

    return send
