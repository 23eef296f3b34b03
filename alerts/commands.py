"""Back to the device: "are you all right?" when a fall is suspected, "help is coming" when
someone acknowledges, on the device's command topic.

:func:`help_coming` builds the command (pure); an :class:`AlertCommandSender` sends it.
:class:`MqttCommandSender` publishes ``{prefix}/dev/{device_id}/cmd`` at QoS 1 through
:mod:`core.mqtt` (the one importer of the MQTT library).
"""

from __future__ import annotations

import logging
from typing import Protocol

from core.mqtt import MqttClient, client_for
from core.settings import MqttSettings
from devices.protocol import Channel, Command, CommandKind, encode_command, topic

log = logging.getLogger(__name__)

HELP_COMING_TEXT = "已收到求助，救援正在赶来。Help is coming."  # noqa: RUF001 - Chinese punctuation


ARE_YOU_OK_TEXT = "您还好吗？没事请按键取消。Are you all right? Press to cancel."  # noqa: RUF001 - Chinese punctuation


class AlertCommandSender(Protocol):
    def send(self, device_id: str, command: Command) -> None:
        """Send ``command`` to the device (at least once); must not block for long."""
        ...


def help_coming(alert_id: int, now_ms: int, text: str = HELP_COMING_TEXT) -> Command:
    """The command that tells the wearer someone acknowledged alert ``alert_id``."""
    return Command(
        id=f"alert-{alert_id}-help",
        ts_ms=now_ms,
        kind=CommandKind.HELP_COMING,
        alert_id=str(alert_id),
        text=text,
    )


def are_you_ok(alert_id: int, now_ms: int, text: str = ARE_YOU_OK_TEXT) -> Command:
    """The question to the wearer when a suspected fall opened pending alert ``alert_id``."""
    return Command(
        id=f"alert-{alert_id}-ask",
        ts_ms=now_ms,
        kind=CommandKind.ARE_YOU_OK,
        alert_id=str(alert_id),
        text=text,
    )


def command_topic(prefix: str, device_id: str) -> str:
    return topic(prefix, device_id, Channel.CMD)


class MqttCommandSender:
    """Publishes commands through its own MQTT connection (network loop in paho's thread).

    paho queues a QoS 1 publish while disconnected and sends it on reconnect, so a command
    given during a broker restart still arrives (it is lost only if this process stops first).
    """

    def __init__(self, settings: MqttSettings, *, client_id: str = "anxin-alert-commands") -> None:
        self._prefix = settings.topic_prefix
        self._client: MqttClient = client_for(settings, client_id=client_id)
        self._started = False

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect (raises :class:`core.mqtt.MqttError` when the broker does not answer)."""
        self._client.connect(timeout_s)
        self._started = True

    def send(self, device_id: str, command: Command) -> None:
        if not self._started:
            # Connect in the background; paho keeps the publish queued until connected.
            self._client.start()
            self._started = True
        self._client.publish(command_topic(self._prefix, device_id), encode_command(command), qos=1)
        log.info("command %s sent to device %s", command.kind.value, device_id)

    def wait_published(self, timeout_s: float) -> bool:
        return self._client.wait_published(timeout_s)

    def close(self) -> None:
        if self._started:
            self._client.wait_published(2.0)
            self._client.stop()
            self._started = False
