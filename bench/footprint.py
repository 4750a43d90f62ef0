"""python -m bench.footprint [--quick] [--only idle,flood,load] [--code DIR]: what `patrol
agent` costs a gateway, measured on the real process.

The site (`write_site`): 200 assets (20 air handlers with 50 Modbus points each, every
asset with an MQTT environment sensor sending four metrics as JSON), 400 standards (per
Modbus metric a range, a 10-minute window, a rate and a stale check over the air
handlers; per zone of four assets four environment checks): 4,800 (asset, standard)
pairs. NC events go to a real `patrol api` (SQLite) with an agent token; no TSDB unless
`--tsdb` (then VictoriaMetrics), so the readings stay in the buffer and their stored size
can be read from it. The bench's own Mosquitto (free port, queue limits lifted: the broker
holds what the agent does not take) and the 20 pymodbus servers in a child process
(`bench.modbus_plan.Servers`).

- idle: the agent started, subscribed and polling its 20 devices, before any MQTT
  message: VmRSS once it stops moving (and VmHWM). Target <= 50 MB.
- flood: a fresh agent on the same site (without its Modbus devices) and 1,000,000
  readings (250,000 JSON messages of four metrics, QoS 1) published by eight
  `mosquitto_pub -l` faster than the agent takes them: peak RSS (VmRSS sampled every
  10 ms, and VmHWM). Target <= 100 MB.
- load: the idle agent then runs 5 minutes of a realistic load (the Modbus polls, 1,000
  points every 5 s, and 200 sensors every 10 s, a few drifting out of their limits):
  CPU % of one core (/proc/PID/stat utime + stime), bytes written to disk per hour
  (/proc/PID/io write_bytes) beside the readings' size as stored (the buffer's `readings`
  table, pages and payload by SQLite's dbstat) and the rule state saved meanwhile.

The figures are printed; nothing is asserted. Other processes on the machine count in the
wall-clock figures (the load average is printed); CPU and bytes are the agent's own.
`--code DIR` runs patrol from another checkout (PYTHONPATH=DIR), to measure before a change.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

from bench.flood import Peak, log_tail, mb, patrol, status_kb
from bench.modbus_plan import Servers, free_ports, site_map
from bench.mqtt_ingest import Broker, wait_for
from bench.servers import HOST, Publishers, VictoriaMetrics, free_port

AHUS, POINTS, ROOMS, ZONES = 20, 50, 180, 50
SENSOR_METRICS = {"air_temp": "$.temperature", "humidity": "$.humidity", "co2": "$.co2",
                  "battery": "$.battery"}
CLIENT_ID = "footprint-agent"
FLOOD_STREAMS = 8
TICKS = os.sysconf("SC_CLK_TCK")


# --- the site ------------------------------------------------------------------------------


def asset_ids() -> list[str]:
    return [f"ahu-{i:02d}" for i in range(AHUS)] + [f"room-{i:03d}" for i in range(ROOMS)]


def _ahu_standards() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for n in range(POINTS):
        metric, common = f"p{n}", {"applies_to": {"asset_types": ["ahu"]}}
        out += [
            {"id": f"AHU-P{n}-RANGE", "metric": metric, "check": {"min": -1e9, "max": 1e9},
             "for": "1m", **common},
            {"id": f"AHU-P{n}-MEAN", "metric": metric,
             "check": {"kind": "window", "agg": "mean", "over": "10m", "max": 1e9}, **common},
            {"id": f"AHU-P{n}-RATE", "metric": metric,
             "check": {"kind": "rate", "max": 1e9, "per": "1m"}, **common},
            {"id": f"AHU-P{n}-STALE", "metric": metric,
             "check": {"kind": "stale", "after": "1m"}, **common},
        ]
    return out


def _zone_standards() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for z in range(ZONES):
        common = {"applies_to": {"tags": {"zone": f"z{z}"}}, "category": "environment"}
        out += [
            {"id": f"ENV-Z{z}-TEMP", "metric": "air_temp", "check": {"min": 18, "max": 26},
             "for": "30s", "clear_after": "30s", "deadband": 0.2, **common},
            {"id": f"ENV-Z{z}-RH", "metric": "humidity", "check": {"min": 30, "max": 70},
             **common},
            {"id": f"ENV-Z{z}-CO2", "metric": "co2",
             "check": {"kind": "window", "agg": "mean", "over": "10m", "max": 1000}, **common},
            {"id": f"ENV-Z{z}-BATTERY", "metric": "battery", "check": {"min": 20}, **common},
        ]
    return out


def write_site(directory: Path, *, site_id: str, mqtt_port: int, modbus_ports: Sequence[int],
               forward_url: str, influx_url: str | None = None, qos: int = 1,
               client_id: str = CLIENT_ID, small: bool = False) -> Path:
    """site.yaml and standards.yaml (400 standards) in `directory`, in block YAML as
    people write it; the site.yaml's path. `small`: one asset and one standard instead."""
    directory.mkdir(parents=True, exist_ok=True)
    ids = asset_ids()[AHUS:AHUS + 1] if small else asset_ids()
    assets = [{"id": a, "type": "ahu" if a.startswith("ahu") else "room",
               "location": f"floor {i % 10}", "tags": {"zone": f"z{i % ZONES}"}}
              for i, a in enumerate(ids)]
    devices = []
    for i, port in enumerate(modbus_ports):
        points = [{**p, "asset": ids[i]} for p in site_map(POINTS, seed=100 + i)]
        devices.append({"name": f"ahu{i}-plc", "host": HOST, "port": port, "interval": "5s",
                        "timeout": "2s", "retries": 0, "max_gap": 8, "points": points})
    standards = [{"version": 1, "title": s["id"], "severity": "minor",
                  "rectify_within": "24h", **s}
                 for s in (_zone_standards()[:1] if small else
                           _ahu_standards() + _zone_standards())]
    (directory / "standards.yaml").write_text(_yaml({"standards": standards}))
    site: dict[str, object] = {
        "site": {"id": site_id},
        "assets": assets,
        "mqtt": {"url": f"mqtt://{HOST}:{mqtt_port}", "client_id": client_id, "qos": qos,
                 "subscriptions": [{"topic": "sensors/{asset}/env", "format": "json",
                                    "metrics": SENSOR_METRICS}]},
        "standards": ["standards.yaml"],
        "buffer": {"path": "data/buffer.sqlite"},
        "forward": {"url": forward_url, "token_env": "PATROL_AGENT_TOKEN"},
    }
    if devices:
        site["modbus"] = {"devices": devices}
    if influx_url:
        site["influxdb"] = {"url": influx_url, "api": "v2", "bucket": "patrol"}
    path = directory / "site.yaml"
    path.write_text(_yaml(site))
    return path


def _yaml(data: object) -> str:
    plain = json.loads(json.dumps(data))  # nothing shared: no YAML anchors and aliases
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, width=100)


def sensor_payload(rng: random.Random, drifting: bool) -> bytes:
    return json.dumps({"temperature": round(rng.uniform(27, 29) if drifting
                                            else rng.uniform(20, 24), 2),
                       "humidity": round(rng.uniform(35, 60), 1),
                       "co2": rng.randint(450, 900), "battery": rng.randint(60, 100)},
                      separators=(",", ":")).encode()


# --- the process's own counters --------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def io_counters(pid: int) -> dict[str, int]:
    """/proc/PID/io: write_bytes (what the process caused to be written to storage), syscw
    (write system calls), and the rest."""
    pairs = (line.split(":") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return {key: int(value) for key, value in pairs}


def settled_rss(pid: int, within: float) -> int:
    """VmRSS once five samples a second apart lie within 0.5 MB (or at `within` s), bytes."""
    samples: list[int] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        samples.append(status_kb(pid, "VmRSS") * 1024)
        if len(samples) >= 5 and max(samples[-5:]) - min(samples[-5:]) < 500_000:
            break
        time.sleep(1.0)
    return samples[-1]


# --- the peers -------------------------------------------------------------------------------


@dataclass
class Peers:
    directory: Path
    broker: Broker
    modbus: Servers | None
    modbus_ports: list[int]
    api_url: str
    token: str
    code: str | None
    tsdb: VictoriaMetrics | None = None


def _patrol_cli(code: str | None, *args: str | Path) -> str:
    env = {**os.environ, **({"PYTHONPATH": code} if code else {})}
    return subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


@contextlib.contextmanager
def peers(directory: Path, code: str | None, *, modbus: bool = True,
          tsdb: bool = False) -> Iterator[Peers]:
    """Mosquitto, the Modbus servers, `patrol api` with an agent token (and a TSDB)."""
    central = directory / "central"
    central.mkdir()
    api_port = free_port()
    api_site = central / "site.yaml"
    api_site.write_text(f"site: {{id: central}}\nserver: {{listen: '{HOST}:{api_port}', "
                        "database: sqlite:///central.sqlite}\n")
    token = _patrol_cli(code, "token", "create", "-c", api_site, "--role", "agent",
                        "--name", "footprint", "--site", "footprint")
    broker = Broker(directory, inflight=1000)
    ports = free_ports(AHUS) if modbus else []
    servers = Servers(ports) if modbus else None
    vm = VictoriaMetrics(directory / "vm").start() if tsdb else None
    try:
        with patrol("api", api_site, code) as api:
            wait_for(lambda: b"Patrol API on" in (central / "api.log").read_bytes()
                     or api.poll() is not None, "patrol api to listen", 60)
            if api.poll() is not None:
                raise RuntimeError(f"patrol api exited:\n{log_tail(api_site, 'api')}")
            yield Peers(directory, broker, servers, ports, f"http://{HOST}:{api_port}", token,
                        code, vm)
    finally:
        if vm is not None:
            vm.close()
        if servers is not None:
            servers.close()
        broker.stop()


@contextlib.contextmanager
def agent(p: Peers, name: str, *, modbus: bool = True, small: bool = False
          ) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A fresh `patrol agent` on the site, once it has subscribed; (process, site.yaml)."""
    client_id = f"{CLIENT_ID}-{name}"
    site = write_site(p.directory / name, site_id="footprint", mqtt_port=p.broker.port,
                      modbus_ports=p.modbus_ports if modbus and not small else [],
                      forward_url=p.api_url, influx_url=p.tsdb.url if p.tsdb else None,
                      client_id=client_id, small=small)
    with patrol("agent", site, p.code, env={"PATROL_AGENT_TOKEN": p.token}) as proc:
        wait_for(lambda: p.broker.subscribed(client_id) or proc.poll() is not None,
                 "patrol agent to subscribe", 120)
        if proc.poll() is not None:
            raise RuntimeError(f"patrol agent exited:\n{log_tail(site, 'agent')}")
        yield proc, site


def stored_readings(buffer: Path) -> int:
    """The highest reading id the agent has committed (read beside it: WAL)."""
    if not buffer.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True,
                                            timeout=5)) as db:
        return int(db.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()[0])


def table_bytes(buffer: Path, table: str) -> tuple[int, int, int]:
    """(rows, bytes of its pages, bytes of its records' payload) of a buffer table."""
    with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True)) as db:
        rows = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        pages, payload = db.execute("SELECT coalesce(sum(pgsize), 0), coalesce(sum(payload), 0)"
                                    " FROM dbstat WHERE name = ?", (table,)).fetchone()
    return rows, pages, payload


def state_bytes(buffer: Path) -> tuple[int, int, int]:
    """The rule state's core and history as saved (bytes), and the file's page size."""
    with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True)) as db:
        sizes = dict(db.execute("SELECT name, length(body) FROM state").fetchall())
        page = db.execute("PRAGMA page_size").fetchone()[0]
    return sizes.get("engine", 0), sizes.get("engine.history", 0), page


# --- the three figures -----------------------------------------------------------------------


def idle(proc: subprocess.Popen[bytes], within: float) -> None:
    rss = settled_rss(proc.pid, within)
    hwm = status_kb(proc.pid, "VmHWM") * 1024
    print(f"idle: VmRSS {mb(rss)} once settled, VmHWM {mb(hwm)} (target <= 50 MB); "
          "subscribed, polling 20 devices, no MQTT message yet", flush=True)


def idle_small(p: Peers, within: float) -> None:
    """The same on a one-asset, one-standard MQTT site: what any site costs."""
    with agent(p, "small", small=True) as (proc, _):
        rss = settled_rss(proc.pid, within)
        anon = status_kb(proc.pid, "RssAnon") * 1024
    print(f"  beside it, a one-asset, one-standard MQTT site: VmRSS {mb(rss)} ({mb(anon)} "
          "of it anonymous, the rest shared libraries)", flush=True)


class Sensors:
    """200 MQTT sensors, each publishing every `every` s from one paho client (QoS 1);
    one asset in 25 drifts out of its temperature limits for a minute in every four."""

    def __init__(self, port: int, every: float) -> None:
        self.every, self.sent = every, 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="footprint-sensors")
        self.client.connect(HOST, port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sensors", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng, ids, start = random.Random(7), asset_ids(), time.monotonic()
        while not self._stop.is_set():
            minute = int((time.monotonic() - start) // 60)
            for i, asset in enumerate(ids):
                drifting = i % 25 == 0 and minute % 4 == 1
                self.client.publish(f"sensors/{asset}/env", sensor_payload(rng, drifting), 1)
                self.sent += 1
                self._stop.wait(self.every / len(ids))  # spread over the period

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.loop_stop()
        self.client.disconnect()


def load(p: Peers, proc: subprocess.Popen[bytes], site: Path, seconds: float) -> None:
    buffer = site.parent / "data" / "buffer.sqlite"
    sensors = Sensors(p.broker.port, 10.0)
    try:
        time.sleep(min(10.0, seconds / 6))  # the sensors' first round, the polls going
        first = stored_readings(buffer)
        cpu0, io0, t0 = cpu_seconds(proc.pid), io_counters(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, io1, t1 = cpu_seconds(proc.pid), io_counters(proc.pid), time.monotonic()
        last = stored_readings(buffer)
        rss, hwm = status_kb(proc.pid, "VmRSS") * 1024, status_kb(proc.pid, "VmHWM") * 1024
    finally:
        sensors.stop()
    wall = t1 - t0
    readings, written = last - first, io1["write_bytes"] - io0["write_bytes"]
    calls = io1["syscw"] - io0["syscw"]
    per_hour = 3600 / wall
    print(f"load: {wall:.0f} s of 20 devices x 50 points every 5 s and 200 sensors x 4 "
          f"metrics every 10 s ({readings:,} readings, {readings / wall:,.0f}/s; "
          f"{sensors.sent:,} messages sent in all)")
    print(f"  CPU {100 * (cpu1 - cpu0) / wall:.1f} % of one core "
          f"({cpu1 - cpu0:.1f} s user+system in {wall:.0f} s); VmRSS now {mb(rss)}, "
          f"VmHWM {mb(hwm)}")
    proc.terminate()  # the buffer is read whole once the agent is done with it
    proc.wait(60)
    if p.tsdb is not None:
        print(f"  disk writes {mb(written * per_hour)}/h ({written / max(readings, 1):,.0f} "
              "bytes a reading; readings go on to the TSDB and are deleted)")
        return
    rows, pages, payload = table_bytes(buffer, "readings")
    core, history, page = state_bytes(buffer)
    _, outbox_pages, _ = table_bytes(buffer, "outbox")
    per_row_pages, per_row_payload = pages / max(rows, 1), payload / max(rows, 1)
    stored_h = readings * per_row_pages * per_hour
    print(f"  disk writes {mb(written * per_hour)}/h ({written / max(readings, 1):,.0f} "
          f"bytes a reading); the readings as stored {mb(stored_h)}/h "
          f"({per_row_pages:.1f} bytes a row in the table's pages, {per_row_payload:.1f} of "
          f"them the record): {written / max(stored_h / per_hour, 1):.1f}x (target <= 4x)")
    print(f"  where it goes: {calls / wall:,.0f} write calls/s, {written / max(calls, 1):,.0f} "
          f"bytes each (SQLite writes whole {page:,}-byte pages: each commit writes the "
          "readings table's last pages into the WAL, a checkpoint copies them into the "
          f"file); the rule state's core, {core / 1000:,.0f} kB saved every 30 s, is "
          f"{mb(core * 120)}/h into the WAL, its history, {history / 1000:,.0f} kB every "
          f"10 min, {mb(history * 6)}/h (each copied again at the checkpoints); the outbox "
          f"holds {outbox_pages / 1000:,.0f} kB of pages now")


def write_flood(directory: Path, readings: int) -> list[tuple[str, Path]]:
    """FLOOD_STREAMS files of JSON sensor messages (four readings each), `readings` in all."""
    rng, streams = random.Random(3), []
    messages = readings // len(SENSOR_METRICS)
    ids = asset_ids()[AHUS:]
    for s in range(FLOOD_STREAMS):
        path = directory / f"flood-{s}.jsonl"
        with path.open("wb") as out:
            for _ in range(s, messages, FLOOD_STREAMS):
                out.write(sensor_payload(rng, False) + b"\n")
        streams.append((f"sensors/{ids[s]}/env", path))
    return streams


def flood(p: Peers, readings: int, cap: int) -> None:
    streams = write_flood(p.directory, readings)
    with agent(p, "flood", modbus=False) as (proc, site):
        buffer = site.parent / "data" / "buffer.sqlite"
        time.sleep(3.0)
        before = status_kb(proc.pid, "VmRSS") * 1024
        start, first = time.perf_counter(), stored_readings(buffer)
        cpu = cpu_seconds(proc.pid)
        with Peak(proc, cap) as peak:
            publishers = Publishers(p.broker.port, 1, streams)
            try:
                last, seen = time.monotonic(), first
                while seen - first < readings and time.monotonic() - last < 15:
                    time.sleep(0.5)
                    if proc.poll() is not None:
                        break
                    if (now := stored_readings(buffer)) != seen:
                        last, seen = time.monotonic(), now
            finally:
                publishers.stop()
            seconds = time.perf_counter() - start
            hwm = status_kb(proc.pid, "VmHWM") * 1024
            cpu = cpu_seconds(proc.pid) - cpu
    print(f"flood: {readings:,} readings ({readings // 4:,} JSON messages, QoS 1) from "
          f"{FLOOD_STREAMS} mosquitto_pub -l into the agent (the same site, no Modbus devices)")
    if peak.capped:
        print(f"  peak RSS > {mb(cap)}: killed at the cap")
    else:
        print(f"  peak RSS {mb(max(peak.peak, hwm))} (VmHWM {mb(hwm)}; {mb(before)} before "
              "the flood; target <= 100 MB)")
    print(f"  stored {seen - first:,} readings in {seconds:.1f} s "
          f"({(seen - first) / seconds:,.0f} readings/s; "
          f"{(seen - first) / max(cpu, 0.01):,.0f} per CPU-second of the agent)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 100,000 flood readings, 20 s of load")
    parser.add_argument("--only", default="idle,flood,load",
                        help="comma-separated parts: idle, flood, load")
    parser.add_argument("--readings", type=int, help="flood readings (default 1,000,000)")
    parser.add_argument("--seconds", type=float, help="load duration (default 300)")
    parser.add_argument("--tsdb", action="store_true",
                        help="the agent writes to VictoriaMetrics (readings leave the buffer)")
    parser.add_argument("--cap", type=float, default=2.0, help="GB; an agent past it is "
                        "killed (default 2)")
    parser.add_argument("--code", help="run patrol from this checkout (PYTHONPATH)")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    readings = args.readings or (100_000 if args.quick else 1_000_000)
    seconds = args.seconds or (20.0 if args.quick else 300.0)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; site: "
          f"{AHUS + ROOMS} assets, 400 standards, 4,800 pairs"
          + (f"; code from {args.code}" if args.code else ""), flush=True)
    with tempfile.TemporaryDirectory(prefix="patrol-footprint-") as tmp, \
            peers(Path(tmp), args.code, tsdb=args.tsdb) as p:
        if parts & {"idle", "load"}:
            with agent(p, "load") as (proc, site):
                if "idle" in parts:
                    idle(proc, 15.0 if args.quick else 40.0)
                    idle_small(p, 15.0 if args.quick else 40.0)
                if "load" in parts:
                    load(p, proc, site, seconds)
        if "flood" in parts:
            flood(p, readings, int(args.cap * 1e9))


if __name__ == "__main__":
    main()
