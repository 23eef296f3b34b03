"""A real SisFall fall, through the real broker and the ingester, comes out as a finding.

Two recordings of the SisFall development split (Sucerquia et al., Sensors 17(1):198, 2017),
decimated to 50 Hz as ``detectors.evaluation`` does, are published as 1 s telemetry messages
with compact int16 bursts, device timestamps 1 s apart, each by its own device: a fall trial
and a walking trial. The ingester (a thread, with a :class:`DetectionSink`) stores them; the
fall device gets a ``FALL_SUSPECTED`` finding at its impact, the walking device none.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from core.mqtt import MqttClient
from devices.protocol import Channel, ReadingWire, accel_i16, encode_telemetry, topic
from devices.registry import ensure_devices
from ingest.detection import DetectionSink
from ingest.service import IngestService
from tests.recordings import sisfall_trial
from tests.services import HandedOn, ingest_settings, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 50
#: 1/1024 g per count: +-32 g fits int16, above the ADXL345's +-16 g and any resampling
#: overshoot, at a resolution finer than the sensor's own (1/256 g).
SCALE_G = 1.0 / 1024.0
FALL_TRIAL = ("SA01", "F01_SA01_R01")
WALK_TRIAL = ("SA01", "D01_SA01_R01")


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def running_detection(
    db_url: str, shared_broker_url: str, topic_prefix: str
) -> Iterator[tuple[IngestService, DetectionSink, HandedOn]]:
    settings = ingest_settings(db_url, shared_broker_url, topic_prefix)
    service = IngestService(settings)
    # A lambda, not service.devices.get: the snapshot dict is replaced on each refresh.
    lookup = lambda d: service.devices.get(d)  # noqa: E731, PLW0108
    sink = DetectionSink(db_url, lookup, registry=service.metrics.registry)
    service.add_sink(sink)
    handed_on = HandedOn()
    service.add_sink(handed_on)  # after the detection sink: see HandedOn
    thread = threading.Thread(target=service.run, name="test-ingest")
    thread.start()
    wait_until(lambda: service.metrics.connected._value.get() == 1, 20, "the ingester to connect")
    try:
        yield service, sink, handed_on
    finally:
        service.stop()
        thread.join(30)
        sink.close()


def _publish(
    client: MqttClient, prefix: str, device: str, acc: np.ndarray, t0_ms: int, *, rate: int = RATE
) -> int:
    """One telemetry message per second of signal at ``rate``, device timestamps 1 s apart."""
    n = math.ceil(len(acc) / rate)
    for k in range(n):
        burst = accel_i16(acc[k * rate : (k + 1) * rate], rate, SCALE_G)
        payload = encode_telemetry([ReadingWire(ts=t0_ms + 1000 * k, seq=k, accel=burst)])
        client.publish(topic(prefix, device, Channel.TELEMETRY), payload, qos=1)
    return n


def _findings(url: str) -> list[tuple[str, str, int, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT device_id, kind, (extract(epoch FROM ts) * 1000)::bigint, resident_id::text
               FROM findings ORDER BY id"""
        ).fetchall()
    return [(r[0], r[1], int(r[2]), r[3]) for r in rows]


def test_a_sisfall_fall_through_broker_and_ingester_gives_a_finding_and_walking_none(
    db_url: str,
    shared_broker_url: str,
    topic_prefix: str,
    running_detection: tuple[IngestService, DetectionSink, HandedOn],
) -> None:
    _, _, handed_on = running_detection
    fall = sisfall_trial(*FALL_TRIAL, RATE)
    walk = sisfall_trial(*WALK_TRIAL, RATE)
    assert np.abs(fall).max() < 32767 * SCALE_G, "the scale clips this recording"
    resident = str(uuid.uuid4())
    with psycopg.connect(db_url) as conn:
        # SisFall is worn at the waist: a belt clip, judged by the waist detector.
        ensure_devices(conn, ["sisfall-fall-1", "sisfall-walk-1"], kind="belt_clip")
        conn.execute(
            "UPDATE devices SET resident_id = %s WHERE device_id = 'sisfall-fall-1'", [resident]
        )
        conn.commit()

    # Recorded "just now": the trial starts this long before the wall clock, so every
    # timestamp passes the ingester's future-skew check (walking is 100 s long).
    t0 = int(time.time() * 1000) - 20_000
    host, port = _host_port(shared_broker_url)
    client = MqttClient(host=host, port=port, client_id=f"sisfall-{uuid.uuid4().hex[:6]}")
    client.connect_inline()
    try:
        sent = _publish(client, topic_prefix, "sisfall-fall-1", fall, t0)
        sent += _publish(client, topic_prefix, "sisfall-walk-1", walk, t0)
        while client.pending_out():
            client.pump(0.01)
    finally:
        client.stop()

    wait_until(lambda: handed_on.bursts >= sent, 60, f"{sent} bursts through detection")
    found = _findings(db_url)
    suspected = [f for f in found if f[1] == "fall_suspected"]
    assert [(f[0], f[3]) for f in suspected] == [("sisfall-fall-1", resident)]
    impact_s = (suspected[0][2] - t0) / 1000
    assert 6.5 < impact_s < 8.5, f"impact at {impact_s:.2f} s into the recording"
    assert not [f for f in found if f[0] == "sisfall-walk-1" and f[1].startswith("fall")]
