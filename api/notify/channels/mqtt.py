"""An MQTT channel: the generic JSON document published on the site's broker.

A siren, a light stack or a SCADA screen subscribed to `topic` hears the alert. The
connection is the site's `mqtt:` settings (URL, credentials and TLS files through
`collector.mqtt.connection.secure`) under its own client id, `<client_id>-notify`, so it
never takes over the collector's session. It is opened at the first send and kept; a send
that finds it gone, or waits 10 s for a PUBACK in vain, drops it (with what paho still
queued: the dispatcher retries the message, paho must not send it a second time) and the
next send connects afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from api.notify.channels.base import Render
from api.notify.channels.formats import TEXT_LIMIT, document
from api.notify.config import Channel
from api.notify.message import Notice, Outcome
from collector.mqtt.config import MqttConfig
from collector.mqtt.connection import secure
from common.secrets import SecretError

log = logging.getLogger("patrol.api.notify.mqtt")

TIMEOUT = 10.0


class MqttSender:
    """One MQTT channel and its connection (one paho client and network thread)."""

    def __init__(self, channel: Channel, render: Render, site: MqttConfig, *,
                 timeout: float = TIMEOUT) -> None:
        assert channel.topic is not None
        self.channel = channel
        self.render = render
        self.site = site
        self.timeout = timeout
        self.client_id = (f"{site.client_id}-notify" if site.client_id
                          else f"patrol-notify-{uuid.uuid4().hex[:12]}")
        self._client: mqtt.Client | None = None
        self._lock = asyncio.Lock()

    async def send(self, notice: Notice) -> Outcome:
        rendered = self.render(notice, "generic", TEXT_LIMIT)
        payload = json.dumps(document(notice, rendered), ensure_ascii=False).encode()
        async with self._lock:
            try:
                client = await self._connected()
            except (OSError, SecretError, ConnectionError) as exc:
                return Outcome(False, f"broker {self._where}: {exc}")
            info = client.publish(self.channel.topic or "", payload, self.channel.qos,
                                  self.channel.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                await self._drop()
                return Outcome(False, f"broker {self._where}: publish failed: "
                                      f"{mqtt.error_string(info.rc)}")
            if self.channel.qos == 0:
                return Outcome(True)
            await asyncio.to_thread(_wait, info, self.timeout)
            if not info.is_published():
                await self._drop()
                return Outcome(False, f"broker {self._where}: no PUBACK within "
                                      f"{self.timeout:g} s")
        return Outcome(True)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    @property
    def _where(self) -> str:
        return f"{self.site.host}:{self.site.port}"

    async def _connected(self) -> mqtt.Client:
        if self._client is not None and self._client.is_connected():
            return self._client
        await self._drop()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5 if self.site.protocol == "5"
                             else mqtt.MQTTv311)
        client.enable_logger(logging.getLogger("patrol.api.notify.mqtt.paho"))
        secure(client, self.site)
        answered = threading.Event()
        refused: list[str] = []

        def on_connect(client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                       reason: ReasonCode, properties: object) -> None:
            if reason.is_failure:
                refused.append(str(reason))
            answered.set()

        client.on_connect = on_connect
        await asyncio.to_thread(client.connect, self.site.host, self.site.port,
                                int(self.site.keepalive))
        client.loop_start()
        self._client = client
        if not await asyncio.to_thread(answered.wait, self.timeout) or refused:
            await self._drop()
            raise ConnectionError(f"connection refused: {refused[0]}" if refused
                                  else f"no CONNACK within {self.timeout:g} s")
        log.debug("notify: channel %s connected to %s as %s", self.channel.name,
                  self._where, self.client_id)
        return client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)


def _wait(info: mqtt.MQTTMessageInfo, timeout: float) -> None:
    # RuntimeError, ValueError: not queued, or the connection went; is_published() says
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout)
