"""The state of one broker connection as the operator sees it: counters, and a log that
says an outage once (`WarnOnce`: the first failure or loss at WARNING, retries at DEBUG,
the recovery at INFO). Runs on the event loop's thread; paho's callbacks hand over."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from collector.mqtt.config import MqttConfig
from collector.mqtt.stats import MqttStats
from common.logonce import WarnOnce

log = logging.getLogger("collector.mqtt")

# CONNACK codes that mean the credentials: 3.1.1 (4, 5) and MQTT 5 (134, 135).
_AUTH_REFUSED = {4, 5, 134, 135}


class Status:
    """One connection's `connected` / `subscribed` flags, its share of the collector's
    counters, and its log. `on_change` lets the collector recompute its own flags."""

    def __init__(self, config: MqttConfig, stats: MqttStats,
                 on_change: Callable[[], None]) -> None:
        self._config = config
        self._stats = stats
        self._on_change = on_change
        self.is_connected = False
        self.is_subscribed = False
        self.attempts = 0  # failed attempts since the last connect
        self.outage = WarnOnce(log)

    def connected(self, session_present: bool, filters: list[tuple[str, int]]) -> None:
        self._stats.connects += 1
        self.is_connected = True
        self.attempts = 0
        cfg = self._config
        args = (cfg.host, cfg.port, session_present,
                ", ".join(f"{t} (qos {q})" for t, q in filters))
        text = "mqtt: connected to %s:%d (session present: %s); subscribing to %s"
        if not self.outage.recovered(text, *args):
            log.info(text, *args)
        self._on_change()

    def subscribed(self) -> None:
        self.is_subscribed = True
        self._on_change()

    def connect_failed(self, error: BaseException | str | None) -> None:
        self._stats.connect_failures += 1
        self.attempts += 1
        hint = ""
        if isinstance(error, ssl.SSLCertVerificationError):
            hint = " (is ca_file the CA that signed the broker's certificate?)"
        elif "CERTIFICATE_REQUIRED" in str(error):
            hint = " (the broker wants a client certificate: set cert_file and key_file)"
        self.outage.trouble(
            "mqtt: cannot reach %s:%d: %s%s (attempt %d); retrying every 1-60 s",
            self._config.host, self._config.port, error or "connection failed", hint,
            self.attempts)

    def refused(self, reason: str, code: int) -> None:
        self._stats.connect_failures += 1
        self.attempts += 1
        cfg = self._config
        hint = ""
        if code in _AUTH_REFUSED:
            source = (f"password_env {cfg.password_env}" if cfg.password_env else
                      f"password_file {cfg.password_file}" if cfg.password_file else "no password")
            hint = f"; check username {cfg.username!r} and the password ({source})"
        self.outage.trouble("mqtt: %s:%d refused the connection: %s (%d)%s; retrying",
                            cfg.host, cfg.port, reason, code, hint)

    def disconnected(self, reason: str, code: int, error: str | None, answered: bool) -> None:
        if not self.is_connected:
            if not answered and code != 0:  # closed before CONNACK: a TLS refusal, say
                self.connect_failed(f"closed before the broker answered: {error or reason}")
            return  # else a refused CONNECT (logged by `refused`) or our own stop
        self._stats.disconnects += 1
        self.is_connected = self.is_subscribed = False
        self._on_change()
        text = "mqtt: disconnected from %s:%d: %s (%d)%s; reconnecting"
        args = (self._config.host, self._config.port, reason, code,
                f": {error}" if error else "")
        if code == 0:
            log.info(text, *args)
        else:
            self.outage.trouble(text, *args)

    def stopped(self) -> None:
        self.is_connected = self.is_subscribed = False
        self._on_change()
