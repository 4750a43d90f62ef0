"""python -m bench.mqtt_ingest: JSON messages per second from Mosquitto into Readings.

Starts its own `mosquitto` on a free port, then for QoS 0 and QoS 1 streams N
Zigbee2MQTT-style JSON messages (`zigbee2mqtt/<device>`, four metrics and an ISO
`last_seen` each) from `mosquitto_pub -l` processes, one per device, and times three
subscribers on the same stream, one after the other:

    patrol          MqttCollector in this process: paho with our read buffer and short
                    path for PUBLISH (`collector.mqtt.fastpath.FastClient`), payload mapping into
                    Readings, one emit per drain that counts and calls on_stored at once
                    (QoS 1: the acks)
    paho alone      a stock paho client whose on_message only counts: what reading the
                    socket the way paho does costs before any work is done
    mosquitto_sub   `mosquitto_sub -C N > /dev/null`, the C client, for scale

A rate is N divided by the time from the publishers' start to the Nth message received,
so it is capped by the publishers too; `--repeat` runs each case several times and the
median is printed with the spread. Nothing is asserted. The broker's queue limits are
lifted so nothing is dropped under load; any message that did not arrive is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.servers import Publishers, free_port
from collector.mqtt import MqttCollector
from collector.mqtt.config import MqttConfig, Subscription
from collector.reading import Reading

HOST = "127.0.0.1"
METRICS = {"temperature": "$.temperature", "humidity": "$.humidity",
           "battery": "$.battery", "linkquality": "$.linkquality"}
TIMEOUT = 120.0  # seconds without the last message: report a loss and move on


class Broker:
    """A private mosquitto: no persistence, queue limits lifted, subscriptions logged."""

    def __init__(self, directory: Path, inflight: int, extra: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.log = directory / "mosquitto.log"
        config = directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} {HOST}", "allow_anonymous true",
            # No drops under load: QoS 0 to an online client is queued like QoS 1.
            "max_queued_messages 0", "max_queued_bytes 0",
            f"max_inflight_messages {inflight}",
            f"log_dest file {self.log}", "log_type error", "log_type warning",
            "log_type subscribe",  # how we know a subscriber is ready
            *extra,
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        config.write_text("\n".join(lines) + "\n")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
        wait_for(lambda: _accepts(self.port), "mosquitto to listen", 10)

    def subscribed(self, client_id: str) -> bool:
        return self.log.exists() and f": {client_id} " in self.log.read_text()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


async def poll(condition: Callable[[], bool], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def write_streams(directory: Path, messages: int, devices: int) -> list[tuple[str, Path]]:
    """One file of JSON lines per device; together `messages` lines."""
    streams = []
    for d in range(devices):
        path = directory / f"sensor-{d}.jsonl"
        with path.open("w") as out:
            for i in range(d, messages, devices):
                out.write(json.dumps({
                    "battery": 100 - i % 40, "humidity": round(40 + i % 300 / 10, 1),
                    "linkquality": 60 + i % 190, "temperature": round(18 + i % 90 / 10, 2),
                    "voltage": 2900 + i % 200,
                    "last_seen": f"2026-11-25T08:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}"
                                 f".{i % 1000:03d}Z",
                }, separators=(",", ":")) + "\n")
        streams.append((f"zigbee2mqtt/sensor-{d}", path))
    return streams


def run_mosquitto_sub(broker: Broker, qos: int, messages: int,
                      streams: Sequence[tuple[str, Path]], run: str) -> tuple[float, int]:
    """(seconds, messages received) for `mosquitto_sub -C N > /dev/null`."""
    client_id = f"bench-sub-{run}"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", HOST, "-p", str(broker.port), "-q", str(qos), "-i", client_id,
         "-t", "zigbee2mqtt/#", "-C", str(messages)], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: broker.subscribed(client_id), "mosquitto_sub to subscribe", 10)
        start = time.perf_counter()
        publishers = Publishers(broker.port, qos, streams)
        try:
            sub.wait(TIMEOUT)
            return time.perf_counter() - start, messages
        except subprocess.TimeoutExpired:
            return float("nan"), -1  # mosquitto_sub does not say how many it got
        finally:
            publishers.stop()
    finally:
        if sub.poll() is None:
            sub.kill()
        sub.wait()


def run_paho(broker: Broker, qos: int, messages: int,
             streams: Sequence[tuple[str, Path]], run: str) -> tuple[float, int]:
    """(seconds, messages received) for a stock paho client whose on_message only counts."""
    got = [0, 0.0]
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{run}")

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        got[0] += 1
        got[1] = time.perf_counter()

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe("zigbee2mqtt/#", qos)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(HOST, broker.port)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("paho did not subscribe")
        start = time.perf_counter()
        publishers = Publishers(broker.port, qos, streams)
        try:
            wait_for(lambda: got[0] >= messages, "paho to receive everything", TIMEOUT)
        except RuntimeError:
            pass  # reported as a loss
        finally:
            publishers.stop()
        return got[1] - start, got[0]
    finally:
        client.disconnect()
        client.loop_stop()


def run_patrol(broker: Broker, qos: int, messages: int,
               streams: Sequence[tuple[str, Path]], run: str) -> tuple[float, int]:
    """(seconds, messages received) for MqttCollector mapping into Readings."""
    config = MqttConfig(
        url=f"mqtt://{HOST}:{broker.port}", qos=qos, client_id=f"bench-patrol-{run}",
        clean_session=True,
        subscriptions=[Subscription(topic="zigbee2mqtt/{asset}", metrics=METRICS,
                                    timestamp="$.last_seen", units={"temperature": "degC"})],
    )
    collector = MqttCollector(config)
    want = messages * len(METRICS)
    got = [0, 0.0]  # readings, time of the last one

    def emit(readings: Sequence[Reading], on_stored: Callable[[], None] | None = None) -> None:
        got[0] += len(readings)
        got[1] = time.perf_counter()
        if on_stored is not None:
            on_stored()

    async def main() -> float:
        task = asyncio.create_task(collector.run(emit))
        try:
            await poll(lambda: collector.stats.subscribed, "the collector to subscribe")
            start = time.perf_counter()
            publishers = Publishers(broker.port, qos, streams)
            try:
                last, seen = time.monotonic(), 0
                while got[0] < want and time.monotonic() - last < 10:
                    await asyncio.sleep(0.01)
                    if got[0] != seen:
                        last, seen = time.monotonic(), got[0]
            finally:
                publishers.stop()
            return got[1] - start
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    seconds = asyncio.run(main())
    return seconds, got[0] // len(METRICS)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt_ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=4, help="publishers, one topic each")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=1000,
                        help="broker max_inflight_messages (QoS 1 window; mosquitto's "
                             "default is 20)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="patrol-bench-") as tmp:
        directory = Path(tmp)
        streams = write_streams(directory, args.messages, args.devices)
        broker = Broker(directory, args.inflight)
        try:
            print(f"{args.messages} JSON messages ({args.devices} devices), mosquitto on "
                  f"{HOST}:{broker.port}, max_inflight_messages {args.inflight}, "
                  f"{os.cpu_count()} CPUs; median of {args.repeat} (min-max)")
            for qos in (0, 1):
                runs = {"patrol": run_patrol, "paho alone": run_paho,
                        "mosquitto_sub": run_mosquitto_sub}
                rates: dict[str, list[float]] = {name: [] for name in runs}
                lost = dict.fromkeys(runs, 0)
                for r in range(args.repeat):
                    for name, run in runs.items():
                        seconds, received = run(broker, qos, args.messages, streams,
                                                 f"q{qos}-{r}")
                        if received != args.messages:
                            lost[name] += 1
                            print(f"  qos {qos} {name}: only {received} of {args.messages} "
                                  "arrived" if received >= 0 else
                                  f"  qos {qos} {name}: not all arrived in {TIMEOUT:.0f} s")
                        else:
                            rates[name].append(args.messages / seconds)
                print(f"QoS {qos}:")
                for name, values in rates.items():
                    if values:
                        print(f"  {name:14} {statistics.median(values):9,.0f} msg/s "
                              f"({min(values):,.0f}-{max(values):,.0f})"
                              + (f"  {lost[name]} runs lost messages" if lost[name] else ""))
                if rates["patrol"] and rates["mosquitto_sub"]:
                    ratio = statistics.median(rates["patrol"]) / statistics.median(
                        rates["mosquitto_sub"])
                    print(f"  patrol / mosquitto_sub: {ratio:.2f}")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
