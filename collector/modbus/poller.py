"""Polls Modbus devices on a fixed schedule and hands their values on as `Reading`s.

One task per device and interval (a point may override its device's interval), each
reading its points with the fewest requests `plan` allows. Devices on one TCP endpoint
or one serial port share one pymodbus client, so a gateway or an RS-485 bus sees a single
connection; pymodbus serializes their requests.

Failures stay inside their device: a device that does not answer marks all its points
bad and is then tried less often (backoff), an exception reply marks only that request's
points bad, and every other device keeps its schedule. A merged request refused with
ILLEGAL DATA ADDRESS is split for the rest of the run, so one hole in a device's map
never blanks its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from collector.modbus.config import ModbusConfig, ModbusDevice, ModbusPoint, connection_of
from collector.modbus.decode import decode, decode_text
from collector.modbus.plan import BIT_TABLES, ReadRequest, by_interval, device_plan, split
from collector.modbus.stats import DeviceStats
from collector.reading import GOOD, Emit, Quality, Reading, bad
from common.logonce import WarnOnce
from common.metrics import MODBUS_REQUEST_SECONDS
from common.retry import MAX_BACKOFF, Backoff

log = logging.getLogger(__name__)

Client = AsyncModbusTcpClient | AsyncModbusSerialClient

READS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


def client_for(device: ModbusDevice) -> Client:
    # reconnect_delay=0: pymodbus must not reconnect in the background; the next cycle does.
    if device.transport in ("tcp", "rtu_over_tcp"):
        framer = FramerType.RTU if device.transport == "rtu_over_tcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(
            device.host or "", port=device.port, framer=framer, timeout=device.timeout,
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
        self.budget = 0.0
        """The longest an honest poll cycle here can take: every request of every device
        on this connection waiting out its timeout and retries (they are serialized)."""

    async def connected(self) -> Client:
        """The client, connected first if it is not; ConnectionException if that fails."""
        async with self._lock:
            if not self.client.connected and not await self.client.connect():
                raise ConnectionException(f"cannot connect to {self.name}")
        return self.client


class _Health:
    """A device's outage: logged once at warning, repeats at debug, recovery once at info
    (`WarnOnce`).

    It also spaces out the tries of a device that does not answer: after `failures`
    consecutive failures the wire waits min(interval * 2**failures, MAX_BACKOFF) seconds,
    so a dead device on a shared bus does not cost every cycle a timeout. That is
    `Backoff` with base 2 * interval and no jitter: a poll keeps its tick, and devices on
    one bus never retry together anyway (their requests are serialized).
    """

    def __init__(self, device: ModbusDevice) -> None:
        self.device = device.name
        self.interval = float(min(by_interval(device)))  # its most frequent polling
        self.outage = WarnOnce(log)
        self.backoff = Backoff(base=2 * self.interval, cap=MAX_BACKOFF, spread=(1.0, 1.0))
        self.next_try = -math.inf
        self.failed_at = -math.inf  # when the last failed try began
        self.error = ""

    @property
    def down(self) -> bool:
        return self.outage.troubled

    @property
    def failures(self) -> int:
        return self.backoff.failures

    def wait(self, now: float) -> float:
        """Seconds until the device may be tried again; 0 when it may be tried now.

        Within half an interval counts as now: the try lands on the tick nearest its
        due time instead of slipping a whole tick for a millisecond of jitter.
        """
        remaining = self.next_try - now
        return 0.0 if remaining < self.interval / 2 else remaining

    def failed(self, error: object, began: float) -> float:
        """Record a failed try that began at `began`; returns the wait until the next."""
        self.outage.trouble("device %s unavailable: %s", self.device, error)
        self.error = str(error)
        if began - self.failed_at >= self.interval / 2:
            # Else another interval's task of this device failed on the same try: one
            # failure, or a device with two intervals would back off twice as fast.
            self.next_try = began + self.backoff.failed()
        self.failed_at = max(began, self.failed_at)
        return max(self.next_try - began, 0.0)

    def answered(self) -> None:
        self.outage.recovered("device %s recovered", self.device)
        self.backoff.succeeded()
        self.next_try = self.failed_at = -math.inf


_GATEWAY_SILENT = frozenset({ExcCodes.GATEWAY_PATH_UNAVIABLE, ExcCodes.GATEWAY_NO_RESPONSE})
"""Exception replies a gateway sends for a device that did not answer: a silence, so they
count towards "device unavailable" and its backoff like a timeout, not as an answer."""


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
        self.stats = {device.name: DeviceStats(float(min(by_interval(device))))
                      for device in config.devices}
        """By device name: what the agent's metrics and health read."""
        self._cycles: dict[str, tuple[float, _Link]] = {}
        """Poll tasks now inside a cycle: when it began (monotonic), on which link."""

    def stalled(self, now: float, limit: float) -> str:
        """For the systemd watchdog (agent.sdnotify): a cycle running past both `limit` and
        its link's budget, which only a stuck client can do. A task sleeping until its next
        poll, however long the interval, is not stalled."""
        for name, (began, link) in list(self._cycles.items()):
            if now - began > max(limit, link.budget):
                return f"modbus: {name}: one poll cycle running for {now - began:.0f}s"
        return ""

    async def run(self, emit: Emit) -> None:
        """Poll all devices until cancelled; device faults become bad readings."""
        links: dict[str, _Link] = {}
        try:
            async with asyncio.TaskGroup() as tasks:
                for device in self._config.devices:
                    key = connection_of(device)
                    if key not in links:
                        links[key] = _Link(key, client_for(device))
                    health = _Health(device)
                    for interval, points in by_interval(device).items():
                        tasks.create_task(
                            self._poll(device, links[key], health, interval, points, emit),
                            name=f"modbus {device.name} every {interval}s")
        finally:
            for link in links.values():
                link.client.close()

    async def _poll(self, device: ModbusDevice, link: _Link, health: _Health,
                    interval: float, points: list[ModbusPoint], emit: Emit) -> None:
        """Cycle at start + k * interval; a cycle that overruns skips ticks, never bursts."""
        requests = device_plan(device, points)
        # Points, not requests: a request refused for one address is split down to them.
        link.budget += (len(points) + 1) * device.timeout * (device.retries + 1)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        name = f"device {device.name} every {interval}s"
        start, tick = loop.time(), 0
        while True:
            self._cycles[name] = (time.monotonic(), link)
            try:
                readings = await self._cycle(device, link, health, requests)
                self.stats[device.name].readings += len(readings)
                emit(readings)
            except Exception:  # a bug in one cycle must not stop this or any other device
                log.exception("device %s: poll cycle failed", device.name)
            finally:
                del self._cycles[name]
            if task is not None and task.cancelling():
                # Python 3.11's wait_for (inside pymodbus) can swallow a cancel that lands
                # as a reply arrives; the task is still marked, so honour it here.
                raise asyncio.CancelledError
            now = loop.time()
            tick = max(tick + 1, math.floor((now - start) / interval) + 1)
            await asyncio.sleep(start + tick * interval - now)

    async def _cycle(self, device: ModbusDevice, link: _Link, health: _Health,
                     requests: list[ReadRequest]) -> list[Reading]:
        """One reading per point; `requests` may be split in place (see `_serve`)."""
        began = asyncio.get_running_loop().time()
        if wait := health.wait(began):
            return self._unavailable(device, requests, f"{health.error}; next try in {wait:.1f}s")
        readings: list[Reading] = []
        silent, answered = 0, False  # requests in a row the device did not answer
        try:
            client = await link.connected()
            for request in list(requests):
                try:
                    readings += await self._serve(client, device, request, requests)
                    silent, answered = 0, True
                except ModbusIOException as exc:
                    # One unanswered request costs only its own points; two in a row, or
                    # a cycle with no answer at all, mean the device is gone.
                    silent += 1
                    if silent > 1 or not client.connected or (
                            request is requests[-1] and not answered):
                        raise
                    readings += self._unanswered(device, request, exc)
        except (ModbusException, OSError) as exc:  # OSError covers TimeoutError
            delay = health.failed(exc, began)
            return self._unavailable(device, requests, f"{exc}; next try in {delay:.1f}s")
        health.answered()
        self.stats[device.name].answered_at = self._clock()
        return readings

    def _unanswered(self, device: ModbusDevice, request: ReadRequest,
                    exc: Exception) -> list[Reading]:
        reason = bad(f"device {device.name} (unit {device.unit_id}) {request.table} "
                     f"{request.address}: no answer ({exc})")
        self.stats[device.name].bad["no_answer"] += len(request.points)
        ts = self._clock()
        return [self._reading(device, point, math.nan, ts, reason) for point in request.points]

    def _unavailable(self, device: ModbusDevice, requests: list[ReadRequest],
                     why: str) -> list[Reading]:
        reason = bad(f"device {device.name} (unit {device.unit_id}) unavailable: {why}")
        self.stats[device.name].bad["unavailable"] += sum(len(r.points) for r in requests)
        ts = self._clock()
        return [self._reading(device, point, math.nan, ts, reason)
                for request in requests for point in request.points]

    async def _serve(self, client: Client, device: ModbusDevice, request: ReadRequest,
                     requests: list[ReadRequest]) -> list[Reading]:
        """Read one request; on ILLEGAL DATA ADDRESS split it in `requests` and read the parts.

        Merging may read registers the device never mapped, and some devices refuse the
        whole read for one of them. Splitting (first at the gaps, then per point) keeps
        the refusal to the points that really are not there.
        """
        sent = time.perf_counter()
        response: ModbusPDU = await getattr(client, READS[request.table])(
            request.address, count=request.count, device_id=device.unit_id)
        MODBUS_REQUEST_SECONDS.labels(device.name).observe(time.perf_counter() - sent)
        ts = self._clock()
        if not response.isError():
            return [self._point(device, request, point, response, ts)
                    for point in request.points]
        code = getattr(response, "exception_code", None)
        if code in _GATEWAY_SILENT:  # the gateway answered; the device behind it did not
            raise ModbusIOException(f"gateway exception {_exception_name(code)}")
        if code == ExcCodes.ILLEGAL_ADDRESS and len(parts := split(request)) > 1:
            at = requests.index(request)
            requests[at : at + 1] = parts
            log.info("device %s (unit %s): %s refused with exception %s; reading it as %d "
                     "requests from now on: %s", device.name, device.unit_id, request,
                     _exception_name(code), len(parts), ", ".join(map(str, parts)))
            readings: list[Reading] = []
            for part in parts:
                readings += await self._serve(client, device, part, requests)
            return readings
        reason = bad(f"device {device.name} (unit {device.unit_id}) {request.table} "
                     f"{request.address}: exception reply {_exception_name(code)}")
        self.stats[device.name].bad["exception_reply"] += len(request.points)
        return [self._reading(device, p, math.nan, ts, reason) for p in request.points]

    def _point(self, device: ModbusDevice, request: ReadRequest, point: ModbusPoint,
               response: ModbusPDU, ts: float) -> Reading:
        start = point.address - request.address
        try:
            if request.table in BIT_TABLES:
                value = decode(point, bits=response.bits[start : start + 1])
            elif point.type == "ascii":
                # Text is no float: it travels in extra, with no numeric value.
                text = decode_text(point, response.registers[start : start + point.count])
                return self._reading(device, point, math.nan, ts, extra={"text": text})
            else:
                value = decode(point, registers=response.registers[start : start + point.count])
        except ValueError as exc:  # NoValue (the device's 'no value' marker) or a short reply
            self.stats[device.name].bad["decode_error"] += 1
            return self._reading(device, point, math.nan, ts, bad(
                f"device {device.name} (unit {device.unit_id}) {point.table} "
                f"{point.address}: {exc}"))
        except Exception as exc:  # a reply of a shape we did not expect: this point only
            log.debug("device %s: cannot decode %s %s", device.name, point.table,
                      point.address, exc_info=True)
            self.stats[device.name].bad["decode_error"] += 1
            return self._reading(device, point, math.nan, ts, bad(
                f"device {device.name} (unit {device.unit_id}) {point.table} "
                f"{point.address}: cannot decode the reply ({type(exc).__name__}: {exc})"))
        return self._reading(device, point, value, ts)

    @staticmethod
    def _reading(device: ModbusDevice, point: ModbusPoint, value: float, ts: float,
                 quality: Quality = GOOD, extra: dict[str, str] | None = None) -> Reading:
        return Reading(point.asset, point.metric, value, ts, quality, point.unit,
                       f"modbus:{device.name}", extra or {})
