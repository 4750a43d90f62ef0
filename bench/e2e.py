"""python -m bench.e2e [--quick] [--messages N] [--repeat R] [--code DIR]: the whole gateway
as processes, from MQTT to the TSDB, beside `mosquitto_sub` on the same stream.

Three consumers of the same messages, one after the other, at QoS 0 and at QoS 1:

    mosquitto_sub   `mosquitto_sub -C N > /dev/null`, the C client: the yardstick
    patrol agent    `patrol agent` writing to VictoriaMetrics (NC events to a `patrol api`)
    patrol run      `patrol run` (agent and API in one process) writing to VictoriaMetrics

The stream is Zigbee2MQTT-style JSON from four sensors (`bench.mqtt_ingest.write_streams`:
four metrics, so four readings, a message), judged against four range standards, to the
bench's own Mosquitto (queue limits lifted, QoS 0 queued too). Offered two ways:

    live     four `mosquitto_pub -l` publish while the consumer reads (as bench.mqtt_ingest
             does): the publishers share the two cores and may cap the fastest consumer
    queued   the consumer subscribes and is stopped (SIGSTOP), every message is published,
             and the clock starts when it continues (SIGCONT): what it can take, uncapped

Patrol's time ends when VictoriaMetrics has counted every reading's rows
(`vm_rows_inserted_total`, two rows a reading: value and quality); mosquitto_sub's when it
has received N and exits.

Figures for each: readings/s on the wall clock, readings per CPU-second of the consumer's
own process (utime + stime; for `patrol agent` the agent alone), its peak RSS while
draining (VmRSS every 10 ms, VmHWM), and patrol's ratio to mosquitto_sub's rate. `--repeat`
runs each case several times and prints the best (the machine may be shared: the load
average is printed). The TSDB writer sleeps its `flush_interval` (1 s) whenever a batch is
short, so a patrol time is only good to about a second: the default 250,000 messages keep
that under a tenth of it. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.flood import Peak, log_tail, mb, patrol
from bench.footprint import _patrol_cli, cpu_seconds
from bench.mqtt_ingest import METRICS, Broker, wait_for, write_streams
from bench.servers import HOST, Publishers, VictoriaMetrics, free_port

DEVICES = 4
ROWS_PER_READING = 2  # patrol_value and patrol_quality
STALL = 30.0  # seconds without progress: report what arrived and move on

STANDARDS = "standards:\n" + "".join(
    f"  - {{id: E2E-{m.upper()}, version: 1, title: {m} in range, metric: {m}, "
    f"check: {{min: -1000, max: 100000}}, severity: minor, rectify_within: 1d}}\n"
    for m in METRICS)


@dataclass
class Result:
    seconds: float
    readings: int
    cpu: float
    peak: int

    @property
    def rate(self) -> float:
        return self.readings / self.seconds if self.seconds else 0.0

    @property
    def per_cpu(self) -> float:
        return self.readings / self.cpu if self.cpu else 0.0


@dataclass
class Bench:
    directory: Path
    broker: Broker
    tsdb: VictoriaMetrics
    api_url: str
    token: str
    streams: list[tuple[str, Path]]
    messages: int
    code: str | None
    cap: int


@contextlib.contextmanager
def offered(b: Bench, qos: int, pid: int, queued: bool) -> Iterator[None]:
    """Every message offered to the consumer `pid`: queued at the broker before it may
    read (it is stopped meanwhile), or published while it reads (the publishers run until
    the block ends). The clock starts inside the block."""
    if not queued:
        with Publishers(b.broker.port, qos, b.streams):
            yield
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        Publishers(b.broker.port, qos, b.streams, keep_open=False).wait(timeout=300)
    finally:
        os.kill(pid, signal.SIGCONT)
    yield


def run_mosquitto_sub(b: Bench, qos: int, run: str, queued: bool) -> Result:
    client_id = f"e2e-sub-{run}"
    sub = subprocess.Popen(["mosquitto_sub", "-h", HOST, "-p", str(b.broker.port), "-q",
                            str(qos), "-i", client_id, "-c", "-t", "zigbee2mqtt/#",
                            "-C", str(b.messages)], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: b.broker.subscribed(client_id), "mosquitto_sub to subscribe", 10)
        with Peak(sub, b.cap) as peak, offered(b, qos, sub.pid, queued):
            cpu0, start = cpu_seconds(sub.pid), time.perf_counter()
            _, status, usage = os.wait4(sub.pid, 0)  # its CPU time, which /proc loses at exit
            seconds = time.perf_counter() - start
            sub.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if sub.returncode is None:
            sub.kill()
            sub.wait()
    received = b.messages if sub.returncode == 0 else 0
    return Result(seconds, received * len(METRICS), usage.ru_utime + usage.ru_stime - cpu0,
                  peak.peak)


def write_site(b: Bench, work: Path, mode: str, qos: int, client_id: str) -> Path:
    work.mkdir(parents=True)
    (work / "standards.yaml").write_text(STANDARDS)
    metrics = ", ".join(f"{m}: '{path}'" for m, path in METRICS.items())
    assets = ", ".join(f"{{id: sensor-{d}, type: sensor}}" for d in range(DEVICES))
    end = (f"forward: {{url: '{b.api_url}', token_env: PATROL_AGENT_TOKEN}}\n" if mode == "agent"
           else f"server: {{listen: '{HOST}:{free_port()}', database: sqlite:///patrol.sqlite}}\n")
    site = work / "site.yaml"
    site.write_text(f"""\
site: {{id: e2e}}
assets: [{assets}]
mqtt:
  url: mqtt://{HOST}:{b.broker.port}
  client_id: {client_id}
  qos: {qos}
  subscriptions:
    - topic: zigbee2mqtt/{{asset}}
      metrics: {{{metrics}}}
      timestamp: $.last_seen
standards: [standards.yaml]
buffer: {{path: data/buffer.sqlite}}
influxdb: {{url: '{b.tsdb.url}', api: v2, bucket: patrol}}
{end}""")
    return site


def run_patrol(b: Bench, mode: str, qos: int, run: str, queued: bool) -> Result:
    client_id = f"e2e-{mode}-{run}"
    site = write_site(b, b.directory / f"{mode}-{run}", mode, qos, client_id)
    want = b.messages * len(METRICS) * ROWS_PER_READING
    with patrol(mode, site, b.code, env={"PATROL_AGENT_TOKEN": b.token}) as proc:
        wait_for(lambda: b.broker.subscribed(client_id) or proc.poll() is not None,
                 f"patrol {mode} to subscribe", 120)
        if proc.poll() is not None:
            raise RuntimeError(f"patrol {mode} exited:\n{log_tail(site, mode)}")
        time.sleep(2.0)  # started: the catalog sent, the first writes settled
        base = b.tsdb.metric("vm_rows_inserted_total")
        with offered(b, qos, proc.pid, queued), Peak(proc, b.cap) as peak:
            cpu0, start = cpu_seconds(proc.pid), time.perf_counter()
            rows, last = 0.0, start
            while rows < want and time.perf_counter() - last < STALL and proc.poll() is None:
                time.sleep(0.05)
                now = b.tsdb.metric("vm_rows_inserted_total") - base
                if now != rows:
                    rows, last = now, time.perf_counter()
            cpu = cpu_seconds(proc.pid) - cpu0
    return Result(last - start, int(rows) // ROWS_PER_READING, cpu, peak.peak)


def show(name: str, results: list[Result], expected: int, yardstick: float | None) -> float:
    best = max(results, key=lambda r: r.rate)
    short = f"  ONLY {best.readings:,} of {expected:,} arrived" \
        if best.readings < expected else ""
    ratio = f"  ratio {best.rate / yardstick:.2f}" if yardstick else ""
    spread = f" ({min(r.rate for r in results):,.0f}-{best.rate:,.0f})" \
        if len(results) > 1 else ""
    print(f"  {name:14} {best.rate:9,.0f} readings/s{spread}, {best.per_cpu:9,.0f} per CPU-s, "
          f"peak RSS {mb(best.peak)}{ratio}{short}", flush=True)
    return best.rate


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 messages, one run each")
    parser.add_argument("--messages", type=int, help="default 250,000 (--quick 20,000)")
    parser.add_argument("--repeat", type=int, help="runs of each case (default 3, --quick 1)")
    parser.add_argument("--qos", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    parser.add_argument("--offer", nargs="+", default=["live", "queued"],
                        choices=["live", "queued"], help="live: published while the "
                        "consumer reads; queued: all at the broker before it may read")
    parser.add_argument("--cap", type=float, default=2.0, help="GB; a patrol past it is killed")
    parser.add_argument("--code", help="run patrol from this checkout (PYTHONPATH)")
    args = parser.parse_args(argv)
    messages = args.messages or (20_000 if args.quick else 250_000)
    repeat = args.repeat or (1 if args.quick else 3)
    expected = messages * len(METRICS)
    with tempfile.TemporaryDirectory(prefix="patrol-e2e-") as tmp:
        directory = Path(tmp)
        streams = write_streams(directory, messages, DEVICES)
        broker = Broker(directory, inflight=1000, extra=["queue_qos0_messages true"])
        tsdb = VictoriaMetrics(directory / "vm").start()
        central = directory / "central"
        central.mkdir()
        api_port = free_port()
        api_site = central / "site.yaml"
        api_site.write_text(f"site: {{id: central}}\nserver: {{listen: '{HOST}:{api_port}', "
                            "database: sqlite:///central.sqlite}\n")
        token = _patrol_cli(args.code, "token", "create", "-c", api_site, "--role", "agent",
                            "--name", "e2e", "--site", "e2e")
        try:
            with patrol("api", api_site, args.code) as api:
                wait_for(lambda: b"Patrol API on" in (central / "api.log").read_bytes()
                         or api.poll() is not None, "patrol api to listen", 60)
                b = Bench(directory, broker, tsdb, f"http://{HOST}:{api_port}", token, streams,
                          messages, args.code, int(args.cap * 1e9))
                print(f"{messages:,} JSON messages ({expected:,} readings) from {DEVICES} "
                      f"sensors; "
                      f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; best of "
                      f"{repeat}" + (f"; code from {args.code}" if args.code else ""),
                      flush=True)
                for offer in args.offer:
                    queued = offer == "queued"
                    for qos in args.qos:
                        print(f"{offer}, QoS {qos}:", flush=True)
                        runs = [f"{offer}-q{qos}-{r}" for r in range(repeat)]
                        subs = [run_mosquitto_sub(b, qos, run, queued) for run in runs]
                        yardstick = show("mosquitto_sub", subs, expected, None)
                        for mode in ("agent", "run"):
                            results = [run_patrol(b, mode, qos, run, queued) for run in runs]
                            show(f"patrol {mode}", results, expected, yardstick)
        finally:
            tsdb.close()
            broker.stop()
    own = resource.getrusage(resource.RUSAGE_SELF)
    print(f"(the bench itself: {own.ru_utime + own.ru_stime:.0f} CPU-s)", file=sys.stderr)


if __name__ == "__main__":
    main()
