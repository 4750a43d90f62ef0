"""Polls Modbus devices on a fixed schedule and hands their values on as `Reading`s.

One task per device and interval (a point may override its device's interval). Devices
on one TCP endpoint or one serial port share one pymodbus client, so a gateway or an
RS-485 bus sees a single connection; pymodbus serializes their requests. Failures stay
inside their device: a device that does not answer marks all its points bad, an exception
reply marks only that request's points bad, and every other device keeps its schedule.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from collector.modbus.config import (
    ModbusConfig,
    ModbusDevice,
    ModbusPoint,
    Table,
    connection_of,
)
from collector.modbus.decode import decode, decode_text
from collector.reading import GOOD, Emit, Quality, Reading, bad

log = logging.getLogger(__name__)

Client = AsyncModbusTcpClient | AsyncModbusSerialClient

_READS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read on the wire and the points its answer serves."""

    table: Table
    address: int
    count: int
    points: tuple[ModbusPoint, ...]


def plan_requests(points: Sequence[ModbusPoint]) -> list[ReadRequest]:
    """The reads that serve `points`: one per point until request merging comes."""
    return [ReadRequest(p.table, p.address, p.count, (p,)) for p in points]


def _client(device: ModbusDevice) -> Client:
    # reconnect_delay=0: pymodbus must not reconnect in the background; the next cycle does.
    if device.transport == "tcp":
        return AsyncModbusTcpClient(
            device.host or "", port=device.port, timeout=device.timeout,
            retries=device.retries, reconnect_delay=0)
    return AsyncModbusSerialClient(
        device.serial_port or "", framer=FramerType.RTU, baudrate=device.baudrate,
        bytesize=device.bytesize, parity=device.parity, stopbits=device.stopbits,
        timeout=device.timeout, retries=device.retries, reconnect_delay=0)


class _Link:
    """One client shared by the devices on one connection."""

    def __init__(self, name: str, client: Client) -> None:
        self.name = name
        self.client = client
        self._lock = asyncio.Lock()

    async def connected(self) -> Client:
        """The client, connected first if it is not; ConnectionException if that fails."""
        async with self._lock:
            if not self.client.connected and not await self.client.connect():
                raise ConnectionException(f"cannot connect to {self.name}")
        return self.client


class _Health:
    """Logs a device's outage once at warning, repeats at debug, recovery once at info."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.down = False

    def failed(self, error: object) -> None:
        log.log(logging.DEBUG if self.down else logging.WARNING,
                "device %s unavailable: %s", self.device, error)
        self.down = True

    def answered(self) -> None:
        if self.down:
            log.info("device %s recovered", self.device)
        self.down = False


def _exception_name(code: int | None) -> str:
    try:
        return f"{code} ({ExcCodes(code).name})"
    except ValueError:
        return str(code)


class ModbusCollector:
    """Polls every configured device until cancelled; see the module docstring."""

    name = "modbus"

    def __init__(self, config: ModbusConfig, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock

    async def run(self, emit: Emit) -> None:
        """Poll all devices until cancelled; device faults become bad readings."""
        links: dict[str, _Link] = {}
        try:
            async with asyncio.TaskGroup() as tasks:
                for device in self._config.devices:
                    key = connection_of(device)
                    if key not in links:
                        links[key] = _Link(key, _client(device))
                    health = _Health(device.name)
                    by_interval: dict[float, list[ModbusPoint]] = {}
                    for point in device.points:
                        by_interval.setdefault(point.interval or device.interval, []).append(point)
                    for interval, points in by_interval.items():
                        tasks.create_task(
                            self._poll(device, links[key], health, interval, points, emit),
                            name=f"modbus {device.name} every {interval}s")
        finally:
            for link in links.values():
                link.client.close()

    async def _poll(self, device: ModbusDevice, link: _Link, health: _Health,
                    interval: float, points: list[ModbusPoint], emit: Emit) -> None:
        """Cycle at start + k * interval; a cycle that overruns skips ticks, never bursts."""
        requests = plan_requests(points)
        loop = asyncio.get_running_loop()
        start, tick = loop.time(), 0
        while True:
            try:
                emit(await self._cycle(device, link, health, requests))
            except Exception:  # a bug in one cycle must not stop this or any other device
                log.exception("device %s: poll cycle failed", device.name)
            now = loop.time()
            tick = max(tick + 1, math.floor((now - start) / interval) + 1)
            await asyncio.sleep(start + tick * interval - now)

    async def _cycle(self, device: ModbusDevice, link: _Link, health: _Health,
                     requests: list[ReadRequest]) -> list[Reading]:
        readings: list[Reading] = []
        try:
            client = await link.connected()
            for request in requests:
                readings += await self._read(client, device, request)
        except (ModbusException, OSError) as exc:  # OSError covers TimeoutError
            health.failed(exc)
            reason = bad(f"device {device.name} (unit {device.unit_id}) unavailable: {exc}")
            ts = self._clock()
            return [self._reading(device, point, math.nan, ts, reason)
                    for request in requests for point in request.points]
        health.answered()
        return readings

    async def _read(self, client: Client, device: ModbusDevice,
                    request: ReadRequest) -> list[Reading]:
        read = getattr(client, _READS[request.table])
        response: ModbusPDU = await read(
            request.address, count=request.count, device_id=device.unit_id)
        ts = self._clock()
        where = f"device {device.name} (unit {device.unit_id}) {request.table} {request.address}"
        if response.isError():
            code = getattr(response, "exception_code", None)
            reason = bad(f"{where}: exception reply {_exception_name(code)}")
            return [self._reading(device, p, math.nan, ts, reason) for p in request.points]
        return [self._point(device, request, point, response, ts) for point in request.points]

    def _point(self, device: ModbusDevice, request: ReadRequest, point: ModbusPoint,
               response: ModbusPDU, ts: float) -> Reading:
        start = point.address - request.address
        try:
            if request.table in ("coil", "discrete"):
                value = decode(point, bits=response.bits[start : start + 1])
            elif point.type == "ascii":
                # Text is no float: it travels in extra, with no numeric value.
                text = decode_text(point, response.registers[start : start + point.count])
                return self._reading(device, point, math.nan, ts, extra={"text": text})
            else:
                value = decode(point, registers=response.registers[start : start + point.count])
        except ValueError as exc:  # NoValue (the device's 'no value' marker) or a short reply
            return self._reading(device, point, math.nan, ts, bad(
                f"device {device.name} (unit {device.unit_id}) {point.table} "
                f"{point.address}: {exc}"))
        return self._reading(device, point, value, ts)

    @staticmethod
    def _reading(device: ModbusDevice, point: ModbusPoint, value: float, ts: float,
                 quality: Quality = GOOD, extra: dict[str, str] | None = None) -> Reading:
        return Reading(point.asset, point.metric, value, ts, quality, point.unit,
                       f"modbus:{device.name}", extra or {})


def explain(config: ModbusConfig) -> str:
    """The read requests each device makes per cycle, for `patrol check --explain-modbus`."""
    lines = []
    for device in config.devices:
        lines.append(f"{device.name} ({connection_of(device)}, unit {device.unit_id}):")
        by_interval: dict[float, list[ModbusPoint]] = {}
        for point in device.points:
            by_interval.setdefault(point.interval or device.interval, []).append(point)
        for interval, points in by_interval.items():
            requests = plan_requests(points)
            lines.append(f"  every {interval:g}s: {len(requests)} requests")
            for r in requests:
                metrics = ", ".join(f"{p.asset}.{p.metric}" for p in r.points)
                lines.append(f"    {r.table} {r.address}-{r.address + r.count - 1} "
                             f"({r.count}): {metrics}")
    return "\n".join(lines)
