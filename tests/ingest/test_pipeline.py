"""ingest.pipeline.process_batch with a registry dict: the registry checks and the accounting."""

# Payload literals are JSON: %-formatting keeps their braces readable where f-strings double them.
# ruff: noqa: UP031

from __future__ import annotations

import pytest

from devices.protocol import Limits, Reason
from ingest.pipeline import (
    PG_EPOCH_MS,
    REGISTRATION_SLACK_MS,
    Batch,
    DeviceInfo,
    DeviceState,
    RawMessage,
    pg_time,
    process_batch,
)

NOW = 1_735_689_900_000
T0 = 1_735_689_600_000
REGISTERED = T0 - 86_400_000
PREFIX = "anxin/v1"
LIMITS = Limits(now_ms=NOW)

REGISTRY = {
    "wb-0001": DeviceInfo("wb-0001", "wristband", DeviceState.ACTIVE, REGISTERED),
    "wb-0002": DeviceInfo("wb-0002", "wristband", DeviceState.PROVISIONED, REGISTERED),
    "wb-old": DeviceInfo("wb-old", "wristband", DeviceState.RETIRED, REGISTERED),
    "wb-revoked": DeviceInfo(
        "wb-revoked", "wristband", DeviceState.ACTIVE, REGISTERED, revoked=True
    ),
    "hub-0007": DeviceInfo("hub-0007", "hub", DeviceState.ACTIVE, REGISTERED),
    "bed-0003": DeviceInfo(
        "bed-0003", "bed_sensor", DeviceState.ACTIVE, REGISTERED, gateway_id="hub-0007"
    ),
    "btn-0012": DeviceInfo(
        "btn-0012", "sos_button", DeviceState.ACTIVE, REGISTERED, gateway_id="hub-0007"
    ),
    "btn-gone": DeviceInfo(
        "btn-gone", "sos_button", DeviceState.RETIRED, REGISTERED, gateway_id="hub-0007"
    ),
}


def msg(device: str, channel: str, payload: str, received_ms: int = NOW) -> RawMessage:
    return RawMessage(f"{PREFIX}/dev/{device}/{channel}", payload.encode(), received_ms)


def vitals(ts: int = T0, seq: int = 1, hr: float = 72, dev: str | None = None) -> str:
    extra = '"dev":"%s",' % dev if dev else ""
    return '{"v":1,%s"ts":%d,"seq":%d,"vitals":{"hr":%s}}' % (extra, ts, seq, hr)


def run(*messages: RawMessage) -> Batch:
    batch = process_batch(list(messages), REGISTRY, LIMITS, PREFIX)
    assert batch.messages == len(messages)
    return batch


def reasons(batch: Batch) -> list[tuple[str | None, Reason]]:
    return [(d.device_id, d.reason) for d in batch.dead_letters]


def test_a_registered_device_is_stored() -> None:
    batch = run(msg("wb-0001", "telemetry", vitals(hr=71.5)))
    assert batch.dead_letters == []
    assert batch.vitals == [
        (pg_time(T0), "wb-0001", 1, pg_time(NOW), 71.5, None, None, None, None, None, None, None)
    ]
    assert [r.device_id for r in batch.readings] == ["wb-0001"]
    assert batch.row_count() == 1


def test_pg_time_is_microseconds_since_2000() -> None:
    assert pg_time(PG_EPOCH_MS) == 0
    assert pg_time(PG_EPOCH_MS + 1) == 1000


def test_a_provisioned_device_is_accepted() -> None:
    assert run(msg("wb-0002", "telemetry", vitals())).row_count() == 1


def test_unknown_device_is_dead_lettered_with_the_payload() -> None:
    message = msg("wb-0009", "telemetry", vitals())
    batch = run(message)
    [letter] = batch.dead_letters
    assert (letter.device_id, letter.reason) == ("wb-0009", Reason.UNKNOWN_DEVICE)
    assert letter.detail == "device 'wb-0009' is not registered"
    assert (letter.payload, letter.topic, letter.received_ms) == (
        message.payload,
        message.topic,
        NOW,
    )
    assert batch.row_count() == 0


@pytest.mark.parametrize("device", ["wb-old", "wb-revoked"])
@pytest.mark.parametrize("channel", ["telemetry", "event", "status"])
def test_retired_or_revoked_device_is_refused_on_every_channel(device: str, channel: str) -> None:
    payloads = {
        "telemetry": vitals(),
        "event": '{"v":1,"ts":%d,"seq":1,"type":"sos"}' % T0,
        "status": '{"v":1,"ts":%d,"online":true}' % T0,
    }
    batch = run(msg(device, channel, payloads[channel]))
    assert reasons(batch) == [(device, Reason.RETIRED_DEVICE)]
    assert (
        batch.dead_letters[0].detail == f"device {device!r} is retired or its credentials revoked"
    )
    assert batch.row_count() == 0


def test_registry_is_checked_before_the_payload() -> None:
    # An unknown device's garbage is reported as an unknown device, not as bad JSON.
    assert reasons(run(msg("wb-0009", "telemetry", "not json"))) == [
        ("wb-0009", Reason.UNKNOWN_DEVICE)
    ]


def test_unknown_topic() -> None:
    batch = run(RawMessage("anxin/v1/dev/wb-0001/cmd", vitals().encode(), NOW))
    assert reasons(batch) == [(None, Reason.UNKNOWN_TOPIC)]


def test_gateway_publishes_for_bound_children() -> None:
    payload = '{"v":1,"readings":[%s,%s]}' % (
        '{"dev":"bed-0003","ts":%d,"seq":5,"bed":{"presence":true,"hr":60}}' % T0,
        '{"dev":"btn-0012","ts":%d,"seq":9,"battery":{"pct":93}}' % T0,
    )
    batch = run(msg("hub-0007", "telemetry", payload))
    assert batch.dead_letters == []
    assert [(r.device_id, r.seq) for r in batch.readings] == [("bed-0003", 5), ("btn-0012", 9)]
    assert [row[1] for row in batch.bed] == ["bed-0003"]
    assert [row[1] for row in batch.battery] == ["btn-0012"]


def test_gateway_publishing_for_an_unbound_device_is_a_mismatch() -> None:
    payload = '{"v":1,"readings":[%s,%s,%s]}' % (
        '{"dev":"bed-0003","ts":%d,"seq":5,"bed":{"presence":true}}' % T0,
        '{"dev":"wb-0001","ts":%d,"seq":6,"vitals":{"hr":70}}' % T0,
        '{"dev":"wb-0404","ts":%d,"seq":7,"vitals":{"hr":70}}' % T0,
    )
    batch = run(msg("hub-0007", "telemetry", payload))
    assert [r.device_id for r in batch.readings] == ["bed-0003"]
    assert reasons(batch) == [
        ("wb-0001", Reason.DEVICE_MISMATCH),
        ("wb-0404", Reason.DEVICE_MISMATCH),
    ]
    assert "'wb-0001', which is not bound to gateway 'hub-0007'" in batch.dead_letters[0].detail


def test_a_device_cannot_publish_for_another() -> None:
    batch = run(msg("wb-0001", "telemetry", vitals(dev="wb-0002")))
    assert reasons(batch) == [("wb-0002", Reason.DEVICE_MISMATCH)]


def test_gateway_child_that_is_retired_is_refused() -> None:
    batch = run(msg("hub-0007", "telemetry", vitals(dev="btn-gone")))
    assert reasons(batch) == [("btn-gone", Reason.RETIRED_DEVICE)]


def test_gateway_event_for_bound_child_is_kept_and_for_unbound_refused() -> None:
    batch = run(
        msg("hub-0007", "event", '{"v":1,"ts":%d,"seq":1,"type":"sos","dev":"btn-0012"}' % T0),
        msg("hub-0007", "event", '{"v":1,"ts":%d,"seq":2,"type":"sos","dev":"wb-0001"}' % T0),
    )
    assert [(e.device_id, e.kind.value) for e in batch.device_events] == [("btn-0012", "sos")]
    assert reasons(batch) == [("wb-0001", Reason.DEVICE_MISMATCH)]


def test_reading_before_registration_is_refused_with_slack() -> None:
    inside_slack = REGISTERED - REGISTRATION_SLACK_MS
    before = inside_slack - 1
    batch = run(
        msg("wb-0001", "telemetry", vitals(ts=inside_slack, seq=1)),
        msg("wb-0001", "telemetry", vitals(ts=before, seq=2)),
    )
    assert [r.seq for r in batch.readings] == [1]
    assert reasons(batch) == [("wb-0001", Reason.BEFORE_REGISTRATION)]
    assert batch.dead_letters[0].detail == (
        f"payload.ts is {before}, before device 'wb-0001' was registered ({REGISTERED})"
    )


def test_child_reading_is_checked_against_the_childs_registration() -> None:
    late_child = DeviceInfo("bed-0004", "bed_sensor", DeviceState.ACTIVE, T0, gateway_id="hub-0007")
    registry = {**REGISTRY, "bed-0004": late_child}
    payload = vitals(ts=T0 - 3_600_000, dev="bed-0004")
    batch = process_batch([msg("hub-0007", "telemetry", payload)], registry, LIMITS, PREFIX)
    assert reasons(batch) == [("bed-0004", Reason.BEFORE_REGISTRATION)]


def test_in_batch_duplicates_are_dropped_and_counted() -> None:
    batch = run(
        msg("wb-0001", "telemetry", vitals(seq=1)),
        msg("wb-0001", "telemetry", vitals(seq=1)),  # resent after a lost PUBACK
        msg("wb-0001", "telemetry", vitals(seq=2)),
        msg("wb-0001", "event", '{"v":1,"ts":%d,"seq":3,"type":"fall"}' % T0),
        msg("wb-0001", "event", '{"v":1,"ts":%d,"seq":3,"type":"fall"}' % T0),
        msg("wb-0001", "status", '{"v":1,"ts":%d,"online":true}' % T0),
        msg("wb-0001", "status", '{"v":1,"ts":%d,"online":true}' % T0),  # retained, redelivered
    )
    assert batch.duplicates_in_batch == 3
    assert [row[2] for row in batch.vitals] == [1, 2]
    assert len(batch.events) == 1
    assert len(batch.statuses) == 1
    assert batch.dead_letters == []


def test_same_seq_at_another_time_is_not_a_duplicate() -> None:
    batch = run(
        msg("wb-0001", "telemetry", vitals(ts=T0, seq=1)),
        msg("wb-0001", "telemetry", vitals(ts=T0 + 1, seq=1)),  # the device rebooted its counter
        msg("wb-0002", "telemetry", vitals(ts=T0, seq=1)),
    )
    assert batch.duplicates_in_batch == 0
    assert len(batch.vitals) == 3


def test_event_sharing_ts_and_seq_with_a_reading_is_kept() -> None:
    batch = run(
        msg("wb-0001", "telemetry", vitals(ts=T0, seq=1)),
        msg("wb-0001", "event", '{"v":1,"ts":%d,"seq":1,"type":"sos"}' % T0),
    )
    assert [e.kind.value for e in batch.device_events] == ["sos"]


def test_registry_refusal_names_the_readings_index_in_the_payload() -> None:
    payload = '{"v":1,"readings":[%s,%s]}' % (
        '{"ts":%d,"seq":5,"vitals":{"hr":900}}' % T0,
        '{"dev":"wb-0002","ts":%d,"seq":6,"vitals":{"hr":70}}' % T0,
    )
    batch = run(msg("wb-0001", "telemetry", payload))
    assert reasons(batch) == [("wb-0001", Reason.OUT_OF_RANGE), ("wb-0002", Reason.DEVICE_MISMATCH)]
    assert batch.dead_letters[1].detail.startswith("readings[1] ")


def test_every_message_is_accounted_for() -> None:
    messages = [
        msg("wb-0001", "telemetry", vitals(seq=1)),  # 1 row
        msg("wb-0001", "telemetry", vitals(seq=1)),  # duplicate
        msg("wb-0009", "telemetry", vitals()),  # unknown device
        msg("wb-old", "telemetry", vitals()),  # retired
        msg("wb-0001", "telemetry", "{"),  # malformed
        msg("wb-0001", "telemetry", vitals(hr=900, seq=4)),  # out of range
        RawMessage("elsewhere/wb-0001", b"{}", NOW),  # unknown topic
        msg(
            "hub-0007",
            "telemetry",
            '{"v":1,"readings":[%s,%s,%s]}'
            % (
                '{"dev":"bed-0003","ts":%d,"seq":5,"bed":{"presence":true}}' % T0,  # 1 row
                '{"dev":"wb-0001","ts":%d,"seq":6,"vitals":{"hr":70}}' % T0,  # mismatch
                '{"dev":"bed-0003","ts":%d,"seq":7,"bed":{"hr":1}}' % T0,  # out of range
            ),
        ),
        msg("wb-0001", "event", '{"v":1,"ts":%d,"seq":8,"type":"cancel"}' % T0),  # 1 row
        msg("wb-0001", "status", '{"v":1,"ts":%d,"online":false,"reason":"lwt"}' % T0),  # 1 row
        msg("wb-0001", "telemetry", vitals(ts=NOW + 3_600_000, seq=9)),  # future
    ]
    batch = run(*messages)
    assert batch.row_count() == 4
    assert batch.duplicates_in_batch == 1
    assert sorted(d.reason.value for d in batch.dead_letters) == sorted(
        [
            "unknown_device",
            "retired_device",
            "malformed_json",
            "out_of_range",
            "unknown_topic",
            "device_mismatch",
            "out_of_range",
            "future_timestamp",
        ]
    )
    # One outcome per reading (each has one part, so one row); the gateway batch had three.
    assert (
        batch.row_count() + batch.duplicates_in_batch + len(batch.dead_letters) == len(messages) + 2
    )
    assert all(d.payload for d in batch.dead_letters)


def test_empty_batch() -> None:
    batch = run()
    assert (batch.row_count(), batch.dead_letters, batch.duplicates_in_batch) == (0, [], 0)
