"""Modbus TCP/RTU: config, register decoding and the poller."""

from collector.modbus.config import ModbusConfig, ModbusDevice, ModbusPoint

__all__ = ["ModbusConfig", "ModbusDevice", "ModbusPoint"]
