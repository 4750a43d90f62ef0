"""The agent's heartbeat (SPEC 7.5): every `forward.heartbeat` it tells the API it is alive,
which version runs, how full its buffer is, when each source last gave readings, and how
far its clock is off the API's (a Pi has no clock of its own until NTP answers).

A heartbeat is a status, not data: one that cannot be delivered is not kept for later,
the next one says the same and more. The clock offset is measured from the API's answer
to the previous heartbeat (its `server_time` against the middle of the round trip).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from agent.buffer import Buffer
from agent.errors import DeliveryError
from agent.metrics import each_source, read_buffer
from collector.reading import Collector as Source
from common.logonce import WarnOnce
from common.urls import url_for_log
from common.version import VERSION

log = logging.getLogger("patrol.heartbeat")

Post = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Deliver one heartbeat; returns the API's answer (`server_time`, `offline_closed`)."""

SOON = 5.0
"""Seconds after the first heartbeat that the second one goes."""


def default_gateway_id() -> str:
    return socket.gethostname()[:128] or "gateway"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class Heartbeat:
    """Posts a heartbeat every `every` seconds until cancelled."""

    def __init__(self, site_id: str, gateway_id: str, collectors: Sequence[Source],
                 buffer: Buffer, post: Post, *, every: float = 30.0, tsdb: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.site_id = site_id
        self.gateway_id = gateway_id
        self.collectors = list(collectors)
        self.buffer = buffer
        self.post = post
        self.every = every
        self.tsdb = tsdb
        self.clock = clock
        self.started = clock()
        self.clock_offset: float | None = None
        self.sent = 0
        self._down = WarnOnce(log)

    def body(self) -> dict[str, Any]:
        now = self.clock()
        figures = read_buffer(self.buffer.path)
        oldest = figures.oldest_ts
        return {
            "site_id": self.site_id, "gateway_id": self.gateway_id, "version": VERSION,
            "at": _iso(now), "started_at": _iso(self.started),
            "uptime": round(now - self.started, 1), "clock_offset": self.clock_offset,
            "buffer": {"readings": figures.readings, "events": figures.events,
                       "bytes": figures.used_bytes,
                       "oldest_unsent_age": round(max(0.0, now - oldest), 1)
                       if self.tsdb and oldest is not None else None},
            "sources": {name: {"last_at": _iso(at), "readings": count}
                        for name, (at, count) in self.sources().items()},
        }

    def sources(self) -> dict[str, tuple[float, int]]:
        """By source (`modbus:<device>`, `mqtt` for all subscriptions): when its last
        readings came and how many since the start; a source with none yet is left out."""
        out: dict[str, tuple[float, int]] = {}
        for source, device, last, readings, _ in each_source(self.collectors):
            if not math.isfinite(last):
                continue
            name = f"modbus:{device}" if source == "modbus" else source
            at, count = out.get(name, (-math.inf, 0))
            out[name] = (max(at, last), count + readings)
        return out

    async def beat(self) -> bool:
        """One heartbeat; False (logged once per outage) when it could not be delivered."""
        try:
            body = self.body()
            sent = self.clock()
            answer = await self.post(body)
            received = self.clock()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._down.trouble("heartbeat not delivered (%s); the next one in %.0fs", exc,
                               self.every)
            return False
        self._down.reset()
        self.sent += 1
        server = answer.get("server_time")
        if isinstance(server, str):
            try:
                server_ts = datetime.fromisoformat(server).timestamp()
            except ValueError:
                server_ts = None
            if server_ts is not None:
                self.clock_offset = round((sent + received) / 2 - server_ts, 3)
        closed = answer.get("offline_closed")
        if closed:
            log.info("the API closed %s (gateway offline) on this heartbeat", closed)
        return True

    async def run(self) -> None:
        await self.beat()
        # the first heartbeat goes before any reading: the second one, soon after, shows
        # the sources answering (what an installer looks for), then every `every`
        await asyncio.sleep(min(self.every, SOON))
        while True:
            await self.beat()
            await asyncio.sleep(self.every)


def http_post(base_url: str, token: str | None, timeout: float = 10.0) -> Post:
    """POST to `{base_url}/api/v1/heartbeats` (stdlib only, redirects not followed)."""
    from agent.forward import _OPENER, MAX_ANSWER

    url = base_url.rstrip("/") + "/api/v1/heartbeats"
    shown = url_for_log(url)

    def post(body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                answer = json.loads(response.read(MAX_ANSWER) or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace")
            raise DeliveryError(f"{shown} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"{shown} unreachable: {getattr(exc, 'reason', exc)}"
                                ) from None
        except ValueError:
            raise DeliveryError(f"{shown} answered with something not JSON") from None
        return answer if isinstance(answer, dict) else {}

    async def send(body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(post, body)

    return send
