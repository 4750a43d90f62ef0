"""python -m bench.flood [--quick] [--only api|agent] [--code DIR]: peak memory of Patrol's
processes under a flood.

- api: a `patrol api` process (SQLite) and 20 concurrent unauthenticated POSTs of 60 MiB
  each to /api/v1/events (a JSON body of small events), sent over raw sockets. Target:
  under 100 MB growth. Every answer's status is printed (a server that answers before the
  body is in may close the connection under the sender: counted as "closed early").
- agent: a `patrol agent` process (MQTT subscription, one range standard, a buffer, a
  forward URL nobody listens on) and 1,000,000 QoS 0 readings published by four
  `mosquitto_pub -l` as fast as they go, faster than the agent judges and stores them.
  Target: bounded, under 100 MB. The bench's own Mosquitto (free port, queue limits
  lifted, so the broker holds what the agent does not take and nothing is dropped).

Peak RSS is sampled from /proc/PID/status (VmRSS every 10 ms, and VmHWM at the end);
growth is the peak over the RSS measured once the process was up and idle. A process
that passes `--cap` (default 4 GB) is killed, so a bad case cannot exhaust the machine;
the figure then reads "> cap". `--code DIR` runs the processes from another checkout
(PYTHONPATH=DIR), to measure the code before a change. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.mqtt_ingest import Broker, wait_for
from bench.servers import Publishers, free_port

HOST = "127.0.0.1"
MiB = 1 << 20
DEVICES = 4


# --- processes and their memory ----------------------------------------------------------


def status_kb(pid: int, field: str) -> int:
    """A `/proc/PID/status` field in kB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Peak:
    """Samples a process's VmRSS every 10 ms on a thread; kills it past `cap` bytes."""

    def __init__(self, proc: subprocess.Popen[bytes], cap: int) -> None:
        self.proc, self.cap = proc, cap
        self.peak = 0
        self.capped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            rss = status_kb(self.proc.pid, "VmRSS") * 1024
            self.peak = max(self.peak, rss)
            if rss > self.cap and not self.capped:
                self.capped = True
                self.proc.kill()

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def patrol(command: str, site: Path, code: str | None,
           env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`patrol COMMAND -c SITE` as a process (from `code` when given), stopped at the end."""
    environment = {**os.environ, **(env or {})}
    if code:
        environment["PYTHONPATH"] = code
    log = (site.parent / f"{command}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", command, "-c", str(site)],
                            cwd=site.parent, stdout=log, stderr=subprocess.STDOUT,
                            env=environment)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def log_tail(site: Path, command: str, lines: int = 20) -> str:
    path = site.parent / f"{command}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


# --- the API under big unauthenticated bodies ----------------------------------------------


def events_body(size: int) -> bytes:
    """About `size` bytes of `{"events": [...]}` with small event-like objects."""
    item = b'{"id":"0123456789abcdef","type":"violation_started","site_id":"central"},'
    count = max(1, (size - 20) // len(item))
    return b'{"events":[' + item * (count - 1) + item[:-1] + b"]}"


def post(port: int, body: bytes, results: list[str]) -> None:
    """One unauthenticated POST over a raw socket; appends its status (or what happened)."""
    head = (f"POST /api/v1/events HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    closed_early = False
    try:
        with socket.create_connection((HOST, port), timeout=300) as sock:
            sock.sendall(head)
            view = memoryview(body)
            try:
                for at in range(0, len(body), MiB):
                    sock.sendall(view[at:at + MiB])
            except (BrokenPipeError, ConnectionResetError):
                closed_early = True
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while b"\r\n" not in answer and (chunk := sock.recv(4096)):
                    answer += chunk
        status = answer.split(b" ", 2)[1].decode() if answer.count(b" ") >= 2 else "no answer"
        results.append(status + (" (closed early)" if closed_early else ""))
    except OSError as exc:
        results.append(f"error: {exc}")


def bench_api(directory: Path, posts: int, size: int, code: str | None, cap: int) -> None:
    port = free_port()
    site = directory / "api" / "site.yaml"
    site.parent.mkdir()
    site.write_text(f"site: {{id: central}}\nserver: {{listen: {HOST}:{port}, "
                    "database: sqlite:///central.sqlite}\n")
    body = events_body(size)
    with patrol("api", site, code) as proc:
        wait_for(lambda: b"Patrol API on" in (site.parent / "api.log").read_bytes()
                 or proc.poll() is not None, "patrol api to listen", 60)
        if proc.poll() is not None:
            raise RuntimeError(f"patrol api exited:\n{log_tail(site, 'api')}")
        time.sleep(1.0)
        idle = status_kb(proc.pid, "VmRSS") * 1024
        results: list[str] = []
        threads = [threading.Thread(target=post, args=(port, body, results))
                   for _ in range(posts)]
        started = time.perf_counter()
        with Peak(proc, cap) as peak:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            hwm = status_kb(proc.pid, "VmHWM") * 1024
    answers = ", ".join(f"{n} x {status}" for status, n in sorted(Counter(results).items()))
    print(f"api: {posts} concurrent unauthenticated POSTs of {size / MiB:.0f} MiB to "
          f"/api/v1/events (patrol api, SQLite)")
    if peak.capped:
        print(f"  peak RSS > {mb(cap)}: killed at the cap (idle {mb(idle)})")
    else:
        print(f"  peak RSS {mb(max(peak.peak, hwm))} (idle {mb(idle)}): "
              f"growth {mb(max(peak.peak, hwm) - idle)} (target < 100 MB)")
    print(f"  answers: {answers}; {seconds:.1f} s")


# --- the agent under a flood of readings -------------------------------------------------


AGENT_SITE = """\
site: {{id: flood}}
assets:
{assets}
mqtt:
  url: mqtt://{host}:{port}
  client_id: flood-agent
  qos: 0
  subscriptions:
    - topic: flood/{{asset}}/{{metric}}
      format: number
standards: [standards.yaml]
buffer: {{path: data/buffer.sqlite}}
forward: {{url: "http://{host}:{dead_port}", token_env: PATROL_AGENT_TOKEN}}
"""

STANDARDS = """\
standards:
  - id: FLOOD-POWER
    version: 1
    title: Power below 1000 W
    applies_to: {asset_types: [meter]}
    metric: power
    check: {max: 1000}
    severity: minor
    rectify_within: 24h
"""


def write_flood(directory: Path, readings: int) -> list[tuple[str, Path]]:
    """One file of numbers per device (in range: no NC events), `readings` lines in all."""
    streams = []
    for d in range(DEVICES):
        path = directory / f"meter-{d}.txt"
        path.write_text("".join(f"{100 + i % 800}.{i % 10}\n"
                                for i in range(d, readings, DEVICES)))
        streams.append((f"flood/meter-{d}/power", path))
    return streams


def stored(buffer: Path) -> int:
    """Readings the agent has committed to its buffer (read alongside it: WAL)."""
    if not buffer.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{buffer}?mode=ro", uri=True,
                                                timeout=5)) as db:
            return int(db.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()[0])
    except sqlite3.Error:
        return 0


def bench_agent(directory: Path, readings: int, code: str | None, cap: int) -> None:
    work = directory / "agent"
    work.mkdir()
    streams = write_flood(work, readings)
    broker = Broker(work, inflight=1000)
    site = work / "site.yaml"
    assets = "\n".join(f"  - {{id: meter-{d}, type: meter}}" for d in range(DEVICES))
    site.write_text(AGENT_SITE.format(assets=assets, host=HOST, port=broker.port,
                                      dead_port=free_port()))
    (work / "standards.yaml").write_text(STANDARDS)
    buffer = work / "data" / "buffer.sqlite"
    try:
        with patrol("agent", site, code, env={"PATROL_AGENT_TOKEN": "unused"}) as proc:
            wait_for(lambda: broker.subscribed("flood-agent") or proc.poll() is not None,
                     "patrol agent to subscribe", 60)
            if proc.poll() is not None:
                raise RuntimeError(f"patrol agent exited:\n{log_tail(site, 'agent')}")
            time.sleep(1.0)
            idle = status_kb(proc.pid, "VmRSS") * 1024
            started = time.perf_counter()
            with Peak(proc, cap) as peak:
                publishers = Publishers(broker.port, 0, streams)
                try:
                    last, seen = time.monotonic(), 0
                    while seen < readings and time.monotonic() - last < 15:
                        time.sleep(0.5)
                        if proc.poll() is not None:
                            break
                        if (now := stored(buffer)) != seen:
                            last, seen = time.monotonic(), now
                finally:
                    publishers.stop()
                seconds = time.perf_counter() - started
                hwm = status_kb(proc.pid, "VmHWM") * 1024
    finally:
        broker.stop()
    print(f"agent: {readings:,} QoS 0 readings from {DEVICES} mosquitto_pub -l into "
          "patrol agent (MQTT, one standard, buffer)")
    if peak.capped:
        print(f"  peak RSS > {mb(cap)}: killed at the cap (idle {mb(idle)})")
    else:
        print(f"  peak RSS {mb(max(peak.peak, hwm))} (idle {mb(idle)}): "
              f"growth {mb(max(peak.peak, hwm) - idle)} (target: bounded, < 100 MB)")
    print(f"  stored {seen:,} of {readings:,} in {seconds:.1f} s "
          f"({seen / seconds:,.0f} readings/s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="100,000 readings and 5 POSTs: a fast check")
    parser.add_argument("--only", choices=["api", "agent"])
    parser.add_argument("--readings", type=int, help="default 1,000,000 (--quick 100,000)")
    parser.add_argument("--posts", type=int, help="default 20 (--quick 5)")
    parser.add_argument("--body-mib", type=int, default=60)
    parser.add_argument("--cap", type=float, default=4.0, help="GB; a process past it is "
                        "killed (default 4)")
    parser.add_argument("--code", help="run patrol from this checkout (PYTHONPATH)")
    args = parser.parse_args(argv)
    readings = args.readings or (100_000 if args.quick else 1_000_000)
    posts = args.posts or (5 if args.quick else 20)
    cap = int(args.cap * 1e9)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
          + (f"; code from {args.code}" if args.code else ""))
    with tempfile.TemporaryDirectory(prefix="patrol-flood-") as tmp:
        if args.only in (None, "api"):
            bench_api(Path(tmp), posts, args.body_mib * MiB, args.code, cap)
        if args.only in (None, "agent"):
            bench_agent(Path(tmp), readings, args.code, cap)


if __name__ == "__main__":
    main()
