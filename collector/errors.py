"""The collector layer's exceptions: one root, each also a `ValueError` as before.

Callers that caught `ValueError` (pydantic's validators, `patrol check`, the tests) still
catch them; a caller that wants only the collector's own refusals catches
`CollectorError`. The tree is drawn in `collector/__init__.py`.
"""

from __future__ import annotations


class CollectorError(Exception):
    """Something the collector layer refuses on purpose (never a bug, never a device fault:
    those become bad readings)."""


class SettingError(CollectorError, ValueError):
    """A setting that cannot work: a topic pattern, a JSON path, a Modbus point or plan.

    Raised while the config loads; inside a pydantic validator it becomes part of the
    model's `ValidationError`, so `patrol check` reports it with the file and field."""


class PayloadError(CollectorError, ValueError):
    """One MQTT message (or one metric of it) cannot be mapped; `reason` says why.

    Counted per subscription and logged at most once a minute with a sample; never fatal."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DecodeError(CollectorError, ValueError):
    """Registers that do not hold a value of the point's type (a short reply, a value out
    of range), or a value that does not fit the point when encoding."""


class NoValue(DecodeError):
    """The device sent its 'no value' marker (the point's nan_value, or a float NaN)."""


__all__ = ["CollectorError", "DecodeError", "NoValue", "PayloadError", "SettingError"]
