"""site.yaml `modbus:` section, checked at start so a bad map never reaches a device."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collector.units import Duration

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float16", "float32", "float64", "bool", "ascii",
]
Order = Literal["ABCD", "DCBA", "BADC", "CDAB"]

REGISTERS = {
    "int16": 1, "uint16": 1, "float16": 1, "bool": 1,
    "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}
"""16-bit registers each type occupies (ascii: `length` characters, two per register)."""


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
    scale: float = 1.0
    offset: float = 0.0
    nan_value: float | None = Field(None, description="raw value the device sends for 'none'")
    unit: str = ""
    interval: Duration | None = Field(None, gt=0, description="overrides the device's")

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
            raise ValueError(f"a {self.table} point holds one bit: type must be bool, "
                             f"not {self.type}")
        if self.bit is not None and self.type not in ("int16", "uint16", "bool"):
            raise ValueError(f"bit selects one bit of a 16-bit register; type {self.type} "
                             "is wider: use uint16 or bool")
        if self.bit is not None and bit_table:
            raise ValueError("bit applies to holding and input registers, not coils")
        if self.type == "ascii" and self.length is None:
            raise ValueError("an ascii point needs length (characters)")
        if self.type != "ascii" and self.length is not None:
            raise ValueError("length applies to ascii points only")
        if self.address + self.count - 1 > 65535:
            raise ValueError(f"address {self.address} + {self.count} registers of "
                             f"{self.type} runs past 65535")
        return self


class ModbusDevice(_Strict):
    """One unit id on one connection (TCP host or serial port)."""

    name: str
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial_port: str | None = None
    baudrate: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: int = Field(1, ge=0, le=247)
    interval: Duration = Field(5.0, gt=0)
    timeout: Duration = Field(1.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    points: list[ModbusPoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _transport(self) -> Self:
        if self.transport == "tcp" and not self.host:
            raise ValueError(f"device {self.name!r}: transport tcp needs host")
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError(f"device {self.name!r}: transport rtu needs serial_port")
        return self


_SHARED = {
    "tcp": ("timeout", "retries"),
    "rtu": ("timeout", "retries", "baudrate", "parity", "stopbits", "bytesize"),
}
"""Settings of the one client behind a connection: devices sharing it must agree."""


def connection_of(device: ModbusDevice) -> str:
    """The connection a device is reached through, e.g. `tcp 10.0.0.5:502`."""
    if device.transport == "tcp":
        return f"tcp {device.host}:{device.port}"
    return f"rtu {device.serial_port}"


class ModbusConfig(_Strict):
    devices: list[ModbusDevice] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shared_connections(self) -> Self:
        """Devices on one TCP endpoint or serial bus share one client, so its settings."""
        first: dict[str, ModbusDevice] = {}
        names: set[str] = set()
        for device in self.devices:
            if device.name in names:
                raise ValueError(f"device name {device.name!r} is used twice")
            names.add(device.name)
            other = first.setdefault(connection_of(device), device)
            for setting in _SHARED[device.transport]:
                mine, theirs = getattr(device, setting), getattr(other, setting)
                if mine != theirs:
                    raise ValueError(
                        f"device {device.name!r} shares {connection_of(device)} with device "
                        f"{other.name!r}, so its {setting} must be {theirs}, not {mine}")
        return self
