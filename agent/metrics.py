"""The running agent as Prometheus metrics and health reasons, read from its parts at the
question, and the `metrics:` listener of `patrol agent` and `patrol run`.

`AgentProbe` holds the parts (collectors, pipeline, writers, the buffer's path) and reads
their own counters when Prometheus scrapes or someone asks `/api/v1/health`: between
questions it costs nothing. The buffer is read through a connection of its own, opened
read-only for each question (WAL lets it read beside the writer, on any thread), never
through the pipeline's. The listener is prometheus_client's own small HTTP server on a
thread: no web framework in the agent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, get_args
from urllib.parse import quote

from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from common import health
from common.config_types import Duration, HostPort, split_host_port
from common.health import REASON_CODES, Reason
from common.metrics import MQTT_REFUSALS, REGISTRY, RULES_EVENTS, family
from rules.events import EventType

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

    from agent.forward import Forwarder
    from agent.pipeline import Pipeline
    from agent.tsdb import TsdbWriter
    from collector.reading import Collector as Source

log = logging.getLogger("patrol")

for _type in get_args(EventType):  # every type shows from the start, at 0
    RULES_EVENTS.labels(_type)


class MetricsConfig(BaseModel):
    """site.yaml `metrics:`: where `patrol agent` and `patrol run` serve Prometheus text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: HostPort = Field("127.0.0.1:9273", description="host:port of the metrics "
                             "listener (any path answers); keep it on loopback or a "
                             "trusted network: it has no token")


class HealthConfig(BaseModel):
    """site.yaml `health:`: how long a condition lasts before health says degraded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tsdb_lag: Duration = Field(300.0, gt=0, description="the oldest reading not yet in "
                               "the TSDB is older than this (with an influxdb: section)")
    forward_lag: Duration = Field(300.0, gt=0, description="NC events have waited this "
                                  "long for the API")
    source_silent: Duration = Field(900.0, ge=0, description="a Modbus device has not "
                                    "answered, or an MQTT subscription given a reading, "
                                    "for this long (a device: at least 3 of its intervals); "
                                    "0: never")


@dataclass(frozen=True, slots=True)
class BufferFigures:
    """What the buffer's file holds, read at one question."""

    readings: int = 0
    oldest_ts: float | None = None
    events: int = 0
    dead_letters: int = 0
    used_bytes: int = 0
    dropped: int = 0
    """Readings dropped to stay under buffer.max_size, in all."""


def read_buffer(path: Path) -> BufferFigures:
    """The buffer's depths from a read-only connection of its own: the readings by their id
    range (two index look-ups; the writer deletes in id order, so the range is the count
    within a batch in flight), where `count(*)` would read a million-row table."""
    uri = f"file:{quote(str(path))}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1.0)) as db:
        first, last = db.execute("SELECT min(id), max(id) FROM readings").fetchone()
        oldest = None
        if first is not None:
            row = db.execute("SELECT ts FROM readings WHERE id = ?", (first,)).fetchone()
            oldest = row[0] if row else None
        events = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        dead = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        dropped = db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    return BufferFigures(0 if first is None else last - first + 1, oldest, int(events),
                         int(dead), (pages - free) * size, int(dropped[0]) if dropped else 0)


def each_source(collectors: Sequence[Source]
                ) -> Iterator[tuple[str, str, float, int, float | None]]:
    """(source, device, last reading or answer (-inf: none yet), readings, polling interval
    or None) of each configured one, from the collectors' own counters: what the metrics,
    health and the heartbeat (agent.heartbeat) report."""
    for collector in collectors:
        if collector.name == "modbus":
            for name, stats in collector.stats.items():  # type: ignore[attr-defined]
                yield "modbus", name, stats.answered_at, stats.readings, stats.interval
        elif collector.name == "mqtt":
            for topic, sub in collector.stats.subscriptions.items():  # type: ignore[attr-defined]
                yield "mqtt", topic, sub.last_reading, sub.readings, None


class AgentProbe(Collector):
    """A running agent's parts, read when asked: a Prometheus collector and a health check."""

    def __init__(self, *, buffer_path: Path, max_size: int, pipeline: Pipeline,
                 sources: Sequence[Source], forwarder: Forwarder,
                 tsdb: TsdbWriter | None, dropped: Callable[[], int],
                 config: HealthConfig, clock: Callable[[], float] = time.time) -> None:
        self.buffer_path = buffer_path
        self.max_size = max_size
        self.pipeline = pipeline
        self.sources = list(sources)
        self.forwarder = forwarder
        self.tsdb = tsdb
        self.dropped = dropped
        self.config = config
        self.clock = clock
        self.started = clock()

    def register(self) -> Callable[[], None]:
        """Into the process's registry and health checks; returns what takes it out."""
        REGISTRY.register(self)
        remove = health.add_check(self.reasons)

        def unregister() -> None:
            remove()
            REGISTRY.unregister(self)

        return unregister

    # --- health ---------------------------------------------------------------------------

    def reasons(self, now: float) -> list[Reason]:
        """Why the agent is degraded now (docs/metrics.md, "Health")."""
        return self._reasons(now, self._buffer())

    def _reasons(self, now: float, figures: BufferFigures | None) -> list[Reason]:
        found: list[Reason] = []
        full_since = self.pipeline.full_since
        if full_since is not None:
            found.append(Reason("buffer_unwritable", f"the buffer refuses readings (disk "
                                f"full) for {age_text(now - full_since)}: they wait in memory "
                                "and their sources are not acknowledged"))
        if self.tsdb is not None and figures is not None and figures.oldest_ts is not None:
            lag = now - figures.oldest_ts
            if lag > self.config.tsdb_lag:
                found.append(Reason("tsdb_lag", f"{figures.readings} readings wait for the "
                                    f"TSDB, the oldest for {age_text(lag)} (limit "
                                    f"{age_text(self.config.tsdb_lag)})"))
        lag = self._forward_lag(now, figures)
        if lag > self.config.forward_lag:
            found.append(Reason("forward_lag", f"{figures.events if figures else '?'} NC "
                                f"events wait for the API, nothing delivered for "
                                f"{age_text(lag)} (limit {age_text(self.config.forward_lag)})"))
        if self.config.source_silent > 0:
            found += self._silent(now)
        return found

    def _silent(self, now: float) -> list[Reason]:
        out = []
        for source, device, last, limit in self._sources():
            quiet = now - max(last, self.started)
            if quiet > limit:
                what = "answered" if source == "modbus" else "given a reading"
                out.append(Reason("source_silent", f"{source} {device!r} has not {what} for "
                                  f"{age_text(quiet)} (limit {age_text(limit)})"))
        return out

    def _sources(self) -> Iterator[tuple[str, str, float, float]]:
        """(source, device, last reading or answer, silence limit) of each configured one."""
        base = self.config.source_silent
        for source, device, last, _, interval in each_source(self.sources):
            yield source, device, last, base if interval is None else max(base, 3 * interval)

    def _forward_lag(self, now: float, figures: BufferFigures | None) -> float:
        if figures is None or not figures.events:
            return 0.0
        return max(0.0, now - self.forwarder.progress_at)

    def _buffer(self) -> BufferFigures | None:
        try:
            return read_buffer(self.buffer_path)
        except sqlite3.Error as exc:  # busy, or moved aside by a salvage: next time
            log.debug("metrics: cannot read the buffer now: %s", exc)
            return None

    # --- metrics ---------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        yield from self._collectors()
        yield from self._pipeline()
        figures = self._buffer()
        yield from self._buffer_families(now, figures)
        degraded = {reason.code for reason in self._reasons(now, figures)}
        metric = family("patrol_degraded")
        for code in REASON_CODES:
            metric.add_metric([code], float(code in degraded))
        yield metric

    def _collectors(self) -> Iterator[Metric]:
        readings, bad = family("patrol_readings"), family("patrol_bad_readings")
        last = family("patrol_source_last_reading_timestamp_seconds")
        messages, refused = family("patrol_mqtt_messages"), family("patrol_mqtt_refused")
        for collector in self.sources:
            if collector.name == "modbus":
                for name, stats in collector.stats.items():  # type: ignore[attr-defined]
                    readings.add_metric(["modbus", name], stats.readings)
                    for reason, count in stats.bad.items():
                        bad.add_metric(["modbus", name, reason], count)
                    if math.isfinite(stats.answered_at):
                        last.add_metric(["modbus", name], stats.answered_at)
            elif collector.name == "mqtt":
                mqtt = collector.stats  # type: ignore[attr-defined]
                for topic, sub in mqtt.subscriptions.items():
                    readings.add_metric(["mqtt", topic], sub.readings)
                    messages.add_metric([topic], sub.messages)
                    for reason, count in zip(MQTT_REFUSALS[:3], (
                            sub.bad_payloads, sub.partial_payloads, sub.unknown_assets),
                            strict=True):
                        refused.add_metric([topic, reason], count)
                    if math.isfinite(sub.last_reading):
                        last.add_metric(["mqtt", topic], sub.last_reading)
                refused.add_metric(["", "unmatched"], mqtt.unmatched)
                yield from _single("patrol_mqtt_connects", mqtt.connects)
                yield from _single("patrol_mqtt_disconnects", mqtt.disconnects)
                yield from _single("patrol_mqtt_connect_failures", mqtt.connect_failures)
                yield from _single("patrol_mqtt_connected", float(mqtt.connected))
                yield from _single("patrol_mqtt_pauses", mqtt.pauses)
        yield from (readings, bad, last, messages, refused)

    def _pipeline(self) -> Iterator[Metric]:
        pipeline = self.pipeline
        yield from _single("patrol_rules_readings", pipeline.readings)
        yield from _single("patrol_rules_pairs", pipeline.engine.pairs)
        yield from _single("patrol_pipeline_backlog", pipeline.backlog)
        yield from _single("patrol_readings_clock_ahead", pipeline.ahead)
        dropped = family("patrol_readings_dropped")
        dropped.add_metric(["max_size"], self.dropped())
        dropped.add_metric(["disk_full"], pipeline.dropped_held)
        dropped.add_metric(["unstorable"], pipeline.unstorable)
        yield dropped
        yield from _single("patrol_buffer_writable", float(pipeline.full_since is None))
        written = self.tsdb.written if self.tsdb is not None else 0
        yield from _single("patrol_tsdb_readings_written", written)
        yield from _single("patrol_tsdb_dead_letters",
                           self.tsdb.dead_lettered if self.tsdb is not None else 0)
        yield from _single("patrol_forward_events_delivered", self.forwarder.delivered)

    def _buffer_families(self, now: float, figures: BufferFigures | None) -> Iterator[Metric]:
        yield from _single("patrol_buffer_max_bytes", self.max_size)
        yield from _single("patrol_forward_lag_seconds", self._forward_lag(now, figures))
        if figures is None:  # unreadable this time: absent rather than a false zero
            return
        yield from _single("patrol_buffer_readings", figures.readings)
        yield from _single("patrol_buffer_events", figures.events)
        yield from _single("patrol_buffer_dead_letters", figures.dead_letters)
        yield from _single("patrol_buffer_bytes", figures.used_bytes)
        age = 0.0 if figures.oldest_ts is None else max(0.0, now - figures.oldest_ts)
        yield from _single("patrol_buffer_oldest_reading_age_seconds", age)


def _single(name: str, value: float) -> Iterator[Metric]:
    metric = family(name)
    metric.add_metric([], value)
    yield metric


def age_text(seconds: float) -> str:
    """`42s`, `6.5m`, `2.0h`: a wait for a person (a clock behind shows as 0s)."""
    seconds = max(0.0, seconds)
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


class MetricsServer:
    """prometheus_client's HTTP server on its own thread, bound at construction so a taken
    port is one clear error before anything starts; `close` stops it and frees the port."""

    def __init__(self, config: MetricsConfig) -> None:
        from prometheus_client import start_http_server

        host, port = split_host_port(config.listen)
        try:
            self._server: WSGIServer
            self._server, self._thread = start_http_server(port, addr=host, registry=REGISTRY)
        except OSError as exc:
            raise OSError(f"metrics: cannot listen on {config.listen}: "
                          f"{exc.strerror or exc}") from None
        self.port = self._server.server_port
        self.listen = f"{host}:{self.port}" if ":" not in host else f"[{host}]:{self.port}"
        log.info("serving metrics on http://%s/metrics", self.listen)

    def close(self) -> None:
        self._server.shutdown()  # waits for serve_forever to return
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(config: MetricsConfig | None) -> contextlib.AbstractContextManager[
        MetricsServer | None]:
    """The listener for `config` while the block runs; none without a `metrics:` section."""

    @contextlib.contextmanager
    def running() -> Iterator[MetricsServer | None]:
        if config is None:
            yield None
            return
        server = MetricsServer(config)
        try:
            yield server
        finally:
            server.close()

    return running()


__all__ = ["AgentProbe", "BufferFigures", "HealthConfig", "MetricsConfig", "MetricsServer",
           "read_buffer", "serve"]
