"""The receive fast path under :class:`~core.mqtt.client.MqttClient`: a paho client that reads
the socket in large chunks and parses PUBLISH packets itself (:class:`RawPublish`).

Measured in bench/mqtt_clients.py and bench/ingest.py (see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket


class RawPublish(NamedTuple):
    """A received PUBLISH as the hot path sees it."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    dup: bool


def varint_at(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """MQTT's Variable Byte Integer (remaining length, property length) at ``buf[pos:end]``.

    Returns ``(value, position after it)``, or ``(-1, pos)`` when it is incomplete before
    ``end`` or longer than the 4 bytes MQTT allows.
    """
    value = 0
    shift = 0
    i = pos
    while i < end and shift <= 21:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    return -1, pos


class BufferedClient(paho.Client):
    """paho's client reading the socket in large chunks.

    paho reads each packet with three or more ``recv`` calls (command byte, length bytes,
    body) and goes back to ``select`` after every packet when nothing is in flight. At
    tens of thousands of messages a second that is most of the receive cost; this subclass
    fills a buffer with one ``recv`` and handles every complete packet in it before the
    next ``select``. Measured in bench/ingest.py (see docs/benchmarks.md).
    """

    _READ_CHUNK = 256 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self._rbuf_pos = 0
        self._rbuf_sock: Any = None

    def _fill(self) -> bool:
        """One ``recv`` into the (consumed) buffer; False when the broker closed the socket.

        Raises what ``recv`` raises (``BlockingIOError`` when nothing is there).
        """
        sock = self._sock
        if sock is None:
            raise ConnectionError("self._sock is None")
        try:
            chunk = sock.recv(self._READ_CHUNK)
        except ssl.SSLWantReadError as err:
            raise BlockingIOError from err
        except ssl.SSLWantWriteError as err:
            self._call_socket_register_write()
            raise BlockingIOError from err
        if not chunk:
            return False
        self._rbuf = bytearray(chunk)
        self._rbuf_pos = 0
        self._rbuf_sock = sock
        return True

    def _sock_recv(self, bufsize: int) -> bytes:
        sock = self._sock
        if sock is None:
            raise ConnectionError("self._sock is None")
        if sock is not self._rbuf_sock:
            # A new connection: whatever was buffered belonged to the old one.
            self._rbuf = bytearray()
            self._rbuf_pos = 0
            self._rbuf_sock = sock
        available = len(self._rbuf) - self._rbuf_pos
        if available == 0:
            if not self._fill():
                return b""
            available = len(self._rbuf)
        take = min(bufsize, available)
        start = self._rbuf_pos
        self._rbuf_pos = start + take
        return bytes(self._rbuf[start : start + take])

    fast_on_message: Callable[[RawPublish], None] | None = None
    #: Gets the QoS 0/1 PUBLISHes of a whole buffer at once (see :meth:`_drain_publishes`).
    fast_on_batch: Callable[[list[RawPublish]], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        """QoS 0/1 PUBLISH straight to ``fast_on_message``, MQTT 3.1.1 or 5.

        paho builds an MQTTMessage per message, each with a threading.Condition, parses
        every MQTT 5 property into objects, and matches the topic against per-topic
        callbacks: together about half the ingester's receive cost. A PUBLISH is simple
        (topic, packet id, MQTT 5 properties, payload), so it is parsed here and the
        properties skipped (Anxin's payloads carry everything). QoS 2, a topic alias (which
        the broker uses only if the client allows it, and ours does not) and clients without
        the fast handler take paho's path.
        """
        handler = self.fast_on_message
        batch = self.fast_on_batch
        if batch is not None:
            handler = lambda m: batch([m])  # noqa: E731
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if handler is None or qos == 2:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        end = len(packet)
        if end < 2:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        topic_len = (packet[0] << 8) | packet[1]
        if topic_len == 0:
            return super()._handle_publish()
        pos = 2 + topic_len
        if pos + (2 if qos else 0) > end:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        try:
            topic = packet[2:pos].decode("utf-8")
        except UnicodeDecodeError:
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        mid = 0
        if qos:
            mid = (packet[pos] << 8) | packet[pos + 1]
            pos += 2
        if self._protocol == paho.MQTTv5:
            props_len, pos = varint_at(packet, pos, end)
            pos += props_len
            if props_len < 0 or pos > end:
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
        handler(
            RawPublish(
                topic, bytes(packet[pos:]), qos, mid, bool(header & 0x01), bool(header & 0x08)
            )
        )
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: list[int]) -> None:
        """Queue a PUBACK for each QoS 1 message id with one wake-up of the network thread.

        paho's ``ack`` wakes the network thread through a socket pair once per message, and
        writes each 4-byte PUBACK with a ``send`` of its own: acknowledging a committed batch
        of thousands that way cost a seventh of the ingest CPU. Here the PUBACKs of a batch
        are one entry of paho's out queue, written with as few ``send`` calls as the socket
        takes, in order. Each is the packet paho builds: type 4, remaining length 2, packet
        id (MQTT 5 allows omitting the reason code when it is 0, success).
        """
        if not mids:
            return
        packet = b"".join([bytes((0x40, 2, mid >> 8, mid & 0xFF)) for mid in mids])
        self._out_packet.append(
            {
                "command": 0x40,
                "mid": mids[-1],
                "qos": 0,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": None,
            }
        )
        if self._sockpairW is not None:
            with contextlib.suppress(BlockingIOError):
                self._sockpairW.send(b"0")
        self._call_socket_register_write()

    def _packet_read(self) -> MQTTErrorCode:
        """Handle a packet straight from the buffer when it is all there.

        paho reads a packet through three or more calls (command byte, each length byte, the
        body) and takes a lock twice per packet to note the time; with the packet already in
        the buffer this does it in one step. A packet split across reads takes paho's path.
        """
        if self._in_packet["command"] != 0 or self._rbuf_sock is not self._sock:
            return super()._packet_read()
        buf = self._rbuf
        pos = self._rbuf_pos
        end = len(buf)
        length, i = varint_at(buf, pos + 1, end)
        if length < 0:
            # Incomplete (or malformed) length: paho's path reads on and checks it.
            return super()._packet_read()
        if i + length > end:
            return super()._packet_read()
        self._in_packet = {
            "command": buf[pos],
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": length,
            "packet": buf[i : i + length],
            "to_process": 0,
            "pos": 0,
        }
        self._rbuf_pos = i + length
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
        # Read without the lock: a float assignment is atomic; keep-alive only compares it.
        self._last_bytes_received = time.monotonic()
        return rc

    def _buffered(self) -> bool:
        return self._rbuf_sock is self._sock and self._rbuf_pos < len(self._rbuf)

    def _drain_publishes(self) -> None:
        """Hand every complete QoS 0/1 PUBLISH at the front of the buffer to ``fast_on_batch``
        in one call.

        Per packet this is the work of :meth:`_packet_read` and :meth:`_handle_publish`
        without paho's packet dictionaries, its dispatch and a callback per message: the
        network thread was over 40 % of the ingester's CPU with them. The topic, packet id and
        properties are parsed inline, like :meth:`_handle_publish` does for one packet: a shared
        function cost 3 us per message here (35-37 -> 40 us of ingester CPU). It stops at the first
        packet that is not such a PUBLISH, is incomplete or looks malformed; paho's path
        (with the checks above) takes that one.
        """
        handler = self.fast_on_batch
        if handler is None or self._in_packet["command"] != 0 or not self._buffered():
            return
        buf = self._rbuf
        pos = self._rbuf_pos
        end = len(buf)
        v5 = self._protocol == paho.MQTTv5
        out: list[RawPublish] = []
        append = out.append
        while pos < end:
            header = buf[pos]
            qos = (header & 0x06) >> 1
            if header & 0xF0 != 0x30 or qos == 2:
                break
            length, i = varint_at(buf, pos + 1, end)
            stop = i + length
            if stop > end or length < 2:
                break
            topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
            if topic_end == i + 2 or topic_end + (2 if qos else 0) > stop:
                break  # a topic alias, or malformed: paho's path
            try:
                topic = buf[i + 2 : topic_end].decode("utf-8")
            except UnicodeDecodeError:
                break
            p = topic_end
            mid = 0
            if qos:
                mid = (buf[p] << 8) | buf[p + 1]
                p += 2
            if v5:
                props, p = varint_at(buf, p, stop)
                p += props
                if props < 0 or p > stop:
                    break
            append(
                RawPublish(
                    topic, bytes(buf[p:stop]), qos, mid, bool(header & 0x01), bool(header & 0x08)
                )
            )
            pos = stop
        if not out:
            return
        self._rbuf_pos = pos
        # Read without the lock: a float assignment is atomic; keep-alive only compares it.
        self._last_bytes_received = time.monotonic()
        if not self._manual_ack:
            for m in out:
                if m.qos == 1:
                    self._send_puback(m.mid)
        handler(out)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        while True:
            if self.fast_on_batch is not None and self._in_packet["command"] == 0:
                if not self._buffered():
                    # Read the socket here rather than through paho's byte-wise path, so the
                    # first packet of each read is drained like the rest (as paho would, a
                    # failed read is a lost connection and nothing there is no error).
                    try:
                        if not self._fill():
                            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                    except BlockingIOError:
                        return MQTTErrorCode.MQTT_ERR_SUCCESS
                    except OSError as err:
                        self._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                        return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                self._drain_publishes()
                if not self._buffered():
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN or self._sock is None or not self._buffered():
                return MQTTErrorCode.MQTT_ERR_SUCCESS
