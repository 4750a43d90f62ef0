"""python -m bench.notify [--quick] [--backend sqlite|postgresql] [--per-transaction N]
[--profile]: the notifier's speed, deciding and delivering. Prints figures.

1. **Decided and queued** (target >= 2,000 NC changes/s on SQLite): engine events through
   `api.ingest.apply_events`, one transaction per event as the API applies them, on a site
   of assets under six standards (ranges and a stale check; critical, major and minor;
   two departments; some closing on recovery). Each (asset, standard) is raised, cleared,
   occurs again and clears (or closes on recovery, then recurs): each event one NC
   change. The same changes run twice, each in a fresh database: with no decider
   (`bare`), and with the notification outbox deciding in each change's transaction
   (`decide_with(db, Outbox(config).decide)`: pending notifications and timers), so the
   outbox's own cost is the difference. The `notify:` has four routes (one with
   `continue`, reminders, escalation and an acknowledgement timeout), three channels, a
   mute and the default inhibition. Wall-clock rates, and the bench process's CPU time
   per change (the database server's is not in it): the figure that holds when other
   work shares the cores. `--per-transaction N` applies N events per transaction instead
   (`api.ingest.apply_event`), to see the cost of the transactions themselves.
   `--profile` adds cProfile's view of the outbox runs: Patrol's functions and the
   driver's calls, microseconds per change (inflated by the profiler, about twofold).
2. **Delivered:** NCs raised (untimed) onto a route with `group_wait: 0s`, grouped by
   asset (two NCs each) for two `generic` webhook channels, `max_per_10m` raised so no
   digest forms; then timed: `Dispatcher.flush(now)`, then `send_due(now)` until nothing
   is left, to a real aiohttp receiver in its own process. Prints messages/s,
   notifications/s and the bench process's CPU per message, and fails unless the
   receiver got each message, and each (channel, NC, event), exactly once.
3. The bench process's peak RSS.

The clock is driven (fixed times), so timers and group waits do not depend on the run.
SQLite files go to the system temp dir (WAL, synchronous=FULL: an fsync per commit);
PostgreSQL is `$PATROL_BENCH_PG` (default the local `test` database) in a fresh schema,
dropped afterwards. About a minute in all; `--quick` about 15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import multiprocessing
import os
import pstats
import resource
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import aiohttp
from aiohttp import web
from pydantic import TypeAdapter
from sqlalchemy import func, select

from api.ingest import apply_event, apply_events
from api.lifecycle import NCChanged, decide_with, listen
from api.notify.config import NotifyConfig
from api.notify.dispatch import Dispatcher, SiteContext, build_senders
from api.notify.outbox import Outbox
from api.service import SYSTEM_ACTOR
from api.store import (
    Database,
    HistoryEntry,
    Notification,
    NotifyMessage,
    NotifyTimer,
)
from bench.api import database
from bench.servers import HOST, ServerError, free_port
from rules.events import AnyEvent, Event, EventIn

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai: the night mute is off
SITE = "tower-a"
TARGET = 2000
CHUNK = 50
"""Events applied to one database before the other's turn."""
WARM_ASSET = 99_999
"""Its lifecycle is applied before the clock starts: every kind of change and statement
once, so the connection pool and SQLAlchemy's statement cache are warm."""
EVENTS: TypeAdapter[Any] = TypeAdapter(AnyEvent)

STANDARDS: dict[str, dict[str, Any]] = {
    "CHW-SUPPLY": {"severity": "major", "department": "engineering", "kind": "range",
                   "on_recovery": "keep_open", "rectify_within": 86400.0},
    "CHW-RETURN": {"severity": "minor", "department": "engineering", "kind": "range",
                   "on_recovery": "close", "rectify_within": 172800.0},
    "SENSOR-SILENT": {"severity": "major", "department": "engineering", "kind": "stale",
                      "on_recovery": "close", "rectify_within": 14400.0},
    "FIRE-PUMP-PRESSURE": {"severity": "critical", "department": "facilities",
                           "kind": "range", "on_recovery": "keep_open",
                           "rectify_within": 14400.0},
    "ROOM-TEMP": {"severity": "minor", "department": "facilities", "kind": "range",
                  "on_recovery": "close", "rectify_within": 259200.0},
    "BOILER-PRESSURE": {"severity": "critical", "department": "engineering", "kind": "range",
                        "on_recovery": "close", "rectify_within": 7200.0},
}
"""Standard id -> what its events say of it (rules.standard.Standard.summary())."""

SITE_NOTIFY: dict[str, Any] = {
    "channels": [{"name": name, "kind": "webhook", "url": f"http://{HOST}:9/{name}"}
                 for name in ("eng", "ops", "quality")],
    "time_intervals": [{"name": "night", "times": ["22:00-07:00"]}],
    "routes": [
        {"match": {"severity": ["critical"]}, "channels": ["eng", "ops"], "group_wait": "0s",
         "repeat_interval": "30m", "escalate_after": "15m", "escalate_to": ["quality"],
         "ack_timeout": "2h", "continue": True},
        {"match": {"department": ["engineering"]},
         "events": ["raised", "reopened", "recurring", "occurrence", "overdue", "due_soon",
                    "closed"],
         "channels": ["eng"], "group_by": ["site_id", "department", "standard_id"],
         "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h",
         "mute_time_intervals": ["night"]},
        {"match": {"standard_kind": ["stale"]}, "channels": ["ops"], "group_wait": "10s"},
        {"match": {}, "channels": ["quality"]},
    ],
    "limits": {"max_per_10m": 20},
}
"""A plausible site's `notify:` (SPEC 7.2); silent sensors inhibit by default."""


def event(kind: str, asset: int, standard: str, start: datetime, at: datetime) -> EventIn:
    """One engine event in the wire form agents post, read as the API reads it."""
    info = STANDARDS[standard]
    started = kind == "violation_started"
    wire = Event(
        type=kind,  # type: ignore[arg-type]
        site_id=SITE, asset_id=f"AHU-{asset:05d}", standard_id=standard,
        standard_version=1, metric="supply_temp", episode_start=start.timestamp(),
        at=at.timestamp(), value=9.4 if started else 7.0, limit={"min": 6, "max": 8},
        readings=((start.timestamp(), 8.9), (at.timestamp(), 9.4)) if started else (),
        standard={"title": f"{standard} within limits", "clause": "O&M manual 4.2",
                  "category": "equipment", "verify_for": 3600.0, **info},
        asset={"type": "ahu", "name": f"AHU {asset}"},
    ).to_dict()
    return EVENTS.validate_python(wire)


def lifecycle_events(assets: int, first_asset: int = 0) -> list[EventIn]:
    """Per (asset, standard): raise, clear, occurrence, clear (or close on recovery, then
    a recurring raise), the site's pairs in time order within each round."""
    pairs = [(a, s) for a in range(first_asset, first_asset + assets) for s in STANDARDS]
    step = timedelta(seconds=600) / max(len(pairs), 1)
    rounds: list[list[EventIn]] = [[] for _ in range(5)]
    for number, (asset, standard) in enumerate(pairs):
        first = T0 + number * step
        second = first + timedelta(minutes=20)
        rounds[0].append(event("violation_started", asset, standard, first, first))
        rounds[1].append(event("violation_cleared", asset, standard, first,
                               first + timedelta(minutes=10)))
        rounds[2].append(event("violation_started", asset, standard, second, second))
        rounds[3].append(event("violation_cleared", asset, standard, second,
                               second + timedelta(minutes=10)))
        if STANDARDS[standard]["on_recovery"] == "close":
            third = first + timedelta(minutes=40)
            rounds[4].append(event("violation_started", asset, standard, third, third))
    return [e for r in rounds for e in r]


# --- 1. decided and queued ----------------------------------------------------------------


@dataclass
class Decided:
    changes: int
    seconds: float
    cpu: float
    """CPU seconds of this process meanwhile (not the database server's)."""
    notifications: float
    timers: float
    """Per change."""
    profile: str = ""

    @property
    def rate(self) -> float:
        return self.changes / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.changes * 1e6


def apply_batched(db: Database, events: Sequence[EventIn], per: int) -> None:
    """`per` events a transaction (the API applies one a transaction)."""
    for first in range(0, len(events), per):
        with db.write() as session:
            for one in events[first:first + per]:
                apply_event(session, one, SYSTEM_ACTOR)
            session.commit()


class Run:
    """One database taking the changes, with or without the outbox, and the time they
    took it."""

    def __init__(self, url: str, outbox: bool, per: int, profile: bool) -> None:
        self.db = Database(url)
        self.records: list[NCChanged] = []
        """The NC changes made, as the lifecycle hands them to listeners."""
        self._stop_listening = listen(self.db, self.records.append)
        self.stop = decide_with(self.db, Outbox(NotifyConfig.model_validate(
            SITE_NOTIFY)).decide) if outbox else None
        self.per = per
        self.profiler = cProfile.Profile() if profile else None
        self.seconds = self.cpu = 0.0
        self.applied = self.total = 0

    def apply(self, events: Sequence[EventIn], now: datetime, *, timed: bool = True) -> None:
        started, cpu = time.perf_counter(), time.process_time()
        if self.profiler is not None and timed:
            self.profiler.enable()
        if self.per == 1:
            apply_events(self.db.write, events, now=now)
        else:
            apply_batched(self.db, events, self.per)
        if self.profiler is not None and timed:
            self.profiler.disable()
        self.total += len(events)
        if timed:
            self.seconds += time.perf_counter() - started
            self.cpu += time.process_time() - cpu
            self.applied += len(events)

    def result(self) -> Decided:
        """What was made, checked: one NC change per event."""
        with self.db.session() as session:
            changes, notifications, timers = (
                session.scalar(select(func.count()).select_from(table)) or 0
                for table in (HistoryEntry, Notification, NotifyTimer))
        if changes != self.total:  # the workload is wrong, not slow
            raise SystemExit(f"{self.total} events made {changes} NC changes, not one each")
        return Decided(self.applied, self.seconds, self.cpu, notifications / changes,
                       timers / changes,
                       profile_lines(self.profiler, self.applied) if self.profiler else "")

    def close(self) -> None:
        if self.stop is not None:
            self.stop()
        self._stop_listening()
        self.db.close()


def decide_alone(db: Database, records: Sequence[NCChanged], per: int) -> float:
    """The notifier's own work, apart from the NC changes: `Outbox.decide` over the
    records of changes already made (their NCs are in `db`), `per` records a transaction,
    rows written and committed. Returns records per second."""
    outbox = Outbox(NotifyConfig.model_validate(SITE_NOTIFY))
    started = time.perf_counter()
    for first in range(0, len(records), per):
        with db.write() as session:
            outbox.decide(session, tuple(records[first:first + per]))
            session.commit()
    return len(records) / (time.perf_counter() - started)


def decide_runs(urls: tuple[str, str], events: Sequence[EventIn], per: int,
                profile: bool) -> tuple[Decided, Decided, tuple[float, float]]:
    """The same events into two fresh databases, bare and with the outbox, a chunk to
    each in turn: whatever else the machine does falls on both alike."""
    warm = lifecycle_events(1, WARM_ASSET)
    now = max(e.at for e in [*events, *warm]) + timedelta(seconds=1)
    runs = [Run(urls[0], False, per, False), Run(urls[1], True, per, profile)]
    try:
        for run in runs:
            run.apply(warm, now, timed=False)
        step = max(CHUNK, per)
        for number, first in enumerate(range(0, len(events), step)):
            for run in runs if number % 2 else runs[::-1]:
                run.apply(events[first:first + step], now)
        bare, full = runs[0].result(), runs[1].result()
        records = runs[0].records
        alone = (decide_alone(runs[0].db, records, 1), decide_alone(runs[0].db, records, 100))
        return bare, full, alone
    finally:
        for run in runs:
            run.close()


def profile_lines(profiler: cProfile.Profile, changes: int, top: int = 30) -> str:
    """Patrol's functions and the database driver's calls by cumulative time, per change."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []
    for (path, line, name), (_, calls, own, cumulative, _) in stats.items():
        ours = "/api/" in path and "site-packages" not in path
        driver = name.startswith(("<method 'execute' of", "<method 'commit' of",
                                  "<method 'executemany' of"))
        if ours or driver:
            where = f"{path.rsplit('/api/', 1)[-1]}:{line} {name}" if ours else name
            rows.append((cumulative, own, calls, where))
    rows.sort(reverse=True)
    lines = [f"    {'cum us':>8} {'own us':>7} {'calls':>6}  (per change, profiled)"]
    lines += [f"    {c / changes * 1e6:>8,.0f} {o / changes * 1e6:>7,.0f} "
              f"{n / changes:>6.2f}  {where}" for c, o, n, where in rows[:top]]
    return "\n".join(lines)


def bench_decide(backend: str, assets: int, per: int, profile: bool, tmp: Path) -> float:
    """Prints one line (and the profile); returns the rate with the outbox."""
    events = lifecycle_events(assets)
    with database(backend, tmp / f"{backend}-bare") as bare_url, \
            database(backend, tmp / f"{backend}-outbox") as outbox_url:
        bare, full, alone = decide_runs((bare_url, outbox_url), events, per, profile)
    print(f"  {backend:<10} {full.changes:>7,} {bare.rate:>9,.0f} {full.rate:>9,.0f} "
          f"{bare.cpu_us:>10,.0f} {full.cpu_us:>10,.0f} {full.cpu_us - bare.cpu_us:>8,.0f} "
          f"{full.notifications:>8.2f} {full.timers:>8.2f} {alone[0]:>8,.0f} "
          f"{alone[1]:>8,.0f}", flush=True)
    if full.profile:
        print(f"  {backend}, outbox run:\n{full.profile}", flush=True)
    return alone[1]


# --- 2. delivered -----------------------------------------------------------------------


class Receiver:
    """A generic-format webhook receiver in a process of its own (forked, so it imports
    nothing again), so its work does not share the dispatcher's event loop. POSTs go to
    /hook/{run}/{channel}; `received(run)` lists what each brought."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._process = multiprocessing.get_context("fork").Process(
            target=receive, args=(self.port,), name="notify-receiver", daemon=True)

    def __enter__(self) -> Self:
        self._process.start()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                self.received("ready")
                return self
            if not self._process.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise ServerError("the notify receiver did not start")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(10)

    def received(self, run: str) -> list[tuple[str, list[tuple[str, str]]]]:
        """[(channel, [(NC id, event), ...]) for each POST of `run`], in arrival order."""
        with urllib.request.urlopen(f"{self.url}/received/{run}", timeout=30) as answer:
            return [(channel, [(nc, ev) for nc, ev in entries])
                    for channel, entries in json.load(answer)]


def receive(port: int) -> None:
    """The receiver's process: answer 200 and keep each POST's channel and entries."""
    posts: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        posts.setdefault(request.match_info["run"], []).append(
            (request.match_info["channel"],
             [(e["nc"]["id"], e["event"]) for e in body["entries"]]))
        return web.json_response({"ok": True})

    async def received(request: web.Request) -> web.Response:
        return web.json_response(posts.get(request.match_info["run"], []))

    app = web.Application()
    app.router.add_post("/hook/{run}/{channel}", hook)
    app.router.add_get("/received/{run}", received)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None)


def delivery_config(url: str) -> NotifyConfig:
    """Two generic channels; each asset its own group; no digest."""
    return NotifyConfig.model_validate({
        "channels": [{"name": name, "kind": "webhook", "format": "generic",
                      "url": f"{url}/{name}"} for name in ("eng", "quality")],
        "routes": [{"match": {}, "channels": ["eng", "quality"], "group_wait": "0s",
                    "group_by": ["asset_id"]}],
        "limits": {"max_per_10m": 1_000_000}})


@dataclass
class Delivered:
    messages: int
    notifications: int
    flush_seconds: float
    send_seconds: float
    passes: int
    cpu: float
    """CPU seconds of this process (the receiver's and the database's are not in it)."""


async def deliver(db: Database, config: NotifyConfig, now: datetime) -> Delivered:
    """Flush the due groups into messages, then send until nothing more goes (timed)."""
    async with aiohttp.ClientSession() as http:
        dispatcher = Dispatcher(db, config, SiteContext(name="Tower A"),
                                build_senders(config, http, None), buckets=None)
        started, cpu = time.perf_counter(), time.process_time()
        made = await asyncio.to_thread(dispatcher.flush, now)
        flushed = time.perf_counter()
        sent, passes = 0, 0
        while sent < made:
            done = await dispatcher.send_due(now)
            passes += 1
            if done == 0:
                break  # nothing more goes at `now`: the rest failed, the check says so
            sent += done
        ended, cpu = time.perf_counter(), time.process_time() - cpu
    with db.session() as session:
        notifications = session.scalar(select(func.count()).select_from(Notification).where(
            Notification.status == "sent")) or 0
    return Delivered(sent, notifications, flushed - started, ended - flushed, passes, cpu)


def check_received(db: Database, posts: list[tuple[str, list[tuple[str, str]]]],
                   delivered: Delivered) -> None:
    """Each message came once, and each (channel, NC, event) the database holds came once:
    a benchmark that loses or repeats messages measures nothing."""
    got = Counter((channel, nc, ev) for channel, entries in posts for nc, ev in entries)
    with db.session() as session:
        expected = Counter((channel, f"NC-{pk:06d}", ev) for channel, pk, ev in
                           session.execute(select(Notification.channel, Notification.nc_pk,
                                                  Notification.event)))
        made = session.scalar(select(func.count()).select_from(NotifyMessage)) or 0
        sent = session.scalar(select(func.count()).select_from(NotifyMessage).where(
            NotifyMessage.status == "sent")) or 0
    problems = []
    if not made == sent == delivered.messages == len(posts):
        problems.append(f"{made} messages made, {sent} sent in the database, "
                        f"{delivered.messages} delivered, {len(posts)} POSTs received")
    if got != expected:
        missing, extra = expected - got, got - expected
        problems.append(f"entries: {sum(missing.values())} missing, {sum(extra.values())} "
                        f"extra or repeated, e.g. {list(missing or extra)[:3]}")
    if problems:
        raise SystemExit("delivery check failed: " + "; ".join(problems))


def bench_deliver(backend: str, messages: int, receiver: Receiver, tmp: Path) -> None:
    """`messages` messages (two per asset, one per channel), sent and checked."""
    with database(backend, tmp / f"deliver-{backend}") as url:
        config = delivery_config(f"{receiver.url}/hook/{backend}")
        db = Database(url)
        stop = decide_with(db, Outbox(config).decide)
        try:
            events = [event("violation_started", a, s, T0, T0 + timedelta(seconds=a * 0.01))
                      for a in range(messages // 2) for s in ("CHW-SUPPLY", "CHW-RETURN")]
            apply_batched(db, events, 500)  # untimed (part 1 measures it): quickly
            now = T0 + timedelta(minutes=5)
            result = asyncio.run(deliver(db, config, now))
            check_received(db, receiver.received(backend), result)
        finally:
            stop()
            db.close()
    total = result.flush_seconds + result.send_seconds
    print(f"  {backend:<10} {result.messages:>8,} {result.notifications:>8,} "
          f"{result.flush_seconds:>7.2f} {result.send_seconds:>7.2f} {result.passes:>6} "
          f"{result.messages / total:>10,.0f} {result.notifications / total:>10,.0f} "
          f"{result.cpu / result.messages * 1e3:>7.2f}   each once: yes", flush=True)


# --- main ---------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer changes and messages")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append",
                        help="default: both")
    parser.add_argument("--assets", type=int, help="decided: assets under 6 standards, "
                        "28 changes per 6 pairs (default 40, quick 10)")
    parser.add_argument("--per-transaction", type=int, default=1, metavar="N",
                        help="decided: events per transaction (default 1, as the API)")
    parser.add_argument("--messages", type=int, help="delivered: messages (default 800, "
                        "quick 200)")
    parser.add_argument("--profile", action="store_true",
                        help="decided: cProfile the outbox runs (their rates then suffer)")
    args = parser.parse_args(argv)
    assets = args.assets or (10 if args.quick else 40)
    messages = args.messages or (200 if args.quick else 800)
    backends = args.backend or ["sqlite", "postgresql"]
    changes = len(lifecycle_events(assets))
    per = max(args.per_transaction, 1)
    print(f"notify benchmark: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; driven clock")
    print(f"\n1. NC changes decided and queued: {changes:,} changes ({assets:,} assets x "
          f"{len(STANDARDS)} standards), {per} event(s) per transaction")
    print(f"  {'':<10} {'':>7} {'changes/s (wall)':>19} {'CPU us/change (bench)':>29} "
          f"{'per change':>17} {'decided alone/s':>17}")
    print(f"  {'backend':<10} {'changes':>7} {'bare':>9} {'outbox':>9} {'bare':>10} "
          f"{'outbox':>10} {'+outbox':>8} {'notifs':>8} {'timers':>8} {'1/txn':>8} "
          f"{'100/txn':>8}", flush=True)
    # the receiver first: forked before this process holds connections or threads
    with Receiver() as receiver, \
            tempfile.TemporaryDirectory(prefix="patrol-bench-notify-") as directory:
        tmp = Path(directory)
        rates = {backend: bench_decide(backend, assets, per, args.profile, tmp)
                 for backend in backends}
        if "sqlite" in rates:
            verdict = "met" if rates["sqlite"] >= TARGET else "NOT met"
            print(f"  target >= {TARGET:,}/s decided and queued on SQLite (the notifier "
                  f"alone, 100 changes a transaction as in a flood): {verdict} "
                  f"({rates['sqlite']:,.0f}/s)\n"
                  "  bare/outbox: the whole NC change (lifecycle, one transaction each) "
                  "without and with the outbox; 1/txn pays one commit per change")
        print(f"\n2. delivered to a local generic webhook receiver: {messages:,} messages "
              f"(2 NCs each, 2 channels)")
        print(f"  {'backend':<10} {'messages':>8} {'notifs':>8} {'flush s':>7} "
              f"{'send s':>7} {'passes':>6} {'messages/s':>10} {'notifs/s':>10} "
              f"{'cpu ms':>7}", flush=True)
        for backend in backends:
            bench_deliver(backend, messages, receiver, tmp)
    print(f"\n3. peak RSS of the bench process: {peak_rss_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
