"""The scenario's MQTT connections, as firmware opens them (the I/O shell of the plan).

One paho client per link (:class:`core.mqtt.MqttClient`, inline mode: the runner's thread
drives all of them): client id = device id, a persistent session (a week's expiry), the Last
Will on its retained status topic stamped with the time of connecting, the online status right
after CONNACK, and a subscription to the ``cmd`` topics of the link and of the devices behind
it, whose commands are recorded. ``drop`` closes the socket without DISCONNECT; a later
``connect`` resumes the session with a new client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.mqtt import IncomingMessage, MqttClient
from core.settings import MqttSettings
from devices import protocol as proto
from simulators.devices import DeviceSpec

SESSION_EXPIRY_S = 7 * 86_400


@dataclass(frozen=True, slots=True)
class Sent:
    """A labelled message, the device it is of, and the wall time it left (for the report's
    latencies)."""

    device: str
    label: str
    at_s: float


@dataclass
class Links:
    """Open connections of one scenario run."""

    mqtt: MqttSettings
    prefix: str
    specs: dict[str, DeviceSpec]
    links: dict[str, list[str]]
    wall_ms: Callable[[], int] = field(default=lambda: time.time_ns() // 1_000_000)
    clients: dict[str, MqttClient] = field(default_factory=dict)
    commands: list[tuple[str, str]] = field(default_factory=list)
    """(device id, command type) of every command received on a cmd topic."""
    sent: list[Sent] = field(default_factory=list)
    published: int = 0

    def _status(self, link: str, online: bool, reason: str | None) -> bytes:
        spec = self.specs[link]
        ts = self.wall_ms() + round(spec.clock_skew_s * 1000)
        return proto.encode_status(
            proto.Status(
                ts, link, online, spec.firmware, spec.battery_pct if online else None, reason
            )
        )

    def connect(self, link: str) -> None:
        """Connect (persistent session, Last Will) and publish the online status."""
        will = (
            proto.topic(self.prefix, link, proto.Channel.STATUS),
            self._status(link, False, "lwt"),
            1,
            True,
        )
        client = MqttClient(
            host=self.mqtt.host,
            port=self.mqtt.port,
            client_id=link,
            username=self.mqtt.username,
            password=self.mqtt.password.get_secret_value() if self.mqtt.password else None,
            tls=self.mqtt.tls,
            ca_file=str(self.mqtt.ca_file) if self.mqtt.ca_file else None,
            keepalive_s=30,
            persistent=True,
            session_expiry_s=SESSION_EXPIRY_S,
            will=will,
            protocol_v5=self.mqtt.protocol == "5",
        )
        client.on_message(self._command)
        client.connect_inline()
        client.subscribe([proto.topic(self.prefix, d, proto.Channel.CMD) for d in self.links[link]])
        self.clients[link] = client
        self.status(link, online=True)

    def _command(self, msg: IncomingMessage) -> None:
        device = msg.topic.split("/")[-2]
        try:
            self.commands.append((device, proto.decode_command(msg.payload).kind.value))
        except proto.ProtocolError as exc:
            # Firmware would refuse it; the report shows what arrived.
            self.commands.append((device, f"undecodable ({exc.reason.value})"))

    def status(self, link: str, *, online: bool, reason: str | None = None) -> None:
        client = self.clients[link]
        client.publish(
            proto.topic(self.prefix, link, proto.Channel.STATUS),
            self._status(link, online, reason),
            qos=1,
            retain=True,
        )
        self.published += 1

    def publish(
        self, link: str, channel: proto.Channel, payload: bytes, label: str, device: str = ""
    ) -> None:
        client = self.clients.get(link)
        if client is None:
            return  # the firmware model already kept it in the backlog; nothing to send on
        client.publish(proto.topic(self.prefix, link, channel), payload, qos=1)
        self.published += 1
        if label not in ("telemetry",) and not label.startswith("batch"):
            self.sent.append(Sent(device or link, label, time.time()))

    def _settle(self, client: MqttClient, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while client.pending_out() and time.monotonic() < deadline:
            client.pump(0.01)

    def drop(self, link: str) -> None:
        """Lose the connection: what the broker acknowledged stays sent; no DISCONNECT."""
        client = self.clients.pop(link, None)
        if client is not None:
            self._settle(client, 30)
            client.drop()

    def disconnect(self, link: str) -> None:
        client = self.clients.pop(link, None)
        if client is not None:
            self._settle(client, 30)
            client.stop()

    def pump(self, timeout_s: float = 0.0) -> None:
        clients = list(self.clients.values())
        if not clients:
            time.sleep(timeout_s)
            return
        share = timeout_s / len(clients)
        for c in clients:
            c.pump(share)

    def pending(self) -> int:
        return sum(c.pending_out() for c in self.clients.values())

    def flush(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < deadline:
            self.pump(0.01)
        return self.pending() == 0

    def close(self) -> None:
        """A plain DISCONNECT on every open link (the Last Will is discarded)."""
        for link in list(self.clients):
            self.disconnect(link)
