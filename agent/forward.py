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
                self.failures += 1
                level = logging.WARNING if self.failures == 1 else logging.DEBUG
                log.log(level, "cannot deliver NC events yet (%s); retrying in %.1fs",
                        exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if self.failures:
                log.info("NC events flowing again after %d failed attempts", self.failures)
                self.failures = 0
            backoff = 0.5
            if not delivered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ready.wait(), timeout=5)

    async def deliver_pending(self) -> int:
        """Deliver every pending event in order; returns how many."""
        total = 0
        while rows := self.buffer.pending_events(self.batch):
            await self.sink([body for _, body in rows])
            self.buffer.ack_events(rows[-1][0])
            total += len(rows)
            self.delivered += len(rows)
        return total


class DeliveryError(Exception):
    """The API did not take a batch; the events stay in the outbox."""


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
            raise DeliveryError(f"{url} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"{url} unreachable: {getattr(exc, 'reason', exc)}") from None

    async def send(bodies: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(post, bodies)

    return send
