"""A real wrist fall, through the real broker and the ingester, for a device registered as a
wristband: a pending fall alert opens and the device is asked "are you all right?"; a real wrist
activity recording (an older participant clapping) opens nothing.

Recordings from the WEDA-FALL development split (``../shared/datasets/wrist/weda-fall``, 50 Hz,
g), published as 1 s telemetry messages with compact int16 bursts, as recorded and resampled to
25 Hz (a slower band, scored by the model trained at 25 Hz). The ingester's detection
sink hands its stored findings to the alert listener, whose command sender is captured.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from alerts.listener import AlertListener
from alerts.service import AlertService, PostgresDirectory
from core.mqtt import MqttClient
from core.settings import AlertsSettings
from devices.protocol import Command, CommandKind
from devices.registry import ensure_devices
from ingest.detection import DetectionSink
from ingest.service import IngestService
from tests.ingest.test_detection_integration import SCALE_G, _host_port, _publish
from tests.recordings import weda_trial
from tests.services import HandedOn, ingest_settings, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FALL_TRIAL = ("U01", "F01_U01_R01")  # fall forward while walking (slip), young participant
ADL_TRIAL = ("U23", "D10_U23_R01")  # clapping hands, participant aged 81-95


class _Commands:
    """Captures what the alert service sends to devices."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Command]] = []

    def send(self, device_id: str, command: Command) -> None:
        self.sent.append((device_id, command))


@pytest.fixture
def running(
    db_url: str, shared_broker_url: str, topic_prefix: str
) -> Iterator[tuple[IngestService, _Commands, HandedOn]]:
    settings = ingest_settings(db_url, shared_broker_url, topic_prefix)
    service = IngestService(settings)
    lookup = lambda d: service.devices.get(d)  # noqa: E731, PLW0108
    commands = _Commands()
    alerts = AlertService(
        AlertsSettings(operator_url="json://localhost/op"), PostgresDirectory(), commands=commands
    )
    listener = AlertListener(lambda: psycopg.connect(db_url, autocommit=True), alerts)
    sink = DetectionSink(db_url, lookup, listeners=[listener], registry=service.metrics.registry)
    service.add_sink(sink)
    handed_on = HandedOn()
    service.add_sink(handed_on)  # after the detection sink and its alert listener
    thread = threading.Thread(target=service.run, name="test-ingest")
    thread.start()
    wait_until(lambda: service.metrics.connected._value.get() == 1, 20, "the ingester to connect")
    try:
        yield service, commands, handed_on
    finally:
        service.stop()
        thread.join(30)
        sink.close()
        listener.close()


def _alerts(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT device_id, kind, state FROM alerts ORDER BY id").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


@pytest.mark.parametrize("rate", [50, 25])
def test_a_wrist_fall_opens_a_pending_alert_and_asks_the_wearer_and_clapping_opens_nothing(
    rate: int,
    db_url: str,
    shared_broker_url: str,
    topic_prefix: str,
    running: tuple[IngestService, _Commands, HandedOn],
) -> None:
    _, commands, handed_on = running
    fall = weda_trial(*FALL_TRIAL, rate)
    clap = weda_trial(*ADL_TRIAL, rate)
    assert np.abs(fall).max() < 32767 * SCALE_G, "the scale clips this recording"
    with psycopg.connect(db_url) as conn:
        ensure_devices(conn, ["wrist-fall-1", "wrist-clap-1"], kind="wristband")
        conn.commit()
    t0 = int(time.time() * 1000) - 15_000
    host, port = _host_port(shared_broker_url)
    client = MqttClient(host=host, port=port, client_id=f"wrist-{uuid.uuid4().hex[:6]}")
    client.connect_inline()
    try:
        sent = _publish(client, topic_prefix, "wrist-fall-1", fall, t0, rate=rate)
        sent += _publish(client, topic_prefix, "wrist-clap-1", clap, t0, rate=rate)
        while client.pending_out():
            client.pump(0.01)
    finally:
        client.stop()

    wait_until(lambda: handed_on.bursts >= sent, 60, f"{sent} bursts through detection")
    alerts = _alerts(db_url)
    assert alerts == [("wrist-fall-1", "fall", "pending")]
    asked = [(d, c.kind) for d, c in commands.sent]
    assert asked == [("wrist-fall-1", CommandKind.ARE_YOU_OK)]
