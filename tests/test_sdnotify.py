"""systemd notify and watchdog (agent.sdnotify): what a unit with `Type=notify` and
`WatchdogSec=` hears, on a socket of the test's own.

A real `patrol agent` says READY=1, pings WATCHDOG=1 and says STOPPING=1 on SIGTERM. In
process, with a real pipeline, engine and buffer: a silent source keeps the pings going; a
stalled disk write (the loop blocked) or readings the pipeline's run task does not take
stop them; a poll cycle stuck past every timeout, or paho's thread stuck, is named.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from agent import sdnotify
from agent.buffer import Buffer
from agent.pipeline import Pipeline
from collector.modbus.config import ModbusConfig
from collector.modbus.poller import ModbusCollector
from collector.mqtt import MqttCollector, MqttConfig, Subscription
from collector.mqtt.connection import AWAY_MAX
from collector.reading import Reading
from rules.engine import Engine
from rules.standard import Asset, Standard
from tests.conftest import free_port
from tests.integration.conftest import PatrolProcess
from tests.integration.mosquitto import Mosquitto, Publisher, mosquitto_available

INTERVAL = 1.0  # WatchdogSec in these tests: pings every 0.5 s


class Listener:
    """The systemd side: a datagram socket bound where NOTIFY_SOCKET points."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[str] = []

    def read(self, seconds: float) -> list[str]:
        """Every datagram arriving within `seconds`, one string each."""
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        self.messages += got
        return got

    def until(self, field: str, timeout: float) -> list[str]:
        """Datagrams up to and including the first holding `field`."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got += self.read(0.1)
            if any(field in message.split("\n") for message in got):
                return got
        raise AssertionError(f"no {field} within {timeout}s; heard {got}")

    def close(self) -> None:
        self.sock.close()


def pings(messages: list[str]) -> int:
    return sum("WATCHDOG=1" in m.split("\n") for m in messages)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    heard = Listener(str(tmp_path / "notify.sock"))
    yield heard
    heard.close()


def test_no_socket_no_notification_and_watchdog_pid_is_honoured() -> None:
    assert sdnotify.notify("READY=1", environ={}) is False
    here = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}
    assert sdnotify.watchdog_interval(here) == 30.0
    assert sdnotify.watchdog_interval({**here, "WATCHDOG_PID": str(os.getpid())}) == 30.0
    # inherited by a child of the service's main process: not ours to ping for
    assert sdnotify.watchdog_interval({**here, "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) is None  # no socket


@pytest.mark.parametrize("mode", ["agent", "api"])
def test_patrol_says_ready_pings_and_says_stopping(tmp_path: Path, mode: str) -> None:
    """The real command under a fake systemd (abstract socket, WatchdogSec=1s). The agent
    polls a Modbus device that refuses connections: its loop runs, so the pings go on; the
    API alone pings while its loop answers."""
    (tmp_path / "site.yaml").write_text(f"""\
site: {{id: plant-1}}
assets: [{{id: CH-1, type: chiller}}]
modbus:
  devices:
    - {{name: plc, host: 127.0.0.1, port: {free_port()}, unit_id: 1, interval: 1s,
       timeout: 500ms, retries: 0,
       points: [{{asset: CH-1, metric: supply_temp, address: 0, type: int16}}]}}
forward: {{url: 'http://127.0.0.1:{free_port()}'}}
buffer: {{path: buffer.sqlite}}
server: {{listen: '127.0.0.1:{free_port()}', database: 'sqlite:///patrol.sqlite'}}
""")
    heard = Listener(f"@patrol-test-{uuid.uuid4().hex}")
    agent = PatrolProcess(mode, "-c", tmp_path / "site.yaml", cwd=tmp_path,
                          env={"NOTIFY_SOCKET": heard.address, "WATCHDOG_USEC": "1000000"})
    try:
        before = heard.until("READY=1", timeout=30)
        ready = next(m for m in before if "READY=1" in m.split("\n"))
        assert f"STATUS=patrol {mode} running for site plant-1" in ready.split("\n")
        assert pings(heard.read(2.5)) >= 4  # every 0.5 s
        assert agent.stop() == 0, agent.output
        assert "STOPPING=1" in "\n".join(heard.read(1.0)).split("\n"), heard.messages
    finally:
        agent.stop()
        heard.close()


class LoopThread:
    """An event loop in its own thread, so the test still listens while it is blocked."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[asyncio.Task[Any]] = []

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self, *coros: Coroutine[Any, Any, Any]) -> None:
        async def start() -> None:
            self.tasks += [asyncio.create_task(c) for c in coros]

        self.run(start())

    def soon(self, call: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(call, *args)

    def close(self) -> None:
        async def stop() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        with suppress(concurrent.futures.TimeoutError):  # a loop still blocked: leave it
            self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class StallingBuffer(Buffer):
    """A disk whose writes hang once armed, as a dying SD card's do (write() waits in the
    kernel); the pipeline calls it on the loop's thread, so the whole loop waits."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.armed = False
        self.stalled = threading.Event()
        self.release = threading.Event()

    def put(self, *args: Any, **kwargs: Any) -> None:
        if self.armed:
            self.stalled.set()
            self.release.wait(30)
        super().put(*args, **kwargs)


@contextmanager
def pipeline_on_a_loop(tmp_path: Path) -> Iterator[tuple[LoopThread, Pipeline, StallingBuffer]]:
    loop = LoopThread()
    buffer = StallingBuffer(tmp_path / "buffer.sqlite")
    standards = [Standard.model_validate({"id": "MAX", "title": "max", "metric": "t",
                                          "check": {"max": 100}})]

    async def make() -> Pipeline:
        engine = Engine("plant-1", [Asset(id="CH-1")], standards, started=time.time())
        return Pipeline(engine, buffer, tick_every=0.2)

    line = loop.run(make())
    try:
        yield loop, line, buffer
    finally:
        buffer.release.set()
        loop.close()
        buffer.close()


def reading() -> list[Reading]:
    return [Reading("CH-1", "t", 20.0, time.time(), source="modbus:plc")]


def test_a_silent_source_does_not_stop_the_pings(tmp_path: Path, listener: Listener) -> None:
    with pipeline_on_a_loop(tmp_path) as (loop, line, _):
        environ = {"NOTIFY_SOCKET": listener.address}
        loop.start(line.run(), line.tick(), sdnotify.watchdog([line], INTERVAL,
                                                              environ=environ))
        loop.soon(line.emit, reading())  # one reading, then silence for four intervals
        heard = listener.read(4 * INTERVAL)
    assert pings(heard) >= 7 and not any("stalled" in m for m in heard), heard


def test_a_stalled_disk_write_blocks_the_loop_and_the_pings(tmp_path: Path,
                                                            listener: Listener) -> None:
    with pipeline_on_a_loop(tmp_path) as (loop, line, buffer):
        environ = {"NOTIFY_SOCKET": listener.address}
        loop.start(line.run(), line.tick(), sdnotify.watchdog([line], INTERVAL,
                                                              environ=environ))
        assert pings(listener.read(1.2)) >= 2
        buffer.armed = True
        loop.soon(line.emit, reading())
        assert buffer.stalled.wait(5)
        listener.read(0.05)  # a ping sent as the write began
        assert pings(listener.read(2.5 * INTERVAL)) == 0
        buffer.armed = False
        buffer.release.set()  # the disk answers again: so do the pings
        assert pings(listener.read(1.2)) >= 1


def test_readings_the_pipeline_does_not_take_stop_the_pings(tmp_path: Path,
                                                            listener: Listener) -> None:
    """The run task not taking batches (here: not started, as good as stuck on an await)
    while the loop and the timers run: stalled once the readings wait a whole interval;
    the pings come back when it takes them."""
    with pipeline_on_a_loop(tmp_path) as (loop, line, _):
        environ = {"NOTIFY_SOCKET": listener.address}
        loop.start(line.tick(), sdnotify.watchdog([line], INTERVAL, environ=environ))
        loop.soon(line.emit, reading())
        heard = listener.until("STATUS=stalled: pipeline: 1 batches queued, none taken for "
                               "1s", timeout=3 * INTERVAL)
        assert pings(heard) <= 3  # while the batch had waited less than an interval
        assert pings(listener.read(1.5 * INTERVAL)) == 0
        loop.start(line.run())
        assert "STATUS=running" in listener.until("WATCHDOG=1", timeout=2 * INTERVAL)


def test_a_poll_cycle_is_stalled_only_past_every_timeout_it_could_wait() -> None:
    """A device that accepts and never answers: its cycle is not stalled while it waits out
    its timeouts (the link's budget); the same cycle past that budget is. A device polled
    hourly that is asleep between polls is never stalled."""
    mute = socket.create_server(("127.0.0.1", 0))
    port = mute.getsockname()[1]
    config = ModbusConfig.model_validate({"devices": [
        {"name": "mute", "host": "127.0.0.1", "port": port, "unit_id": 1, "interval": "1h",
         "timeout": "2s", "retries": 1,
         "points": [{"asset": "CH-1", "metric": "t", "address": 0, "type": "int16"}]},
        {"name": "gone", "host": "127.0.0.1", "port": free_port(), "unit_id": 1,
         "interval": "1h", "timeout": "2s", "retries": 0,
         "points": [{"asset": "CH-2", "metric": "t", "address": 0, "type": "int16"}]}]})
    collector = ModbusCollector(config)
    emitted: list[str] = []

    async def scenario() -> tuple[str, str, str, str]:
        polling = asyncio.create_task(collector.run(
            lambda readings, on_stored=None: emitted.extend(r.asset for r in readings)))
        await asyncio.sleep(1.0)  # "gone" refused at once and sleeps; "mute" is waiting
        now = time.monotonic()
        budget = (1 + 1) * 2.0 * (1 + 1)  # (points + 1) x timeout x (retries + 1)
        answers = (collector.stalled(now, 0.5), collector.stalled(now + budget, 0.5),
                   collector.stalled(now + 3600.0, 0.5))
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)
        return (*answers, collector.stalled(now + 1e6, 0.5))

    try:
        within, past, much_later, stopped = asyncio.run(scenario())
    finally:
        mute.close()
    assert emitted == ["CH-2"]  # the refused device's cycle ended; the mute one's did not
    assert within == ""
    assert past.startswith("modbus: device mute every 3600.0s: one poll cycle running for")
    assert "gone" not in much_later  # asleep until its next poll, an hour away
    assert stopped == ""


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
def test_paho_thread_stuck_is_stalled_a_silent_broker_is_not(tmp_path: Path) -> None:
    """The collector's `clock` runs on paho's thread for each message: one that never
    returns is paho's thread stuck. Same question before and after: has paho's thread
    looped in the last 1.5 s (a shift of AWAY_MAX - 1.5 s)?"""
    broker = Mosquitto(tmp_path / "broker").start()
    hang = threading.Event()
    free = threading.Event()

    def clock() -> float:
        if hang.is_set():
            free.wait(30)
        return time.time()

    config = MqttConfig(url=broker.url, subscriptions=[
        Subscription(topic="patrol-test/{asset}/{metric}", format="number")])
    collector = MqttCollector(config, clock)
    publisher = Publisher(broker.port)

    async def scenario() -> tuple[str, str]:
        running = asyncio.create_task(collector.run(lambda readings, on_stored=None: None))
        await asyncio.sleep(2.5)  # connected, subscribed, nothing published: silence
        silent = collector.stalled(time.monotonic() + AWAY_MAX - 1.5, 0.0)
        hang.set()
        await asyncio.to_thread(publisher.publish, [("patrol-test/CH-1/t", "1")])
        await asyncio.sleep(2.5)
        stuck = collector.stalled(time.monotonic() + AWAY_MAX - 1.5, 0.0)
        free.set()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        return silent, stuck

    try:
        silent, stuck = asyncio.run(scenario())
    finally:
        free.set()
        publisher.close()
        broker.close()
    assert silent == ""
    assert stuck.startswith("mqtt: paho's network thread for 'patrol-"), stuck
