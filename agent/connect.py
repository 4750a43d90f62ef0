"""`patrol check --connect`: the installer's test before walking away from a gateway.

Each peer site.yaml names is tried once, the way the agent will use it, and said in one
line: every Modbus device answers its first planned read, the broker accepts the
connection and every subscription, the TSDB takes a write, the central API takes a
heartbeat, the NC database opens. A failure names the peer and what it answered; nothing
is retried (the agent itself retries for ever; this is for the person at the cabinet).

The TSDB write is one point of the measurement `patrol_check` (not the readings' own),
and the heartbeat is an ordinary one: the gateway shows up in `GET /api/v1/gateways`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from common.urls import url_for_log

if TYPE_CHECKING:
    from agent.site import Site
    from collector.modbus.config import ModbusDevice
    from collector.mqtt.config import MqttConfig

TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Probe:
    peer: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.peer}: {'ok' if self.ok else 'FAILED'}: {self.detail}"


def probe_all(site: Site) -> list[Probe]:
    """Every peer of `site`, in the order data flows: devices, broker, TSDB, API."""
    config = site.config
    probes: list[Probe] = []
    if config.modbus:
        probes += asyncio.run(_modbus_all(list(config.modbus.devices)))
    if config.mqtt and config.mqtt.subscriptions:
        probes.append(_mqtt(config.mqtt))
    if config.influxdb:
        probes.append(_tsdb(site))
    if config.forward:
        probes.append(_central(site))
    elif config.server:
        probes.append(_database(site))
    return probes


def _ms(began: float) -> str:
    return f"{(time.perf_counter() - began) * 1000:.0f} ms"


async def _modbus_all(devices: list[ModbusDevice]) -> list[Probe]:
    return [await _modbus(device) for device in devices]


async def _modbus(device: ModbusDevice) -> Probe:
    from collector.modbus.plan import device_plan
    from collector.modbus.poller import READS, client_for

    where = (f"{device.host}:{device.port}" if device.transport != "rtu"
             else f"{device.serial_port} {device.baudrate} baud")
    peer = f"modbus {device.name} ({device.transport} {where}, unit {device.unit_id})"
    requests = device_plan(device, device.points)
    if not requests:
        return Probe(peer, True, "no points to read")
    request = requests[0]
    client = client_for(device)
    began = time.perf_counter()
    try:
        if not await client.connect():
            return Probe(peer, False, f"cannot connect to {where} (is the address right, "
                                      "is the device on, does a firewall block the port?)")
        response = await getattr(client, READS[request.table])(
            request.address, count=request.count, device_id=device.unit_id)
    except Exception as exc:  # pymodbus: timeouts, a closed connection, a bad frame
        return Probe(peer, False, f"{request}: {type(exc).__name__}: {exc}")
    finally:
        client.close()
    if response.isError():
        code = getattr(response, "exception_code", None)
        return Probe(peer, False, f"{request}: the device answered with exception code "
                                  f"{code} (wrong unit id or address?)")
    return Probe(peer, True, f"read {request} in {_ms(began)}")


def _mqtt(config: MqttConfig) -> Probe:
    import paho.mqtt.client as mqtt

    from collector.mqtt.connection import secure

    peer = f"mqtt {url_for_log(config.url)}"
    done = threading.Event()
    outcome: dict[str, object] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"patrol-check-{int(time.time() * 1000) % 10**9}",
                         protocol=mqtt.MQTTv5 if config.protocol == "5" else mqtt.MQTTv311)
    topics = [sub.topic for sub in config.subscriptions]

    def on_connect(client: mqtt.Client, _: object, __: object, reason: object,
                   ___: object = None) -> None:
        outcome["connect"] = reason
        if getattr(reason, "is_failure", False):
            done.set()
            return
        client.subscribe([(_pattern(topic), 0) for topic in topics])

    def on_subscribe(_: mqtt.Client, __: object, ___: int, reasons: list[object],
                     ____: object = None) -> None:
        outcome["subscribe"] = reasons
        done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    began = time.perf_counter()
    try:
        secure(client, config)
        client.connect(config.host, config.port, keepalive=30)
    except Exception as exc:  # refused, unreachable, TLS, a secret not readable
        return Probe(peer, False, f"cannot connect: {type(exc).__name__}: {exc}")
    client.loop_start()
    try:
        answered = done.wait(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()
    reason = outcome.get("connect")
    if reason is None or not answered:
        return Probe(peer, False, f"no answer within {TIMEOUT:g} s")
    if getattr(reason, "is_failure", False):
        return Probe(peer, False, f"the broker refused the connection: {reason} (user name "
                                  "and password, or the client's certificate?)")
    refused = [topic for topic, code in zip(topics, outcome.get("subscribe") or [],
                                            strict=False)
               if getattr(code, "is_failure", False)]
    if refused:
        return Probe(peer, False, f"the broker refused the subscription to {refused[0]} "
                                  "(an ACL?)")
    return Probe(peer, True, f"connected and subscribed to {len(topics)} topic(s) in "
                             f"{_ms(began)}")


def _pattern(topic: str) -> str:
    """A subscription's topic as the broker sees it: `{asset}` and `{metric}` are `+`."""
    return "/".join("+" if level.startswith("{") and level.endswith("}") else level
                    for level in topic.split("/"))


def _tsdb(site: Site) -> Probe:
    from agent.lineprotocol import head
    from agent.tsdb import make_sender

    config = site.config.influxdb
    assert config is not None
    peer = f"tsdb {url_for_log(config.url)} ({config.api}, bucket {config.bucket})"
    began = time.perf_counter()
    try:
        send, close = make_sender(config)
    except Exception as exc:  # a token file not readable here
        return Probe(peer, False, f"{type(exc).__name__}: {exc}")
    try:
        # in milliseconds: the precision both senders declare
        line = f"{head('patrol_check', {'site': site.id})}ok=1i {time.time_ns() // 10**6}"
        answer = send(line.encode())
    finally:
        close()
    if not answer.ok:
        status = "unreachable" if answer.status is None else f"answered {answer.status}"
        return Probe(peer, False, f"{status}: {answer.message}")
    return Probe(peer, True, f"took a write (measurement patrol_check) in {_ms(began)}")


def _central(site: Site) -> Probe:
    from agent.heartbeat import default_gateway_id, http_post
    from common.secrets import read_secret
    from common.version import VERSION

    forward = site.config.forward
    assert forward is not None
    peer = f"central {url_for_log(forward.url)}"
    now = datetime.now(UTC)
    body = {"site_id": site.id, "gateway_id": forward.gateway_id or default_gateway_id(),
            "version": VERSION, "at": now.isoformat(), "uptime": 0.0}
    began = time.perf_counter()
    try:
        post = http_post(forward.url, read_secret(forward.token_env, forward.token_file))
        answer = asyncio.run(post(body))
    except Exception as exc:
        return Probe(peer, False, str(exc))
    detail = f"took a heartbeat in {_ms(began)}"
    server = answer.get("server_time")
    if isinstance(server, str):
        offset = now.timestamp() - datetime.fromisoformat(server).timestamp()
        detail += f"; this clock is {offset:+.1f} s off the API's"
    return Probe(peer, True, detail)


def _database(site: Site) -> Probe:
    from sqlalchemy import text

    from agent.status import database_for_log
    from api.store import open_database

    server = site.config.server
    peer = f"database {database_for_log(server.database)}"
    began = time.perf_counter()
    try:
        database = open_database(server)
    except Exception as exc:
        return Probe(peer, False, str(exc))
    try:
        with database.session() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        return Probe(peer, False, f"{type(exc).__name__}: {exc}")
    finally:
        database.close()
    return Probe(peer, True, f"opened and migrated in {_ms(began)}")
