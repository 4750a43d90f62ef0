"""The value types site.yaml and the standards share: durations (`5s`, `10m`), sizes
(`1GB`) and paths relative to the config file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, ValidationInfo

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.I)
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_duration(value: object) -> float:
    """Seconds from `500ms`, `5s`, `10m`, `24h`, `7d` (a bare number means seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration like 500ms, 5s, 10m, 24h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration like 500ms, 5s, 10m, 24h or 7d")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, for printing a config back."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def parse_size(value: object) -> int:
    """Bytes from `1GB`, `512MiB`, `100kB` or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size like 100MB or 1GB")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size like 100MB or 1GB")
        size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""Seconds, written in site.yaml as `500ms`, `5s`, `10m`, `24h`, `7d`."""

ByteSize = Annotated[int, BeforeValidator(parse_size)]
"""Bytes, written in site.yaml as `100MB`, `1GB`, `512MiB`."""


def _relative_to_config(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    path = path.expanduser()
    return path if path.is_absolute() or base is None else Path(base) / path


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]
"""A path in site.yaml; relative paths are relative to the config file."""


def _host_port(listen: str) -> str:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not host:port, like 127.0.0.1:9273")
    return listen


HostPort = Annotated[str, AfterValidator(_host_port)]
"""An address to listen on, `host:port` (`[::1]:9273` for IPv6), as `server.listen`."""


def split_host_port(listen: str) -> tuple[str, int]:
    """(host, port) of a `HostPort`, the brackets of an IPv6 host removed."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)
