"""A simulated plant room: a chiller PLC and an energy meter on pymodbus's own server,
and plant-room sensors publishing JSON over MQTT.

After `drift_after` the chiller's supply temperature climbs out of its 6-8 degC band, so
the demo (and tests) see a real nonconformance raised from real protocol traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusTcpServer

from agent.yamldoc import load_yaml, validate
from collector.modbus.config import ModbusPoint
from collector.modbus.decode import encode_value
from collector.mqtt.config import MqttConfig
from common.config_types import Duration

log = logging.getLogger("patrol.simulate")

CHILLER_UNIT, METER_UNIT = 1, 2
# The register map the demo site.yaml reads (agent/demo/site.yaml must agree).
SUPPLY = ModbusPoint(asset="CH-1", metric="chw_supply_temp", address=100, type="float32")
RETURN = ModbusPoint(asset="CH-1", metric="chw_return_temp", address=102, type="float32",
                     order="CDAB")
STATUS = ModbusPoint(asset="CH-1", metric="running", address=110, type="uint16", bit=0)
ENERGY = ModbusPoint(asset="EM-1", metric="energy_total", table="input", address=0,
                     type="uint32", scale=0.1)
POWER = ModbusPoint(asset="EM-1", metric="power", table="input", address=2, type="int16",
                    scale=0.1)
_FUNCTION = {"holding": 3, "input": 4}


class SimModbus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(5020, ge=0, le=65535)


class SimMqtt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "patrol-demo"


class SimConfig(BaseModel):
    """sim.yaml: where the simulated devices listen and publish, and when the fault starts."""

    model_config = ConfigDict(extra="forbid")
    modbus: SimModbus = Field(default_factory=SimModbus)
    mqtt: SimMqtt = Field(default_factory=SimMqtt)
    interval: Duration = Field(1.0, gt=0)
    drift_after: Duration = 20.0
    seed: int | None = None


class PlantRoom:
    """The physics, such as it is: a chiller that drifts, a meter that counts."""

    def __init__(self, config: SimConfig, start: float) -> None:
        self.config = config
        self.start = start
        self.energy_kwh = 12_345.0
        self.last = start
        self.random = random.Random(config.seed)

    def supply_temp(self, now: float) -> float:
        t = now - self.start
        drift = max(0.0, t - self.config.drift_after) * 0.1
        return 7.0 + 0.15 * math.sin(t / 7) + min(drift, 3.0)

    def step(self, now: float) -> dict[str, float]:
        power = 45.0 + self.random.uniform(-2, 2)
        self.energy_kwh += power * (now - self.last) / 3600
        self.last = now
        supply = self.supply_temp(now)
        return {
            "chw_supply_temp": supply,
            "chw_return_temp": supply + 5.0 + self.random.uniform(-0.1, 0.1),
            "running": 1,
            "energy_total": self.energy_kwh,
            "power": power,
            "air_temp": 26.0 + 0.5 * math.sin((now - self.start) / 30),
            "humidity": 50.0 + self.random.uniform(-3, 3),
        }


async def simulate(config: SimConfig, stop: asyncio.Event,
                   ready: asyncio.Future[int] | None = None) -> None:
    """Serve Modbus and publish MQTT until `stop`; `ready` gets the Modbus port."""
    logging.getLogger("pymodbus").setLevel(logging.ERROR)  # deprecation noise of 3.16
    units = {
        CHILLER_UNIT: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, [0] * 200)),
        METER_UNIT: ModbusDeviceContext(ir=ModbusSequentialDataBlock(1, [0] * 20)),
    }
    server = ModbusTcpServer(ModbusServerContext(devices=units, single=False),
                             address=(config.modbus.host, config.modbus.port))
    plant = PlantRoom(config, time.time())
    mqtt_config = MqttConfig(url=config.mqtt.url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"patrol-sim-{random.getrandbits(32):08x}")
    client.connect_async(mqtt_config.host, mqtt_config.port)
    client.loop_start()
    try:
        await _update(server, plant, config)  # registers hold values before anyone reads
        await server.serve_forever(background=True)  # raises when the port is taken
        port = server.transport.sockets[0].getsockname()[1]
        log.info("simulated plant room: Modbus TCP on %s:%d, MQTT to %s under %s/",
                 config.modbus.host, port, config.mqtt.url, config.mqtt.topic_prefix)
        if ready is not None and not ready.done():
            ready.set_result(port)
        while not stop.is_set():
            values = await _update(server, plant, config)
            payload = {"temperature": round(values["air_temp"], 2),
                       "humidity": round(values["humidity"], 1), "ts": round(time.time(), 3)}
            client.publish(f"{config.mqtt.topic_prefix}/PR-1/env", json.dumps(payload), qos=1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.interval)
    finally:
        client.disconnect()
        client.loop_stop()
        await server.shutdown()


async def _update(server: ModbusTcpServer, plant: PlantRoom,
                  config: SimConfig) -> dict[str, float]:
    values = plant.step(time.time())
    for unit, point in ((CHILLER_UNIT, SUPPLY), (CHILLER_UNIT, RETURN),
                        (CHILLER_UNIT, STATUS), (METER_UNIT, ENERGY), (METER_UNIT, POWER)):
        registers = encode_value(point, values[point.metric])
        await server.context.async_setValues(unit, _FUNCTION[point.table], point.address,
                                             registers)
    return values


def load_sim_config(path: Path | None) -> SimConfig:
    if path is None:
        return SimConfig()
    return validate(SimConfig, load_yaml(path))


def run_simulator(path: Path | None) -> int:
    """`patrol simulate`: run until SIGINT/SIGTERM."""
    from agent.runtime import install_stop_signals

    config = load_sim_config(path)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        await simulate(config, stop)

    asyncio.run(main())
    return 0
