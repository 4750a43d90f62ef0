"""Register decoding: known registers for every type and order, then properties against
an independent `struct` encoding."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.modbus.config import REGISTERS, ModbusPoint
from collector.modbus.decode import (
    NoValue,
    decode,
    decode_text,
    encode,
    encode_text,
    encode_value,
    raw_value,
)

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def point(**fields: Any) -> ModbusPoint:
    return ModbusPoint(asset="press1", metric="m", address=0, **fields)


# (type, value, {order: registers}) written out by hand, not computed.
KNOWN = [
    ("uint16", 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
    ("int16", -2, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("float16", 1.5, {"ABCD": [0x3E00], "CDAB": [0x3E00], "BADC": [0x003E], "DCBA": [0x003E]}),
    ("float32", 1.5, {
        "ABCD": [0x3FC0, 0x0000], "CDAB": [0x0000, 0x3FC0],
        "BADC": [0xC03F, 0x0000], "DCBA": [0x0000, 0xC03F]}),
    ("int32", 0x01020304, {
        "ABCD": [0x0102, 0x0304], "CDAB": [0x0304, 0x0102],
        "BADC": [0x0201, 0x0403], "DCBA": [0x0403, 0x0201]}),
    ("int32", -100000, {  # 0xFFFE7960
        "ABCD": [0xFFFE, 0x7960], "CDAB": [0x7960, 0xFFFE],
        "BADC": [0xFEFF, 0x6079], "DCBA": [0x6079, 0xFEFF]}),
    ("uint32", 0xDEADBEEF, {
        "ABCD": [0xDEAD, 0xBEEF], "CDAB": [0xBEEF, 0xDEAD],
        "BADC": [0xADDE, 0xEFBE], "DCBA": [0xEFBE, 0xADDE]}),
    ("int64", 0x0102030405060708, {
        "ABCD": [0x0102, 0x0304, 0x0506, 0x0708], "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
        "BADC": [0x0201, 0x0403, 0x0605, 0x0807], "DCBA": [0x0807, 0x0605, 0x0403, 0x0201]}),
    ("int64", -2, {
        "ABCD": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
        "BADC": [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF]}),
    ("uint64", 0x8000000000000001, {
        "ABCD": [0x8000, 0, 0, 0x0001], "CDAB": [0x0001, 0, 0, 0x8000],
        "BADC": [0x0080, 0, 0, 0x0100], "DCBA": [0x0100, 0, 0, 0x0080]}),
    ("float64", 1.5, {
        "ABCD": [0x3FF8, 0, 0, 0], "CDAB": [0, 0, 0, 0x3FF8],
        "BADC": [0xF83F, 0, 0, 0], "DCBA": [0, 0, 0, 0xF83F]}),
    ("float64", -273.15, {  # 0xC071126666666666
        "ABCD": [0xC071, 0x1266, 0x6666, 0x6666], "CDAB": [0x6666, 0x6666, 0x1266, 0xC071],
        "BADC": [0x71C0, 0x6612, 0x6666, 0x6666], "DCBA": [0x6666, 0x6666, 0x6612, 0x71C0]}),
]
KNOWN_CASES = [
    pytest.param(type_, order, regs[order], value, id=f"{type_}-{value}-{order}")
    for type_, value, regs in KNOWN
    for order in ORDERS
]


@pytest.mark.parametrize(("type_", "order", "registers", "value"), KNOWN_CASES)
def test_decode_known_registers(type_: str, order: str, registers: list[int], value: float):
    p = point(type=type_, order=order)
    assert raw_value(p, registers) == value
    assert decode(p, registers) == float(value)  # a float: 64-bit integers round


@pytest.mark.parametrize(("type_", "order", "registers", "value"), KNOWN_CASES)
def test_encode_known_registers(type_: str, order: str, registers: list[int], value: float):
    assert encode(point(type=type_, order=order), value) == registers


def test_64_bit_integers_keep_every_digit():
    regs = [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]
    assert raw_value(point(type="uint64"), regs) == 2**64 - 1
    assert encode(point(type="uint64"), 2**64 - 1) == regs
    assert encode(point(type="int64"), -(2**63)) == [0x8000, 0, 0, 0]


def test_scale_and_offset_apply_to_the_raw_value():
    p = point(type="uint16", scale=0.1, offset=-40)
    assert decode(p, [1000]) == pytest.approx(60.0)
    assert decode(point(type="int16", scale=2), [0xFFFF]) == -2.0
    assert decode(point(type="float32", scale=10, offset=1), [0x3FC0, 0]) == 16.0


def test_bool_register_is_zero_or_one():
    assert decode(point(type="bool"), [0]) == 0.0
    assert decode(point(type="bool"), [0x0500]) == 1.0
    assert encode(point(type="bool"), 1) == [1]


@pytest.mark.parametrize(("type_", "bit", "register", "expected"), [
    ("uint16", 0, 0b1010, 0.0),
    ("uint16", 1, 0b1010, 1.0),
    ("uint16", 3, 0b1010, 1.0),
    ("uint16", 15, 0x8000, 1.0),
    ("int16", 15, 0x8000, 1.0),
    ("int16", 14, 0x8000, 0.0),
    ("bool", 2, 0b0100, 1.0),
])
def test_bit_selects_one_bit_least_significant_first(type_, bit, register, expected):
    assert decode(point(type=type_, bit=bit), [register]) == expected


def test_bit_is_taken_after_byte_order():
    assert decode(point(type="uint16", bit=0, order="BADC"), [0x0100]) == 1.0
    assert decode(point(type="uint16", bit=8, order="BADC"), [0x0100]) == 0.0
    assert encode(point(type="uint16", bit=15), 1) == [0x8000]
    assert encode(point(type="int16", bit=15), 1) == [0x8000]
    assert encode(point(type="uint16", bit=3, order="DCBA"), 1) == [0x0800]


@pytest.mark.parametrize("table", ["coil", "discrete"])
def test_coils_and_discrete_inputs_are_zero_or_one(table: str):
    p = point(table=table, type="bool")
    assert decode(p, bits=[True, False, False, False, False, False, False, False]) == 1.0
    assert decode(p, bits=[False]) == 0.0
    assert encode(p, 1.0) == [1]
    with pytest.raises(ValueError):
        decode(p, bits=[])


def test_nan_value_marker_means_no_value():
    with pytest.raises(NoValue, match="65535"):
        decode(point(type="uint16", nan_value=65535), [0xFFFF])
    assert decode(point(type="uint16", nan_value=65535), [0xFFFE]) == 65534.0
    with pytest.raises(NoValue):
        decode(point(type="int16", nan_value=-32768, scale=0.1), [0x8000])
    with pytest.raises(NoValue):  # compared before scale
        decode(point(type="int32", nan_value=0x7FFFFFFF, scale=2), [0x7FFF, 0xFFFF])
    with pytest.raises(NoValue):  # compared to the whole register, before the bit
        decode(point(type="uint16", bit=0, nan_value=0xFFFF), [0xFFFF])


@pytest.mark.parametrize(("type_", "registers"), [
    ("float16", [0x7E00]),
    ("float32", [0x7FC0, 0x0000]),
    ("float32", [0xFFC0, 0x0001]),
    ("float64", [0x7FF8, 0, 0, 0]),
])
def test_float_nan_means_no_value(type_: str, registers: list[int]):
    with pytest.raises(NoValue):
        decode(point(type=type_), registers)


def test_no_value_is_a_value_error():
    assert issubclass(NoValue, ValueError)


def test_infinity_is_a_value():
    assert decode(point(type="float32"), [0x7F80, 0]) == math.inf


@pytest.mark.parametrize(("type_", "registers"), [
    ("float32", [0x3FC0]),
    ("uint16", [1, 2]),
    ("int64", [0, 0, 0]),
    ("uint16", []),
    ("uint16", None),
])
def test_wrong_register_count_is_an_error(type_: str, registers: list[int] | None):
    with pytest.raises(ValueError, match="registers"):
        decode(point(type=type_), registers)


def test_registers_out_of_range_are_an_error():
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode(point(type="uint16"), [65536])
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode(point(type="uint16"), [-1])


@pytest.mark.parametrize(("type_", "value"), [
    ("uint16", 65536), ("uint16", -1), ("int16", 32768), ("int32", 2**31),
    ("uint64", 2**64), ("uint16", 1.5), ("float16", 1e6),
])
def test_encode_rejects_values_the_type_cannot_hold(type_: str, value: float):
    with pytest.raises(ValueError):
        encode(point(type=type_), value)


def test_ascii_is_text_not_a_number():
    p = point(type="ascii", length=4)
    with pytest.raises(ValueError, match="decode_text"):
        decode(p, [0x4142, 0x3132])
    with pytest.raises(ValueError, match="encode_text"):
        encode(p, 1.0)
    with pytest.raises(ValueError, match="decode"):
        decode_text(point(type="uint16"), [0x4142])


@pytest.mark.parametrize(("order", "length", "registers", "text"), [
    ("ABCD", 4, [0x4142, 0x3132], "AB12"),
    ("BADC", 4, [0x4241, 0x3231], "AB12"),
    ("ABCD", 3, [0x4142, 0x4300], "ABC"),
    ("ABCD", 6, [0x4142, 0x0000, 0x0000], "AB"),
    ("ABCD", 4, [0x4120, 0x2020], "A"),
])
def test_ascii_text(order: str, length: int, registers: list[int], text: str):
    assert decode_text(point(type="ascii", length=length, order=order), registers) == text


@pytest.mark.parametrize("order", ORDERS)
def test_encode_text_pads_with_nul(order: str):
    p = point(type="ascii", length=5, order=order)
    assert decode_text(p, encode_text(p, "AB1")) == "AB1"
    assert encode_text(point(type="ascii", length=3), "ABC") == [0x4142, 0x4300]
    assert encode_text(point(type="ascii", length=4, order="BADC"), "AB1") == [0x4241, 0x0031]


def test_encode_text_rejects_text_longer_than_the_point():
    with pytest.raises(ValueError, match="longer"):
        encode_text(point(type="ascii", length=2), "ABC")


# --- properties against an independent struct encoding --------------------------------

FORMATS = {
    "int16": "h", "uint16": "H", "float16": "e",
    "int32": "i", "uint32": "I", "float32": "f",
    "int64": "q", "uint64": "Q", "float64": "d",
}
VALUES = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "float16": st.floats(width=16, allow_nan=False),
    "float32": st.floats(width=32, allow_nan=False),
    "float64": st.floats(allow_nan=False),
}


def struct_registers(type_: str, order: str, value: float) -> list[int]:
    """The registers a device in `order` sends, straight from struct's two byte orders."""
    fmt, words = FORMATS[type_], REGISTERS[type_]
    value_bytes = ">" if order in ("ABCD", "BADC") else "<"
    word_bytes = ">" if order in ("ABCD", "DCBA") else "<"
    return list(struct.unpack(f"{word_bytes}{words}H", struct.pack(value_bytes + fmt, value)))


typed_values = st.sampled_from(sorted(VALUES)).flatmap(
    lambda t: st.tuples(st.just(t), st.sampled_from(ORDERS), VALUES[t]))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                   math.copysign(1, b))


@given(typed_values)
def test_decode_agrees_with_struct(case: tuple[str, str, float]):
    type_, order, value = case
    assert same(raw_value(point(type=type_, order=order),
                          struct_registers(type_, order, value)), value)


@given(typed_values)
def test_encode_agrees_with_struct(case: tuple[str, str, float]):
    type_, order, value = case
    assert encode(point(type=type_, order=order), value) == struct_registers(type_, order, value)


@given(
    st.sampled_from(sorted(FORMATS)), st.sampled_from(ORDERS),
    st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
)
def test_any_registers_survive_a_round_trip(type_: str, order: str, regs: list[int]):
    p = point(type=type_, order=order)
    registers = regs[: REGISTERS[type_]]
    raw = raw_value(p, registers)
    if isinstance(raw, float) and math.isnan(raw):
        with pytest.raises(NoValue):
            decode(p, registers)
    else:
        assert encode(p, raw) == registers


@given(
    typed_values,
    st.floats(-1e3, 1e3, allow_nan=False).filter(lambda s: s != 0),
    st.floats(-1e3, 1e3, allow_nan=False),
)
def test_scale_and_offset_follow_the_raw_value(case, scale: float, offset: float):
    type_, order, value = case
    p = point(type=type_, order=order, scale=scale, offset=offset)
    result = decode(p, struct_registers(type_, order, value))
    assert same(result, float(value * scale + offset))


@pytest.mark.parametrize(("fields", "value"), [
    ({"type": "float32", "order": "CDAB"}, 7.25),
    ({"type": "uint32", "scale": 0.1}, 1234.5),
    ({"type": "int16", "scale": 0.1, "offset": -40}, -12.3),
    ({"type": "uint16", "bit": 3}, 1.0),
])
def test_encode_value_is_what_decode_reads_back(fields: dict, value: float) -> None:
    point = ModbusPoint(asset="a", metric="m", address=0, **fields)
    assert decode(point, registers=encode_value(point, value)) == pytest.approx(value)
