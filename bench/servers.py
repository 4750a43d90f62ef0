"""Real time-series servers on free loopback ports, for integration tests and benchmarks.

- `VictoriaMetrics(directory)`: Debian's `victoria-metrics`, InfluxDB line protocol on
  `/api/v2/write`, read back with `export()`.
- `InfluxDB1(directory)`: Debian's `influxd` 1.6 with a generated config (meta, data and
  WAL under `directory`, HTTP and RPC on free ports), read back with `query()`.
- `Publishers(port, qos, streams)`: an MQTT flood, one `mosquitto_pub -l` per (topic, file
  of payload lines), for the flood benchmarks and the backpressure tests alike.

Each server keeps its port and data directory across `stop()` / `start()`, so an outage
test restarts the same server. A server that does not come up within its timeout raises
`ServerError` with the end of its log. `close()` kills it; both are context managers.
(bench/ must not import tests/, so the tests import these from here.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

HOST = "127.0.0.1"

Sample = tuple[str, frozenset[tuple[str, str]], int]
"""(metric name, labels, timestamp in ms): how VictoriaMetrics identifies a sample."""


class ServerError(RuntimeError):
    """A server did not start or answer; the message ends with its log."""


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class _Process:
    """One server process with its log in `directory`; subclasses say how to run it."""

    name = "server"
    start_timeout = 30.0

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log_path = directory / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> Self:
        """Start (again, same port and data) and wait until it answers."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode}"
                                  f"{self._log_tail()}")
            with contextlib.suppress(OSError, ServerError):
                if self.ready():
                    return self
            time.sleep(0.05)
        self.close()
        raise ServerError(f"{self.name} not ready within {self.start_timeout}s"
                          f"{self._log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop with `sig` and wait for the process to end (SIGKILL after `timeout`)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- " + str(self.log_path) + " ---\n" + "\n".join(text)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> bytes:
        """One HTTP request to the server; ServerError (with the body) on a non-2xx answer."""
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None


class VictoriaMetrics(_Process):
    """`victoria-metrics` with 1 ms deduplication (a resent sample replaces itself)."""

    name = "victoria-metrics"

    def __init__(self, directory: Path, *, username: str | None = None,
                 password: str | None = None, extra: tuple[str, ...] = ()) -> None:
        super().__init__(directory)
        self.data = directory / "vm-data"
        self.username, self.password, self.extra = username, password, extra

    def command(self) -> list[str]:
        args = ["victoria-metrics", f"-httpListenAddr={HOST}:{self.port}",
                f"-storageDataPath={self.data}", "-dedup.minScrapeInterval=1ms",
                "-retentionPeriod=100y", "-loggerLevel=WARN", *self.extra]
        if self.username:
            args += [f"-httpAuth.username={self.username}",
                     f"-httpAuth.password={self.password or ''}"]
        return args

    def _auth(self) -> dict[str, str]:
        if not self.username:
            return {}
        pair = f"{self.username}:{self.password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    def ready(self) -> bool:
        return self.request("GET", "/health", headers=self._auth(), timeout=1) == b"OK"

    def write(self, lines: bytes, *, gzip: bool = False) -> None:
        """POST line protocol to /api/v2/write, as a client would."""
        headers = {**self._auth(), **({"Content-Encoding": "gzip"} if gzip else {})}
        self.request("POST", "/api/v2/write", lines, headers)

    def metric(self, name: str) -> float:
        """The sum of one of the server's own metrics on /metrics (all its label sets)."""
        text = self.request("GET", "/metrics", headers=self._auth()).decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith((name + " ", name + "{")))

    def samples(self) -> list[tuple[Sample, float]]:
        """Every stored sample, after a flush (duplicates, if any, are kept)."""
        self.request("GET", "/internal/force_flush", headers=self._auth())
        body = urllib.parse.urlencode({"match[]": '{__name__!=""}'}).encode()
        raw = self.request("POST", "/api/v1/export", body, self._auth(), timeout=120)
        out: list[tuple[Sample, float]] = []
        for line in raw.splitlines():
            series = json.loads(line)
            labels = dict(series["metric"])
            name = labels.pop("__name__")
            key = frozenset(labels.items())
            out += [((name, key, ts), value)
                    for ts, value in zip(series["timestamps"], series["values"], strict=True)]
        return out

    def export(self, *, expect: int | None = None, settle: float = 1.0,
               timeout: float = 20.0) -> dict[Sample, float]:
        """{(metric, labels, ts_ms): value} once the export stops changing.

        A flush does not make brand-new series visible at once, so read until `expect`
        samples are there, or until two reads `settle` seconds apart agree.
        """
        deadline = time.monotonic() + timeout
        last: dict[Sample, float] | None = None
        while True:
            current = dict(self.samples())
            if len(current) == expect or (expect is None and current == last):
                return current
            if time.monotonic() > deadline:
                return current
            last = current
            time.sleep(0.1 if expect is not None else settle)


class InfluxDB1(_Process):
    """Debian's `influxd` (1.6): /write?db= and /query, database `database` created."""

    name = "influxd"

    def __init__(self, directory: Path, *, database: str = "patrol",
                 admin: tuple[str, str] | None = None) -> None:
        super().__init__(directory)
        self.database = database
        self.admin = admin
        self.rpc_port = free_port()
        self.config_path = directory / "influxd.conf"
        self.config_path.write_text(self._config())

    def _config(self) -> str:
        root = self.directory
        return f"""\
reporting-disabled = true
bind-address = "{HOST}:{self.rpc_port}"

[meta]
  dir = "{root / 'meta'}"
  logging-enabled = false

[data]
  dir = "{root / 'data'}"
  wal-dir = "{root / 'wal'}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  bind-address = "{HOST}:{self.port}"
  auth-enabled = {'true' if self.admin else 'false'}
  log-enabled = false
  pprof-enabled = false
  max-row-limit = 0

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""

    def command(self) -> list[str]:
        return ["influxd", "run", "-config", str(self.config_path)]

    def ready(self) -> bool:
        self.request("GET", "/ping", timeout=1)
        return True

    def start(self) -> Self:
        super().start()
        if self.admin:  # with auth on and no user yet, the first admin needs no password
            name, password = self.admin
            self._post_query(f"CREATE USER \"{name}\" WITH PASSWORD '{password}' "
                             "WITH ALL PRIVILEGES", auth=False)
        self._post_query(f'CREATE DATABASE "{self.database}"')
        return self

    def _headers(self, auth: bool = True) -> dict[str, str]:
        if not (self.admin and auth):
            return {}
        pair = ":".join(self.admin).encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    def _post_query(self, q: str, *, auth: bool = True) -> Any:
        body = urllib.parse.urlencode({"q": q}).encode()
        return json.loads(self.request("POST", "/query", body, self._headers(auth)))

    def write(self, lines: bytes, precision: str = "ms") -> None:
        """POST line protocol to /write?db= directly (not through Patrol)."""
        query = urllib.parse.urlencode({"db": self.database, "precision": precision})
        self.request("POST", f"/write?{query}", lines, self._headers())

    def query(self, sql: str) -> list[dict[str, Any]]:
        """The series of one InfluxQL statement's result, timestamps in ms."""
        query = urllib.parse.urlencode({"db": self.database, "q": sql, "epoch": "ms"})
        result = json.loads(self.request("GET", f"/query?{query}",
                                         headers=self._headers()))["results"][0]
        if "error" in result:
            raise ServerError(f"{sql}: {result['error']}")
        return result.get("series", [])


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    """A file of payloads, one a line, for `Publishers` to send."""
    with path.open("w") as out:
        out.writelines(f"{line}\n" for line in lines)
    return path


class Publishers:
    """One `mosquitto_pub -l` per (topic, file of payload lines), all publishing at once.

    `keep_open` (the default) keeps each publisher's input open after its file until
    `stop()`: mosquitto_pub drops QoS 1 messages still in flight when its input ends, and a
    benchmark stops when the subscriber has everything. Without it each publisher reads its
    file and exits; `wait()` returns once every one has sent all its lines.
    """

    def __init__(self, port: int, qos: int, streams: Sequence[tuple[str, Path]], *,
                 keep_open: bool = True, host: str = HOST) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self._publishers: list[subprocess.Popen[bytes]] = []
        command = ["mosquitto_pub", "-h", host, "-p", str(port), "-q", str(qos), "-l",
                   "-M", "1000"]
        for topic, path in streams:
            if keep_open:
                feed = subprocess.Popen(["sh", "-c", f"cat '{path}'; exec sleep 3600"],
                                        stdout=subprocess.PIPE)
                assert feed.stdout is not None
                pub = subprocess.Popen([*command, "-t", topic], stdin=feed.stdout)
                feed.stdout.close()
                self.procs.append(feed)
            else:
                with path.open("rb") as stdin:
                    pub = subprocess.Popen([*command, "-t", topic], stdin=stdin)
            self.procs.append(pub)
            self._publishers.append(pub)

    def wait(self, timeout: float = 60.0) -> None:
        """Until every publisher has sent its whole file (`keep_open=False`)."""
        deadline = time.monotonic() + timeout
        for pub in self._publishers:
            code = pub.wait(max(deadline - time.monotonic(), 0.1))
            if code != 0:
                raise ServerError(f"mosquitto_pub exited with {code}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["HOST", "InfluxDB1", "Publishers", "Sample", "ServerError", "VictoriaMetrics",
           "free_port", "write_lines"]
