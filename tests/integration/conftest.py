"""Real peers for integration tests: a pymodbus server in a thread, `patrol` processes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusTcpServer

from collector.modbus.config import ModbusPoint
from collector.modbus.decode import encode_value
from tests.conftest import free_port

MOSQUITTO = ("127.0.0.1", 1883)


class ModbusServerThread:
    """pymodbus's own TCP server on its own loop in a thread; registers set from the test."""

    def __init__(self, units: tuple[int, ...] = (1,)) -> None:
        self.port = free_port()
        self.units = units
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: ModbusTcpServer | None = None

    def start(self) -> ModbusServerThread:
        logging.getLogger("pymodbus").setLevel(logging.ERROR)
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        devices = {unit: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [0] * 300),
                                             ir=ModbusSequentialDataBlock(1, [0] * 300))
                   for unit in self.units}
        self._server = ModbusTcpServer(ModbusServerContext(devices=devices, single=False),
                                       address=("127.0.0.1", self.port))
        await self._server.serve_forever(background=True)

    def set(self, point: ModbusPoint, value: float, unit: int = 1) -> None:
        """Write `value` (engineering units) where `point` reads it."""
        registers = encode_value(point, value)
        code = {"holding": 3, "input": 4}[point.table]
        assert self._server is not None
        self._call(self._server.context.async_setValues(unit, code, point.address, registers))

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._server.shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)


@pytest.fixture
def no_threads_left() -> Iterator[None]:
    """Fails a test that leaves a thread behind (a paho loop, a server) after 5 s."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while (left := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"threads left behind: {sorted(t.name for t in left)}"


@pytest.fixture
def modbus_server() -> Iterator[ModbusServerThread]:
    server = ModbusServerThread().start()
    yield server
    server.stop()


def patrol(*args: str | Path, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a `patrol` command to completion."""
    return subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


class PatrolProcess:
    """A long-running `patrol` command (run, agent, api, demo) with its output kept."""

    def __init__(self, *args: str | Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.stdout_path = Path(cwd or ".") / f"patrol-{os.getpid()}-{time.monotonic_ns()}.out"
        self._out = self.stdout_path.open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", *map(str, args)], cwd=cwd,
            stdout=self._out, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})})

    @property
    def output(self) -> str:
        return self.stdout_path.read_text()

    def wait_for_output(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.output
            if text in output:
                return output
            if self.proc.poll() is not None:
                raise AssertionError(f"patrol exited {self.proc.returncode}:\n{output}")
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} within {timeout}s:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"patrol did not stop on {sig}:\n{self.output}") from None
        self._out.close()
        return self.proc.returncode


class Api:
    """A tiny HTTP client for the tests (stdlib, so it is independent of our own code)."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def get(self, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_for(self, path: str, predicate: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                status, last = self.get(path)
                if status == 200 and predicate(last):
                    return last
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"GET {path}: condition not met in {timeout}s; last: {last}")


def write_site_folder(tmp: Path, *, standards: str, site: str, api_port: int) -> Path:
    """A site folder for `patrol run`: `standards` as standards/plant.yaml, and site.yaml
    holding `site`, then the standards glob, the API on `api_port` over SQLite and the
    buffer (both under tmp/data). Returns site.yaml's path."""
    (tmp / "standards").mkdir()
    (tmp / "standards" / "plant.yaml").write_text(standards)
    path = tmp / "site.yaml"
    path.write_text(site + f"""standards: [standards/*.yaml]
server: {{listen: 127.0.0.1:{api_port}, database: sqlite:///data/patrol.sqlite}}
buffer: {{path: data/buffer.sqlite}}
""")
    return path


def publish_json(topic: str, payloads: list[dict[str, Any]]) -> None:
    """Each payload as JSON to the machine's Mosquitto at QoS 1, each waited for."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex}")
    client.connect(*MOSQUITTO)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
