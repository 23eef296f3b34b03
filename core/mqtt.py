"""The only module that imports the MQTT client library (paho-mqtt 2.x).

Ingest, the simulators and the alert command sender get their clients from here, so a
change of client library touches this file alone. paho is used directly rather than through
aiomqtt on the ingest path because it lets the service acknowledge a message by hand after
its rows are committed (``manual_ack``) and its network loop runs in its own thread, off
the event loop.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import AnxinError
from core.settings import MqttSettings

__all__ = [
    "IncomingMessage",
    "MqttClient",
    "MqttError",
    "RawPublish",
    "client_for",
]


class MqttError(AnxinError):
    """The broker refused a connection or an operation failed."""


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    duplicate: bool


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


class _BufferedClient(paho.Client):
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


class MqttClient:
    """A paho client with the settings Anxin uses everywhere.

    MQTT 5 with a persistent session (``clean_start=False`` plus a session expiry) so the
    broker keeps QoS 1 messages for us while we are away, and a Receive Maximum that opens
    the in-flight window when messages are acknowledged after commit.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        keepalive_s: int = 30,
        persistent: bool = False,
        session_expiry_s: int = 0,
        receive_maximum: int | None = None,
        manual_ack: bool = False,
        will: tuple[str, bytes, int, bool] | None = None,
        max_queued_out: int = 0,
        protocol_v5: bool = True,
    ) -> None:
        self._host = host
        self._port = port
        self._keepalive = keepalive_s
        self._persistent = persistent
        self._session_expiry = session_expiry_s
        self._receive_maximum = receive_maximum
        self._client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if protocol_v5 else paho.MQTTv311,
            manual_ack=manual_ack,
            # MQTT 3.1.1 keeps a session with clean_session=False (MQTT 5 uses clean_start).
            clean_session=None if protocol_v5 else not persistent,
        )
        self._v5 = protocol_v5
        # 0 = no limit: a publisher keeps what it could not send yet (a device backlog).
        self._client.max_queued_messages_set(max_queued_out)
        self._client.max_inflight_messages_set(65535 if manual_ack else 1000)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            context = ssl.create_default_context(cafile=ca_file)
            self._client.tls_set_context(context)
        if will is not None:
            topic, payload, qos, retain = will
            self._client.will_set(topic, payload, qos=qos, retain=retain)
        self.connected = threading.Event()
        self.generation = 0
        self._on_message: Callable[[IncomingMessage], None] | None = None
        self._on_connect_hooks: list[Callable[[bool], None]] = []
        self._on_disconnect_hooks: list[Callable[[str], None]] = []
        self.last_error: str | None = None
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message

    # -- callbacks ---------------------------------------------------------------------
    def on_message(self, callback: Callable[[IncomingMessage], None]) -> None:
        self._on_message = callback

    def on_raw_messages(self, callback: Callable[[list[RawPublish]], None]) -> None:
        """The hot path: QoS 0/1 messages as lists of :class:`RawPublish`, as many at a time as
        one read from the socket holds, parsed without paho's per-message objects (MQTT 3.1.1
        and 5). QoS 2 and anything paho's own path handles come as lists of one."""
        self._client.fast_on_batch = callback
        if self._on_message is None:
            self._on_message = lambda m: callback(
                [RawPublish(m.topic, m.payload, m.qos, m.mid, m.retain, m.duplicate)]
            )

    def on_raw_message(self, callback: Callable[[RawPublish], None]) -> None:
        """The hot-path variant: every QoS 0/1 message of an MQTT 3.1.1 connection as a
        :class:`RawPublish`, parsed without paho's per-message objects. Other messages (MQTT 5)
        come through :meth:`on_message`'s path converted to the same tuple."""
        self._client.fast_on_message = callback
        if self._on_message is None:
            self._on_message = lambda m: callback(
                RawPublish(m.topic, m.payload, m.qos, m.mid, m.retain, m.duplicate)
            )

    def on_connect(self, callback: Callable[[bool], None]) -> None:
        """``callback(session_present)`` after every successful (re)connect."""
        self._on_connect_hooks.append(callback)

    def on_disconnect(self, callback: Callable[[str], None]) -> None:
        self._on_disconnect_hooks.append(callback)

    def _handle_connect(
        self,
        _c: paho.Client,
        _u: Any,
        flags: paho.ConnectFlags,
        rc: ReasonCode,
        _p: Properties | None,
    ) -> None:
        if rc.is_failure:
            self.last_error = f"broker refused the connection: {rc}"
            return
        self.generation += 1
        self.last_error = None
        self.connected.set()
        for hook in self._on_connect_hooks:
            hook(flags.session_present)

    def _handle_disconnect(
        self,
        _c: paho.Client,
        _u: Any,
        _f: paho.DisconnectFlags,
        rc: ReasonCode,
        _p: Properties | None,
    ) -> None:
        self.connected.clear()
        for hook in self._on_disconnect_hooks:
            hook(str(rc))

    def _handle_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is not None:
            self._on_message(
                IncomingMessage(
                    msg.topic, bytes(msg.payload), msg.qos, msg.mid, msg.retain, bool(msg.dup)
                )
            )

    # -- lifecycle ---------------------------------------------------------------------
    def _connect_properties(self) -> Properties | None:
        if not self._v5:
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self._persistent:
            props.SessionExpiryInterval = self._session_expiry
        if self._receive_maximum is not None:
            props.ReceiveMaximum = self._receive_maximum
        return props

    def start(self) -> None:
        """Connect in the background and keep reconnecting; the network loop runs in a thread."""
        self._client.connect_async(
            self._host,
            self._port,
            keepalive=self._keepalive,
            clean_start=(not self._persistent) if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=self._connect_properties(),
        )
        self._client.loop_start()

    def connect(self, timeout_s: float = 10.0) -> None:
        """Start and wait for the first connection.

        Raises:
            MqttError: not connected within ``timeout_s``.
        """
        self.start()
        if not self.connected.wait(timeout_s):
            self.stop()
            detail = self.last_error or "no answer"
            raise MqttError(
                f"Cannot connect to the MQTT broker at {self._host}:{self._port}: {detail}"
            )

    def connect_inline(self, timeout_s: float = 10.0) -> None:
        """Connect without a network thread: the caller drives I/O with :meth:`pump`.

        A load generator publishing from one thread avoids paho's per-message wake-up of
        the network thread this way.

        Raises:
            MqttError: not connected within ``timeout_s``.
        """
        try:
            self._client.connect(
                self._host,
                self._port,
                keepalive=self._keepalive,
                clean_start=(not self._persistent)
                if self._v5
                else paho.MQTT_CLEAN_START_FIRST_ONLY,
                properties=self._connect_properties(),
            )
        except OSError as exc:
            raise MqttError(
                f"Cannot connect to the MQTT broker at {self._host}:{self._port}: {exc}"
            ) from exc
        deadline = time.monotonic() + timeout_s
        while not self.connected.is_set():
            if time.monotonic() > deadline:
                raise MqttError(
                    f"Cannot connect to the MQTT broker at {self._host}:{self._port}: {self.last_error or 'no answer'}"
                )
            self._client.loop(timeout=0.05)

    def pump(self, timeout_s: float = 0.0) -> None:
        """Read and write what is pending (inline mode only); reconnects when the link dropped."""
        rc = self._client.loop(timeout=timeout_s)
        if rc in (MQTTErrorCode.MQTT_ERR_CONN_LOST, MQTTErrorCode.MQTT_ERR_NO_CONN):
            try:
                self._client.reconnect()
            except OSError:
                time.sleep(0.2)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def drop(self) -> None:
        """Close the connection without DISCONNECT, as a device losing power or its network
        does: the broker publishes the Last Will. Inline mode only; the client is not used
        again (a device that comes back connects with a new client and the same id)."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # an ssl.SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def subscribe(self, topics: list[str], qos: int = 1) -> None:
        if topics:
            self._client.subscribe([(t, qos) for t in topics])

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> paho.MQTTMessageInfo:
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a message received with ``manual_ack``; QoS 0 needs none."""
        if qos:
            self._client.ack(mid, qos)

    def ack_many(self, mids: list[int]) -> None:
        """Acknowledge many QoS 1 messages (received with ``manual_ack``) at once."""
        self._client.ack_many(mids)

    def flush_out(self, timeout_s: float) -> bool:
        """Wait until every queued packet is written to the socket (at most ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while self._client._out_packet:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def pending_out(self) -> int:
        """Messages published but not yet acknowledged by the broker."""
        return len(self._client._out_messages)

    def wait_published(self, timeout_s: float) -> bool:
        """Wait until every QoS 1 message sent has been acknowledged by the broker."""
        deadline = time.monotonic() + timeout_s
        while self.pending_out():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def client_for(
    settings: MqttSettings,
    *,
    client_id: str | None = None,
    persistent: bool = False,
    manual_ack: bool = False,
    receive_maximum: int | None = None,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes, int, bool] | None = None,
) -> MqttClient:
    """A client configured from the settings (the service's own credentials by default)."""
    secret = settings.password.get_secret_value() if settings.password else None
    return MqttClient(
        host=settings.host,
        port=settings.port,
        client_id=client_id or settings.client_id,
        username=username if username is not None else settings.username,
        password=password if password is not None else secret,
        tls=settings.tls,
        ca_file=str(settings.ca_file) if settings.ca_file else None,
        keepalive_s=settings.keepalive_s,
        persistent=persistent,
        session_expiry_s=settings.session_expiry_s,
        receive_maximum=receive_maximum,
        manual_ack=manual_ack,
        will=will,
        protocol_v5=settings.protocol == "5",
    )


def is_success(code: MQTTErrorCode) -> bool:
    return code == MQTTErrorCode.MQTT_ERR_SUCCESS
