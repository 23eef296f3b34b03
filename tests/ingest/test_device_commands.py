"""A suspected fall asks the wearer, from the deployed ingester: ``anxin ingest`` as an operator
runs it sends "are you all right? press to cancel" to the device's cmd topic."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from core.mqtt import IncomingMessage, MqttClient
from devices.protocol import (
    Channel,
    Command,
    CommandKind,
    Event,
    EventKind,
    decode_command,
    encode_event,
    topic,
)
from tests.ingest.test_fault_injection import _register, services_env
from tests.services import IngestProcess, PrivateBroker, serve_receiver, wait_until

pytestmark = [pytest.mark.integration]


def test_a_fall_the_device_detected_opens_a_pending_alert_and_asks_the_wearer(
    db_url: str, private_broker: PrivateBroker, tmp_path: Path
) -> None:
    device = "cmd-wb-1"
    _register(db_url, [device])
    receiver_gen = serve_receiver()
    receiver = next(receiver_gen)
    env = services_env(db_url, private_broker.url, receiver.url, "cmd")
    prefix = env["ANXIN_MQTT__TOPIC_PREFIX"]
    ingest = IngestProcess(env, tmp_path / "ingest.log")
    got: list[Command] = []
    lock = threading.Lock()

    def on_message(msg: IncomingMessage) -> None:
        with lock:
            got.append(decode_command(msg.payload))

    wearer = MqttClient(
        host="127.0.0.1", port=private_broker.port,
        client_id=f"cmd-dev-{uuid.uuid4().hex[:6]}", protocol_v5=False,
    )  # fmt: skip
    wearer.on_message(on_message)
    try:
        ingest.start()
        wearer.connect()
        wearer.subscribe([topic(prefix, device, Channel.CMD)], qos=1)
        # The same connection: the broker has the subscription before it has the event.
        fall = Event(int(time.time() * 1000), 1, device, EventKind.FALL)
        wearer.publish(topic(prefix, device, Channel.EVENT), encode_event(fall), qos=1)
        wait_until(lambda: bool(got), 30, "a command on the device's cmd topic")
        with psycopg.connect(db_url) as conn:
            alerts = conn.execute("SELECT kind, state FROM alerts").fetchall()
    finally:
        wearer.stop()
        ingest.stop()
        receiver_gen.close()
    assert alerts == [("fall", "pending")]
    with lock:
        assert [c.kind for c in got] == [CommandKind.ARE_YOU_OK]
