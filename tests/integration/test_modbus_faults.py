"""Devices that answer, but not with values: gateway exceptions and replies we cannot read.

A Modbus TCP gateway in front of an RS-485 bus answers for its devices; when one of them
is silent it sends exception 10 (path unavailable) or 11 (target failed to respond). That
is a silence, not an answer: it must count towards "device unavailable" and its backoff.
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from collector.modbus.config import ModbusConfig, ModbusDevice
from collector.modbus.plan import device_plan
from collector.modbus.poller import ModbusCollector, _Health
from tests.conftest import free_port
from tests.integration.modbus_peers import (
    INTERVAL,
    POLLER_LOG,
    Batches,
    by_metric,
    device,
    modbus_server,
    poll_until,
    run,
    words,
)

HOLDING = words("f", 21.5) + [7, 8] + [0] * 96 + [42]  # 0-1 float32, 2, 3, ... 100


class Gateway:
    """A server's `trace_pdu` hook: replies to reads starting at `addresses` become the
    gateway exception `code`, as a gateway sends for a device behind it that is silent."""

    def __init__(self, code: int, addresses: set[int] | None = None) -> None:
        self.code = code
        self.addresses = addresses
        self._asked: int | None = None

    def __call__(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self._asked = pdu.address
            return pdu
        if self.addresses is None or self._asked in self.addresses:
            return ExceptionResponse(pdu.function_code, self.code, device_id=pdu.dev_id,
                                     transaction=pdu.transaction_id)
        return pdu


POINTS = [
    {"asset": "m", "metric": "temp", "address": 0, "type": "float32"},
    {"asset": "m", "metric": "a", "address": 2},
    {"asset": "m", "metric": "far", "address": 100},
]


def test_a_gateway_saying_the_device_is_silent_makes_it_unavailable_with_backoff(caplog):
    port = free_port()
    config = ModbusConfig.model_validate({"devices": [device("meter", port, POINTS)]})

    async def main() -> Batches:
        async with modbus_server(port, hr=HOLDING, requests=Gateway(11)):  # type: ignore[arg-type]
            return await poll_until(ModbusCollector(config), lambda b: len(b.of("meter")) >= 4)

    with caplog.at_level(logging.DEBUG, logger=POLLER_LOG):
        batches = run(main())
    for batch in batches.of("meter"):
        assert len(batch) == 3
        for reading in batch:
            assert not reading.good and math.isnan(reading.value)
            assert "device meter (unit 1) unavailable" in reading.quality.reason
    first = batches.of("meter")[0][0].quality.reason
    assert "gateway exception 11 (GATEWAY_NO_RESPONSE)" in first
    assert first.endswith(f"; next try in {2 * INTERVAL:.1f}s")  # backoff, as for a timeout
    ours = [r for r in caplog.records if r.name == POLLER_LOG]
    assert [r.levelno for r in ours if r.levelno >= logging.INFO] == [logging.WARNING]


def test_a_gateway_exception_on_one_request_costs_only_its_points():
    port = free_port()
    config = ModbusConfig.model_validate({"devices": [device("meter", port, POINTS)]})
    assert len(device_plan(config.devices[0], config.devices[0].points)) == 2  # 0-2, 100

    async def main() -> Batches:
        async with modbus_server(port, hr=HOLDING, requests=Gateway(10, {100})):  # type: ignore[arg-type]
            return await poll_until(ModbusCollector(config), lambda b: len(b.of("meter")) >= 2)

    for batch in run(main()).of("meter"):
        readings = by_metric(batch)
        assert readings["temp"].good and readings["temp"].value == 21.5
        assert readings["a"].good and readings["a"].value == 7
        far = readings["far"]
        assert not far.good
        assert "meter (unit 1) holding 100: no answer" in far.quality.reason
        assert "GATEWAY_PATH_UNAVIABLE" in far.quality.reason


def test_a_reply_of_an_unexpected_shape_marks_its_point_bad_not_the_cycle():
    config = ModbusConfig.model_validate({"devices": [device("meter", 1502, POINTS[:2])]})
    dev: ModbusDevice = config.devices[0]
    (request,) = device_plan(dev, dev.points)
    collector = ModbusCollector(config)
    # pymodbus PDUs all carry a registers list; a future one might not, or carry None.
    odd = SimpleNamespace(registers=None, bits=None)
    reading = collector._point(dev, request, dev.points[0], odd, 1.0)  # type: ignore[arg-type]
    assert not reading.good and math.isnan(reading.value)
    assert reading.quality.reason.startswith("device meter (unit 1) holding 0: cannot decode "
                                             "the reply (TypeError: ")


def test_two_intervals_failing_on_one_try_count_one_failure():
    """A device's tasks (one per interval) share its health: failing together is one try."""
    config = ModbusConfig.model_validate({"devices": [device("meter", 1502, [
        POINTS[0], {**POINTS[1], "interval": 4 * INTERVAL}])]})
    health = _Health(config.devices[0])
    assert health.interval == INTERVAL
    assert health.failed("timeout", began=10.0) == pytest.approx(2 * INTERVAL)
    # The other task, on the same try: still one failure, the same next try.
    assert health.failed("timeout", began=10.01) == pytest.approx(2 * INTERVAL - 0.01)
    assert health.failures == 1
    assert health.failed("timeout", began=10.0 + 2 * INTERVAL) == pytest.approx(4 * INTERVAL)
    assert health.failures == 2
    health.answered()
    assert health.failed("timeout", began=10.5) == pytest.approx(2 * INTERVAL)
