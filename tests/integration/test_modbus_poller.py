"""The poller against real pymodbus servers on loopback: TCP, RTU over TCP, RTU on a pty."""

from __future__ import annotations

import itertools
import logging
import math
import shutil
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pymodbus import FramerType

from collector.modbus.config import ModbusConfig, ModbusPoint
from collector.modbus.decode import encode, encode_text
from collector.modbus.poller import ModbusCollector
from tests.conftest import free_port
from tests.integration.modbus_peers import (
    INTERVAL,
    POLLER_LOG,
    Batches,
    Request,
    Requests,
    by_metric,
    counter,
    deaf_to,
    device,
    modbus_server,
    peer,
    poll_until,
    pty_pair,
    run,
    serial_server,
    silent_server,
    slow_relay,
    unit,
    words,
)

NEEDS_SOCAT = pytest.mark.skipif(not shutil.which("socat"), reason="needs socat for a pty pair")


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
    {"asset": "oven1", "metric": "estop", "table": "discrete", "address": 0, "type": "bool"},
    {"asset": "oven1", "metric": "guard", "table": "discrete", "address": 1, "type": "bool"},
]
DISCRETE = [True, False]                   # 0 estop, 1 guard
EXPECTED = {
    "temp": 21.5, "drift": -3.25, "offset": -42.0, "scaled": 25.3, "count": 100_000.0,
    "door_open": 1.0, "alarm": 0.0, "flow": 1234.0, "ratio": 0.5, "running": 1.0,
    "estop": 1.0, "guard": 0.0,
}


def test_values_are_decoded_from_a_real_server():
    port = free_port()
    config = ModbusConfig.model_validate({"devices": [device("oven", port, POINTS)]})
    collector = ModbusCollector(config, clock=counter(1000.0))

    async def main() -> Batches:
        async with modbus_server(port, hr=HOLDING, ir=INPUT, co=[False, True], di=DISCRETE):
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
    # a schedule, not a burst: a poll a loaded machine made late is followed by one on
    # time, so a gap may be short by that lateness; polls in a burst are milliseconds apart
    assert all(gap > INTERVAL / 4 for gap in gaps), gaps


def test_each_interval_keeps_its_own_schedule_however_slow_the_device():
    """A point may poll faster than its device, and each interval runs on its own
    schedule, start + k * interval, however long its reads take: a poller that slept an
    interval after each cycle would fall `delay` behind on every cycle."""
    server_port, relay_port = free_port(), free_port()
    fast, slow, delay = INTERVAL / 2, INTERVAL, 0.03
    # The two intervals share one client, so on the ticks they share one read waits for
    # the other. Which goes first is a near tie (microseconds apart), and the second comes
    # up to `delay` late, since both reads fit in the fast interval: that lateness does not
    # add up; a drift would, `delay` a cycle. A read may be up to `allowed` late (a loaded
    # machine's scheduling), which a drift passes by the fifth cycle of the 9 or more here.
    allowed = 4 * delay
    config = ModbusConfig.model_validate({"devices": [device("oven", relay_port, [
        {**POINTS[0], "interval": fast},  # temp
        POINTS[2],                        # offset, on the device's interval
    ])]})

    async def main() -> Batches:
        async with modbus_server(server_port, hr=HOLDING), \
                slow_relay(relay_port, server_port, delay):
            return await poll_until(ModbusCollector(config),
                                    lambda b: len(b.times("oven", "offset")) > 8)

    batches = run(main())
    for batch in batches.of("oven"):  # one batch per interval, each with its own points
        assert [(r.metric, r.value, r.good) for r in batch] in (
            [("temp", 21.5, True)], [("offset", -42.0, True)])
    for metric, interval in (("temp", fast), ("offset", slow)):
        times = batches.times("oven", metric)
        late = [round(at - times[0] - k * interval, 3) for k, at in enumerate(times)]
        assert all(abs(lag) <= allowed for lag in late), f"{metric} late by {late}"
    fast_count = len(batches.times("oven", "temp"))
    slow_count = len(batches.times("oven", "offset"))
    assert 2 * slow_count - 2 <= fast_count <= 2 * slow_count + 1, (fast_count, slow_count)


def test_a_dead_device_is_bad_and_the_live_one_keeps_delivering(caplog):
    live_port, dead_port = free_port(), free_port()
    config = ModbusConfig.model_validate({"devices": [
        device("live", live_port, POINTS[:1]),
        device("dead", dead_port, POINTS[1:3], unit_id=7),
    ]})

    async def main() -> Batches:
        async with modbus_server(live_port, hr=HOLDING):
            # Backoff tries the dead device on ticks 0, 2, 6...: 7 cycles hold a repeat.
            return await poll_until(
                ModbusCollector(config),
                lambda b: len(b.of("live")) >= 3 and len(b.of("dead")) >= 7)

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
    assert sum(r.levelno == logging.DEBUG for r in ours) >= 1  # the repeats
    assert not any("live" in r.getMessage() for r in ours)


@NEEDS_SOCAT
@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_an_exception_reply_marks_only_its_point_bad(transport: str, tmp_path: Path, caplog):
    points = [POINTS[0], {"asset": "oven1", "metric": "ghost", "address": 500}, POINTS[2]]
    requests = Requests()

    async def main() -> Batches:
        async with peer(transport, tmp_path) as far, \
                far.serve({1: unit(hr=HOLDING)}, requests=requests):
            config = ModbusConfig.model_validate({"devices": [
                device("oven", far.where, points)]})
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
    # The refused read went on its own, every cycle, beside the two that were answered.
    cycle = [Request(1, 3, 0, 2), Request(1, 3, 4, 1), Request(1, 3, 500, 1)]
    assert requests.seen[: 2 * len(cycle)] == cycle * 2
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


def test_one_unanswered_request_costs_only_its_own_points():
    server_port, proxy_port = free_port(), free_port()
    points = [POINTS[0], POINTS[2], POINTS[3]]  # address 0, then 4-5 (one merged request)
    config = ModbusConfig.model_validate({"devices": [
        device("oven", proxy_port, points, timeout=0.2)]})

    async def main() -> Batches:
        async with modbus_server(server_port, hr=HOLDING), \
                deaf_to(proxy_port, server_port, address=0):
            return await poll_until(ModbusCollector(config),
                                    lambda b: len(b.of("oven")) >= 3)

    for batch in run(main()).of("oven"):
        readings = by_metric(batch)
        assert not readings["temp"].good
        assert "oven (unit 1) holding 0: no answer" in readings["temp"].quality.reason
        assert readings["offset"].good and readings["offset"].value == -42
        assert readings["scaled"].good


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
    # The first failure waits two intervals, and so does the first after the recovery:
    # a success resets the backoff.
    for batch in (batches.of("oven")[0], batches.of("oven")[-1]):
        assert batch[0].quality.reason.endswith(f"; next try in {2 * INTERVAL:.1f}s")


@NEEDS_SOCAT
@pytest.mark.parametrize("transport", ["tcp", "rtu"])
def test_a_device_that_stops_and_starts_again_is_logged_once(
        transport: str, tmp_path: Path, caplog):
    """Over TCP the port closes and opens again; over RTU the bus (the pty pair) stays and
    only the device stops answering, until a new server answers on the same pty end."""
    units = {1: unit(hr=HOLDING)}

    def last_good(batches: Batches) -> bool:
        return batches.of("oven")[-1][0].good

    def failed_twice(batches: Batches) -> bool:  # the outage's second try: debug, no warning
        reason = batches.of("oven")[-1][0].quality.reason
        return reason.endswith(f"; next try in {4 * INTERVAL:.1f}s")

    async def main() -> Batches:
        async with peer(transport, tmp_path) as far, AsyncExitStack() as first:
            await first.enter_async_context(far.serve(units))  # up before the first poll

            async def outage(batches: Batches) -> None:
                await batches.until(lambda b: len(b.of("oven")) >= 2)
                await first.aclose()  # the device stops
                await batches.until(failed_twice)
                async with far.serve(units):  # and starts again
                    await batches.until(last_good)
                    back = len(batches.of("oven"))
                    await batches.until(lambda b: len(b.of("oven")) >= back + 2)

            config = ModbusConfig.model_validate({"devices": [
                device("oven", far.where, POINTS[:1])]})
            return await poll_until(ModbusCollector(config), lambda b: True, during=outage)

    with caplog.at_level(logging.DEBUG, logger=POLLER_LOG):
        batches = run(main())
    oven = [batch[0] for batch in batches.of("oven")]
    assert [good for good, _ in itertools.groupby(r.good for r in oven)] == [True, False, True]
    for reading in oven:
        if reading.good:
            assert reading.value == 21.5
        else:
            assert "device oven (unit 1) unavailable: " in reading.quality.reason
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == POLLER_LOG]
    assert [m for m in messages if m[0] == logging.INFO] == [
        (logging.INFO, "device oven recovered")]
    warnings = [text for level, text in messages if level == logging.WARNING]
    assert len(warnings) == 1, warnings  # the second failed try is a debug line
    assert warnings[0].startswith("device oven unavailable: ")
    assert [level for level, _ in messages] == [logging.WARNING, logging.DEBUG, logging.INFO]


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




# --- every type and order, over every transport ------------------------------------------

ORDERS = ("ABCD", "DCBA", "BADC", "CDAB")
VALUES: dict[str, float] = {
    "int16": -12345, "uint16": 54321, "float16": -2.5, "bool": 1,
    "int32": -123_456_789, "uint32": 3_000_000_000, "float32": 21.5,
    "int64": -1_234_567_890_123, "uint64": 2**63 + 12345, "float64": -273.15,
}
TEXT = "PATROL-7"
HAND_WRITTEN: list[tuple[str, str, list[int], float]] = [  # not computed by encode()
    ("float32", "CDAB", [0x0000, 0x3FC0], 1.5),
    ("int32", "BADC", [0x0201, 0x0403], 0x01020304),
    ("uint16", "DCBA", [0x3412], 0x1234),
    ("uint32", "CDAB", [0xBEEF, 0xDEAD], 0xDEADBEEF),
    ("float64", "DCBA", [0x6666, 0x6666, 0x6612, 0x71C0], -273.15),
    ("int16", "BADC", [0xFEFF], -2),
    ("float16", "ABCD", [0xC100], -2.5),
    ("float16", "BADC", [0x00C1], -2.5),
    ("float16", "CDAB", [0xC100], -2.5),   # one word: nothing to swap
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
    ("int64", "BADC", [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], -2),
    ("uint64", "DCBA", [0x0807, 0x0605, 0x0403, 0x0201], 0x0102030405060708),
    ("uint64", "CDAB", [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708),
    ("float64", "ABCD", [0x3FF8, 0x0000, 0x0000, 0x0000], 1.5),
    ("float64", "CDAB", [0x0000, 0x0000, 0x0000, 0x3FF8], 1.5),
]
COILS, DISCRETES = [True, False], [False, True, True]  # bits beside the registers


def type_map() -> tuple[list[dict[str, Any]], list[int], dict[str, float | str]]:
    """Points of every type in every order, packed end to end from address 0: the points,
    the registers a device holds for them, and each metric's expected value (or text)."""
    points: list[dict[str, Any]] = []
    registers: list[int] = []
    expected: dict[str, float | str] = {}

    def add(metric: str, type_: str, order: str, regs: list[int], value: float | str,
            **more: Any) -> None:
        points.append({"asset": "rig", "metric": metric, "address": len(registers),
                       "type": type_, "order": order, **more})
        registers.extend(regs)
        expected[metric] = value

    for type_, value in VALUES.items():
        for order in ORDERS:
            spec = ModbusPoint(asset="rig", metric="m", address=0, type=type_, order=order)
            add(f"{type_}_{order}", type_, order, encode(spec, value), float(value))
    for order in ORDERS:
        spec = ModbusPoint(asset="rig", metric="m", address=0, type="ascii", order=order,
                           length=len(TEXT))
        add(f"ascii_{order}", "ascii", order, encode_text(spec, TEXT), TEXT, length=len(TEXT))
    for n, (type_, order, regs, value) in enumerate(HAND_WRITTEN):
        add(f"hand{n}_{type_}_{order}", type_, order, regs, float(value))
    return points, registers, expected


@NEEDS_SOCAT
@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp", "rtu"])
def test_every_type_and_order_over_each_transport(transport: str, tmp_path: Path):
    """Two units share one connection (a gateway, a bus); reads are cut at max_registers."""
    points, registers, expected = type_map()
    assert len(registers) > 100  # so max_registers 40 really cuts the map into reads
    for table, bits in (("coil", COILS), ("discrete", DISCRETES)):
        for address, bit in enumerate(bits):
            points.append({"asset": "rig", "metric": f"{table}{address}", "table": table,
                           "address": address, "type": "bool"})
            expected[f"{table}{address}"] = float(bit)
    units = {3: unit(hr=registers, co=COILS, di=DISCRETES), 4: unit(hr=[4242])}
    port = free_port()
    link: dict[str, Any] = (
        {"serial_port": str(tmp_path / "A"), "baudrate": 19200} if transport == "rtu"
        else {"host": "127.0.0.1", "port": port})
    common = {"transport": transport, "interval": INTERVAL, "timeout": 0.5, "retries": 0,
              **link}
    config = ModbusConfig.model_validate({"devices": [
        {"name": "rig", "unit_id": 3, "max_registers": 40, "points": points, **common},
        {"name": "other", "unit_id": 4, **common,
         "points": [{"asset": "rig2", "metric": "count", "address": 0}]},
    ]})
    requests = Requests()

    async def main() -> Batches:
        def done(b: Batches) -> bool:
            return len(b.of("rig")) >= 2 and len(b.of("other")) >= 2

        if transport == "rtu":
            async with pty_pair(tmp_path) as (_, server_end), \
                    serial_server(server_end, units, requests=requests):
                return await poll_until(ModbusCollector(config), done)
        framer = FramerType.RTU if transport == "rtu_over_tcp" else FramerType.SOCKET
        async with modbus_server(port, units=units, framer=framer, requests=requests):
            return await poll_until(ModbusCollector(config), done)

    batches = run(main())
    for batch in batches.of("rig"):
        readings = by_metric(batch)
        assert set(readings) == set(expected)
        for metric, value in expected.items():
            reading = readings[metric]
            assert reading.quality.good, (metric, reading.quality)
            if isinstance(value, str):
                assert reading.extra == {"text": value}, metric
            else:
                assert reading.value == value, metric
    for batch in batches.of("other"):
        assert [(r.metric, r.value) for r in batch] == [("count", 4242.0)]
    reads = sorted({r for r in requests.seen if r.unit == 3 and r.function == 3})
    assert {a for r in reads for a in range(r.address, r.address + r.count)} == set(
        range(len(registers)))
    assert all(r.count <= 40 for r in reads)
    assert len(reads) <= math.ceil(len(registers) / 40) + 1, reads
    bit_reads = {r for r in requests.seen if r.unit == 3 and r.function in (1, 2)}
    assert bit_reads == {Request(3, 1, 0, len(COILS)), Request(3, 2, 0, len(DISCRETES))}


# --- request planning on the wire --------------------------------------------------------


def test_points_are_merged_into_the_planned_requests():
    port = free_port()
    points = [
        {"asset": "a", "metric": "t", "address": 0, "type": "float32"},
        {"asset": "a", "metric": "u", "address": 2},
        {"asset": "a", "metric": "v", "address": 5},          # 2 unused registers before
        {"asset": "a", "metric": "w", "address": 5, "bit": 3},  # shares register 5
        {"asset": "a", "metric": "x", "address": 20, "type": "float32"},
        {"asset": "a", "metric": "i", "table": "input", "address": 0},
        {"asset": "a", "metric": "c1", "table": "coil", "address": 1, "type": "bool"},
        {"asset": "a", "metric": "c3", "table": "coil", "address": 3, "type": "bool"},
    ]
    config = ModbusConfig.model_validate({"devices": [
        device("plc", port, points, max_gap=2)]})
    requests = Requests()

    async def main() -> Batches:
        async with modbus_server(port, hr=[7] * 30, ir=[8], co=[True] * 5,
                                 requests=requests):
            return await poll_until(ModbusCollector(config), lambda b: len(b.of("plc")) >= 3)

    batches = run(main())
    planned = [Request(1, 3, 0, 6), Request(1, 3, 20, 2), Request(1, 4, 0, 1),
               Request(1, 1, 1, 3)]
    assert requests.seen == planned * len(batches.of("plc"))  # 4 reads a cycle, not 8
    for batch in batches.of("plc"):
        assert all(r.good for r in batch) and len(batch) == len(points)


def test_a_refused_merged_read_is_split_so_holes_blank_only_themselves(caplog):
    port = free_port()
    mapped = {0: [0x41AC, 0x0000, 11], 10: [12], 20: [20, 21], 23: [23]}  # 22 is a hole
    points = [
        {"asset": "a", "metric": "t", "address": 0, "type": "float32"},
        {"asset": "a", "metric": "u", "address": 2},
        {"asset": "a", "metric": "v", "address": 10},
        {"asset": "a", "metric": "p", "address": 20},
        {"asset": "a", "metric": "q", "address": 21},
        {"asset": "a", "metric": "ghost", "address": 22},
        {"asset": "a", "metric": "r", "address": 23},
    ]
    config = ModbusConfig.model_validate({"devices": [
        device("plc", port, points, max_gap=8)]})
    requests = Requests()

    async def main() -> Batches:
        async with modbus_server(port, hr=mapped, requests=requests):
            return await poll_until(ModbusCollector(config), lambda b: len(b.of("plc")) >= 3)

    with caplog.at_level(logging.DEBUG, logger=POLLER_LOG):
        batches = run(main())
    for batch in batches.of("plc"):
        values = {r.metric: r.value for r in batch if r.good}
        assert values == {"t": 21.5, "u": 11, "v": 12, "p": 20, "q": 21, "r": 23}
        ghost = by_metric(batch)["ghost"]
        assert not ghost.good
        for part in ("device plc", "unit 1", "holding 22", "2 (ILLEGAL_ADDRESS)"):
            assert part in ghost.quality.reason, ghost.quality.reason
    first = [Request(1, 3, 0, 11), Request(1, 3, 0, 3), Request(1, 3, 10, 1),
             Request(1, 3, 20, 4), *(Request(1, 3, a, 1) for a in (20, 21, 22, 23))]
    later = [Request(1, 3, 0, 3), Request(1, 3, 10, 1),
             *(Request(1, 3, a, 1) for a in (20, 21, 22, 23))]
    assert requests.seen == first + later * (len(batches.of("plc")) - 1)  # split once, for good
    infos = [r.getMessage() for r in caplog.records
             if r.name == POLLER_LOG and r.levelno == logging.INFO]
    assert infos == [
        "device plc (unit 1): holding 0-10 (11 registers, 7 unused) refused with exception "
        "2 (ILLEGAL_ADDRESS); reading it as 2 requests from now on: "
        "holding 0-2 (3 registers), holding 10 (1 register)",
        "device plc (unit 1): holding 20-23 (4 registers) refused with exception 2 "
        "(ILLEGAL_ADDRESS); reading it as 4 requests from now on: holding 20 (1 register), "
        "holding 21 (1 register), holding 22 (1 register), holding 23 (1 register)",
    ]


def test_a_device_that_does_not_answer_is_tried_less_and_less_often():
    port = free_port()
    config = ModbusConfig.model_validate({"devices": [
        device("mute", port, POINTS[:1], interval=0.05, timeout=0.03)]})
    received: list[bytes] = []

    async def main() -> Batches:
        async with silent_server(port, received):
            return await poll_until(ModbusCollector(config), lambda b: len(b.of("mute")) >= 16)

    batches = run(main())
    tries = len(b"".join(received)) // 12  # one 12-byte Modbus/TCP read request a try
    # Without backoff 16 cycles would be 16 tries; with it ticks 0, 2, 6 and 14.
    assert 2 <= tries <= 6, tries
    for batch in batches.of("mute"):
        (reading,) = batch  # every cycle still reports the point, as bad
        assert not reading.good
        assert "device mute (unit 1) unavailable: " in reading.quality.reason
        assert "; next try in " in reading.quality.reason
