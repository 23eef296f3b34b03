"""A bare MQTT 3.1.1 QoS 1 publisher for load generation.

Thousands of simulated wristbands stand for thousands of separate devices; on one test machine
they must not take the CPU that the system under test needs. paho-mqtt costs about 120 us of
CPU per QoS 1 publish here (message objects, locks, one socket write per packet), so four
processes publishing 5,000 messages a second took most of a core of a two-core machine. This
client builds PUBLISH packets by hand, writes them in batches and only counts PUBACKs: a few
microseconds per message. It speaks just what a load generator needs (CONNECT with a clean
session, optional username and password, QoS 1 PUBLISH, PUBACK, PINGREQ, DISCONNECT); the
devices' and the services' own clients stay paho (:mod:`core.mqtt`).

As firmware does, it keeps every message until its PUBACK: when the connection breaks it
connects again (for up to ``reconnect_for_s``) and sends again, flagged DUP, what was not
acknowledged; the backend stores a reading sent twice once.

It has the publishing surface of :class:`core.mqtt.MqttClient` that
:func:`simulators.wearable.publish_fleet` uses (``publish``, ``pump``, ``pending_out``,
``stop``), so either can drive a fleet::

    client = RawPublisher("127.0.0.1", 1883, client_id="load-1")
    client.connect_inline()
    publish_fleet(client, fleet, seconds=30, paced=True)
    client.stop()
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time

from core.errors import AnxinError
from core.mqtt import varint_at

CONNECT, CONNACK, PUBLISH_QOS1, PUBACK = 0x10, 0x20, 0x32, 0x40
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0
DUP_FLAG = 0x08

_CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttProtocolError(AnxinError, RuntimeError):
    """The broker refused the connection or sent something this client does not expect."""


class ConnectionLost(MqttProtocolError):
    """The broker closed the connection."""


def encode_varint(n: int) -> bytes:
    """MQTT's Remaining Length: 7 bits a byte, least significant first."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(raw)) + raw


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """One QoS 1 PUBLISH packet (MQTT 3.1.1, section 3.3)."""
    head = struct.pack("!H", len(topic)) + topic + struct.pack("!H", packet_id)
    return bytes((PUBLISH_QOS1,)) + encode_varint(len(head) + len(payload)) + head + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise MqttProtocolError("the broker closed the connection before CONNACK")
        data += chunk
    return data


def _check_connack(ack: bytes) -> None:
    if ack[0] != CONNACK:
        raise MqttProtocolError(f"expected CONNACK, got packet type {ack[0] >> 4}")
    if ack[3] != 0:
        reason = _CONNACK_CODES.get(ack[3], f"code {ack[3]}")
        raise MqttProtocolError(f"the broker refused the connection: {reason}")


class RawPublisher:
    """Publish QoS 1 messages over one TCP connection; see the module's notes."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 60,
        flush_bytes: int = 16_384,
        reconnect_for_s: float = 60.0,
    ) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self._username, self._password = username, password
        self._keepalive = keepalive_s
        self._flush_bytes = flush_bytes
        self._sock: socket.socket | None = None
        self._out = bytearray()
        self._in = bytearray()
        self._inflight: dict[int, bytes] = {}  # packet id -> its PUBLISH, until the PUBACK
        self._reconnect_for_s = reconnect_for_s
        self._next_id = 1
        self._last_sent = time.monotonic()
        self._topics: dict[str, bytes] = {}
        self.acknowledged = 0
        self.reconnects = 0

    # -- connection --------------------------------------------------------------------
    def connect_inline(self, timeout_s: float = 10.0) -> None:
        """Connect and wait for the CONNACK (clean session)."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0x02  # clean session
        body = _string(self.client_id)
        if self._username is not None:
            flags |= 0x80
            body += _string(self._username)
            if self._password is not None:
                flags |= 0x40
                body += _string(self._password)
        variable = _string("MQTT") + bytes((4, flags)) + struct.pack("!H", self._keepalive)
        try:
            sock.sendall(
                bytes((CONNECT,)) + encode_varint(len(variable) + len(body)) + variable + body
            )
            _check_connack(_recv_exact(sock, 4))
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self._last_sent = time.monotonic()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Wait (up to ``timeout_s``) for outstanding PUBACKs, then DISCONNECT and close."""
        if self._sock is None:
            return
        deadline = time.monotonic() + timeout_s
        while self._inflight and time.monotonic() < deadline:
            self.pump(0.01)
        self._out += bytes((DISCONNECT, 0))
        with contextlib.suppress(OSError):
            self._flush()
        self._sock.close()
        self._sock = None

    # -- publishing --------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Queue one QoS 1 message; written at the next ``pump`` or when the buffer fills."""
        if qos != 1:
            raise ValueError(f"RawPublisher publishes QoS 1 only, not QoS {qos}")
        raw = self._topics.get(topic)
        if raw is None:
            raw = self._topics[topic] = topic.encode()
        pid = self._next_id
        while pid in self._inflight:  # 65,535 unacknowledged: wait for the broker
            self.pump(0.01)
        self._next_id = pid % 65535 + 1
        packet = self._inflight[pid] = publish_packet(raw, payload, pid)
        self._out += packet
        if len(self._out) >= self._flush_bytes:
            try:
                self._flush()
            except (OSError, ConnectionLost) as exc:
                self._reconnect(exc)
        return pid

    def pending_out(self) -> int:
        """Messages published and not yet acknowledged by the broker."""
        return len(self._inflight)

    def pump(self, timeout_s: float = 0.0) -> None:
        """Write what is queued, then read PUBACKs for up to ``timeout_s``."""
        try:
            self._pump(timeout_s)
        except (OSError, ConnectionLost) as exc:
            self._reconnect(exc)

    def _pump(self, timeout_s: float) -> None:
        sock = self._require()
        self._flush()
        if time.monotonic() - self._last_sent > self._keepalive / 2:
            self._out += bytes((PINGREQ, 0))
            self._flush()
        readable, _, _ = select.select([sock], [], [], max(0.0, timeout_s))
        if readable:
            self._read()

    # -- internals ---------------------------------------------------------------------
    def _reconnect(self, cause: Exception) -> None:
        """Connect again and queue, flagged DUP, every message not acknowledged."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        deadline = time.monotonic() + self._reconnect_for_s
        while True:
            try:
                self.connect_inline()
                break
            except (OSError, MqttProtocolError):
                if time.monotonic() >= deadline:
                    raise ConnectionLost(
                        f"the connection broke ({cause!r}) and could not be made again within "
                        f"{self._reconnect_for_s:.0f} s"
                    ) from cause
                time.sleep(0.5)
        self.reconnects += 1
        self._in.clear()
        self._out = bytearray().join(
            bytes((packet[0] | DUP_FLAG,)) + packet[1:] for packet in self._inflight.values()
        )

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise MqttProtocolError("not connected: call connect_inline() first")
        return self._sock

    def _flush(self) -> None:
        sock = self._require()
        out = self._out
        while out:
            try:
                sent = sock.send(out)
            except BlockingIOError:
                select.select([], [sock], [], 1.0)
                self._read()  # keep PUBACKs flowing while the broker's window is full
                continue
            del out[:sent]
        self._last_sent = time.monotonic()

    def _read(self) -> None:
        sock = self._require()
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            raise ConnectionLost("the broker closed the connection")
        buf = self._in
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            kind = buf[pos]
            length, i = varint_at(buf, pos + 1, n)
            if length < 0:
                break  # the rest of the packet is still on its way
            if n - i < length:
                break
            if kind == PUBACK:
                pid = (buf[i] << 8) | buf[i + 1]
                if self._inflight.pop(pid, None) is not None:
                    self.acknowledged += 1
            elif kind != PINGRESP:
                raise MqttProtocolError(f"unexpected packet type {kind >> 4} from the broker")
            pos = i + length
        del buf[:pos]
