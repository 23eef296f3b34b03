"""The MQTT client Anxin uses everywhere (:class:`MqttClient`) and its construction from the
settings (:func:`client_for`)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import AnxinError
from core.mqtt.wire import BufferedClient, RawPublish
from core.settings import MqttSettings


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
        self._client = BufferedClient(
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
        self._suback = threading.Condition()
        self._subscribed: dict[int, bool] = {}
        self._client.on_subscribe = self._handle_subscribe

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

    def subscribe(self, topics: list[str], qos: int = 1) -> int | None:
        """Subscribe to ``topics``; the message id to pass to :meth:`wait_subscribed` (None
        when there is nothing to subscribe to or the request could not be sent)."""
        if not topics:
            return None
        rc, mid = self._client.subscribe([(t, qos) for t in topics])
        return mid if is_success(rc) and mid is not None else None

    def wait_subscribed(self, mid: int | None, timeout_s: float) -> bool:
        """Wait until the broker has granted the subscription ``mid`` (its SUBACK), so
        messages published from now on reach this client. False when it did not answer in
        ``timeout_s`` or refused a topic. Not from a callback: it blocks the network thread
        that would deliver the SUBACK."""
        if mid is None:
            return False
        with self._suback:
            if not self._suback.wait_for(lambda: mid in self._subscribed, timeout_s):
                return False
            return self._subscribed.pop(mid)

    def _handle_subscribe(
        self, _client: Any, _userdata: Any, mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        with self._suback:
            self._subscribed[mid] = not any(r.is_failure for r in reasons)
            self._suback.notify_all()

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
