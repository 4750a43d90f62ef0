"""The whole chain as processes, for fault tests: broker, TSDB, device, API and agent.

`Chain(directory)` owns its own Mosquitto (a free port, persistence on, so a restart keeps
the agent's session and its queued QoS 1 messages), VictoriaMetrics (a free port, its own
storage, `-dedup.minScrapeInterval=1ms`), a pymodbus TCP server in a thread, `patrol api`
(SQLite in the directory) and `patrol agent` (site.yaml written here, its buffer under
`buffer/`, which a test may mount a tmpfs on before the agent starts). Every `patrol`
process keeps its output in a file; `output()` gathers them for failure messages.

`Load` publishes numbered readings at QoS 1 whose timestamps and values are known, so
`checks.py` can say exactly what the TSDB and the API must hold afterwards.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt

from bench.servers import VictoriaMetrics
from collector.modbus.config import ModbusPoint
from tests.conftest import free_port
from tests.integration.conftest import ModbusServerThread, PatrolProcess, patrol
from tests.integration.mosquitto import HOST, Mosquitto

SITE = "plant-f"
TANKS = ("TK-1", "TK-2", "TK-3", "TK-4")
STANDARD = "TANK-TEMP-MAX"
LIMIT = 50.0
SUPPLY = ModbusPoint(asset="CH-1", metric="supply_temp", address=100, type="float32")
SUPPLY_VALUE = 7.0
AGENT_CLIENT_ID = "faults-agent"
GRACE = 20.0
"""Seconds a process may take to stop on SIGTERM (the agent's own grace is 10 s)."""
MAX_BACKOFF = 2.0
"""The agent's `influxdb.max_backoff` and `forward.max_backoff`: outages longer than this
show that the writers recover after reaching their longest wait."""

STANDARDS = f"""
standards:
  - id: {STANDARD}
    title: Tank below {LIMIT:g} degC
    applies_to: {{asset_types: [tank]}}
    metric: temp
    check: {{max: {LIMIT:g}}}
    on_recovery: close
    chattering: {{max: 100000, per: 1s}}
  - id: MIX-SPREAD
    title: Mixer spread under 3
    applies_to: {{asset_types: [mixer]}}
    expr: (a - b) ** 0.5
    check: {{max: 3}}
  - id: CHW-SUPPLY
    title: Chilled water supply 6-8 degC
    applies_to: {{assets: [CH-1]}}
    metric: supply_temp
    check: {{min: 6, max: 8}}
"""


class Chain:
    """Every part of a deployment, each a process (the Modbus device a thread)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.broker = Mosquitto(directory / "mosquitto")
        # the agent's SUBSCRIBE shows in the log: publish only once it is in place
        with self.broker.config_path.open("a") as conf:
            conf.write("log_type subscribe\n")
        self.tsdb = VictoriaMetrics(directory / "vm")
        self.modbus = ModbusServerThread()
        self.api_port = free_port()
        self.central = directory / "central"
        self.edge = directory / "edge"
        self.buffer_dir = self.edge / "buffer"
        for path in (self.central, self.edge, self.buffer_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.api: PatrolProcess | None = None
        self.agent: PatrolProcess | None = None
        self.runs: list[PatrolProcess] = []
        self.agent_token = self.reader_token = ""

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def start(self) -> Chain:
        """Start everything; the agent's subscription is in place when this returns."""
        self.broker.start()
        self.tsdb.start()
        self.modbus.start()
        self.modbus.set(SUPPLY, SUPPLY_VALUE)
        self._write_sites()
        self.agent_token = self._token("agent", "faults-agent")  # creates the database
        # the rest start side by side: each is mostly Python importing
        with ThreadPoolExecutor(1) as pool:
            reader = pool.submit(self._token, "quality", "faults-reader")
            api, agent = self.start_api(wait=False), self.start_agent(wait=False)
            self.reader_token = reader.result()
        api.wait_for_output("Patrol API on")
        agent.wait_for_output("patrol agent started")
        self.wait_subscribed()
        return self

    def _write_sites(self) -> None:
        (self.central / "site.yaml").write_text(
            "site: {id: central}\n"
            f"server: {{listen: '{HOST}:{self.api_port}', database: sqlite:///central.sqlite}}\n")
        (self.edge / "standards.yaml").write_text(STANDARDS)
        tanks = "".join(f"  - {{id: {tank}, type: tank}}\n" for tank in TANKS)
        (self.edge / "site.yaml").write_text(f"""\
site: {{id: {SITE}}}
assets:
{tanks}  - {{id: CH-1, type: chiller}}
  - {{id: MIX-1, type: mixer}}
modbus:
  devices:
    - name: ch1
      host: {HOST}
      port: {self.modbus.port}
      interval: 100ms
      timeout: 500ms
      points:
        - {{asset: CH-1, metric: supply_temp, address: {SUPPLY.address}, type: float32}}
mqtt:
  url: {self.broker.url}
  client_id: {AGENT_CLIENT_ID}
  clean_session: false
  subscriptions:
    - topic: load/{{asset}}/state
      metrics: {{temp: $.v}}
      timestamp: $.t
    - topic: mix/{{asset}}/state
      metrics: {{a: $.a, b: $.b}}
      timestamp: $.t
influxdb: {{url: '{self.tsdb.url}', api: v2, bucket: patrol, flush_interval: 100ms,
            max_backoff: {MAX_BACKOFF:g}s}}
buffer: {{path: buffer/buffer.sqlite}}
standards: [standards.yaml]
rules: {{snapshot_every: 2s, save_every: 1s}}
forward: {{url: '{self.api_url}', token_env: PATROL_AGENT_TOKEN,
          max_backoff: {MAX_BACKOFF:g}s}}
""")

    def _token(self, role: str, name: str) -> str:
        """`patrol token create`; agent tokens are scoped to the site (SPEC 7.1)."""
        args = ["token", "create", "-c", self.central / "site.yaml", "--role", role,
                "--name", name]
        result = patrol(*args, "--site", SITE) if role == "agent" else patrol(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    # --- patrol processes ----------------------------------------------------------------

    def start_api(self, *, wait: bool = True) -> PatrolProcess:
        self.api = PatrolProcess("api", "-c", self.central / "site.yaml", cwd=self.central)
        self.runs.append(self.api)
        if wait:
            self.api.wait_for_output("Patrol API on")
        return self.api

    def start_agent(self, *, wait: bool = True) -> PatrolProcess:
        self.agent = PatrolProcess("agent", "-c", self.edge / "site.yaml", cwd=self.edge,
                                   env={"PATROL_AGENT_TOKEN": self.agent_token})
        self.runs.append(self.agent)
        if wait:
            self.agent.wait_for_output("patrol agent started")
        return self.agent

    def kill_agent(self) -> None:
        """SIGKILL: no cleanup at all."""
        assert self.agent is not None
        self.agent.stop(signal.SIGKILL)

    def wait_subscribed(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while f"{AGENT_CLIENT_ID} 1 load/+/state" not in self.broker.log:
            assert time.monotonic() < deadline, f"agent never subscribed:\n{self.output()}"
            time.sleep(0.05)

    def output(self, runs: int = 3) -> str:
        """The output of the last `runs` patrol processes, for failure messages."""
        return "\n".join(f"--- patrol {run.proc.args[3]} ---\n"
                         f"{run.output[-6000:]}" for run in self.runs[-runs:])

    # --- stopping ------------------------------------------------------------------------

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM to every process, agent first; each one's exit code (None: it hung)."""
        codes: dict[str, int | None] = {}
        for name, run in (("agent", self.agent), ("api", self.api)):
            if run is not None:
                codes[name] = _stop(run.proc)
                run.stop()  # closes its output file
        codes["mosquitto"] = _stop(self.broker.proc) if self.broker.proc else None
        self.broker.proc = None
        codes["victoria-metrics"] = _stop(self.tsdb.proc) if self.tsdb.proc else None
        return codes

    def close(self) -> None:
        """Teardown: kill whatever still runs."""
        for run in self.runs:
            with contextlib.suppress(Exception):
                run.stop(signal.SIGKILL)
        self.broker.close()
        self.tsdb.close()
        self.modbus.stop()


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> int | None:
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


class Load:
    """Numbered readings for every tank, published at QoS 1 from a thread.

    Reading `k` of each tank is dated `t0 + k * step` ms and published once the wall clock
    reaches that time; its value is above LIMIT exactly when `k // block` is odd, so each
    tank has one violation episode per `2 * block` readings, starting at a known time.
    `finish()` stops after a whole block within limits, so every episode has ended.
    The publisher has a persistent session, so what a broker restart interrupts is sent
    again; a reading counts as published once the broker acknowledged it.
    """

    def __init__(self, port: int, *, step_ms: int = 20, block: int = 25) -> None:
        self.step_ms, self.block = step_ms, block
        self.t0 = int(time.time() * 1000)
        self.count = 0  # readings per tank handed to paho
        self._end: int | None = None
        self._acked: set[int] = set()
        self._mids: list[int] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"faults-load-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect(HOST, port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="faults-load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int,
                    reason_code: object, properties: object) -> None:
        with self._lock:
            self._acked.add(mid)

    def ts(self, k: int) -> int:
        return self.t0 + k * self.step_ms

    def value(self, k: int) -> float:
        base = (k % 7) * 0.5
        return LIMIT + 10 + base if (k // self.block) % 2 else 20 + base

    def _run(self) -> None:
        while self._end is None or self.count < self._end:
            k = self.count
            wait = self.ts(k) / 1000 - time.time()
            if wait > 0:
                time.sleep(wait)
            while not self.client.is_connected():  # a sensor cannot publish to a dead broker
                time.sleep(0.02)
            for tank in TANKS:
                payload = json.dumps({"t": self.ts(k), "v": self.value(k)})
                info = self.client.publish(f"load/{tank}/state", payload, qos=1)
                with self._lock:
                    self._mids.append(info.mid)
            self.count = k + 1

    def finish(self, timeout: float = 30) -> None:
        """Publish up to the end of the next block within limits; wait for the broker."""
        period = 2 * self.block
        current = self.count
        self._end = (current // period) * period + period + self.block
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the load generator did not finish"
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                missing = len(set(self._mids) - self._acked)
            if not missing:
                break
            assert time.monotonic() < deadline, f"{missing} publishes never acknowledged"
            time.sleep(0.05)
        self.client.disconnect()
        self.client.loop_stop()

    def close(self) -> None:
        if self._thread.is_alive():
            self._end = 0
            self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()

    def readings(self, first: int = 0) -> dict[tuple[str, int], float]:
        """{(tank, ts ms): value} of every reading published, from reading `first` on."""
        return {(tank, self.ts(k)): self.value(k)
                for k in range(first, self.count) for tank in TANKS}

    def episodes(self, first: int = 0) -> set[tuple[str, int]]:
        """{(tank, start ts ms)} of every violation episode that started at `first` or later
        (and ended: finish() published a block within limits after the last one)."""
        starts = range(self.block, self.count, 2 * self.block)
        return {(tank, self.ts(k)) for k in starts if k >= first and k + self.block < self.count
                for tank in TANKS}

    def index_now(self) -> int:
        """The number of the next reading to be published."""
        return self.count
