"""The only package that imports the MQTT client library (paho-mqtt 2.x).

Ingest, the simulators and the alert command sender get their clients from here, so a
change of client library touches this package alone. paho is used directly rather than through
aiomqtt on the ingest path because it lets the service acknowledge a message by hand after
its rows are committed (``manual_ack``) and its network loop runs in its own thread, off
the event loop.
"""

from __future__ import annotations

from core.mqtt.client import IncomingMessage, MqttClient, MqttError, client_for, is_success
from core.mqtt.wire import RawPublish, varint_at

__all__ = [
    "IncomingMessage",
    "MqttClient",
    "MqttError",
    "RawPublish",
    "client_for",
    "is_success",
    "varint_at",
]
