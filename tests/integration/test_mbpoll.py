"""Cross-check: `mbpoll`, a Modbus master nobody here wrote, reads what we decode.

One pymodbus server holds known registers (packed with `struct`, not our encoder); mbpoll
reads each value on its own, then our collector reads them all, and the two must agree.
mbpoll knows 16-bit registers, 32-bit integers and floats in big-endian word order (`-B`,
our ABCD) or word-swapped (its default, our CDAB), which is what we compare.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from collector.modbus.config import ModbusConfig
from collector.modbus.poller import ModbusCollector
from tests.conftest import free_port
from tests.integration.modbus_peers import (
    INTERVAL,
    Batches,
    modbus_server,
    poll_until,
    pty_pair,
    run,
    serial_server,
    unit,
    words,
)

pytestmark = pytest.mark.skipif(
    not shutil.which("mbpoll"),
    reason="mbpoll is not installed: `apt-get install mbpoll` (scripts/services.sh does it)")

UNIT = 5


class Case(NamedTuple):
    metric: str
    point: dict[str, Any]   # our point's table, type and order
    mbpoll_type: str        # mbpoll -t
    big_endian: bool        # mbpoll -B
    registers: list[int]
    value: float            # what the registers hold


CASES = [
    Case("f32_abcd", {"type": "float32"}, "4:float", True, words("f", 21.5), 21.5),
    Case("f32_cdab", {"type": "float32", "order": "CDAB"}, "4:float", False,
         words("f", -1234.5)[::-1], -1234.5),
    Case("i16", {"type": "int16"}, "4", False, words("h", -42), -42),
    Case("u16", {"type": "uint16"}, "4", False, [54321], 54321),
    Case("u16_hex", {"type": "uint16"}, "4:hex", False, [0xBEEF], 0xBEEF),
    Case("i32_abcd", {"type": "int32"}, "4:int", True, words("i", -100_000), -100_000),
    Case("i32_cdab", {"type": "int32", "order": "CDAB"}, "4:int", False,
         words("i", 123_456_789)[::-1], 123_456_789),
    Case("in_f32", {"type": "float32", "table": "input"}, "3:float", True,
         words("f", 0.15625), 0.15625),
    Case("in_i16", {"type": "int16", "table": "input"}, "3", False, words("h", -32768),
         -32768),
]


def layout() -> tuple[dict[str, int], dict[str, list[int]]]:
    """Each case's address, and each table's registers, packed end to end."""
    addresses: dict[str, int] = {}
    tables: dict[str, list[int]] = {"holding": [], "input": []}
    for case in CASES:
        regs = tables[case.point.get("table", "holding")]
        addresses[case.metric] = len(regs)
        regs.extend(case.registers)
    return addresses, tables


_LINE = re.compile(r"^\[(\d+)\]:\s+(\S+)(?: \((-?\d+)\))?\s*$", re.MULTILINE)


def parse(case: Case, output: str) -> float:
    """The one value mbpoll printed: `[REF]: 21.5`, `[REF]: 0xBEEF`, `[REF]: 65494 (-42)`."""
    found = _LINE.findall(output)
    assert len(found) == 1, output
    _, text, signed = found[0]
    if case.mbpoll_type.endswith(":float"):
        return float(text)
    if case.mbpoll_type.endswith(":hex"):
        return int(text, 16)
    if case.point["type"] == "int16" and signed:  # 16-bit: "unsigned (signed)"
        return int(signed)
    return int(text)


async def mbpoll(case: Case, address: int, link: list[str]) -> float:
    """Run mbpoll once for one value; `link` is its mode options then host or device."""
    *options, target = link
    args = [*options, "-a", str(UNIT), "-r", str(address + 1), "-c", "1",  # -r is 1-based
            "-t", case.mbpoll_type, *(["-B"] if case.big_endian else []), "-1", target]
    proc = await asyncio.create_subprocess_exec(
        "mbpoll", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"mbpoll {' '.join(args)}:\n{text}"
    return parse(case, text)


@pytest.mark.parametrize("transport", [
    "tcp",
    pytest.param("rtu", marks=pytest.mark.skipif(not shutil.which("socat"),
                                                  reason="needs socat for a pty pair")),
])
def test_mbpoll_reads_what_we_decode(transport: str, tmp_path: Path):
    addresses, tables = layout()
    server_unit = unit(hr=tables["holding"], ir=tables["input"])
    port = free_port()
    if transport == "tcp":
        mb_link = ["-m", "tcp", "-p", str(port), "127.0.0.1"]
        ours: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    else:
        tty = str(tmp_path / "A")
        mb_link = ["-m", "rtu", "-b", "19200", "-P", "none", tty]
        ours = {"transport": "rtu", "serial_port": tty, "baudrate": 19200}
    config = ModbusConfig.model_validate({"devices": [{
        "name": "meter", "unit_id": UNIT, "interval": INTERVAL, "timeout": 0.5,
        "retries": 0, **ours,
        "points": [{"asset": "m", "metric": c.metric, "address": addresses[c.metric], **c.point}
                   for c in CASES],
    }]})

    async def read_both() -> tuple[dict[str, float], Batches]:
        # mbpoll first, then us: an RTU pty has room for one master at a time.
        theirs = {c.metric: await mbpoll(c, addresses[c.metric], mb_link)
                  for c in CASES}
        batches = await poll_until(ModbusCollector(config), lambda b: len(b.of("meter")) >= 1)
        return theirs, batches

    async def main() -> tuple[dict[str, float], Batches]:
        if transport == "tcp":
            async with modbus_server(port, units={UNIT: server_unit}):
                return await read_both()
        async with pty_pair(tmp_path) as (_, server_end), \
                serial_server(server_end, {UNIT: server_unit}):
            return await read_both()

    theirs, batches = run(main())
    readings = {r.metric: r for r in batches.of("meter")[0]}
    for case in CASES:
        reading = readings[case.metric]
        assert reading.quality.good, (case.metric, reading.quality)
        assert theirs[case.metric] == pytest.approx(reading.value, rel=1e-6), case.metric
        assert reading.value == case.value, case.metric  # and both are right
