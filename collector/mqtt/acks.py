"""Holding MQTT QoS 1 acknowledgements until the readings are stored (manual ack)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import paho.mqtt.client as mqtt


class AckCounters(Protocol):
    acked: int
    acks_dropped: int


@dataclass(slots=True)
class _Held:
    ids: list[tuple[int, int]]  # (connection, packet id), in arrival order
    stored: bool = False


class Acks:
    """PUBACKs held until stored, sent in arrival order, only on the connection they belong to.

    paho 2.2's `ack()` takes no lock: it appends to the client's outgoing deque (atomic
    under the GIL) and wakes the network thread through a socket pair, as `publish()` does
    from any thread. What is not safe is an ack racing a reconnect: `reconnect()` iterates
    over that deque (an append then raises "deque mutated during iteration" in paho's
    thread), clears it and queues CONNECT, so an ack could also land before CONNECT; and a
    packet id from the previous connection means nothing on the next. So `ack()` runs under
    our lock, and only while the connection the message came on is open: `opened()`
    (on_connect) numbers connections, `closed()` (on_disconnect, which paho calls before it
    reconnects; on_pre_connect as a backstop) shuts the gate. A dropped ack is harmless:
    the broker still holds the message for the persistent session and sends it again.
    The acks of one stored batch go out as one write where the client can
    (`FastClient.ack_many`), else one `ack()` each.
    """

    def __init__(self, client: mqtt.Client, stats: AckCounters) -> None:
        self._client = client
        self._ack_many: Callable[[list[int]], None] | None = getattr(client, "ack_many", None)
        self._stats = stats
        self._lock = threading.Lock()
        self._open = False
        self.connection = 0  # read by on_message on paho's thread
        self._held: deque[_Held] = deque()  # loop thread only

    def opened(self) -> None:
        """paho's thread, on a successful CONNACK."""
        with self._lock:
            self.connection += 1
            self._open = True

    def closed(self) -> None:
        with self._lock:
            self._open = False

    def hold(self, ids: list[tuple[int, int]]) -> Callable[[], None]:
        """The `on_stored` for readings from these messages."""
        held = _Held(ids)
        self._held.append(held)

        def on_stored() -> None:
            held.stored = True
            while self._held and self._held[0].stored:
                self._send(self._held.popleft().ids)

        return on_stored

    def nothing_to_store(self, ids: list[tuple[int, int]]) -> None:
        """Messages that gave no reading: ack now, or after the held ones before them."""
        if self._held:
            self._held[-1].ids.extend(ids)
        else:
            self._send(ids)

    def _send(self, ids: list[tuple[int, int]]) -> None:
        with self._lock:
            current = self.connection if self._open else None
            mids = [mid for connection, mid in ids if connection == current]
            if self._ack_many is not None:
                self._ack_many(mids)  # one write for the lot (`FastClient.ack_many`)
            else:
                for mid in mids:
                    self._client.ack(mid, 1)
        sent = len(mids)
        self._stats.acked += sent
        self._stats.acks_dropped += len(ids) - sent
