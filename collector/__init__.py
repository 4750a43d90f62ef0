"""Protocol adapters (Modbus, MQTT) and the `Reading` they produce.

One folder per protocol, each with the same shape: `config` (its site.yaml section, checked
at load), the code that talks to devices or a broker, and the mapping of what they send
to `Reading`s. `collector.modbus` is polled; `collector.mqtt` is pushed to and paces itself
by the pipeline (`Pausable`). A new protocol is a new folder beside them.

Exceptions (`collector.errors`), each also a `ValueError` so older callers still catch it::

    CollectorError          anything the collector layer refuses on purpose
    ├── SettingError        a setting that cannot work (topic, JSON path, Modbus point or
    │                       plan); raised at load, inside pydantic's ValidationError
    ├── PayloadError        one MQTT message or metric cannot be mapped (counted, logged)
    └── DecodeError         registers that do not hold a value of the point's type
        └── NoValue         the device's own "no value" marker (NaN, nan_value)

A device that does not answer or a broker that is down is not an exception: it becomes bad
readings or a retried connection, logged once (`common.logonce.WarnOnce`).
"""

from collector.errors import CollectorError, DecodeError, NoValue, PayloadError, SettingError
from collector.reading import GOOD, Collector, Emit, Quality, Reading, bad

__all__ = [
    "GOOD", "Collector", "CollectorError", "DecodeError", "Emit", "NoValue", "PayloadError",
    "Quality", "Reading", "SettingError", "bad",
]
