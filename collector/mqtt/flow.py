"""Backpressure for the MQTT collector: paho's thread reads the socket only while the
agent keeps up.

Two things close the gate: the pipeline saying its backlog (readings not yet judged)
reached its high-water mark (`press`, from the loop thread), and the connection's own inbox
(messages read, not yet mapped) reaching `max_inbox` (seen by paho's thread itself). A
connection that does not follow the pipeline (the QoS 1 one, when QoS 0 and QoS 1
subscriptions are mixed: see `collector.mqtt.client`) counts its messages handed to the
pipeline and not yet stored (`unstored`) against `max_inbox` instead. While
the gate is closed paho's thread does not read; TCP's window then fills and the broker
keeps the messages (QoS 1 in its queue, QoS 0 up to its limits, then dropped: the broker's
documented behaviour for a slow consumer).

The wait is bounded (`STEP`), so paho's loop still writes (acks, PINGREQ) and checks its
keepalive between waits; a new outgoing packet (`poke`) ends the wait at once. paho 2.2
counts any bytes received as a sign of life, so while the gate stays closed one buffer is
read every half keepalive: the connection survives a pause of any length.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sized

STEP = 0.25
"""Longest single wait of paho's thread at a closed gate, seconds."""

MAX_INBOX = 10_000
"""Messages read from the socket and not yet mapped at which reading pauses."""


class Gate:
    """Whether paho's thread may read now; closed by the pipeline or a full inbox."""

    def __init__(self, inbox: Sized, max_inbox: int = MAX_INBOX) -> None:
        self._inbox = inbox
        self.max_inbox = max_inbox
        self.unstored = 0
        """Messages emitted and not yet stored, for a connection that does not follow the
        pipeline's `press` (set on the loop thread; 0 otherwise)."""
        self.pressed = False
        """The pipeline is behind (set on the loop thread)."""
        self.pauses = 0
        """Times paho's thread found the gate closed and waited (a sign of backpressure)."""
        self._stopping = False
        self._poked = False
        self._waiting = False  # paho's thread is in `wait`: only then is a poke needed
        self._cond = threading.Condition(threading.Lock())

    def is_open(self) -> bool:
        return self._stopping or (not self.pressed
                                  and len(self._inbox) + self.unstored < self.max_inbox)

    def press(self, pressed: bool) -> None:
        """The pipeline's backlog passed its high-water mark (True) or came back (False)."""
        with self._cond:
            self.pressed = pressed
            self._cond.notify_all()

    def stop(self) -> None:
        """Open for good: at a stop, paho must read its way to the DISCONNECT."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def poke(self) -> None:
        """Something was drained or queued to send: let a waiting reader look again.

        Called per ack and per drain, so it takes the lock only when paho's thread waits;
        `wait` sets `_waiting` under the lock before it looks at its condition, so a change
        made before a poke that skipped is seen by that look."""
        if self._waiting:
            with self._cond:
                self._poked = True
                self._cond.notify_all()

    def wait(self, until: Callable[[], bool], timeout: float = STEP) -> bool:
        """On paho's thread: wait until open, poked, `until()` (something to send) or
        `timeout`; True when open."""
        with self._cond:
            self.pauses += 1
            self._waiting = True
            self._cond.wait_for(lambda: self._poked or self.is_open() or until(), timeout)
            self._waiting = self._poked = False
            return self.is_open()
