"""`FastClient`: paho's `Client` with a faster read path and a backpressure gate. The only
module that subclasses paho or touches its internals.

If paho grows a fast path (a buffered socket read and PUBLISH handling without an
`MQTTMessage` per message) and it measures as fast in `python -m bench.mqtt_ingest`, delete:

- from `FastClient`: `READ`, `on_incoming`, `_rsock`, `_rbuf`, `_rpos`, `_fill`, `_empty`,
  `_sock_recv` and `_packet_read`; the `while` loop at the end of `loop_read` (keep its
  single `super().loop_read`) and the `if not self._empty()` block of `_loop` (then
  `_loop` goes too, and with it the `looped` stamp: give `Connection.stalled` another
  sign that paho's thread still loops);
- in `collector/mqtt/connection.py`, the line `client.on_incoming = self._incoming`
  (`on_message` already delivers every message the same way);
- in `tests/test_mqtt_fastpath.py`, the tests that name the short path (the burst, the
  leftovers of an old connection, dup and retain, keepalive on bulk reads); keep the
  differential test, which then compares paho with paho plus the gate.

What stays is the gate: `gate`, the pause at the top of `loop_read`, `_peer_alive` and
`_packet_queue`. If paho grows flow control of its own (a way to stop reading while
keeping acks and pings going), this whole module goes and `connection.py` builds a plain
`mqtt.Client`.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt._packet import MalformedPacket, decode_publish
from paho.mqtt.properties import Properties

from collector.mqtt.flow import STEP, Gate

PUBACK = 0x40
_PUBACK = struct.Struct("!BBH")  # type, remaining length 2, packet id: MQTT 3.1.1 and 5 alike


class FastClient(mqtt.Client):
    """paho's client with a read buffer, a short path for whole PUBLISH packets, and a gate.

    paho 2.2 asks the socket for each packet's first byte, each byte of its length and
    then its body, reads one QoS 0 packet per select(), and wraps each message in an
    `MQTTMessage` that builds a `threading.Condition`: a bare paho client topped out at
    about 50,000 small messages a second on loopback (`bench.mqtt_ingest`), under the
    issue's target for our whole collector. So here:

    - `_sock_recv` hands out slices of one 64 KiB read, and `loop_read` goes on while they
      last (select() cannot see bytes already read);
    - `_packet_read`, when the buffer holds whole QoS 0/1 PUBLISH packets, decodes every
      one in a row (MQTT 3.1.1 by slicing; MQTT 5, and anything malformed, with paho's own
      `decode_publish`) and hands each to `on_incoming` (topic, payload, QoS, packet id,
      MQTT 5 properties) instead of `on_message`. Everything else (CONNACK, SUBACK,
      PINGRESP, QoS 2, a packet split across reads) takes paho's path unchanged, so
      `on_message` must deliver the same way;
    - `ack_many` queues the PUBACKs of a stored batch as one packet of bytes, not one each.

    With manual acks paho does nothing more for a QoS 0/1 PUBLISH than call `on_message`,
    which is why skipping it is safe. `_sock_recv` and `paho.mqtt._packet` are paho
    internals: pyproject pins paho below 3 and the tests drive both paths.

    The gate (`collector.mqtt.flow`) is the other change: `loop_read` does not read while
    the gate is closed, `_peer_alive` keeps paho's keepalive fed meanwhile, and
    `_packet_queue` wakes a waiting reader when an ack or a ping is to be sent.
    """

    READ = 65536
    on_incoming: Callable[[str, bytes, int, int, Properties | None], None] | None = None
    gate: Gate | None = None  # closed: the agent is behind, do not read
    _rsock: object = None  # the socket `_rbuf` came from
    _rbuf = b""
    _rpos = 0
    looped = 0.0
    """When paho's thread last entered its loop (monotonic): the watchdog's sign of life."""

    def _fill(self, bufsize: int) -> None:
        self._rbuf = super()._sock_recv(max(bufsize, self.READ))  # b"": the peer closed
        self._rsock, self._rpos = self._sock, 0
        with self._msgtime_mutex:  # paho's keepalive looks here; the short path skips it
            self._last_bytes_received = mqtt.time_func()

    def _empty(self) -> bool:
        """Nothing left to hand out, or what is left came from a closed connection."""
        return self._rpos >= len(self._rbuf) or self._rsock is not self._sock

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._empty():
            self._fill(bufsize)
        pos = self._rpos
        self._rpos = min(pos + bufsize, len(self._rbuf))
        return self._rbuf[pos:pos + bufsize]

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        gate = self.gate
        # Paused: acks and pings first (back to paho's loop at once), else wait a little.
        if (gate is not None and not gate.is_open()
                and (self.want_write() or not gate.wait(self.want_write))
                and self._peer_alive()):
            return mqtt.MQTT_ERR_SUCCESS  # the broker holds the rest
        rc = super().loop_read(max_packets)
        while (rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and not self._empty()
               and (gate is None or gate.is_open())):
            rc = super().loop_read(max_packets)
        return rc

    def _loop(self, timeout: float = 1.0) -> mqtt.MQTTErrorCode:
        self.looped = time.monotonic()
        if not self._empty():  # read before a pause and not handled: select() cannot see it
            if self.gate is None or self.gate.is_open():
                rc = self.loop_read()
                if rc != mqtt.MQTT_ERR_SUCCESS or self._sock is None:
                    return rc
            else:
                timeout = min(timeout, STEP)  # look at the gate again soon
        return super()._loop(timeout)

    def _peer_alive(self) -> bool:
        """Paused, on a socket select() found readable: bytes from the broker are waiting,
        which is what paho's keepalive wants to know (it counts bytes received, not
        packets), so tell it. False when the broker closed the connection: read it."""
        sock = self._sock
        if sock is None:
            return False
        try:
            if not sock.recv(1, socket.MSG_PEEK):
                return False  # end of stream: paho's read notices and reconnects
        except ValueError:
            pass  # TLS cannot peek; select() said readable, that will do
        except BlockingIOError:
            return True  # nothing after all: paho's keepalive judges as usual
        except OSError:
            return False
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        return True

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACKs for these QoS 1 messages (manual acks), in this order, as one write.

        paho's `ack` queues each PUBACK as a packet of its own: a byte down its wake-up
        socket pair per ack on the caller's thread, then a `send` per ack on paho's. Several
        packets back to back are the same bytes on the wire, so they go as one."""
        if not self._manual_ack or not mids:
            return
        if len(mids) == 1:
            self.ack(mids[0], 1)
            return
        self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending %d PUBACKs (Mid: %d ... %d)", len(mids),
                       mids[0], mids[-1])
        pack = _PUBACK.pack
        self._packet_queue(PUBACK, b"".join([pack(PUBACK, 2, mid) for mid in mids]), 0, 1)

    def _packet_queue(self, *args: Any, **kwargs: Any) -> mqtt.MQTTErrorCode:
        rc = super()._packet_queue(*args, **kwargs)
        if self.gate is not None:  # an ack or a ping to send: a waiting reader goes back
            self.gate.poke()
        return rc

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        deliver = self.on_incoming
        if deliver is None or self._in_packet["command"] != 0:  # paho is inside a packet
            return super()._packet_read()
        if self._empty():
            try:
                self._fill(0)
            except BlockingIOError:
                return mqtt.MQTT_ERR_AGAIN
            except OSError as err:  # as paho words it (`PahoErrors` quotes it)
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return mqtt.MQTT_ERR_CONN_LOST
        buf, pos = self._rbuf, self._rpos
        end = len(buf)
        gate = self.gate
        v5 = self._protocol == mqtt.MQTTv5
        delivered = False
        # Every whole PUBLISH (0x3_) of QoS 0 or 1 (dup and retain bits masked) in a row, in
        # one call: paho's loop_read around each would cost as much as the decoding.
        while pos < end and buf[pos] & 0xF6 in (0x30, 0x32):
            length = shift = 0
            i = pos + 1
            while i < end and i <= pos + 4:  # remaining length: 1-4 bytes, 7 bits each
                byte = buf[i]
                i += 1
                length |= (byte & 127) << shift
                shift += 7
                if byte < 128:
                    break
            else:
                break  # the length is not all in the buffer, or malformed: paho's path
            stop = i + length
            if stop > end:
                break  # not whole in the buffer: paho's path
            header = buf[pos]
            self._rpos = pos = stop
            qos = (header & 0x06) >> 1
            # MQTT 3.1.1 by hand when well formed (topic length, topic, packet id, payload);
            # paho's decode_publish for MQTT 5's properties and to word what is malformed.
            topic_end = i + 2 + (buf[i] << 8 | buf[i + 1]) if length >= 2 else stop + 1
            body = topic_end + 2 if qos else topic_end
            if v5 or body > stop or topic_end == i + 2:
                try:
                    packet = decode_publish(header, buf[i:stop], self._protocol)
                except MalformedPacket as exc:
                    self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
                    return mqtt.MQTT_ERR_PROTOCOL
                topic, payload, mid, properties = (packet.topic, packet.payload, packet.mid,
                                                   packet.properties)
            else:
                topic, payload, properties = buf[i + 2:topic_end], buf[body:stop], None
                mid = buf[topic_end] << 8 | buf[topic_end + 1] if qos else 0
            delivered = True
            try:
                deliver(topic.decode("utf-8", "replace"), payload, qos, mid, properties)
            except Exception as err:  # as paho guards on_message
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise
            if gate is not None and not gate.is_open():
                break  # the rest waits in the buffer (see `_loop`)
        if delivered:
            return mqtt.MQTT_ERR_SUCCESS
        return super()._packet_read()
