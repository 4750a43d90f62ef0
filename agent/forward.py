"""Drains the outbox of NC events to the API, in order, deleting only what was applied.

The sink is the API's own service (`patrol run`, in process) or an HTTP POST to
`forward.url` (`patrol agent`). Either is idempotent by event id, so redelivery after a
crash is harmless: at least once on the wire, exactly once in effect.

An event leaves the outbox only when the API's answer names it: the ids it applied or
already had (`ids`), or, from an API without `ids`, counts that cover the whole batch.
Anything else is a retryable failure: a redirect (never followed, so the token never
reaches another origin), a 2xx page from a proxy, a refusal of a clock that runs ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import Any

from agent.buffer import Buffer
from agent.errors import ClockSkew, DeliveryError, Rejected
from common.logonce import WarnOnce
from common.retry import MAX_BACKOFF, Backoff, retry_after_seconds
from common.urls import location_host, url_for_log

log = logging.getLogger("patrol.forward")

Sink = Callable[[list[dict[str, Any]]], Awaitable[Collection[str]]]
"""Deliver a batch; returns the ids of the events the API confirms it holds."""

SKEW_LOG_EVERY = 60.0
MAX_ANSWER = 1 << 20
"""Bytes of a 2xx answer read at most: the API's answer to 100 events is a few KB."""


class Forwarder:
    """Delivers the outbox to a `Sink` in order until cancelled; a failure keeps the events
    and waits (`backoff`, capped at `max_backoff`) before the next try."""

    def __init__(self, buffer: Buffer, sink: Sink, ready: asyncio.Event, *,
                 batch: int = 100, max_backoff: float = MAX_BACKOFF) -> None:
        self.buffer = buffer
        self.sink = sink
        self.ready = ready
        self.batch = batch
        self.delivered = 0
        self.progress_at = time.time()
        """When a batch last went through or the outbox was last found empty: what the
        forwarder's lag is measured from while events wait."""
        self.backoff = Backoff(base=0.5, cap=max_backoff)
        self._down = WarnOnce(log)
        self._skewed = WarnOnce(log, every=SKEW_LOG_EVERY, level=logging.ERROR)

    async def run(self) -> None:
        while True:
            self.ready.clear()  # set again by any event stored from here on
            try:
                delivered = await self.deliver_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any sink failure: keep events, retry later
                wait = self.backoff.failed(getattr(exc, "retry_after", None))
                if isinstance(exc, ClockSkew):
                    self._log_skew(exc, wait)
                else:
                    self._down.trouble("cannot deliver NC events yet (%s); retrying in "
                                       "%.1fs", exc, wait)
                await asyncio.sleep(wait)
                continue
            self._flowing()
            if not delivered:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ready.wait(), timeout=5)

    async def deliver_pending(self) -> int:
        """Deliver every pending event in order; returns how many."""
        total = 0
        while rows := self.buffer.pending_events(self.batch):
            try:
                confirmed = await self.sink([body for _, body in rows])
            except Rejected:
                total += await self._one_by_one(rows)
                continue
            total += self._forget(rows, confirmed)
            self._flowing()
        return total

    def _forget(self, rows: list[tuple[int, dict[str, Any]]], confirmed: Collection[str]
                ) -> int:
        """Delete the confirmed events; an unconfirmed one is a failure, retried later."""
        done = [seq for seq, body in rows if body.get("id") in confirmed]
        self.buffer.ack_events(done)
        self.delivered += len(done)
        if len(done) < len(rows):
            raise DeliveryError(f"the API confirmed {len(done)} of {len(rows)} events; "
                                "the others stay in the outbox")
        return len(done)

    def _flowing(self) -> None:
        """A batch went through: log the recovery once, so the next outage warns again."""
        self.progress_at = time.time()
        failures = self.backoff.failures
        if self.backoff.succeeded():  # after an outage or a clock running ahead
            self._down.reset()
            self._skewed.reset()
            log.info("NC events flowing again after %d failed attempts", failures)

    def _log_skew(self, exc: ClockSkew, wait: float) -> None:
        """An error, at most once a minute: the events wait until the clock is right."""
        offset = "an unknown offset" if exc.offset is None else f"{exc.offset:+.1f}s"
        self._skewed.trouble("this agent's clock runs ahead of the API's (%s: events dated "
                             "%s, API time %s): the API refuses them; they stay in the "
                             "outbox and are retried (fix the clock, e.g. NTP); next try in "
                             "%.1fs", offset, exc.event_time, exc.server_time, wait)

    async def _one_by_one(self, rows: list[tuple[int, dict[str, Any]]]) -> int:
        """A batch was refused: find the events the API refuses and set them aside."""
        for seq, body in rows:
            try:
                confirmed = await self.sink([body])
            except Rejected as exc:
                self.buffer.dead_letter_event(seq, body, str(exc))
                log.error("the API refuses event %s (%s) for good: kept in the buffer's "
                          "dead letters: %s", body.get("id"), body.get("type"), exc)
                continue
            self._forget([(seq, body)], confirmed)
        return len(rows)


RETRYABLE = (401, 403, 404, 408, 409, 425, 429)
"""4xx answers that may change (credentials fixed, API upgraded, rate limit passed)."""


def confirmed_ids(answer: object, bodies: list[dict[str, Any]]) -> set[str]:
    """The ids a 2xx answer confirms: its `ids`, or every id when an API without `ids`
    counts the whole batch as applied or duplicate. Anything else raises DeliveryError."""
    if isinstance(answer, dict):
        ids = answer.get("ids")
        if isinstance(ids, list):
            return {i for i in ids if isinstance(i, str)}
        applied, duplicates = answer.get("applied"), answer.get("duplicates")
        if (type(applied) is int and type(duplicates) is int
                and applied + duplicates == len(bodies)):
            return {str(body.get("id")) for body in bodies}
        if type(applied) is int and type(duplicates) is int:
            raise DeliveryError(f"the API counted {applied} applied and {duplicates} "
                                f"duplicates of {len(bodies)} events")
    raise DeliveryError("the answer is not the API's (no applied/duplicates/ids): a proxy "
                        "or another service answered")


def clock_skew(detail: object, bodies: list[dict[str, Any]], where: str) -> ClockSkew | None:
    """A 422 `{"code": "clock_skew", "server_time": ...}` (or FastAPI's `detail` of it)."""
    if isinstance(detail, dict) and isinstance(detail.get("detail"), dict):
        detail = detail["detail"]
    if not isinstance(detail, dict) or detail.get("code") != "clock_skew":
        return None
    server = detail.get("server_time")
    latest = max((str(body.get("at", "")) for body in bodies), default="")
    offset = None
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        server_ts = (float(server) if isinstance(server, int | float)
                     else datetime.fromisoformat(str(server)).timestamp())
        offset = datetime.fromisoformat(latest).timestamp() - server_ts
    return ClockSkew(f"{where} refused events dated ahead of its clock (clock_skew)",
                     latest, str(server), offset)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx becomes an HTTPError: a redirect is never followed (SPEC 7.1)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_sink(base_url: str, token: str | None, timeout: float = 10.0) -> Sink:
    """POST batches to `{base_url}/api/v1/events` (stdlib only: the agent stays small)."""
    url = base_url.rstrip("/") + "/api/v1/events"
    shown = url_for_log(url)

    def post(bodies: list[dict[str, Any]]) -> set[str]:
        data = json.dumps({"events": bodies}).encode()
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                body = response.read(MAX_ANSWER)
        except urllib.error.HTTPError as exc:
            raise _refusal(exc, bodies, shown) from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"{shown} unreachable: {getattr(exc, 'reason', exc)}"
                                ) from None
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        try:
            return confirmed_ids(answer, bodies)
        except DeliveryError as exc:
            raise DeliveryError(f"{shown} answered {response.status}, but {exc}") from None

    async def send(bodies: list[dict[str, Any]]) -> set[str]:
        return await asyncio.to_thread(post, bodies)

    return send


def _refusal(exc: urllib.error.HTTPError, bodies: list[dict[str, Any]], shown: str
             ) -> Exception:
    """The exception an HTTP error answer stands for: retryable unless refused for good."""
    code = exc.code
    if 300 <= code < 400:
        return DeliveryError(f"{shown} answered {code}, a redirect to "
                             f"{location_host(exc.headers.get('Location'))}: not followed")
    text = exc.read(2000).decode("utf-8", "replace")
    if code == 422:
        with contextlib.suppress(ValueError):
            skew = clock_skew(json.loads(text), bodies, shown)
            if skew is not None:
                return skew
    detail = text[:300]
    if 400 <= code < 500 and code not in RETRYABLE:
        return Rejected(f"{shown} answered {code}: {detail}")
    return DeliveryError(f"{shown} answered {code}: {detail}",
                         retry_after_seconds(exc.headers.get("Retry-After")))
