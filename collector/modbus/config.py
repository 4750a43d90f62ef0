"""site.yaml `modbus:` section, checked at start so a bad map never reaches a device."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collector.errors import SettingError
from common.config_types import Duration

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float16", "float32", "float64", "bool", "ascii",
]
Order = Literal["ABCD", "DCBA", "BADC", "CDAB"]
Transport = Literal["tcp", "rtu", "rtu_over_tcp"]

REGISTERS = {
    "int16": 1, "uint16": 1, "float16": 1, "bool": 1,
    "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}
"""16-bit registers each type occupies (ascii: `length` characters, two per register)."""


MIN_INTERVAL = 0.01
"""Seconds: a shorter poll interval is a typo (a busy loop), not a plan."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModbusPoint(_Strict):
    """One value on a device: where it lives and how to turn registers into a float."""

    asset: str
    metric: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    table: Table = "holding"
    address: int = Field(ge=0, le=65535, description="0-based protocol address")
    type: DataType = "uint16"
    order: Order = "ABCD"
    bit: int | None = Field(None, ge=0, le=15, description="one bit of a 16-bit register")
    length: int | None = Field(None, ge=1, le=250, description="ascii: characters")
    scale: float = Field(1.0, allow_inf_nan=False)
    offset: float = Field(0.0, allow_inf_nan=False)
    nan_value: float | None = Field(None, allow_inf_nan=False,
                                    description="raw value the device sends for 'none'")
    unit: str = ""
    interval: Duration | None = Field(None, ge=MIN_INTERVAL, description="overrides the device's")

    @property
    def count(self) -> int:
        """How many registers (or bits, for coil and discrete tables) the point reads."""
        if self.table in ("coil", "discrete"):
            return 1
        if self.type == "ascii":
            return ((self.length or 0) + 1) // 2
        return REGISTERS[self.type]

    @model_validator(mode="after")
    def _fits(self) -> Self:
        bit_table = self.table in ("coil", "discrete")
        if bit_table and self.type != "bool":
            raise SettingError(f"a {self.table} point holds one bit: type must be bool, "
                             f"not {self.type}")
        if self.bit is not None and self.type not in ("int16", "uint16", "bool"):
            raise SettingError(f"bit selects one bit of a 16-bit register; type {self.type} "
                             "is wider: use uint16 or bool")
        if self.bit is not None and bit_table:
            raise SettingError("bit applies to holding and input registers, not coils")
        if self.type == "ascii" and self.length is None:
            raise SettingError("an ascii point needs length (characters)")
        if self.type != "ascii" and self.length is not None:
            raise SettingError("length applies to ascii points only")
        if self.scale == 0:
            raise SettingError("scale 0 would make every reading 0")
        numeric = {"scale", "offset", "nan_value"} & self.model_fields_set
        if self.type == "ascii" and numeric:
            raise SettingError(f"{', '.join(sorted(numeric))}: an ascii point holds text, "
                             "not a number")
        if bit_table and "order" in self.model_fields_set:
            raise SettingError(f"order applies to registers; a {self.table} is one bit")
        if self.address + self.count - 1 > 65535:
            raise SettingError(f"address {self.address} + {self.count} registers of "
                             f"{self.type} runs past 65535")
        return self


class ModbusDevice(_Strict):
    """One unit id on one connection (TCP host, serial port, or RTU frames over TCP)."""

    name: str
    transport: Transport = "tcp"
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial_port: str | None = None
    baudrate: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: int = Field(1, ge=0, le=247)
    interval: Duration = Field(5.0, ge=MIN_INTERVAL)
    timeout: Duration = Field(1.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    max_gap: int = Field(0, ge=0, le=65535, description=(
        "unused registers (or bits) one read may span to serve two points; 0 merges only "
        "adjacent points, because reading an unmapped register fails on some devices"))
    max_registers: int = Field(125, ge=1, le=125, description="registers per read")
    max_bits: int = Field(2000, ge=1, le=2000, description="coils or inputs per read")
    points: list[ModbusPoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _transport(self) -> Self:
        if self.transport in ("tcp", "rtu_over_tcp") and not self.host:
            raise SettingError(f"device {self.name!r}: transport {self.transport} needs host")
        if self.transport == "rtu" and not self.serial_port:
            raise SettingError(f"device {self.name!r}: transport rtu needs serial_port")
        if self.transport == "rtu" and self.unit_id == 0:
            raise SettingError(f"device {self.name!r}: unit_id 0 is the RTU broadcast address, "
                             "which no device answers: use the device's own id (1-247)")
        return self

    @model_validator(mode="after")
    def _points_fit_and_agree(self) -> Self:
        """A point must fit in one read, and points reading one register read it alike."""
        for point in self.points:
            if point.table in ("holding", "input") and point.count > self.max_registers:
                raise SettingError(
                    f"point {point.metric} at {point.address} needs {point.count} registers "
                    f"but device {self.name!r} reads at most {self.max_registers} at once")
        for table in ("holding", "input"):
            ranked = sorted(((p.address, p.count, i) for i, p in enumerate(self.points)
                             if p.table == table))
            for n, (address, count, i) in enumerate(ranked):
                for other_address, _, j in ranked[n + 1 :]:
                    if other_address >= address + count:
                        break
                    point, other = self.points[min(i, j)], self.points[max(i, j)]
                    if (conflict := _disagreement(point, other)) is not None:
                        raise SettingError(
                            f"{table} points {point.metric} (address {point.address}) and "
                            f"{other.metric} (address {other.address}) overlap but disagree "
                            f"on {conflict}: points that share registers must have the same "
                            "address, count, type and order (bits may differ)")
        return self


def _disagreement(a: ModbusPoint, b: ModbusPoint) -> str | None:
    """What two overlapping register points disagree on, or None if they read alike.

    A point that takes one bit of a register (`bit`, or a bool) reads the register
    whatever its type, so only full-register points compare types.
    """
    for name in ("address", "count", "order"):
        if getattr(a, name) != getattr(b, name):
            return name
    if _full_type(a) and _full_type(b) and a.type != b.type:
        return "type"
    return None


def _full_type(point: ModbusPoint) -> bool:
    return point.bit is None and point.type != "bool"


_SHARED = {
    "tcp": ("transport", "timeout", "retries"),
    "rtu_over_tcp": ("transport", "timeout", "retries"),
    "rtu": ("timeout", "retries", "baudrate", "parity", "stopbits", "bytesize"),
}
"""Settings of the one client behind a connection: devices sharing it must agree."""


def endpoint_of(device: ModbusDevice) -> str:
    """Where the device's client connects: `host:port` or the serial port."""
    if device.transport == "rtu":
        return device.serial_port or ""
    return f"{device.host}:{device.port}"


def connection_of(device: ModbusDevice) -> str:
    """The connection a device is reached through, e.g. `tcp 10.0.0.5:502`."""
    return f"{device.transport} {endpoint_of(device)}"


class ModbusConfig(_Strict):
    devices: list[ModbusDevice] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shared_connections(self) -> Self:
        """Devices on one TCP endpoint or serial bus share one client, so its settings."""
        first: dict[str, ModbusDevice] = {}
        names: set[str] = set()
        for device in self.devices:
            if device.name in names:
                raise SettingError(f"device name {device.name!r} is used twice")
            names.add(device.name)
            other = first.setdefault(endpoint_of(device), device)
            for setting in _SHARED[other.transport]:
                mine, theirs = getattr(device, setting), getattr(other, setting)
                if mine != theirs:
                    raise SettingError(
                        f"device {device.name!r} shares {connection_of(other)} with device "
                        f"{other.name!r}, so its {setting} must be {theirs}, not {mine}")
        return self
