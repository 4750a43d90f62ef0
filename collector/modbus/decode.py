"""Registers to values and back: every byte and word order, in one place, with `struct`.

Registers arrive as 16-bit integers. We lay them out big-endian, reorder the bytes into
ABCD (big-endian) order and let `struct` read the type. Orders name how the device lays
out the bytes of a big-endian value A B C D (E F G H for 64 bits):

- ABCD: big endian.                    CDAB: words swapped, bytes big-endian in each.
- DCBA: little endian (all reversed).  BADC: bytes swapped in each word, words in order.

A single-register type has one word: ABCD and CDAB read it as is, BADC and DCBA swap its
two bytes. The reorder is its own inverse, so `encode` uses the same function.
"""

from __future__ import annotations

import math
import struct

from collector.errors import DecodeError, NoValue
from collector.modbus.config import ModbusPoint, Order

_FORMATS = {
    "int16": "h", "uint16": "H", "float16": "e", "bool": "H",
    "int32": "i", "uint32": "I", "float32": "f",
    "int64": "q", "uint64": "Q", "float64": "d",
}
_FLOATS = frozenset("efd")


def _reorder(data: bytes, order: Order) -> bytes:
    """Bytes in `order` to ABCD order, or back: the permutation is an involution."""
    if order in ("BADC", "DCBA"):
        data = bytes(data[i ^ 1] for i in range(len(data)))
    if order in ("CDAB", "DCBA"):
        data = b"".join(data[i : i + 2] for i in range(len(data) - 2, -1, -2))
    return data


def _to_bytes(point: ModbusPoint, registers: list[int] | None) -> bytes:
    if registers is None or len(registers) != point.count:
        got = "none" if registers is None else len(registers)
        raise DecodeError(f"{point.type} at {point.address} needs {point.count} registers, "
                         f"got {got}")
    try:
        data = struct.pack(f">{len(registers)}H", *registers)
    except struct.error as exc:
        raise DecodeError(f"registers must be 0..65535: {registers}") from exc
    return _reorder(data, point.order)


def _to_registers(point: ModbusPoint, data: bytes) -> list[int]:
    data = _reorder(data, point.order)
    return list(struct.unpack(f">{len(data) // 2}H", data))


def raw_value(point: ModbusPoint, registers: list[int] | None) -> int | float:
    """The number the registers hold as the point's type, before bit, scale and offset."""
    if point.type == "ascii":
        raise DecodeError("an ascii point holds text: use decode_text")
    (raw,) = struct.unpack(">" + _FORMATS[point.type], _to_bytes(point, registers))
    return raw


def decode(
    point: ModbusPoint, registers: list[int] | None = None, bits: list[bool] | None = None
) -> float:
    """The point's value: raw (or its bit) * scale + offset; NoValue for the nan marker."""
    if point.table in ("coil", "discrete"):
        if not bits:
            raise DecodeError(f"{point.table} {point.address}: no bit in the response")
        raw: int | float = int(bool(bits[0]))
    else:
        raw = raw_value(point, registers)
    if isinstance(raw, float) and math.isnan(raw):
        raise NoValue("the device sent NaN")
    if point.nan_value is not None and raw == point.nan_value:
        raise NoValue(f"raw value {raw} is the device's 'no value' marker")
    if point.bit is not None:
        raw = (int(raw) >> point.bit) & 1
    elif point.type == "bool":
        raw = int(raw != 0)
    return float(raw * point.scale + point.offset)


def encode(point: ModbusPoint, value: float) -> list[int]:
    """Registers (or one bit as 0/1, for coils) that hold raw `value`: decode's inverse."""
    if point.table in ("coil", "discrete"):
        return [int(bool(value))]
    if point.type == "ascii":
        raise DecodeError("an ascii point holds text: use encode_text")
    fmt = _FORMATS[point.type]
    if point.bit is not None:
        fmt, value = "H", (1 << point.bit) if value else 0
    elif point.type == "bool":
        value = int(bool(value))
    elif fmt not in _FLOATS:
        if not float(value).is_integer():
            raise DecodeError(f"{point.type} holds whole numbers, not {value}")
        value = int(value)
    try:
        data = struct.pack(">" + fmt, value)
    except (struct.error, OverflowError) as exc:
        raise DecodeError(f"{value} does not fit in {point.type}") from exc
    return _to_registers(point, data)


def decode_text(point: ModbusPoint, registers: list[int]) -> str:
    """An ascii point's text: `length` characters, trailing NULs and spaces dropped."""
    if point.type != "ascii":
        raise DecodeError(f"a {point.type} point holds a number: use decode")
    data = _to_bytes(point, registers)[: point.length]
    return data.decode("ascii", errors="replace").rstrip("\x00 ")


def encode_value(point: ModbusPoint, value: float) -> list[int]:
    """Registers holding `value` in engineering units (scale, offset and bit undone):
    what a simulator or a test server writes for `decode` to read back `value`."""
    raw = (value - point.offset) / point.scale
    if point.bit is not None:
        return [int(raw) << point.bit]
    return encode(point, raw if point.type.startswith("float") else round(raw))


def encode_text(point: ModbusPoint, text: str) -> list[int]:
    """Registers holding `text` for an ascii point, NUL-padded: decode_text's inverse."""
    if point.type != "ascii":
        raise DecodeError(f"a {point.type} point holds a number: use encode")
    data = text.encode("ascii")
    if len(data) > (point.length or 0):
        raise DecodeError(f"{text!r} is longer than {point.length} characters")
    return _to_registers(point, data.ljust(point.count * 2, b"\x00"))
