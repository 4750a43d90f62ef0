"""Protocol adapters (Modbus, MQTT) and the `Reading` they produce."""

from collector.reading import GOOD, Collector, Emit, Quality, Reading, bad

__all__ = ["GOOD", "Collector", "Emit", "Quality", "Reading", "bad"]
