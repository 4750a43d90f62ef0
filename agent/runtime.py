"""Wiring of a running Patrol: collectors -> pipeline -> buffer -> forwarder -> API.

`patrol run` runs all of it in one process and one event loop; `patrol agent` runs the
left half and forwards events over HTTP; `patrol api` runs the API alone. FastAPI,
SQLAlchemy and uvicorn are imported only where the API runs, so an edge agent stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import glob
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import sdnotify
from agent.buffer import Buffer
from agent.catalog import publish_catalog
from agent.errors import ClockAhead, Rejected, TaskFailed
from agent.forward import MAX_BACKOFF, Forwarder, Sink, confirmed_ids, http_sink
from agent.heartbeat import Heartbeat, Post, default_gateway_id, http_post
from agent.metrics import AgentProbe, MetricsServer
from agent.pipeline import Pipeline, saved_state
from agent.site import Site, load_site
from agent.tsdb import LineSerializer, TsdbWriter, make_sender
from agent.yamldoc import ConfigError
from collector.reading import Collector, Pausable
from common.secrets import read_secret
from common.urls import url_for_log
from rules.engine import Engine

if TYPE_CHECKING:
    import uvicorn

    from api.store import Database

log = logging.getLogger("patrol")

STOP_GRACE = 10.0


def collectors_for(site: Site, assets: set[str] | None = None) -> list[Collector]:
    """The site's collectors; `assets` (the ids MQTT accepts) is kept up to date by reloads."""
    config = site.config
    collectors: list[Collector] = []
    if config.modbus and config.modbus.devices:
        from collector.modbus.poller import ModbusCollector

        collectors.append(ModbusCollector(config.modbus))
    if config.mqtt and config.mqtt.subscriptions:
        from collector.mqtt import MqttCollector

        known = assets if assets is not None else {a.id for a in config.assets}
        collectors.append(MqttCollector(config.mqtt, assets=known))
    return collectors


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT ask for a clean stop (idempotent; the main thread only)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


async def run_site(site: Site, *, mode: str, stop: asyncio.Event,
                   on_ready: Callable[[str], None] | None = None) -> None:
    """Run `mode` (run | agent | api) until `stop` is set, then shut down in order."""
    api_url = ""
    server = database = None
    sockets: list[socket.socket] = []
    if mode in ("run", "api"):
        listen = site.config.server
        try:  # bound before anything starts, so a taken port is one clear error
            sockets.append(socket.create_server((listen.host, listen.port)))
        except OSError as exc:
            raise OSError(f"cannot listen on {listen.listen}: {exc.strerror or exc}") from None
        database, server = _api_server(site)
        api_url = f"http://{listen.listen}"
    async with (_metrics_listener(site, mode),  # bound first: a taken port is one error
                _agent(site, database, enabled=mode in ("run", "agent")) as agent_tasks):
        serve = (asyncio.create_task(server.serve(sockets=sockets), name="api")
                 if server else None)
        if server:
            while not server.started and serve and not serve.done():  # noqa: ASYNC110 (a flag only)
                await asyncio.sleep(0.02)
        log.info("patrol %s started for site %s", mode, site.id)
        if on_ready:
            on_ready(api_url)
        sdnotify.ready(f"patrol {mode} running for site {site.id}")
        failed = await _until_stop_or_failure(stop, [*agent_tasks, *([serve] if serve else [])])
        log.info("stopping")
        sdnotify.stopping()
    if server and serve and not serve.done():
        server.should_exit = True
        await serve
    if database is not None:
        database.close()
    if failed:
        raise TaskFailed(f"stopped because {failed} failed")
    log.info("stopped")


@contextlib.asynccontextmanager
async def _metrics_listener(site: Site, mode: str) -> Any:
    """site.yaml's `metrics:` listener for `patrol agent` and `patrol run`, while they run."""
    config = site.config.metrics
    listener = MetricsServer(config) if config is not None and mode != "api" else None
    try:
        yield listener
    finally:
        if listener is not None:
            listener.close()


async def _until_stop_or_failure(stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> str:
    """Wait for `stop`; a task that ends on its own is a failure: name it in one error line
    (its traceback at debug level, `patrol -v`) and stop all."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for task in done:
        if task is not stopper:
            error = task.exception() if not task.cancelled() else None
            why = f"{type(error).__name__}: {error}" if error else "it ended on its own"
            log.error("%s failed: %s; stopping, exit status 1 (a service manager restarts "
                      "patrol)", task.get_name(), why)
            if error is not None:
                log.debug("%s failed", task.get_name(), exc_info=error)
            return task.get_name()
    return ""


def _api_server(site: Site) -> tuple[Database, uvicorn.Server]:
    import uvicorn

    from api.app import create_app
    from api.store import open_database

    class Server(uvicorn.Server):
        """Our loop owns SIGTERM/SIGINT; uvicorn must not re-raise them after shutdown."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    from api.notify.dispatch import NotifySetup, SiteContext

    server_config = site.config.server
    database = open_database(server_config)
    notify = site.config.notify
    info = site.config.site
    notifier = NotifySetup(notify, SiteContext(
        name=info.name or info.id, timezone=info.timezone, locale=info.locale,
        public_url=server_config.public_url or None), mqtt=site.config.mqtt) \
        if notify is not None and notify.channels and notify.routes else None
    from api.inspections.config import InspectionsConfig, InspectionSetup

    inspections = InspectionSetup(
        site.config.inspections or InspectionsConfig(), site.id, site_name=info.name or info.id,
        timezone=info.timezone, locale=info.locale, public_url=server_config.public_url or None,
        assets={asset.id: asset for asset in site.config.assets},
        standards={standard.id: standard.summary() for standard in site.standards},
        notify=notify, mqtt=site.config.mqtt, kpi_targets=info.kpi_targets)
    app = create_app(database, recurrence=timedelta(seconds=server_config.recurrence_window),
                     site_id=site.id,
                     assets={asset.id: asset.type for asset in site.config.assets},
                     allow_self_verify=server_config.allow_self_verify,
                     webhooks_allow_private=server_config.webhooks_allow_private,
                     webhooks_allow=server_config.webhooks_allow, jobs=True,
                     max_clock_skew=timedelta(seconds=server_config.max_clock_skew),
                     notifier=notifier, root_cause_categories=info.root_cause_categories,
                     inspections=inspections, kpi_targets=info.kpi_targets,
                     timezone=info.timezone,
                     gateway_offline_after=timedelta(
                         seconds=server_config.gateway_offline_after),
                     retention=server_config.retention)
    config = uvicorn.Config(app, host=server_config.host, port=server_config.port,
                            log_config=None, log_level="warning", access_log=False,
                            lifespan="on")
    return database, Server(config)


def in_process_sink(database: Database, max_clock_skew: float = 300.0) -> Sink:
    from pydantic import TypeAdapter, ValidationError

    from api.errors import ClockSkew
    from api.ingest import apply_events
    from rules.events import AnyEvent

    adapter: TypeAdapter[Any] = TypeAdapter(AnyEvent)
    skewed = False

    async def send(bodies: list[dict[str, Any]]) -> set[str]:
        nonlocal skewed
        try:
            events = [adapter.validate_python(body) for body in bodies]
        except ValidationError as exc:
            raise Rejected(str(exc).splitlines()[0]) from None
        try:
            result = await asyncio.to_thread(apply_events, database.write, events,
                                             max_clock_skew=timedelta(seconds=max_clock_skew))
        except ClockSkew as exc:
            if not skewed:  # once per spell; the forwarder retries with backoff
                log.error("NC events dated %.0fs ahead of the clock are kept and retried: "
                          "%s", exc.ahead, exc)
            skewed = True
            raise ClockAhead(str(exc)) from None
        skewed = False
        # the confirmation the HTTP sink gets from the API's answer, by the same rule
        return confirmed_ids({"applied": result.applied, "duplicates": result.duplicates,
                              "ids": list(result.ids)}, bodies)

    return send


def heartbeat(site: Site, collectors: list[Collector], buffer: Buffer,
              database: Database | None, *, tsdb: bool) -> Heartbeat:
    """The heartbeat: to the API in this process (`patrol run`), else to `forward.url`."""
    forward = site.config.forward
    if database is not None:
        post = in_process_heartbeat(database)
    elif forward is not None:
        post = http_post(forward.url, read_secret(forward.token_env, forward.token_file))
    else:
        raise RuntimeError("patrol agent needs a forward: section (where NC events go)")
    return Heartbeat(site.id, (forward.gateway_id if forward else None) or default_gateway_id(),
                     collectors, buffer, post, every=forward.heartbeat if forward else 30.0,
                     tsdb=tsdb)


def in_process_heartbeat(database: Database) -> Post:
    from datetime import UTC, datetime

    from api.gateways import record_heartbeat
    from api.schemas import HeartbeatIn
    from api.store import committed

    async def send(body: dict[str, Any]) -> dict[str, Any]:
        beat = HeartbeatIn.model_validate(body)
        now = datetime.now(UTC)
        closed = await asyncio.to_thread(
            committed, database.write, lambda session: record_heartbeat(session, beat, now))
        return {"server_time": now.isoformat(), "offline_closed": closed}

    return send


def restored_engine(site: Site, buffer: Buffer) -> Engine:
    """The rules engine, with the state saved in the buffer when it can be restored."""
    config = site.config

    def fresh() -> Engine:
        return Engine(site.id, config.assets, site.standards, timezone=config.site.timezone,
                      started=time.time())

    engine = fresh()
    saved = saved_state(buffer)
    if saved is None:
        return engine
    try:
        restored = engine.restore(saved)
    except Exception as exc:  # else the same saved state stops every start
        log.error("rule state not restored (%s: %s): every pair starts afresh",
                  type(exc).__name__, exc)
        return fresh()
    log.info("rule state restored for %d of %d (asset, standard) pairs", restored,
             engine.pairs)
    return engine


@dataclass
class Writers:
    """What drains the buffer: NC events to the API, readings to the TSDB (if any)."""

    forwarder: Forwarder
    tsdb: TsdbWriter | None = None
    close_tsdb: Callable[[], None] | None = None


def writers(site: Site, buffer: Buffer, events_ready: asyncio.Event,
            database: Database | None = None) -> Writers:
    """The forwarder (to the API in this process, or over HTTP to `forward.url`) and the
    TSDB writer, each with its section's `max_backoff`."""
    config = site.config
    if database is not None:
        sink = in_process_sink(database, config.server.max_clock_skew)
    elif config.forward is not None:
        token = read_secret(config.forward.token_env, config.forward.token_file)
        sink = http_sink(config.forward.url, token)
    else:
        raise RuntimeError("patrol agent needs a forward: section (where NC events go)")
    max_backoff = config.forward.max_backoff if config.forward else MAX_BACKOFF
    out = Writers(Forwarder(buffer, sink, events_ready, max_backoff=max_backoff))
    if config.influxdb is not None:
        send, out.close_tsdb = make_sender(config.influxdb)
        assets = {a.id: (a.type, a.location) for a in config.assets}
        serializer = LineSerializer(config.influxdb.measurement, site.id, assets)
        out.tsdb = TsdbWriter(buffer, config.influxdb, serializer, send)
        log.info("writing readings to %s (%s, bucket %s)", url_for_log(config.influxdb.url),
                 config.influxdb.api, config.influxdb.bucket)
    else:
        log.info("no influxdb: section: readings stay in the buffer (at most %d bytes)",
                 config.buffer.max_size)
    return out


@contextlib.asynccontextmanager
async def _agent(site: Site, database: Database | None, *, enabled: bool
                 ) -> Any:
    """Collectors, pipeline and forwarder as tasks; stopped source-first on exit."""
    if not enabled:  # `patrol api`: the watchdog sees the event loop respond, no more
        watching = sdnotify.watchdog_tasks([])
        try:
            yield watching
        finally:
            await _cancel(watching)
        return
    config = site.config
    buffer = Buffer(config.buffer.path, config.buffer.max_size)
    engine = restored_engine(site, buffer)
    pipeline = Pipeline(engine, buffer, snapshot_every=config.rules.snapshot_every,
                        save_every=config.rules.save_every,
                        save_history_every=config.rules.save_history_every,
                        commit_every=config.buffer.commit_every)
    out = writers(site, buffer, pipeline.events_ready, database)
    log.info("%d standards over %d assets: %d (asset, standard) pairs",
             len(site.standards), len(config.assets), engine.pairs)
    publish_catalog(site, pipeline, time.time())  # before any event: the API knows them
    settle_heap()
    known_assets = {a.id for a in config.assets}
    collectors = collectors_for(site, known_assets)
    # Backpressure: a collector that can pause stops reading while the pipeline is behind.
    pipeline.on_backlog.extend(c.pause for c in collectors if isinstance(c, Pausable))
    sources = [asyncio.create_task(c.run(pipeline.emit), name=c.name) for c in collectors]
    processing = [asyncio.create_task(pipeline.run(), name="pipeline"),
                  asyncio.create_task(pipeline.tick(), name="tick"),
                  asyncio.create_task(watch_standards(site, pipeline, assets=known_assets),
                                      name="reload"),
                  *sdnotify.watchdog_tasks([pipeline, *collectors])]
    beat = heartbeat(site, collectors, buffer, database, tsdb=out.tsdb is not None)
    forwarding = [asyncio.create_task(out.forwarder.run(), name="forward"),
                  asyncio.create_task(beat.run(), name="heartbeat")]
    if out.tsdb is not None:
        forwarding.append(asyncio.create_task(out.tsdb.run(), name="tsdb"))
    unregister = AgentProbe(
        buffer_path=config.buffer.path, max_size=config.buffer.max_size, pipeline=pipeline,
        sources=collectors, forwarder=out.forwarder, tsdb=out.tsdb,
        dropped=lambda: buffer.dropped, config=config.health).register()
    try:
        yield [*sources, *processing, *forwarding]
    finally:
        unregister()
        for group in (sources, processing, forwarding):
            await _cancel(group)
        pipeline.save_state()
        await _close(buffer, out)


async def _close(buffer: Buffer, out: Writers) -> None:
    """After the tasks: a last delivery attempt, then the buffer closed."""
    if out.close_tsdb is not None:
        out.close_tsdb()
    try:  # what fails stays in the outbox for next start
        await asyncio.wait_for(out.forwarder.deliver_pending(), timeout=STOP_GRACE)
    except Exception as exc:
        log.warning("NC events left in the outbox for the next start: %s", exc)
    counts = buffer.count()
    buffer.close()
    log.info("buffer holds %d readings and %d undelivered events", counts["readings"],
             counts["events"])


def _fingerprint(site: Site) -> list[tuple[str, int, int]]:
    """site.yaml and every file its standards globs match now, with mtime and size."""
    files = {site.path}
    for pattern in site.config.standards:
        files.update(Path(p) for p in glob.glob(str(site.base_dir / pattern), recursive=True))
    out = []
    for file in sorted(files):
        try:
            stat = file.stat()
        except OSError:
            continue
        out.append((str(file), stat.st_mtime_ns, stat.st_size))
    return out


async def watch_standards(site: Site, pipeline: Pipeline, every: float = 2.0, *,
                          assets: set[str] | None = None) -> None:
    """Reload assets and standards on SIGHUP or when their files change.

    A valid new set replaces the old one, keeping the state of unchanged (asset,
    standard id, version) pairs; a bad set is refused with its file:line problems and the
    old set stays. Other sections (devices, broker, server) take effect at restart.
    """
    trigger = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, trigger.set)
    seen = await asyncio.to_thread(_fingerprint, site)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(trigger.wait(), timeout=every)
        asked, now = trigger.is_set(), await asyncio.to_thread(_fingerprint, site)
        trigger.clear()
        if not asked and now == seen:
            continue
        seen = now
        try:
            new = await asyncio.to_thread(load_site, site.path)
            engine = pipeline.engine.reloaded(new.config.assets, new.standards, time.time())
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            log.error("kept the previous %d standards", len(site.standards))
            continue
        except Exception as exc:  # load_site turns its own into problems: a last resort
            log.error("reload refused: %s: %s: %s; kept the previous %d standards",
                      site.path, type(exc).__name__, exc, len(site.standards))
            continue
        pipeline.engine = engine
        site.standards = new.standards
        if assets is not None:  # the MQTT collector reads this set: new assets are accepted
            assets.clear()
            assets.update(a.id for a in new.config.assets)
        log.info("reloaded %d standards over %d assets (%d pairs); state kept for unchanged "
                 "(asset, standard, version)", len(new.standards), len(new.config.assets),
                 pipeline.engine.pairs)
        publish_catalog(new, pipeline, time.time())
        settle_heap()  # the replaced engine is collected; the new one settles


def settle_heap() -> None:
    """Take what is alive now out of the garbage collector's sight (`gc.freeze`): the
    site and the engine are most of a gateway's heap and live as long as it does, and
    the full collections a flood brings on walked all of them each time (about 15 % of
    the agent's CPU). Called again after a reload, which unfreezes first, so a replaced
    engine's cycles are still collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        if task.done():  # ended on its own: already reported by _until_stop_or_failure
            if not task.cancelled():
                task.exception()
            continue
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("task %s failed while stopping", task.get_name())
