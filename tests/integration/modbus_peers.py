"""Real Modbus peers for the poller tests, and the harness that runs a collector on them.

pymodbus's own server over TCP, over TCP with RTU framing, and over a socat pty pair (RTU
without hardware); a server that never answers; and a recorder of the batches a
`ModbusCollector` emits. Servers can record every request they receive (pymodbus's
`trace_pdu` hook), so tests count requests on the wire instead of trusting our planner.
A `Peer` is a device's far end on TCP or on a pty pair, for tests run over both.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pymodbus import FramerType
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSparseDataBlock,
)
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from collector.modbus.poller import ModbusCollector
from collector.reading import Reading
from tests.conftest import free_port

INTERVAL = 0.2
POLLER_LOG = "collector.modbus.poller"
Values = list[int] | list[bool] | dict[int, list[int]] | dict[int, list[bool]]


def words(fmt: str, value: float) -> list[int]:
    """Big-endian (ABCD) registers of `value` packed by struct as `fmt`."""
    data = struct.pack(">" + fmt, value)
    return list(struct.unpack(f">{len(data) // 2}H", data))


def run(main: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run, failing the test if it leaves tasks or threads behind."""
    threads = set(threading.enumerate())

    async def checked() -> Any:
        result = await main
        await asyncio.sleep(0.05)  # let closed transports run their callbacks
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return result

    result = asyncio.run(checked())
    assert set(threading.enumerate()) <= threads
    return result


def unit(hr: Values | None = None, ir: Values | None = None, co: Values | None = None,
         di: Values | None = None) -> ModbusDeviceContext:
    """One unit's tables. A list: protocol address A is list[A]. A dict {A: [values]}:
    only those addresses exist, so reading any other one is ILLEGAL DATA ADDRESS."""
    blocks = {}
    for name, values in (("hr", hr), ("ir", ir), ("co", co), ("di", di)):
        if isinstance(values, dict):
            blocks[name] = ModbusSparseDataBlock(values)
        elif values:
            blocks[name] = ModbusSequentialDataBlock(1, values)
    return ModbusDeviceContext(**blocks)


class Request(NamedTuple):
    unit: int
    function: int
    address: int
    count: int


class Requests:
    """A server's `trace_pdu` hook: records each request it receives, changes nothing."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def __call__(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.seen.append(Request(pdu.dev_id, pdu.function_code, pdu.address, pdu.count))
        return pdu


@asynccontextmanager
async def modbus_server(
    port: int, hr: Values | None = None, ir: Values | None = None,
    co: Values | None = None, unit_id: int = 1, *, di: Values | None = None,
    units: dict[int, ModbusDeviceContext] | None = None,
    framer: FramerType = FramerType.SOCKET, requests: Requests | None = None,
) -> AsyncIterator[ModbusTcpServer]:
    """A pymodbus TCP server (RTU framing with framer=FramerType.RTU)."""
    context = ModbusServerContext(devices=units or {unit_id: unit(hr, ir, co, di)},
                                  single=False)
    server = ModbusTcpServer(context, address=("127.0.0.1", port), framer=framer,
                             trace_pdu=requests)
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()


@asynccontextmanager
async def pty_pair(folder: Path) -> AsyncIterator[tuple[Path, Path]]:
    """Two connected ptys from socat: (client end, server end), an RS-485 bus in a box."""
    client_end, server_end = folder / "A", folder / "B"
    socat = await asyncio.create_subprocess_exec(
        "socat", f"pty,raw,echo=0,link={client_end}", f"pty,raw,echo=0,link={server_end}",
        stderr=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(5):
            while not (client_end.exists() and server_end.exists()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # a file appearing sets no event
        yield client_end, server_end
    finally:
        socat.terminate()
        await socat.wait()


@asynccontextmanager
async def serial_server(
    tty: Path, units: dict[int, ModbusDeviceContext], baudrate: int = 19200,
    requests: Requests | None = None,
) -> AsyncIterator[ModbusSerialServer]:
    """A pymodbus RTU server on one end of a pty pair."""
    server = ModbusSerialServer(
        ModbusServerContext(devices=units, single=False), framer=FramerType.RTU,
        port=str(tty), baudrate=baudrate, trace_pdu=requests)
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()


@asynccontextmanager
async def silent_server(port: int, received: list[bytes] | None = None
                        ) -> AsyncIterator[None]:
    """Accepts connections and reads requests (kept in `received`), but never answers."""
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(256):
            if received is not None:
                received.append(data)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


def deaf_to(port: int, upstream: int, address: int) -> AbstractAsyncContextManager[None]:
    """A Modbus TCP proxy to `upstream` that never answers reads starting at `address`:
    a device that ignores one request but answers the others."""
    return _relay(port, upstream, deaf_to=address)


def slow_relay(port: int, upstream: int, delay: float) -> AbstractAsyncContextManager[None]:
    """A Modbus TCP proxy to `upstream` that holds every answer `delay` seconds: a slow
    device, or a slow line, so each poll cycle takes that long at least."""
    return _relay(port, upstream, delay=delay)


@asynccontextmanager
async def _relay(port: int, upstream: int, *, deaf_to: int | None = None,
                 delay: float = 0.0) -> AsyncIterator[None]:
    """A Modbus TCP proxy to `upstream`, one request at a time on each connection: reads
    starting at address `deaf_to` go unanswered, other answers come `delay` s late."""
    relays: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if task := asyncio.current_task():
            relays[task] = writer  # closed on the way out, so the relay ends
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        try:
            while header := await reader.readexactly(7):
                body = await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                if int.from_bytes(body[1:3], "big") == deaf_to:
                    continue  # swallowed: the client times out on this one
                up_writer.write(header + body)
                answer = await up_reader.readexactly(7)
                answer += await up_reader.readexactly(int.from_bytes(answer[4:6], "big") - 1)
                await asyncio.sleep(delay)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()
        for writer in relays.values():
            writer.close()  # not task.cancel(): asyncio would log the cancel as an error
        if relays:
            await asyncio.wait(relays, timeout=1)  # a closed reader reads EOF


class Serve(Protocol):
    def __call__(self, units: dict[int, ModbusDeviceContext],
                 requests: Requests | None = None) -> AbstractAsyncContextManager[object]: ...


class Peer(NamedTuple):
    """A device's far end: `where` is what `device()` takes to reach it, and
    `serve(units, requests)` starts a server there (as often as a test likes, one at a
    time)."""

    where: int | Path
    serve: Serve


@asynccontextmanager
async def peer(transport: str, folder: Path) -> AsyncIterator[Peer]:
    """A device's far end over "tcp" (a loopback port) or "rtu" (the server end of a pty
    pair in `folder`). The pty pair outlives the servers started on it, as a bus outlives
    the devices that stop and come back on it."""
    if transport == "tcp":
        port = free_port()
        yield Peer(port, lambda units, requests=None: modbus_server(
            port, units=units, requests=requests))
        return
    async with pty_pair(folder) as (client_end, server_end):
        yield Peer(client_end, lambda units, requests=None: serial_server(
            server_end, units, requests=requests))


class Batches:
    """Records each emit() call, and when it came."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[Reading]]] = []
        self._emitted = asyncio.Event()

    def __call__(self, readings: Sequence[Reading],
                 on_stored: Callable[[], None] | None = None) -> None:
        self.calls.append((asyncio.get_running_loop().time(), list(readings)))
        self._emitted.set()
        if on_stored:
            on_stored()

    async def until(self, condition: Callable[[Batches], bool]) -> None:
        while not condition(self):
            self._emitted.clear()
            await self._emitted.wait()

    def of(self, device: str) -> list[list[Reading]]:
        return [batch for _, batch in self.calls
                if batch and batch[0].source == f"modbus:{device}"]

    def times(self, device: str, metric: str | None = None) -> list[float]:
        """When the device's batches came; only those holding `metric`, if given (a
        device with several intervals emits one batch per interval)."""
        return [at for at, batch in self.calls
                if batch and batch[0].source == f"modbus:{device}"
                and (metric is None or any(r.metric == metric for r in batch))]


async def poll_until(
    collector: ModbusCollector, done: Callable[[Batches], bool],
    during: Callable[[Batches], Awaitable[None]] | None = None, within: float = 5,
) -> Batches:
    """Run the collector until `done(batches)`, then cancel it as an agent would."""
    batches = Batches()
    task = asyncio.create_task(collector.run(batches))
    try:
        async with asyncio.timeout(within):
            if during:
                await during(batches)
            await batches.until(done)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task  # re-raises anything run() let escape
    return batches


def device(name: str, port: int | Path, points: list[dict[str, Any]],
           **more: Any) -> dict[str, Any]:
    """A device polled every INTERVAL, giving up quickly: over TCP on loopback `port`, or
    over RTU at 19200 baud when `port` is a path (the client end of a pty pair)."""
    link: dict[str, Any] = (
        {"transport": "rtu", "serial_port": str(port), "baudrate": 19200}
        if isinstance(port, Path) else {"host": "127.0.0.1", "port": port})
    return {"name": name, **link, "interval": INTERVAL, "timeout": 0.3, "retries": 0,
            "points": points, **more}


def by_metric(batch: list[Reading]) -> dict[str, Reading]:
    return {reading.metric: reading for reading in batch}


def counter(start: float = 1000.0) -> Callable[[], float]:
    """A clock for the collector that ticks one second per reading batch stamp."""
    ticks = itertools.count(start)
    return lambda: next(ticks)
