"""Device protocol v1: every payload kind survives encoding and decoding unchanged."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from devices import protocol as proto
from devices.protocol import (
    AccelBurst,
    Battery,
    BedState,
    Channel,
    Command,
    CommandKind,
    Consciousness,
    Event,
    EventKind,
    Position,
    ProtocolError,
    Reading,
    ReadingWire,
    Reason,
    Status,
    Vitals,
)
from simulators.wearable import still_burst
from tests.devices.protocol_cases import LIMITS, NOW, PREFIX, T0


def roundtrip_readings(wires: list[ReadingWire], device: str = "wb-0001") -> proto.Decoded:
    decoded = proto.decode_telemetry(device, proto.encode_telemetry(wires), LIMITS)
    assert decoded.rejected == []
    return decoded


VITALS = Vitals(
    heart_rate=72.0,
    spo2=97.5,
    resp_rate=15.0,
    temperature=36.6,
    systolic=128.0,
    diastolic=82.0,
    on_oxygen=False,
    consciousness=Consciousness.CONFUSION,
)
BED = BedState(presence=True, heart_rate=58.0, resp_rate=13.0, movement=0.4)
BATTERY = Battery(level_pct=64.5, charging=True)
POSITION = Position(lat=31.2304, lon=121.4737, accuracy_m=8.0, indoor="kitchen")
BURST = AccelBurst(
    rate_hz=50.0, scale_g=1 / 1024, samples=bytes.fromhex("000000000004000200ffec03")
)

READING_CATALOGUE = {
    "vitals only": Reading(T0, 1, "wb-0001", vitals=Vitals(heart_rate=72.0)),
    "all vitals": Reading(T0, 2, "wb-0001", vitals=VITALS),
    "accel i16": Reading(T0, 3, "wb-0001", accel=BURST),
    "bed": Reading(T0, 4, "wb-0001", bed=BED),
    "battery": Reading(T0, 5, "wb-0001", battery=BATTERY),
    "position": Reading(T0, 6, "wb-0001", position=POSITION),
    "every part": Reading(T0, 7, "wb-0001", VITALS, BURST, BED, BATTERY, POSITION),
    "late backlog": Reading(NOW - 29 * 86_400_000, 8, "wb-0001", battery=Battery(level_pct=10.0)),
    "largest seq": Reading(T0, 2**63 - 1, "wb-0001", vitals=Vitals(spo2=100.0)),
}


@pytest.mark.parametrize("name", list(READING_CATALOGUE))
def test_single_reading_round_trips(name: str) -> None:
    reading = READING_CATALOGUE[name]
    decoded = roundtrip_readings([proto.reading_wire(reading)])
    assert decoded.channel is Channel.TELEMETRY
    assert decoded.readings == [reading]


def test_single_reading_is_sent_flat_and_a_batch_as_readings() -> None:
    one = json.loads(proto.encode_telemetry([proto.reading_wire(READING_CATALOGUE["vitals only"])]))
    assert one == {"v": 1, "ts": T0, "seq": 1, "vitals": {"hr": 72.0}}
    wires = [proto.reading_wire(r) for r in READING_CATALOGUE.values()]
    batch = json.loads(proto.encode_telemetry(wires))
    assert set(batch) == {"v", "readings"}
    assert len(batch["readings"]) == len(READING_CATALOGUE)


def test_batch_round_trips_in_order() -> None:
    readings = list(READING_CATALOGUE.values())
    decoded = roundtrip_readings([proto.reading_wire(r) for r in readings])
    assert decoded.readings == readings


def test_gateway_batch_names_each_device() -> None:
    bed = Reading(T0, 90211, "bed-0003", bed=BED)
    button = Reading(T0 + 1000, 52, "btn-0012", battery=Battery(level_pct=93.0))
    own = Reading(T0 + 2000, 7, "hub-0007", battery=Battery(level_pct=100.0, charging=True))
    wires = [
        proto.reading_wire(bed, dev="bed-0003"),
        proto.reading_wire(button, dev="btn-0012"),
        proto.reading_wire(own),
    ]
    decoded = roundtrip_readings(wires, device="hub-0007")
    assert decoded.topic_device == "hub-0007"
    assert decoded.readings == [bed, button, own]


def test_accel_i16_encoder_round_trips_to_the_same_counts() -> None:
    samples = still_burst(np.random.default_rng(3), 50.0)
    wire = proto.accel_i16(samples, 50.0, scale_g=1 / 2048)
    decoded = roundtrip_readings([ReadingWire(ts=T0, seq=1, accel=wire)])
    burst = decoded.readings[0].accel
    assert burst is not None
    assert (burst.rate_hz, burst.scale_g, burst.n_samples) == (50.0, 1 / 2048, 50)
    counts = np.frombuffer(burst.samples, dtype="<i2").reshape(-1, 3)
    np.testing.assert_allclose(counts * burst.scale_g, samples, atol=0.5 / 2048)


def test_accel_json_encoder_round_trips_within_half_a_count() -> None:
    samples = still_burst(np.random.default_rng(4), 25.0)
    wire = proto.accel_json(samples, 25.0)
    assert wire.enc == "json"
    assert wire.scale is None
    decoded = roundtrip_readings([ReadingWire(ts=T0, seq=1, accel=wire)])
    burst = decoded.readings[0].accel
    assert burst is not None
    assert (burst.rate_hz, burst.scale_g, burst.n_samples) == (25.0, proto.JSON_ACCEL_SCALE_G, 25)
    counts = np.frombuffer(burst.samples, dtype="<i2").reshape(-1, 3)
    # 1 mg rounding on the wire, then half a count (1/4096 g) when stored.
    np.testing.assert_allclose(counts * burst.scale_g, samples, atol=0.0005 + 0.5 / 2048)


def test_accel_json_beyond_16_g_is_saturated_when_stored() -> None:
    wire = proto.AccelWire(hz=50.0, data=[20.0, -20.0, 1.0], enc="json")
    burst = roundtrip_readings([ReadingWire(ts=T0, seq=1, accel=wire)]).readings[0].accel
    assert burst is not None
    assert np.frombuffer(burst.samples, dtype="<i2").tolist() == [32767, -32768, 2048]


def test_burst_wire_round_trips_stored_bytes() -> None:
    wire = proto.burst_wire(BURST)
    assert wire.data == base64.b64encode(BURST.samples).decode()
    reading = Reading(T0, 9, "wb-0001", accel=BURST)
    assert roundtrip_readings([proto.reading_wire(reading, accel=wire)]).readings == [reading]


EVENT_CATALOGUE = [
    Event(T0, 10, "wb-0001", EventKind.SOS),
    Event(T0, 11, "wb-0001", EventKind.FALL, {"peak_g": 3.4, "confidence": 0.92}),
    Event(T0, 12, "wb-0001", EventKind.CANCEL),
    Event(T0, 13, "wb-0001", EventKind.BUTTON, {"button": "call", "presses": [1, 2]}),
]


@pytest.mark.parametrize("event", EVENT_CATALOGUE, ids=lambda e: e.kind.value)
def test_event_round_trips(event: Event) -> None:
    decoded = proto.decode_event("wb-0001", proto.encode_event(event), LIMITS)
    assert decoded.channel is Channel.EVENT
    assert decoded.events == [event]


def test_gateway_event_names_the_device() -> None:
    event = Event(T0, 53, "btn-0012", EventKind.SOS)
    payload = proto.encode_event(event, dev="btn-0012")
    assert json.loads(payload)["dev"] == "btn-0012"
    assert proto.decode_event("hub-0007", payload, LIMITS).events == [event]


STATUS_CATALOGUE = [
    Status(T0, "wb-0001", True, firmware="wb-2.4.1", battery_pct=81.0),
    Status(T0, "wb-0001", False, reason="lwt"),
    Status(T0, "wb-0001", False, battery_pct=3.0, reason="shutdown"),
]


@pytest.mark.parametrize("status", STATUS_CATALOGUE, ids=["online", "lwt", "shutdown"])
def test_status_round_trips(status: Status) -> None:
    decoded = proto.decode_status("wb-0001", proto.encode_status(status), LIMITS)
    assert decoded.channel is Channel.STATUS
    assert decoded.status == status


COMMAND_CATALOGUE = [
    Command("c-1", T0, CommandKind.ALERT_RECEIVED, alert_id="a-1"),
    Command("c-2", T0, CommandKind.HELP_COMING, alert_id="a-1", text="Help is on the way."),
    Command("c-3", T0, CommandKind.CALL_BACK, text="x" * 500),
    Command("c-4", T0, CommandKind.CANCEL_ACK, alert_id="a-2"),
]


@pytest.mark.parametrize("command", COMMAND_CATALOGUE, ids=lambda c: c.kind.value)
def test_command_round_trips(command: Command) -> None:
    assert proto.decode_command(proto.encode_command(command)) == command


def test_decode_dispatches_on_the_channel() -> None:
    payload = proto.encode_event(EVENT_CATALOGUE[0])
    assert proto.decode(Channel.EVENT, "wb-0001", payload, LIMITS).events == [EVENT_CATALOGUE[0]]
    with pytest.raises(ProtocolError, match="'cmd' is server-to-device only") as info:
        proto.decode(Channel.CMD, "wb-0001", payload, LIMITS)
    assert info.value.reason is Reason.UNKNOWN_TOPIC


def test_topics_and_subscriptions() -> None:
    name = proto.topic(PREFIX, "wb-0001", Channel.TELEMETRY)
    assert name == "anxin/v1/dev/wb-0001/telemetry"
    assert proto.parse_topic(PREFIX, name) == ("wb-0001", Channel.TELEMETRY)
    assert proto.parse_topic(PREFIX, "anxin/v1/dev/wb-0001/event") == ("wb-0001", Channel.EVENT)
    assert proto.parse_topic(PREFIX, "anxin/v1/dev/wb-0001/status") == ("wb-0001", Channel.STATUS)
    assert proto.subscriptions(PREFIX) == [
        "anxin/v1/dev/+/telemetry",
        "anxin/v1/dev/+/event",
        "anxin/v1/dev/+/status",
    ]
