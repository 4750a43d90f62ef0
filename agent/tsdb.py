"""Drains the buffer into InfluxDB (or a compatible store), deleting only what the server
acknowledged.

Layout (one measurement, default `patrol`):
    tags   site, asset, asset_type, location, metric, source
    fields value (float; absent when the reading has none), quality (1i good, 0i bad),
           reason (string, bad readings only)
    time   milliseconds
Quality is a field, not a tag, so a sensor's good and bad readings stay one series.

Server answers: 2xx delete the batch; 429/503 wait for Retry-After (at least 1 s, at most
the backoff maximum); 3xx (never followed), other 5xx and connection errors back off
exponentially with jitter; 400/422 (a poison batch) bisect to find the refused points,
dead-letter them with the server's message, send the rest; 401/403 stop sending, keep
everything, log once, retry slowly; 413 halves the batch size. A full disk that keeps an
acknowledged batch from being deleted is retried before anything else is read, so nothing
is sent twice while the agent runs.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from agent import lineprotocol
from agent.buffer import SERIES_CACHE, Buffer, BufferFull, LineBatch, Row
from collector.reading import Reading
from common.config_types import ConfigPath, Duration
from common.logonce import WarnOnce
from common.metrics import TSDB_WRITE_ERRORS, TSDB_WRITE_SECONDS, write_error_kind
from common.recent import Recent
from common.retry import MAX_BACKOFF, Backoff
from common.secrets import read_secret
from common.urls import location_host, url_for_log

log = logging.getLogger("patrol.tsdb")

AUTH_RETRY = 60.0
IN_FLIGHT = 2
"""Batches travelling at once: while the server ingests one, the next is built and
compressed. Each is deleted from the buffer only when its own answer is 2xx."""


class InfluxConfig(BaseModel):
    """site.yaml `influxdb:` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    api: Literal["v1", "v2"] = "v2"
    org: str = "-"
    bucket: str = Field(min_length=1, description="v1: the database")
    retention_policy: str | None = Field(None, description="v1 only")
    token_env: str | None = None
    token_file: ConfigPath | None = None
    username: str | None = Field(None, description="HTTP Basic auth instead of a token (v1; "
                                 "v2 behind a proxy or VictoriaMetrics' -httpAuth)")
    password_env: str | None = None
    password_file: ConfigPath | None = None
    measurement: str = Field("patrol", min_length=1)
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_interval: Duration = Field(1.0, gt=0)
    timeout: Duration = Field(10.0, gt=0)
    max_backoff: Duration = Field(
        MAX_BACKOFF, gt=0, description="longest wait between retries while the TSDB is "
        "unreachable or failing (0.5 s doubling up to this; Retry-After capped at it)")

    @field_validator("username")
    @classmethod
    def _one_way_to_sign_in(cls, username: str | None, info: ValidationInfo) -> str | None:
        """A token and a user name would each make an Authorization header, and only one
        can be sent: refused here rather than one of them silently ignored."""
        if username is not None and (info.data.get("token_env") or info.data.get("token_file")):
            raise ValueError("give either username (HTTP Basic) or token_env/token_file, "
                             "not both")
        return username


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server said to one write: status None means it could not be reached."""

    status: int | None
    message: str = ""
    retry_after: str | None = None
    location: str | None = None
    """A redirect's target: never followed, only reported (its origin)."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


Send = Callable[[bytes], Answer]
"""Write a body of line protocol (UTF-8, lines joined by newlines); blocking (runs in a
worker thread, where its gzip runs without the GIL)."""


class LineSerializer:
    """Readings -> line protocol, with each series' measurement and tags escaped once."""

    def __init__(self, measurement: str, site_id: str,
                 assets: Mapping[str, tuple[str, str]]) -> None:
        self._measurement = measurement
        self._site = site_id
        self._assets = assets  # id -> (type, location)
        # Bounded: with accept_unknown_assets, topics (and so sources) may never repeat.
        self._prefix: Recent[tuple[str, str, str], str] = Recent(SERIES_CACHE)

    def line(self, reading: Reading) -> str:
        prefix = self._prefix_of(reading.asset, reading.metric, reading.source)
        reason = None if reading.quality.good else reading.quality.reason
        return lineprotocol.line(prefix, reading.ts, reading.value, reason)

    def head(self, series: tuple[str, str, str, str]) -> str:
        """The start of every line of a buffer series (asset, metric, unit, source): what
        `Buffer.line_batch` puts before the fields."""
        asset, metric, _unit, source = series
        return self._prefix_of(asset, metric, source)

    def lines(self, rows: Sequence[Row], series: Callable[[int], tuple[str, str, str, str]]
              ) -> list[str]:
        """Lines from buffer rows, one per row: for finding the lines a server refuses."""
        out = []
        for _id, series_id, ts, value, reason in rows:
            prefix = self.head(series(series_id))
            out.append(lineprotocol.line(prefix, ts, math.nan if value is None else value,
                                         reason))
        return out

    def _prefix_of(self, asset: str, metric: str, source: str) -> str:
        key = (asset, metric, source)
        prefix = self._prefix.get(key)
        if prefix is None:
            asset_type, location = self._assets.get(asset, ("", ""))
            prefix = self._prefix[key] = lineprotocol.head(self._measurement, {
                "site": self._site, "asset": asset, "asset_type": asset_type or None,
                "location": location or None, "metric": metric, "source": source or None,
            })
        return prefix


class TsdbWriter:
    """Moves readings from the buffer to the TSDB until cancelled."""

    def __init__(self, buffer: Buffer, config: InfluxConfig, serializer: LineSerializer,
                 send: Send, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
                 ) -> None:
        self.buffer = buffer
        self.config = config
        self.serializer = serializer
        self.send = send
        self.sleep = sleep
        self.batch_size = config.batch_size
        self.written = 0
        self.dead_lettered = 0
        self.backoff = Backoff(base=0.5, cap=config.max_backoff)
        self._unreachable = WarnOnce(log)
        self._refused = WarnOnce(log, level=logging.ERROR)  # credentials: a person fixes them
        self._full = False
        self._shown = url_for_log(config.url)
        self._in_flight: deque[tuple[LineBatch, asyncio.Future[Answer]]] = deque()
        self._unforgotten: deque[tuple[int, int]] = deque()
        """Id ranges the TSDB acknowledged that a full disk kept us from deleting."""

    async def run(self) -> None:
        while True:
            try:
                more = await self.flush_once()
            except BufferFull as exc:  # a dead letter or a bisected delete: retried later
                self._disk_full(exc)
                more = False
            if not more:
                await self.sleep(self.config.flush_interval)

    async def flush_once(self) -> bool:
        """Settle the oldest batch in flight (sending more first, up to IN_FLIGHT); True
        when there may be more to send right away."""
        loop = asyncio.get_running_loop()
        if not self._forget():
            return False
        after = self._in_flight[-1][0].last if self._in_flight else 0
        while len(self._in_flight) < IN_FLIGHT:
            batch = self._read(after)
            if batch is None:
                break
            # run_in_executor starts the send now; a to_thread task would start only at
            # the next await, after the next batch is built, and nothing would overlap
            self._in_flight.append((batch, loop.run_in_executor(None, self.send, batch.body)))
            if batch.count < self.batch_size:
                break
            after = batch.last
        if not self._in_flight:
            return False
        batch, sending = self._in_flight.popleft()
        answer = await sending
        if answer.ok:
            self.written += batch.count
            self._recovered()
            self._unforgotten.append((batch.first, batch.last))
            return self._forget() and (bool(self._in_flight)
                                       or batch.count == self.batch_size)
        # A failed batch is read again once nothing is in flight (reads start after the
        # last batch in flight): the ones after it are settled first, by their own answers.
        await self._handle(answer, batch)
        return True

    def _read(self, after: int) -> LineBatch | None:
        # rows the TSDB has but the buffer could not forget yet are never read again
        after = max(after, self._unforgotten[-1][1] if self._unforgotten else 0)
        return self.buffer.line_batch(self.batch_size, after, self.serializer.head)

    def _forget(self) -> bool:
        """Delete acknowledged batches; False while a full disk keeps them."""
        while self._unforgotten:
            first, last = self._unforgotten[0]
            try:
                self.buffer.delete_range(first, last)
            except BufferFull as exc:
                self._disk_full(exc)
                return False
            self._unforgotten.popleft()
        if self._full:
            log.info("buffer writable again: acknowledged readings deleted")
            self._full = False
        return True

    def _disk_full(self, exc: BufferFull) -> None:
        if not self._full:
            log.error("%s; readings the TSDB acknowledged stay in the buffer until there "
                      "is room (they are not sent again)", exc)
        self._full = True

    async def _handle(self, answer: Answer, batch: LineBatch) -> None:
        status = answer.status
        if status in (400, 422):
            rows = self.buffer.rows(batch.count, after=batch.first - 1)
            await self._bisect(rows, self.serializer.lines(rows, self.buffer.series), answer)
            self._recovered()
        elif status in (401, 403):
            self._refused.trouble("%s refused our credentials (%d %s): writing paused, "
                                  "readings kept in the buffer; retrying every %.0fs",
                                  self._shown, status, answer.message, AUTH_RETRY)
            await self.sleep(AUTH_RETRY)
        elif status == 413 and batch.count > 1:
            if batch.count // 2 < self.batch_size:  # the one behind it may have been too
                self.batch_size = batch.count // 2
                log.warning("%s: batch too large; batch size now %d", self._shown,
                            self.batch_size)
        else:
            wait = self.backoff.failed(answer.retry_after if status in (429, 503) else None)
            self._unreachable.trouble("cannot write to %s (%s); %d readings wait in the "
                                      "buffer; next try in %.1fs", self._shown,
                                      _describe(answer), batch.count, wait)
            await self.sleep(wait)

    async def _bisect(self, batch: list[Row], lines: list[str], answer: Answer) -> None:
        """Find the points the server refuses; send the rest, dead-letter those."""
        if len(batch) == 1:
            self.buffer.dead_letter([(batch[0][0], lines[0], answer.message)])
            self.dead_lettered += 1
            log.error("dead-lettered a reading the TSDB refuses: %s (%s)", lines[0][:200],
                      answer.message)
            return
        half = len(batch) // 2
        for part, part_lines in ((batch[:half], lines[:half]), (batch[half:], lines[half:])):
            part_answer = await asyncio.to_thread(self.send, "\n".join(part_lines).encode())
            if part_answer.ok:
                self.buffer.delete([row[0] for row in part])
                self.written += len(part)
            elif part_answer.status in (400, 422):
                await self._bisect(part, part_lines, part_answer)
            else:
                return  # the server changed its mind (outage): retry the rest later

    def _recovered(self) -> None:
        """A write went through: one line ends either trouble, and the backoff starts over."""
        self.backoff.succeeded()
        if self._refused.reset() | self._unreachable.reset():  # both reset, always
            log.info("writing to %s again", self._shown)


def _describe(answer: Answer) -> str:
    if answer.status is None:
        return f"unreachable: {answer.message}"
    if 300 <= answer.status < 400:
        return (f"{answer.status}, a redirect to {location_host(answer.location)}: "
                "not followed")
    return f"{answer.status} {answer.message}".strip()


def v2_sender(config: InfluxConfig) -> tuple[Send, Callable[[], None]]:
    """POST /api/v2/write (InfluxDB 1.8+, 2.x, 3.x, VictoriaMetrics): a token, or HTTP Basic
    for a server behind one (e.g. VictoriaMetrics' -httpAuth). A write is one POST: the
    line protocol is ours and the buffer owns the retries, so influxdb-client would only
    add its 24 MB (it loads numpy) to a gateway's memory."""
    fields = {"org": config.org, "bucket": config.bucket, "precision": "ms"}
    return _poster(config.url.rstrip("/") + "/api/v2/write?" + urlencode(fields),
                   _authorization(config), config.timeout)


def v1_sender(config: InfluxConfig) -> tuple[Send, Callable[[], None]]:
    """POST /write?db= (InfluxDB 1.x, e.g. Raspberry Pi OS's 1.6): basic auth or a token."""
    fields = {"db": config.bucket, "precision": "ms"}
    if config.retention_policy:
        fields["rp"] = config.retention_policy
    return _poster(config.url.rstrip("/") + "/write?" + urlencode(fields),
                   _authorization(config), config.timeout)


def _authorization(config: InfluxConfig) -> dict[str, str]:
    """HTTP Basic for a user name, else a token when one is set (the config allows only
    one of them), else no header; the same for both APIs."""
    if config.username:
        import urllib3  # here: a site without a TSDB never loads it

        password = read_secret(config.password_env, config.password_file) or ""
        basic = urllib3.make_headers(basic_auth=f"{config.username}:{password}")
        return {"Authorization": basic["authorization"]}
    token = read_secret(config.token_env, config.token_file)
    return {"Authorization": f"Token {token}"} if token else {}


def _poster(url: str, headers: dict[str, str], timeout: float
            ) -> tuple[Send, Callable[[], None]]:
    """Each body gzipped (level 1 packs line protocol almost as well as 9, several times
    faster) and POSTed once to `url`. Every answer is returned as it is: a redirect is not
    followed and nothing is retried here (the writer decides, the buffer keeps the lines)."""
    import urllib3  # here: a site without a TSDB never loads it

    pool = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout), retries=False)
    headers = {**headers, "Content-Encoding": "gzip",
               "Content-Type": "text/plain; charset=utf-8"}

    def send(lines: bytes) -> Answer:
        body = gzip.compress(lines, compresslevel=1)
        try:
            response = pool.request("POST", url, body=body, headers=headers, redirect=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return Answer(None, str(getattr(exc, "reason", None) or exc))
        return Answer(response.status, _message(response.data, response.reason),
                      response.headers.get("Retry-After"), response.headers.get("Location"))

    return send, pool.clear


def make_sender(config: InfluxConfig) -> tuple[Send, Callable[[], None]]:
    send, close = v2_sender(config) if config.api == "v2" else v1_sender(config)
    return timed(send), close


def timed(send: Send) -> Send:
    """`send` that records each write's duration and failure (once per batch)."""

    def write(lines: bytes) -> Answer:
        began = time.perf_counter()
        answer = send(lines)
        TSDB_WRITE_SECONDS.observe(time.perf_counter() - began)
        if not answer.ok:
            TSDB_WRITE_ERRORS.labels(write_error_kind(answer.status)).inc()
        return answer

    return write


def _message(body: bytes | str | None, reason: str | None) -> str:
    if not body:
        return reason or ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            return str(parsed.get("message") or parsed.get("error") or text)[:500]
    except ValueError:
        pass
    return text.strip()[:500]
