"""The poller against a real pymodbus server on loopback."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import shutil
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
from pydantic import ValidationError
from pymodbus import FramerType
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from collector.modbus.config import ModbusConfig
from collector.modbus.poller import ModbusCollector
from collector.reading import Reading
from tests.conftest import free_port

INTERVAL = 0.2
POLLER_LOG = "collector.modbus.poller"


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


@asynccontextmanager
async def modbus_server(
    port: int, hr: list[int] | None = None, ir: list[int] | None = None,
    co: list[bool] | None = None, unit: int = 1,
) -> AsyncIterator[ModbusTcpServer]:
    """A pymodbus TCP server where protocol address A of each table is list[A]."""
    blocks = {name: ModbusSequentialDataBlock(1, values)
              for name, values in (("hr", hr), ("ir", ir), ("co", co)) if values}
    context = ModbusServerContext(devices={unit: ModbusDeviceContext(**blocks)}, single=False)
    server = ModbusTcpServer(context, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()


@asynccontextmanager
async def silent_server(port: int) -> AsyncIterator[None]:
    """Accepts connections and reads requests, but never answers."""
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(256):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


class Batches:
    """Records each emit() call, and when it came."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[Reading]]] = []
        self._emitted = asyncio.Event()

    def __call__(self, readings: Sequence[Reading]) -> None:
        self.calls.append((asyncio.get_running_loop().time(), list(readings)))
        self._emitted.set()

    async def until(self, condition: Callable[[Batches], bool]) -> None:
        while not condition(self):
            self._emitted.clear()
            await self._emitted.wait()

    def of(self, device: str) -> list[list[Reading]]:
        return [batch for _, batch in self.calls
                if batch and batch[0].source == f"modbus:{device}"]

    def times(self, device: str) -> list[float]:
        return [at for at, batch in self.calls
                if batch and batch[0].source == f"modbus:{device}"]


async def poll_until(
    collector: ModbusCollector, done: Callable[[Batches], bool],
    during: Callable[[Batches], Awaitable[None]] | None = None,
) -> Batches:
    """Run the collector until `done(batches)`, then cancel it as an agent would."""
    batches = Batches()
    task = asyncio.create_task(collector.run(batches))
    try:
        async with asyncio.timeout(5):
            if during:
                await during(batches)
            await batches.until(done)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task  # re-raises anything run() let escape
    return batches


def device(name: str, port: int, points: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"name": name, "host": "127.0.0.1", "port": port, "interval": INTERVAL,
            "timeout": 0.3, "retries": 0, "points": points, **more}


def by_metric(batch: list[Reading]) -> dict[str, Reading]:
    return {reading.metric: reading for reading in batch}


HOLDING = (
    words("f", 21.5)                       # 0-1 float32 ABCD
    + words("f", -3.25)[::-1]              # 2-3 float32 CDAB
    + words("h", -42)                      # 4   int16
    + [653]                                # 5   uint16, scale 0.1 offset -40 -> 25.3
    + words("I", 100_000)                  # 6-7 uint32
    + [0b0000_0000_0010_0100]              # 8   status bits 2 and 5
    + [0xFFFF]                             # 9   the device's "no value"
    + [0x4142, 0x3132]                     # 10-11 ascii "AB12"
)
INPUT = [1234, *words("f", 0.5)]           # 0 uint16, 1-2 float32
POINTS = [
    {"asset": "oven1", "metric": "temp", "address": 0, "type": "float32", "unit": "degC"},
    {"asset": "oven1", "metric": "drift", "address": 2, "type": "float32", "order": "CDAB"},
    {"asset": "oven1", "metric": "offset", "address": 4, "type": "int16"},
    {"asset": "oven1", "metric": "scaled", "address": 5, "type": "uint16",
     "scale": 0.1, "offset": -40},
    {"asset": "oven1", "metric": "count", "address": 6, "type": "uint32"},
    {"asset": "oven1", "metric": "door_open", "address": 8, "type": "bool", "bit": 2},
    {"asset": "oven1", "metric": "alarm", "address": 8, "type": "uint16", "bit": 3},
    {"asset": "oven1", "metric": "missing", "address": 9, "nan_value": 65535},
    {"asset": "oven1", "metric": "flow", "table": "input", "address": 0},
    {"asset": "oven1", "metric": "ratio", "table": "input", "address": 1, "type": "float32"},
    {"asset": "oven1", "metric": "running", "table": "coil", "address": 1, "type": "bool"},
    {"asset": "oven1", "metric": "serial", "address": 10, "type": "ascii", "length": 4},
]
EXPECTED = {
    "temp": 21.5, "drift": -3.25, "offset": -42.0, "scaled": 25.3, "count": 100_000.0,
    "door_open": 1.0, "alarm": 0.0, "flow": 1234.0, "ratio": 0.5, "running": 1.0,
}


def test_values_are_decoded_from_a_real_server():
    port = free_port()
    clock = itertools.count(1000.0)
    config = ModbusConfig.model_validate({"devices": [device("oven", port, POINTS)]})
    collector = ModbusCollector(config, clock=lambda: next(clock))

    async def main() -> Batches:
        async with modbus_server(port, hr=HOLDING, ir=INPUT, co=[False, True]):
            return await poll_until(collector, lambda b: len(b.of("oven")) >= 3)

    batches = run(main())
    assert len(batches.of("oven")) >= 3
    for batch in batches.of("oven"):
        readings = by_metric(batch)
        assert len(batch) == len(POINTS)
        for metric, value in EXPECTED.items():
            assert readings[metric].good, readings[metric].quality
            assert readings[metric].value == pytest.approx(value), metric
        assert readings["temp"].unit == "degC"
        assert readings["temp"].asset == "oven1"
        assert {r.source for r in batch} == {"modbus:oven"}
        assert all(r.ts >= 1000.0 for r in batch)  # stamped by the injected clock
        missing = readings["missing"]
        assert not missing.good and math.isnan(missing.value)
        assert "oven" in missing.quality.reason and "no value" in missing.quality.reason
        serial = readings["serial"]  # text travels in extra, with no numeric value
        assert serial.quality.good and serial.extra == {"text": "AB12"}
        assert math.isnan(serial.value)
    times = batches.times("oven")
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap > INTERVAL * 0.75 for gap in gaps), gaps  # a schedule, not a burst


def test_a_dead_device_is_bad_and_the_live_one_keeps_delivering(caplog):
    live_port, dead_port = free_port(), free_port()
    config = ModbusConfig.model_validate({"devices": [
        device("live", live_port, POINTS[:1]),
        device("dead", dead_port, POINTS[1:3], unit_id=7),
    ]})

    async def main() -> Batches:
        async with modbus_server(live_port, hr=HOLDING):
            return await poll_until(
                ModbusCollector(config),
                lambda b: len(b.of("live")) >= 3 and len(b.of("dead")) >= 3)

    with caplog.at_level(logging.DEBUG, logger=POLLER_LOG):
        batches = run(main())
    for batch in batches.of("live"):
        assert [(r.metric, r.value, r.good) for r in batch] == [("temp", 21.5, True)]
    for batch in batches.of("dead"):
        assert [r.metric for r in batch] == ["drift", "offset"]
        for reading in batch:
            assert not reading.good and math.isnan(reading.value)
            reason = reading.quality.reason
            assert "device dead" in reason and "unit 7" in reason
            assert "cannot connect" in reason
    ours = [r for r in caplog.records if r.name == POLLER_LOG]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("device dead unavailable: ")
    assert sum(r.levelno == logging.DEBUG for r in ours) >= 2  # the repeats
    assert not any("live" in r.getMessage() for r in ours)


def test_an_exception_reply_marks_only_its_point_bad(caplog):
    port = free_port()
    config = ModbusConfig.model_validate({"devices": [device("oven", port, [
        POINTS[0],
        {"asset": "oven1", "metric": "ghost", "address": 500},
        POINTS[2],
    ])]})

    async def main() -> Batches:
        async with modbus_server(port, hr=HOLDING):
            return await poll_until(ModbusCollector(config), lambda b: len(b.of("oven")) >= 2)

    with caplog.at_level(logging.DEBUG, logger=POLLER_LOG):
        batches = run(main())
    for batch in batches.of("oven"):
        readings = by_metric(batch)
        assert readings["temp"].good and readings["temp"].value == 21.5
        assert readings["offset"].good and readings["offset"].value == -42.0
        ghost = readings["ghost"]
        assert not ghost.good and math.isnan(ghost.value)
        reason = ghost.quality.reason
        for part in ("device oven", "unit 1", "holding", "500", "ILLEGAL_ADDRESS"):
            assert part in reason, reason
    assert not [r for r in caplog.records if r.name == POLLER_LOG]  # the device answered


def test_a_silent_device_times_out_without_holding_up_the_others():
    live_port, silent_port = free_port(), free_port()
    config = ModbusConfig.model_validate({"devices": [
        device("live", live_port, POINTS[:1]),
        device("mute", silent_port, POINTS[:3], timeout=0.15),
    ]})

    async def main() -> Batches:
        async with modbus_server(live_port, hr=HOLDING), silent_server(silent_port):
            return await poll_until(
                ModbusCollector(config),
                lambda b: len(b.of("live")) >= 4 and len(b.of("mute")) >= 2)

    batches = run(main())
    assert all(batch[0].good for batch in batches.of("live"))
    for batch in batches.of("mute"):
        assert len(batch) == 3  # every point, though the first request already failed
        for reading in batch:
            assert not reading.good
            assert "device mute (unit 1) unavailable" in reading.quality.reason


def test_a_device_that_comes_back_is_reconnected_and_logged_once(caplog):
    port = free_port()
    config = ModbusConfig.model_validate({"devices": [device("oven", port, POINTS[:1])]})

    def last_good(batches: Batches) -> bool:
        return batches.of("oven")[-1][0].good

    async def bring_it_up(batches: Batches) -> None:
        await batches.until(lambda b: len(b.of("oven")) >= 2)
        async with modbus_server(port, hr=HOLDING):
            await batches.until(last_good)
        await batches.until(lambda b: not last_good(b))  # and down again once it stops

    async def main() -> Batches:
        return await poll_until(ModbusCollector(config), lambda b: True, during=bring_it_up)

    with caplog.at_level(logging.DEBUG, logger=POLLER_LOG):
        batches = run(main())
    good = [batch[0].good for batch in batches.of("oven")]
    assert good[:2] == [False, False] and True in good and good[-1] is False
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == POLLER_LOG]
    assert [m for m in messages if m[0] == logging.INFO] == [
        (logging.INFO, "device oven recovered")]
    warnings = [text for level, text in messages if level == logging.WARNING]
    assert len(warnings) == 2  # down at start, and down again after the recovery
    assert warnings[0] == ("device oven unavailable: Modbus Error: [Connection] "
                           f"cannot connect to tcp 127.0.0.1:{port}")
    assert warnings[1].startswith("device oven unavailable: ")


@pytest.mark.parametrize(("change", "message"), [
    ({"timeout": 2}, "timeout must be 0.3, not 2.0"),
    ({"name": "live"}, "used twice"),
])
def test_devices_on_one_connection_must_agree(change: dict[str, Any], message: str):
    with pytest.raises(ValidationError, match=message):
        ModbusConfig.model_validate({"devices": [
            device("live", 1502, POINTS[:1]),
            {**device("other", 1502, POINTS[:1], unit_id=2), **change},
        ]})


@pytest.mark.skipif(not shutil.which("socat"), reason="needs socat for a pty pair")
def test_rtu_over_a_pty_pair(tmp_path):
    client_end, server_end = tmp_path / "A", tmp_path / "B"
    config = ModbusConfig.model_validate({"devices": [{
        "name": "meter", "transport": "rtu", "serial_port": str(client_end),
        "baudrate": 19200, "unit_id": 3, "interval": INTERVAL, "timeout": 0.3, "retries": 0,
        "points": POINTS[:3],
    }]})

    async def main() -> Batches:
        socat = await asyncio.create_subprocess_exec(
            "socat", f"pty,raw,echo=0,link={client_end}", f"pty,raw,echo=0,link={server_end}",
            stderr=asyncio.subprocess.DEVNULL)
        try:
            async with asyncio.timeout(5):
                while not (client_end.exists() and server_end.exists()):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)  # a file appearing sets no event
            context = ModbusServerContext(devices={3: ModbusDeviceContext(
                hr=ModbusSequentialDataBlock(1, HOLDING))}, single=False)
            server = ModbusSerialServer(
                context, framer=FramerType.RTU, port=str(server_end), baudrate=19200)
            await server.serve_forever(background=True)
            try:
                return await poll_until(
                    ModbusCollector(config), lambda b: len(b.of("meter")) >= 2)
            finally:
                await server.shutdown()
        finally:
            socat.terminate()
            await socat.wait()

    batches = run(main())
    for batch in batches.of("meter"):
        assert [(r.metric, r.value) for r in batch if r.good] == [
            ("temp", 21.5), ("drift", -3.25), ("offset", -42.0)]
