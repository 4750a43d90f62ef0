"""`patrol demo`: the simulated plant room plus `patrol run`, needing no external service.

Uses the MQTT broker at 127.0.0.1:1883 when one answers, else starts an embedded one
(amqtt) on a free port. Everything else (Modbus server, SQLite, the API) is local.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import socket
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent.runtime import install_stop_signals, run_site
from agent.simulate import SimConfig, SimModbus, SimMqtt, simulate
from agent.site import load_site

log = logging.getLogger("patrol.demo")

DEFAULT_BROKER = ("127.0.0.1", 1883)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_answers(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when an MQTT broker accepts a connection there (a real CONNACK, not just TCP)."""
    accepted = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"patrol-probe-{secrets.token_hex(4)}")

    def on_connect(_c: Any, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        if not reason_code.is_failure:
            accepted.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    try:
        return accepted.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()


@contextlib.asynccontextmanager
async def embedded_broker() -> Any:
    """An amqtt broker on a free loopback port, for machines without Mosquitto."""
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise RuntimeError("no MQTT broker answers on 127.0.0.1:1883 and amqtt is not "
                           "installed: pip install 'facility-patrol[demo]'") from None
    port = free_port()
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                    {"allow_anonymous": True}},
    })
    await broker.start()
    try:
        yield port
    finally:
        await broker.shutdown()


def write_site(workdir: Path, *, modbus_port: int, mqtt_url: str, api_port: int,
               topic_prefix: str, alert_port: int) -> Path:
    """Copy the bundled demo site into `workdir`, filling in ports and names."""
    bundled = resources.files("agent") / "demo_site"
    (workdir / "standards").mkdir(parents=True, exist_ok=True)
    text = (bundled / "site.yaml").read_text(encoding="utf-8")
    for marker, value in {"__MODBUS_PORT__": modbus_port, "__MQTT_URL__": mqtt_url,
                          "__API_PORT__": api_port, "__TOPIC_PREFIX__": topic_prefix,
                          "__MQTT_CLIENT_ID__": f"{topic_prefix}-agent",
                          "__ALERT_PORT__": alert_port}.items():
        text = text.replace(marker, str(value))
    (workdir / "site.yaml").write_text(text, encoding="utf-8")
    for item in (bundled / "standards").iterdir():
        (workdir / "standards" / item.name).write_text(item.read_text(encoding="utf-8"),
                                                       encoding="utf-8")
    return workdir / "site.yaml"


def run_demo(workdir: Path | None = None, port: int = 0,
             broker: tuple[str, int] = DEFAULT_BROKER) -> int:
    temporary = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="patrol-demo-")) if workdir is None else workdir
    try:
        asyncio.run(_demo(directory, port or free_port(), broker))
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


async def _demo(workdir: Path, api_port: int, broker: tuple[str, int]) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    async with contextlib.AsyncExitStack() as stack:
        if await asyncio.to_thread(broker_answers, *broker):
            mqtt_url = "mqtt://{}:{}".format(*broker)
        else:
            broker_port = await stack.enter_async_context(embedded_broker())
            mqtt_url = f"mqtt://127.0.0.1:{broker_port}"
            log.info("no broker on %s:%d: started an embedded one on port %d", *broker,
                     broker_port)
        prefix = f"patrol-demo-{secrets.token_hex(3)}"
        sim_config = SimConfig(modbus=SimModbus(port=0),
                               mqtt=SimMqtt(url=mqtt_url, topic_prefix=prefix))
        modbus_ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        sim = asyncio.create_task(simulate(sim_config, stop, modbus_ready))
        await asyncio.wait({modbus_ready, sim}, return_when=asyncio.FIRST_COMPLETED)
        if not modbus_ready.done():
            await sim  # raises why the simulator could not start
        modbus_port = modbus_ready.result()
        alert_port = await stack.enter_async_context(alert_printer())
        site = load_site(write_site(workdir, modbus_port=modbus_port, mqtt_url=mqtt_url,
                                    api_port=api_port, topic_prefix=prefix,
                                    alert_port=alert_port))
        token, password = _admin_token(site.config.server.database)

        def ready(url: str) -> None:
            people = ", ".join(name for name, _ in DEMO_USERS)
            print(f"\nPatrol demo is running in {workdir} (Ctrl-C stops it)\n"
                  f"  console: {url}/   sign in as {people}, password {password}\n"
                  f"  API:     {url}/api/v1   (OpenAPI: {url}/docs)\n"
                  f"  token:   {token}\n"
                  f"  try:     curl -s -H 'Authorization: Bearer {token}' "
                  f"{url}/api/v1/nonconformances\n"
                  "  The chiller's supply temperature leaves 6-8 degC after about 20 s;\n"
                  "  its nonconformance appears about 20 s later, and its alert is\n"
                  "  printed here a few seconds after that (the demo's alert channel).\n",
                  flush=True)

        try:
            await run_site(site, mode="run", stop=stop, on_ready=ready)
        finally:
            stop.set()
            await sim


@contextlib.asynccontextmanager
async def alert_printer() -> Any:
    """The demo's alert channel: a local receiver of the generic webhook format that
    prints each message, so a newcomer sees the alert an engineer's phone would get."""
    from aiohttp import web

    async def receive(request: web.Request) -> web.Response:
        try:
            message = await request.json()
            text = str(message.get("text", ""))
        except ValueError:
            return web.Response(status=400, text="not JSON")
        print("\n--- ALERT (notify channel demo-alerts) " + "-" * 30 + "\n"
              + text.strip() + "\n" + "-" * 70 + "\n", flush=True)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/alerts", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


DEMO_USERS = (("demo-engineer", "engineer"), ("demo-quality", "quality"))
"""The console's demo people: an engineer rectifies, a different quality user verifies."""


def _admin_token(database_url: str) -> tuple[str, str]:
    """An admin token, and the demo users' password (random, printed with the token)."""
    from api.auth import create_token
    from api.console.users import add_user
    from api.store import Database

    password = secrets.token_urlsafe(9)
    database = Database(database_url)
    try:
        with database.write() as session:
            token = create_token(session, name="demo-admin", role="admin")
            for name, role in DEMO_USERS:
                add_user(session, name=name, password=password, role=role)
            session.commit()
            return token, password
    finally:
        database.close()
