"""The urgent lane in a process of its own (``anxin ingest --lane urgent``) beside the
telemetry lane's (``--lane telemetry``), as docs/operations.md tells an operator to run them.

What a dispatch centre and a doctor rely on, checked through a real broker and database:

* an SOS reaches the 120 receiver from the urgent process itself (no delivery worker runs),
  once, and is stored once although both processes receive it;
* a fall that the device detected is stored and handled by the telemetry process's fall
  detector (the urgent process runs no stateful detector) and becomes a fall finding;
* telemetry is stored once;
* an SOS pressed while the urgent process is down waits for it at the broker (the telemetry
  process does not store it) and is stored, alerted and pushed once it is back.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest

from core.mqtt import MqttClient
from devices.protocol import (
    Channel,
    Event,
    EventKind,
    ReadingWire,
    Vitals,
    encode_event,
    encode_telemetry,
    topic,
)
from tests.ingest.test_fault_injection import _kind_of, _register, services_env
from tests.services import IngestProcess, PrivateBroker, serve_receiver, wait_until

pytestmark = [pytest.mark.integration]


def _count(url: str, sql: str, *args: object) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])


def test_urgent_and_telemetry_lanes_in_two_processes(
    db_url: str, private_broker: PrivateBroker, tmp_path: Path
) -> None:
    broker = private_broker
    devices = [f"ln-wb-{i}" for i in range(4)]  # 0 streams, 1 and 3 press SOS, 2 falls
    _register(db_url, devices)
    receiver_gen = serve_receiver()
    receiver = next(receiver_gen)
    env = services_env(
        db_url,
        broker.url,
        receiver.url,
        "ln",
        ANXIN_INGEST__SWEEP_EVERY_S="0.5",
        ANXIN_INGEST__SWEEP_GRACE_S="2",
        ANXIN_ALERTS__DELIVERY_LEASE_S="3",
    )
    prefix = env["ANXIN_MQTT__TOPIC_PREFIX"]
    telemetry = IngestProcess(env, tmp_path / "telemetry.log", ("--lane", "telemetry"))
    urgent = IngestProcess(env, tmp_path / "urgent.log", ("--lane", "urgent"))
    device = MqttClient(
        host="127.0.0.1", port=broker.port, client_id=f"ln-dev-{uuid.uuid4().hex[:6]}",
        persistent=True, protocol_v5=False,
    )  # fmt: skip

    def publish(dev: str, channel: Channel, payload: bytes) -> None:
        device.publish(topic(prefix, dev, channel), payload, qos=1)
        while device.pending_out():
            device.pump(0.01)

    def sos_pushes() -> dict[str, int]:
        pushes: dict[str, int] = {}
        for a in receiver.first_accepted():
            if _kind_of(a.body) == "sos":
                pushes[str(a.key)] = pushes.get(str(a.key), 0) + 1
        return pushes

    try:
        telemetry.start()
        urgent.start()
        device.connect_inline()
        now = int(time.time() * 1000)
        readings = [
            ReadingWire(ts=now - 1000 * k, seq=k, vitals=Vitals(heart_rate=70 + k, spo2=97))
            for k in range(5)
        ]
        publish(devices[0], Channel.TELEMETRY, encode_telemetry(readings))
        publish(devices[1], Channel.EVENT, encode_event(Event(now, 1, devices[1], EventKind.SOS)))
        publish(devices[2], Channel.EVENT, encode_event(Event(now, 1, devices[2], EventKind.FALL)))

        # The first SOS push comes from the urgent process: no worker runs yet.
        wait_until(lambda: len(sos_pushes()) == 1, 30, "the urgent process's 120 push")
        wait_until(
            lambda: (
                _count(
                    db_url,
                    "SELECT count(*) FROM device_events WHERE handled_at IS NULL",
                )
                == 0
            ),
            30,
            "both events handled",
        )
        assert _count(db_url, "SELECT count(*) FROM device_events WHERE kind = 'sos'") == 1
        assert _count(db_url, "SELECT count(*) FROM device_events WHERE kind = 'fall'") == 1
        assert (
            _count(
                db_url,
                "SELECT count(*) FROM findings WHERE device_id = %s AND kind = 'device_fall'",
                devices[2],
            )
            == 1
        )
        assert _count(db_url, "SELECT count(*) FROM findings WHERE kind = 'sos'") == 1
        wait_until(
            lambda: (
                _count(db_url, "SELECT count(*) FROM vitals WHERE device_id = %s", devices[0]) == 5
            ),
            30,
            "the readings",
        )

        # The urgent process dies; an SOS pressed meanwhile waits for it at the broker. The
        # fall event after it goes through the telemetry process's session in order: once it
        # is stored, the SOS before it has been seen there, and left to the urgent lane.
        urgent.kill()
        later = int(time.time() * 1000)
        publish(devices[3], Channel.EVENT, encode_event(Event(later, 1, devices[3], EventKind.SOS)))
        publish(
            devices[2], Channel.EVENT, encode_event(Event(later, 2, devices[2], EventKind.FALL))
        )
        wait_until(
            lambda: _count(db_url, "SELECT count(*) FROM device_events WHERE kind = 'fall'") == 2,
            30,
            "the second fall event",
        )
        assert _count(db_url, "SELECT count(*) FROM device_events WHERE kind = 'sos'") == 1

        # Back again, the urgent process takes the SOS from its session and pushes it.
        urgent.start()
        wait_until(lambda: len(sos_pushes()) == 2, 30, "the waiting SOS pushed")
    finally:
        device.stop()
        urgent.stop()
        telemetry.stop()
        receiver_gen.close()

    assert _count(db_url, "SELECT count(*) FROM alerts WHERE kind = 'sos'") == 2
    assert _count(db_url, "SELECT count(*) FROM findings WHERE kind = 'sos'") == 2
    assert sorted(sos_pushes().values()) == [1, 1]
    assert all(a.signature_ok for a in receiver.arrivals)
    assert "ingester lane: urgent" in urgent.log()
    assert "recovery at start: 0 accelerometer bursts" in urgent.log()


def test_each_lane_keeps_its_own_events() -> None:
    from devices.protocol import Reason
    from ingest import lanes
    from ingest.detection import STAGES, URGENT_STAGES
    from ingest.pipeline import Batch, DeadLetter

    def batch() -> Batch:
        events = [
            Event(1, 1, "d1", EventKind.SOS),
            Event(2, 1, "d2", EventKind.FALL),
            Event(3, 1, "d3", EventKind.CANCEL),
        ]
        letter = DeadLetter(1, "t", None, Reason.MALFORMED_JSON, "bad", b"{")
        return Batch(
            events=[(e.ts_ms, e.device_id) for e in events],
            device_events=events,
            dead_letters=[letter],
            messages=4,
        )

    urgent = lanes.keep(batch(), "urgent")
    assert [e.kind for e in urgent.device_events] == [EventKind.SOS]
    assert urgent.events == [(1, "d1")] and not urgent.dead_letters  # the other lane's
    telemetry = lanes.keep(batch(), "telemetry")
    assert [e.kind for e in telemetry.device_events] == [EventKind.FALL, EventKind.CANCEL]
    assert telemetry.events == [(2, "d2"), (3, "d3")] and len(telemetry.dead_letters) == 1
    assert len(lanes.keep(batch(), "all").device_events) == 3
    assert lanes.topics("p", "urgent") == ["p/dev/+/event"]
    assert lanes.client_id("anxin-ingest", "urgent") == "anxin-ingest-urgent"
    assert lanes.client_id("anxin-ingest", "telemetry") == "anxin-ingest"
    assert URGENT_STAGES == ("sos",) and set(URGENT_STAGES) < set(STAGES)


def test_the_urgent_sink_keeps_no_state(db_url: str) -> None:
    from detectors.findings import DetectorError
    from ingest.detection import URGENT_STAGES, DetectionSink

    sink = DetectionSink(db_url, lambda _d: None, stages=URGENT_STAGES)
    try:
        assert not sink.stateful
        assert sink.event_kinds == {EventKind.SOS}
        assert sink.load() == 0  # nothing loaded, nothing to save
    finally:
        sink.close()
    with pytest.raises(DetectorError, match="unknown detection stages"):
        DetectionSink(db_url, lambda _d: None, stages=("sos", "telepathy"))
