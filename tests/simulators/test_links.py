"""A simulated device's connection against the real Mosquitto: the online status after
connecting, commands received on its cmd topic, the Last Will when the connection drops, and a
command sent while it was away delivered when it comes back (its persistent session)."""

from __future__ import annotations

import threading
import time
import uuid

from core.mqtt import IncomingMessage, MqttClient
from core.settings import load_settings
from devices import protocol as proto
from devices.model import DeviceKind
from simulators.devices import DeviceSpec
from simulators.links import Links
from tests.services import wait_until


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_online_commands_last_will_and_a_resumed_session(
    shared_broker_url: str, topic_prefix: str
) -> None:
    mqtt = load_settings(mqtt={"url": shared_broker_url, "topic_prefix": topic_prefix}).mqtt
    dev = f"wb-{uuid.uuid4().hex[:8]}"
    links = Links(mqtt, topic_prefix, {dev: DeviceSpec(dev, DeviceKind.WRISTBAND)}, {dev: [dev]})
    statuses: list[proto.Status] = []
    lock = threading.Lock()

    def on_status(msg: IncomingMessage) -> None:
        with lock:
            decoded = proto.decode(
                proto.Channel.STATUS, dev, msg.payload, proto.Limits(now_ms=_now_ms())
            )
            assert decoded.status is not None
            statuses.append(decoded.status)

    watcher = MqttClient(host=mqtt.host, port=mqtt.port, client_id=f"t-watch-{dev}")
    watcher.on_message(on_status)
    watcher.on_connect(
        lambda _p: watcher.subscribe([proto.topic(topic_prefix, dev, proto.Channel.STATUS)])
    )
    watcher.connect()
    server = MqttClient(host=mqtt.host, port=mqtt.port, client_id=f"t-server-{dev}")
    server.connect()

    def command(cid: str, kind: proto.CommandKind) -> None:
        cmd = proto.Command(cid, _now_ms(), kind, "1", None)
        server.publish(
            proto.topic(topic_prefix, dev, proto.Channel.CMD), proto.encode_command(cmd), qos=1
        )

    try:
        links.connect(dev)
        wait_until(lambda: any(s.online for s in statuses), 20, "the online status")
        command("c-1", proto.CommandKind.HELP_COMING)
        wait_until(lambda: (links.pump(0.05), links.commands)[1], 20, "the command")
        assert links.commands == [(dev, "help_coming")]

        links.drop(dev)
        wait_until(lambda: any(not s.online for s in statuses), 20, "the Last Will")
        will = next(s for s in statuses if not s.online)
        assert will.reason == "lwt"

        command("c-2", proto.CommandKind.CALL_BACK)  # while the device is away
        assert server.wait_published(10)
        links.connect(dev)
        wait_until(
            lambda: (links.pump(0.05), len(links.commands) == 2)[1], 20, "the queued command"
        )
        assert links.commands[1] == (dev, "call_back")
        wait_until(lambda: statuses[-1].online, 20, "online again")
    finally:
        links.close()
        watcher.stop()
        server.stop()
