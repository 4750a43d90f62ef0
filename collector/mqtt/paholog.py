"""paho's own log lines, kept where our log says the same thing better.

paho logs to `collector.mqtt.paho` (`enable_logger`). Its per-retry ERRORs would repeat
what `collector.mqtt.connection` logs once (`WarnOnce`), so they go to DEBUG here; the
socket error that ended a connection is kept, per paho network thread, for our disconnect
line to quote.
"""

from __future__ import annotations

import logging
import threading

paho_log = logging.getLogger("collector.mqtt.paho")


class PahoErrors(logging.Filter):
    """Keeps paho's per-retry ERRORs at DEBUG: our own logs say it once, with the detail.

    "Client is not connected" comes on each retry and on a stop while offline. "failed to
    receive on socket: ..." says why a connection dropped (a TLS alert, a reset): it is
    kept, per paho network thread, for our disconnect log to quote.
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR:
            return True
        text = str(record.msg)
        if text.startswith("failed to receive on socket"):
            self.local.error = str(record.args[0]) if record.args else text
        elif not text.startswith("Client is not conn"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return paho_log.isEnabledFor(logging.DEBUG)

    def take_error(self) -> str | None:
        """The last socket error seen on this (paho's) thread, once."""
        error, self.local.error = getattr(self.local, "error", None), None
        return error


paho_errors = PahoErrors()
paho_log.addFilter(paho_errors)
