"""Device protocol v1: round trips over a catalogue, the documented examples, every refusal.

The examples of ``docs/protocol.md`` are parsed from the document itself and decoded here, and
the example messages of its dead-letter table are compared with what the code says, so the
document cannot drift from the code.
"""

# Payload literals are JSON: %-formatting keeps their braces readable where f-strings double them.
# ruff: noqa: UP031

from __future__ import annotations

import base64
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    Limits,
    Position,
    ProtocolError,
    Reading,
    ReadingWire,
    Reason,
    Status,
    Vitals,
)
from ingest.pipeline import DeviceInfo, DeviceState, RawMessage, process_batch
from simulators.wearable import still_burst

#: Server clock of the tests: five minutes after the documented examples' 2025-01-01 00:00 UTC.
NOW = 1_735_689_900_000
T0 = 1_735_689_600_000
LIMITS = Limits(now_ms=NOW)
PREFIX = "anxin/v1"
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def roundtrip_readings(wires: list[ReadingWire], device: str = "wb-0001") -> proto.Decoded:
    decoded = proto.decode_telemetry(device, proto.encode_telemetry(wires), LIMITS)
    assert decoded.rejected == []
    return decoded


def three_samples() -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([[0.0, 0.0, 1.0], [0.5, -0.25, 0.98], [-1.5, 2.0, 0.75]])


# --------------------------------------------------------------------------- round trips

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


# --------------------------------------------------------------------------- the documentation

EXAMPLE = re.compile(r"<!-- example: (\w+)(?: ([\w-]+))? -->\n```json\n(.*?)```", re.DOTALL)


def doc_examples() -> list[tuple[str, str | None, bytes]]:
    text = DOC.read_text(encoding="utf-8")
    found = [(m[1], m[2], m[3].encode()) for m in EXAMPLE.finditer(text)]
    # Every json block is an example the test decodes: none may escape by lacking its marker.
    assert len(found) == text.count("```json"), "a ```json block in docs/protocol.md has no marker"
    return found


def test_the_document_has_examples_of_every_payload_kind() -> None:
    kinds = {kind for kind, _, _ in doc_examples()}
    assert kinds == {"telemetry", "event", "status", "command"}
    text = DOC.read_text(encoding="utf-8")
    for kind in (*EventKind, *CommandKind):
        assert f'"type": "{kind.value}"' in text


@pytest.mark.parametrize(
    ("kind", "device", "payload"), doc_examples(), ids=lambda v: v if isinstance(v, str) else None
)
def test_documented_example_decodes(kind: str, device: str | None, payload: bytes) -> None:
    if kind == "command":
        assert device is None
        command = proto.decode_command(payload)
        assert command.ts_ms > T0
        return
    assert device is not None
    decoded = proto.decode(Channel(kind), device, payload, LIMITS)
    assert decoded.rejected == []
    assert len(decoded.readings) + len(decoded.events) + (decoded.status is not None) >= 1
    # The server stores what the document shows: re-encode and compare as JSON.
    if kind == "telemetry":
        wires = [
            proto.reading_wire(r, dev=r.device_id if r.device_id != device else None)
            for r in decoded.readings
        ]
        again = proto.decode_telemetry(device, proto.encode_telemetry(wires), LIMITS)
        assert again.readings == decoded.readings


def test_documented_burst_layout() -> None:
    text = DOC.read_text(encoding="utf-8")
    wire = proto.accel_i16(three_samples(), 50.0, scale_g=1 / 1024)
    assert wire.data == "AAAAAAAEAAIA/+wDAPoACAAD"
    assert f"base64 `{wire.data}`" in text
    raw = base64.b64decode(wire.data)
    for i in range(3):
        assert f"`{raw[6 * i : 6 * i + 6].hex(' ')}`" in text
    decoded = [
        proto.decode_telemetry(dev or "", payload, LIMITS).readings[0]
        for kind, dev, payload in doc_examples()
        if kind == "telemetry" and b'"accel"' in payload
    ]
    assert len(decoded) == 2
    assert decoded[0].accel is not None
    assert decoded[0].accel.samples == raw
    # The JSON form of the same burst is stored as counts of 1/2048 g.
    assert decoded[1].accel is not None
    json_counts = np.frombuffer(decoded[1].accel.samples, dtype="<i2")
    np.testing.assert_array_equal(json_counts, np.rint(three_samples().reshape(-1) * 2048))


def test_documented_burst_sizes() -> None:
    text = DOC.read_text(encoding="utf-8")
    samples = still_burst(np.random.default_rng(0), 50.0)
    compact = msgspec.json.encode(proto.accel_i16(samples, 50.0))
    as_json = msgspec.json.encode(proto.accel_json(samples, 50.0))
    assert len(proto.accel_i16(samples, 50.0).data) == 400
    assert f"**{len(compact)} bytes**" in text
    assert len(compact) == 442
    assert f"({len(as_json)} for the" in text
    assert 940 <= len(as_json) <= 990  # "about 965 bytes"


def test_documented_limits_are_the_defaults() -> None:
    text = DOC.read_text(encoding="utf-8")
    limits = Limits(now_ms=0)
    assert f"64 KiB ({limits.max_payload_bytes} bytes)" in text
    assert f"| readings per message          | {limits.max_readings}" in text
    assert f"| {limits.max_future_skew_ms // 1000} s " in text
    assert f"| {limits.max_age_ms // 86_400_000} days " in text
    assert f"| samples per accelerometer burst | {proto.MAX_ACCEL_SAMPLES}" in text


def _range(typ: type[msgspec.Struct], wire_name: str) -> str:
    """The documented "low - high" text of a field (en dash in the document), from its schema."""
    schema = msgspec.json.schema(typ)
    props = next(iter(schema["$defs"].values()))["properties"]
    field = props[wire_name]
    field = next((a for a in field.get("anyOf", [field]) if a.get("type") == "number"), field)
    return f"{field['minimum']:g} \u2013 {field['maximum']:g}"


@pytest.mark.parametrize(
    ("typ", "wire_name"),
    [(Vitals, n) for n in ("hr", "spo2", "rr", "temp", "sbp", "dbp")]
    + [
        (proto.AccelWire, "hz"),
        (BedState, "move"),
        (Battery, "pct"),
        (Position, "lat"),
        (Position, "lon"),
        (Position, "acc"),
    ],
)
def test_documented_ranges_match_the_types(typ: type[msgspec.Struct], wire_name: str) -> None:
    text = DOC.read_text(encoding="utf-8").replace("\u2212", "-")  # minus sign
    row = re.search(rf"^\| `{wire_name}` .*$", text[text.index(f"`{wire_name}`") - 2 :], re.M)
    assert row is not None
    assert _range(typ, wire_name).replace("1e+06", "1000000") in row.group(0)


# --------------------------------------------------------------------------- refusals


def refusal(call: Any, reason: Reason, match: str) -> ProtocolError:
    with pytest.raises(ProtocolError, match=match) as info:
        call()
    assert info.value.reason is reason
    assert str(info.value) == f"{reason.value}: {info.value.detail}"
    return info.value


def tel(payload: bytes | str, limits: Limits = LIMITS) -> proto.Decoded:
    data = payload.encode() if isinstance(payload, str) else payload
    return proto.decode_telemetry("wb-0001", data, limits)


def one(fields: str) -> str:
    return '{"v":1,"ts":%d,"seq":7,%s}' % (T0, fields)


REFUSALS: list[tuple[str, Any, Reason, str]] = [
    (
        "topic outside the prefix",
        lambda: proto.parse_topic(PREFIX, "other/dev/wb-0001/telemetry"),
        Reason.UNKNOWN_TOPIC,
        r"is not under 'anxin/v1/dev/'",
    ),
    (
        "topic without a channel",
        lambda: proto.parse_topic(PREFIX, "anxin/v1/dev/wb-0001"),
        Reason.UNKNOWN_TOPIC,
        "has no valid device id",
    ),
    (
        "topic with a long id",
        lambda: proto.parse_topic(PREFIX, f"anxin/v1/dev/{'x' * 65}/event"),
        Reason.UNKNOWN_TOPIC,
        "has no valid device id",
    ),
    (
        "cmd topic from a device",
        lambda: proto.parse_topic(PREFIX, "anxin/v1/dev/wb-0001/cmd"),
        Reason.UNKNOWN_TOPIC,
        "ends in 'cmd', expected telemetry, event or status",
    ),
    (
        "oversized",
        lambda: tel(one('"vitals":{"hr":72}') + " " * 65536),
        Reason.OVERSIZED,
        r"payload is 65589 bytes, at most 65536 accepted",
    ),
    (
        "oversized under a lower limit",
        lambda: tel(one('"vitals":{"hr":72}'), Limits(NOW, max_payload_bytes=40)),
        Reason.OVERSIZED,
        "at most 40 accepted",
    ),
    (
        "truncated",
        lambda: tel(one('"vitals":{"hr":72}')[:-2]),
        Reason.MALFORMED_JSON,
        "payload is not JSON: Input data was truncated",
    ),
    ("not utf-8", lambda: tel(b"\xff\xfe{}"), Reason.MALFORMED_JSON, "payload is not JSON"),
    ("empty", lambda: tel(b""), Reason.MALFORMED_JSON, "payload is not JSON"),
    (
        "NaN",
        lambda: tel(one('"vitals":{"hr":NaN}')),
        Reason.NON_FINITE,
        "payload holds NaN or Infinity, which JSON does not allow",
    ),
    (
        "Infinity",
        lambda: tel(one('"vitals":{"temp":-Infinity}')),
        Reason.NON_FINITE,
        "NaN or Infinity",
    ),
    (
        "1e400",
        lambda: tel(one('"vitals":{"hr":1e400}')),
        Reason.NON_FINITE,
        r"at `\$\.vitals\.hr`: the number is not finite",
    ),
    (
        "version 2",
        lambda: tel(one('"vitals":{"hr":72}').replace('"v":1', '"v":2')),
        Reason.UNSUPPORTED_VERSION,
        "field v has value 2, expected 1",
    ),
    (
        "version 2 with new fields",
        lambda: tel('{"v":2,"ts":1,"heart":{}}'),
        Reason.UNSUPPORTED_VERSION,
        "field v has value 2, expected 1",
    ),
    (
        "version true",
        lambda: tel(one('"vitals":{"hr":72}').replace('"v":1', '"v":true')),
        Reason.UNSUPPORTED_VERSION,
        "field v has value True, expected 1",
    ),
    (
        "version 1.0 on a batch with a bad reading",
        lambda: tel('{"v":1.0,"readings":[{"ts":%d,"seq":1,"vitals":{"hr":900}}]}' % T0),
        Reason.UNSUPPORTED_VERSION,
        "field v has value 1.0, expected 1",
    ),
    (
        "version missing",
        lambda: tel('{"ts":%d,"seq":1,"vitals":{"hr":72}}' % T0),
        Reason.UNSUPPORTED_VERSION,
        "field v has value None, expected 1",
    ),
    (
        "wrong type",
        lambda: tel(one('"vitals":{"hr":"72"}')),
        Reason.SCHEMA,
        r"Expected `float \| null`, got `str` - at `\$\.vitals\.hr`",
    ),
    (
        "float ts",
        lambda: tel('{"v":1,"ts":1735689600000.5,"seq":1,"vitals":{"hr":72}}'),
        Reason.SCHEMA,
        r"Expected `int \| null`, got `float` - at `\$\.ts`",
    ),
    (
        "unknown field",
        lambda: tel(one('"vitals":{"heart_rate":72}')),
        Reason.SCHEMA,
        r"Object contains unknown field `heart_rate` - at `\$\.vitals`",
    ),
    (
        "unknown top field",
        lambda: tel(one('"vitals":{"hr":72},"extra":1')),
        Reason.SCHEMA,
        "Object contains unknown field `extra`",
    ),
    (
        "missing ts",
        lambda: tel('{"v":1,"seq":7,"vitals":{"hr":72}}'),
        Reason.SCHEMA,
        r"payload has no ts or seq, expected both \(or a readings list\)",
    ),
    (
        "missing ts in an event",
        lambda: proto.decode_event("wb-0001", b'{"v":1,"seq":1,"type":"sos"}', LIMITS),
        Reason.SCHEMA,
        "Object missing required field `ts`",
    ),
    (
        "no parts",
        lambda: tel('{"v":1,"ts":%d,"seq":7}' % T0),
        Reason.SCHEMA,
        "payload carries none of vitals, accel, bed, battery, pos",
    ),
    (
        "mixed batch",
        lambda: tel('{"v":1,"ts":%d,"readings":[]}' % T0),
        Reason.SCHEMA,
        "payload mixes a readings list with reading fields at the top",
    ),
    (
        "empty batch",
        lambda: tel('{"v":1,"readings":[]}'),
        Reason.SCHEMA,
        "payload.readings is empty",
    ),
    (
        "bad dev",
        lambda: tel(one('"dev":"a/b","vitals":{"hr":72}')),
        Reason.SCHEMA,
        r"Expected `str` matching regex .* - at `\$\.dev`",
    ),
    (
        "unknown event type",
        lambda: proto.decode_event("wb-0001", one('"type":"help"').encode(), LIMITS),
        Reason.SCHEMA,
        r"Invalid enum value 'help' - at `\$\.type`",
    ),
    ("array payload", lambda: tel("[1,2]"), Reason.SCHEMA, "Expected `object`, got `array`"),
    # Deep nesting once made msgspec raise RecursionError out of the decoders.
    (
        "deep batch item",
        lambda: tel('{"v":1,"readings":[' + "[" * 5000 + "]" * 5000 + "]}"),
        Reason.SCHEMA,
        r"Expected `object`, got `array` - at `\$\.readings\[0\]`",
    ),
    (
        "deep unknown field",
        lambda: proto.decode_status(
            "wb-0001",
            b'{"v":1,"ts":%d,"online":true,"x":%s}' % (T0, b"[" * 5000 + b"]" * 5000),
            LIMITS,
        ),
        Reason.SCHEMA,
        "Object contains unknown field `x`",
    ),
    (
        "deep event detail",
        lambda: proto.decode_event(
            "wb-0001",
            one('"type":"sos","detail":{"a":' + "[" * 5000 + "]" * 5000 + "}").encode(),
            LIMITS,
        ),
        Reason.SCHEMA,
        "payload nests arrays or objects too deeply to decode",
    ),
    (
        "deep command",
        lambda: proto.decode_command(b'{"v":1,"x":' + b"[" * 5000 + b"]" * 5000 + b"}"),
        Reason.SCHEMA,
        "Object contains unknown field `x`",
    ),
    (
        "i16 without scale",
        lambda: tel(one('"accel":{"hz":50,"data":"AAAAAAAA"}')),
        Reason.SCHEMA,
        "payload.accel.scale is missing, expected g per count with enc 'i16'",
    ),
    (
        "i16 with a list",
        lambda: tel(one('"accel":{"hz":50,"data":[0,0,1],"scale":0.001}')),
        Reason.SCHEMA,
        "payload.accel.data is a list, expected base64 text",
    ),
    (
        "bad base64",
        lambda: tel(one('"accel":{"hz":50,"data":"AAA*AAAA","scale":0.001}')),
        Reason.SCHEMA,
        "payload.accel.data is not valid base64",
    ),
    (
        "unpadded base64",
        lambda: tel(one('"accel":{"hz":50,"data":"AAAAAAAAAA","scale":0.001}')),
        Reason.SCHEMA,
        "payload.accel.data is not valid base64",
    ),
    (
        "i16 partial sample",
        lambda: tel(one('"accel":{"hz":50,"data":"AAAAAAAAAAA=","scale":0.001}')),
        Reason.SCHEMA,
        r"decodes to 8 bytes, expected a multiple of 6 \(x, y, z int16\)",
    ),
    (
        "i16 empty",
        lambda: tel(one('"accel":{"hz":50,"data":"","scale":0.001}')),
        Reason.SCHEMA,
        "payload.accel.data holds no samples",
    ),
    (
        "json with text",
        lambda: tel(one('"accel":{"hz":50,"data":"AAAA","enc":"json"}')),
        Reason.SCHEMA,
        "payload.accel.data is text, expected a list of numbers with enc 'json'",
    ),
    (
        "json partial triple",
        lambda: tel(one('"accel":{"hz":50,"data":[0,1],"enc":"json"}')),
        Reason.SCHEMA,
        "payload.accel.data has 2 values, expected a flat list of x,y,z triples",
    ),
    (
        "unknown encoding",
        lambda: tel(one('"accel":{"hz":50,"data":"","enc":"f32"}')),
        Reason.SCHEMA,
        r"Invalid enum value 'f32' - at `\$\.accel\.enc`",
    ),
    (
        "hr 900",
        lambda: tel(one('"vitals":{"hr":900}')),
        Reason.OUT_OF_RANGE,
        r"Expected `float` <= 300.0 - at `\$\.vitals\.hr`",
    ),
    (
        "spo2 140",
        lambda: tel(one('"vitals":{"spo2":140}')),
        Reason.OUT_OF_RANGE,
        r"Expected `float` <= 100.0 - at `\$\.vitals\.spo2`",
    ),
    (
        "negative rr",
        lambda: tel(one('"vitals":{"rr":-1}')),
        Reason.OUT_OF_RANGE,
        r"Expected `float` >= 0.0 - at `\$\.vitals\.rr`",
    ),
    (
        "scale 0",
        lambda: tel(one('"accel":{"hz":50,"data":"AAAAAAAA","scale":0}')),
        Reason.OUT_OF_RANGE,
        r"Expected `float` > 0.0 - at `\$\.accel\.scale`",
    ),
    (
        "long indoor",
        lambda: tel(one('"pos":{"lat":1,"lon":2,"indoor":"%s"}' % ("x" * 65))),
        Reason.OUT_OF_RANGE,
        r"Expected `str` of length <= 64 - at `\$\.pos\.indoor`",
    ),
    (
        "negative seq",
        lambda: tel('{"v":1,"ts":%d,"seq":-1,"battery":{"pct":5}}' % T0),
        Reason.OUT_OF_RANGE,
        r"Expected `int` >= 0 - at `\$\.seq`",
    ),
    (
        "burst of 2049",
        lambda: tel(
            one(
                '"accel":{"hz":50,"data":"%s","scale":0.001}'
                % base64.b64encode(bytes(6 * 2049)).decode()
            )
        ),
        Reason.OUT_OF_RANGE,
        "payload.accel.data holds 2049 samples, at most 2048 per burst",
    ),
    (
        "601 readings",
        lambda: tel(
            '{"v":1,"readings":[%s]}'
            % ",".join(['{"ts":%d,"seq":1,"battery":{"pct":5}}' % T0] * 601)
        ),
        Reason.TOO_MANY_READINGS,
        "payload.readings holds 601 readings, at most 600 accepted",
    ),
    (
        "3 readings under a limit of 2",
        lambda: tel(
            '{"v":1,"readings":[%s]}'
            % ",".join(['{"ts":%d,"seq":1,"battery":{"pct":5}}' % T0] * 3),
            Limits(NOW, max_readings=2),
        ),
        Reason.TOO_MANY_READINGS,
        "at most 2 accepted",
    ),
    (
        "future",
        lambda: tel('{"v":1,"ts":%d,"seq":1,"battery":{"pct":5}}' % (NOW + 300_001)),
        Reason.FUTURE_TIMESTAMP,
        r"payload.ts is \d+, 300 s ahead of the server clock \(at most 300 s allowed\)",
    ),
    (
        "future status",
        lambda: proto.decode_status(
            "wb-0001", b'{"v":1,"ts":%d,"online":true}' % (NOW + 10**9), LIMITS
        ),
        Reason.FUTURE_TIMESTAMP,
        "1000000 s ahead",
    ),
    (
        "too old",
        lambda: tel('{"v":1,"ts":%d,"seq":1,"battery":{"pct":5}}' % (NOW - 30 * 86_400_000 - 1)),
        Reason.TOO_OLD,
        r"payload.ts is \d+, older than the 30 days accepted",
    ),
    (
        "before 2020",
        lambda: tel(
            '{"v":1,"ts":1000,"seq":1,"battery":{"pct":5}}', Limits(NOW, max_age_ms=10**13)
        ),
        Reason.TOO_OLD,
        "payload.ts is 1000, older than",
    ),
    (
        "old event",
        lambda: proto.decode_event("wb-0001", b'{"v":1,"ts":0,"seq":1,"type":"sos"}', LIMITS),
        Reason.TOO_OLD,
        "payload.ts is 0",
    ),
    (
        "NUL in a position's room",
        lambda: tel(
            '{"v":1,"ts":%d,"seq":1,"pos":{"lat":31.2,"lon":121.4,"indoor":"kit\\u0000chen"}}' % NOW
        ),
        Reason.BAD_TEXT,
        "NUL character",
    ),
    (
        "NUL in an event's detail key",
        lambda: proto.decode_event(
            "wb-0001", b'{"v":1,"ts":%d,"seq":1,"type":"sos","detail":{"\\u0000":1}}' % NOW, LIMITS
        ),
        Reason.BAD_TEXT,
        "NUL character",
    ),
    (
        "NUL in a status's firmware",
        lambda: proto.decode_status(
            "wb-0001", b'{"v":1,"ts":%d,"online":true,"fw":"2.\\u0000"}' % NOW, LIMITS
        ),
        Reason.BAD_TEXT,
        "NUL character",
    ),
    (
        "event naming its type twice",
        lambda: proto.decode_event(
            "wb-0001", b'{"v":1,"ts":%d,"seq":1,"type":"sos","type":"button"}' % NOW, LIMITS
        ),
        Reason.DUPLICATE_KEY,
        "names a key twice",
    ),
    (
        "status naming online twice",
        lambda: proto.decode_status(
            "wb-0001", b'{"v":1,"ts":%d,"online":true,"online":false}' % NOW, LIMITS
        ),
        Reason.DUPLICATE_KEY,
        "names a key twice",
    ),
    (
        "lone surrogate in an event",
        lambda: proto.decode_event(
            "wb-0001",
            b'{"v":1,"ts":%d,"seq":1,"type":"sos","detail":{"a":"\\ud800"}}' % NOW,
            LIMITS,
        ),
        Reason.MALFORMED_JSON,
        "not JSON",
    ),
    (
        "command of version 2",
        lambda: proto.decode_command(b'{"v":2,"id":"c","ts":1,"type":"call_back"}'),
        Reason.UNSUPPORTED_VERSION,
        "field v has value 2, expected 1",
    ),
    (
        "command of unknown type",
        lambda: proto.decode_command(b'{"v":1,"id":"c","ts":1,"type":"dance"}'),
        Reason.SCHEMA,
        "Invalid enum value 'dance'",
    ),
    (
        "command text too long",
        lambda: proto.decode_command(
            b'{"v":1,"id":"c","ts":1,"type":"call_back","text":"%s"}' % (b"x" * 501)
        ),
        Reason.OUT_OF_RANGE,
        r"length <= 500 - at `\$\.text`",
    ),
]


@pytest.mark.parametrize(
    ("call", "reason", "match"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusal(call: Any, reason: Reason, match: str) -> None:
    refusal(call, reason, match)


def test_every_decoder_reason_is_produced() -> None:
    produced = {r[2] for r in REFUSALS}
    registry_reasons = {
        Reason.BEFORE_REGISTRATION,
        Reason.UNKNOWN_DEVICE,
        Reason.DEVICE_MISMATCH,
        Reason.RETIRED_DEVICE,
        Reason.STORAGE_REJECTED,
    }
    assert produced == set(Reason) - registry_reasons


def test_limits_are_configurable() -> None:
    late = '{"v":1,"ts":%d,"seq":1,"battery":{"pct":5}}' % (NOW - 40 * 86_400_000)
    assert len(tel(late, Limits(NOW, max_age_ms=60 * 86_400_000)).readings) == 1
    ahead = '{"v":1,"ts":%d,"seq":1,"battery":{"pct":5}}' % (NOW + 3_600_000)
    assert len(tel(ahead, Limits(NOW, max_future_skew_ms=7_200_000)).readings) == 1
    refusal(lambda: tel(ahead), Reason.FUTURE_TIMESTAMP, "3600 s ahead")


def test_batch_keeps_good_readings_and_reports_the_bad_index() -> None:
    items = [
        '{"ts":%d,"seq":1,"vitals":{"hr":72}}' % T0,
        '{"ts":%d,"seq":2,"vitals":{"hr":900}}' % T0,
        '{"ts":%d,"seq":3,"vitals":{"heart":1}}' % T0,
        '{"ts":%d,"seq":4,"battery":{"pct":50}}' % (NOW + 10**7),
        '{"ts":%d,"seq":5,"dev":"bed-0003"}' % T0,
        '{"ts":%d,"seq":6,"vitals":{"spo2":98}}' % T0,
    ]
    decoded = tel('{"v":1,"readings":[%s]}' % ",".join(items))
    assert [r.seq for r in decoded.readings] == [1, 6]
    got = [(r.index, r.device_id, r.error.reason) for r in decoded.rejected]
    assert got == [
        (1, "wb-0001", Reason.OUT_OF_RANGE),
        (2, "wb-0001", Reason.SCHEMA),
        (3, "wb-0001", Reason.FUTURE_TIMESTAMP),
        (4, "bed-0003", Reason.SCHEMA),
    ]
    details = [r.error.detail for r in decoded.rejected]
    assert "at `$.readings[1].vitals.hr`" in details[0]
    assert "unknown field `heart` - at `$.readings[2].vitals`" in details[1]
    assert details[2].startswith("readings[3].ts is ")
    assert details[3] == "readings[4] carries none of vitals, accel, bed, battery, pos"


def test_batch_envelope_dev_is_the_default_device() -> None:
    decoded = tel(
        '{"v":1,"dev":"bed-0003","readings":[{"ts":%d,"seq":1,"bed":{"presence":true}},'
        '{"ts":%d,"seq":2,"dev":"btn-0012","battery":{"pct":9}},'
        '{"ts":%d,"seq":3,"bed":{"hr":1}}]}' % (T0, T0, T0)
    )
    assert [r.device_id for r in decoded.readings] == ["bed-0003", "btn-0012"]
    assert [(r.index, r.device_id) for r in decoded.rejected] == [(2, "bed-0003")]


def test_batch_with_a_bad_envelope_is_refused_whole() -> None:
    payload = '{"v":1,"extra":0,"readings":[{"ts":%d,"seq":1,"vitals":{"hr":72}}]}' % T0
    refusal(lambda: tel(payload), Reason.SCHEMA, "Object contains unknown field `extra`")


# --------------------------------------------------------------------------- the dead-letter table

TABLE_ROW = re.compile(r"^\| `(\w+)` +\|[^|]*\| `` (.*) `` \|$", re.M)


def _pipeline_message(topic: str, payload: str) -> str:
    devices = {
        "wb-0001": DeviceInfo(
            "wb-0001", "wristband", DeviceState.ACTIVE, registered_ms=1_735_689_000_000
        ),
        "wb-0002": DeviceInfo("wb-0002", "wristband", DeviceState.ACTIVE, registered_ms=0),
        "wb-0003": DeviceInfo("wb-0003", "wristband", DeviceState.RETIRED, registered_ms=0),
        "hub-0007": DeviceInfo("hub-0007", "hub", DeviceState.ACTIVE, registered_ms=0),
    }
    batch = process_batch([RawMessage(topic, payload.encode(), NOW)], devices, LIMITS, PREFIX)
    [letter] = batch.dead_letters
    return f"{letter.reason.value}: {letter.detail}"


def _message_for(reason: Reason) -> str:
    """Produce the documented example of each reason, the way a firmware bug would."""
    hr = '{"v":1,"ts":%d,"seq":7,"vitals":{"hr":72}}'
    decoder_inputs = {
        Reason.OVERSIZED: b" " * 70000,
        Reason.MALFORMED_JSON: (hr % T0)[:-2].encode(),
        Reason.UNSUPPORTED_VERSION: (hr % T0).replace('"v":1', '"v":2').encode(),
        Reason.SCHEMA: (hr % T0).replace('"hr"', '"heart_rate"').encode(),
        Reason.NON_FINITE: (hr % T0).replace("72", "NaN").encode(),
        Reason.OUT_OF_RANGE: (hr % T0).replace("72", "900").encode(),
        Reason.TOO_MANY_READINGS: (
            '{"v":1,"readings":[%s]}'
            % ",".join(['{"ts":%d,"seq":1,"battery":{"pct":50}}' % T0] * 601)
        ).encode(),
        Reason.FUTURE_TIMESTAMP: (hr % 1_735_700_000_000).encode(),
        Reason.TOO_OLD: (hr % 1_700_000_000_000).encode(),
    }
    if reason in decoder_inputs:
        with pytest.raises(ProtocolError) as info:
            tel(decoder_inputs[reason])
        return str(info.value)
    if reason is Reason.BAD_TEXT:
        with pytest.raises(ProtocolError) as info:
            tel(b'{"v":1,"ts":%d,"seq":7,"pos":{"lat":1,"lon":2,"indoor":"\\u0000"}}' % T0)
        return str(info.value)
    if reason is Reason.DUPLICATE_KEY:
        with pytest.raises(ProtocolError) as info:
            proto.decode_event(
                "wb-0001", b'{"v":1,"ts":%d,"seq":7,"seq":8,"type":"sos"}' % T0, LIMITS
            )
        return str(info.value)
    if reason is Reason.UNKNOWN_TOPIC:
        return _pipeline_message("anxin/v1/dev/wb-0001/cmd", hr % T0)
    if reason is Reason.BEFORE_REGISTRATION:
        return _pipeline_message("anxin/v1/dev/wb-0001/telemetry", hr % 1_735_600_000_000)
    if reason is Reason.UNKNOWN_DEVICE:
        return _pipeline_message("anxin/v1/dev/wb-0009/telemetry", hr % T0)
    if reason is Reason.DEVICE_MISMATCH:
        return _pipeline_message(
            "anxin/v1/dev/hub-0007/telemetry", (hr % T0).replace('"seq"', '"dev":"wb-0002","seq"')
        )
    assert reason is Reason.RETIRED_DEVICE
    return _pipeline_message("anxin/v1/dev/wb-0003/telemetry", hr % T0)


def test_dead_letter_table_lists_every_reason() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("## 10. Dead-letter reasons") :]
    listed = re.findall(r"^\| `(\w+)` ", table, re.M)
    assert listed == [r.value for r in Reason]


@pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.STORAGE_REJECTED], ids=str)
def test_dead_letter_table_example_is_the_real_message(reason: Reason) -> None:
    rows = dict(TABLE_ROW.findall(DOC.read_text(encoding="utf-8")))
    assert _message_for(reason) == rows[reason.value]


# --------------------------------------------------------------------------- hypothesis

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELD_NAMES = st.sampled_from(
    [
        "v",
        "ts",
        "seq",
        "dev",
        "vitals",
        "accel",
        "bed",
        "battery",
        "pos",
        "readings",
        "type",
        "detail",
        "online",
        "fw",
        "reason",
        "hr",
        "spo2",
        "data",
        "hz",
        "enc",
        "scale",
        "pct",
        "lat",
        "lon",
    ]
)
# Objects shaped like payloads, so the generator reaches past the first schema check.
PAYLOADISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.sampled_from([1, T0, "sos", "i16", "json", "AAAAAAAA", "wb-0001"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(FIELD_NAMES, children, max_size=6)
    ),
    max_leaves=30,
)
DECODERS = [proto.decode_telemetry, proto.decode_event, proto.decode_status]


def decodes_or_refuses(payload: bytes) -> None:
    for decoder in DECODERS:
        result: proto.Decoded | ProtocolError
        try:
            result = decoder("wb-0001", payload, LIMITS)
        except ProtocolError as exc:
            result = exc
        if isinstance(result, ProtocolError):
            assert isinstance(result.reason, Reason)
            assert result.detail
        else:
            # Nothing vanishes: what is not kept comes back as refused (dead letters).
            kept = len(result.readings) + len(result.events) + (result.status is not None)
            assert kept + len(result.rejected) >= 1
    with contextlib.suppress(ProtocolError):
        proto.decode_command(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_refuse(payload: bytes) -> None:
    decodes_or_refuses(payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSONISH)
def test_arbitrary_json_decodes_or_refuses(value: Any) -> None:
    decodes_or_refuses(json.dumps(value).encode())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(FIELD_NAMES, PAYLOADISH, max_size=8), st.sampled_from([None, 1, 2, True, 1.0])
)
def test_payload_shaped_json_decodes_or_refuses(doc: dict[str, Any], version: Any) -> None:
    if version is not None:
        doc["v"] = version
    decodes_or_refuses(json.dumps(doc).encode())


def _in(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=lo, max_value=hi, allow_nan=False)


VITALS_ST = st.builds(
    Vitals,
    heart_rate=st.none() | _in(20, 300),
    spo2=st.none() | _in(40, 100),
    resp_rate=st.none() | _in(0, 80),
    temperature=st.none() | _in(25, 45),
    systolic=st.none() | _in(40, 300),
    diastolic=st.none() | _in(20, 200),
    on_oxygen=st.none() | st.booleans(),
    consciousness=st.none() | st.sampled_from(Consciousness),
)
BURST_ST = st.builds(
    AccelBurst,
    rate_hz=_in(10, 400),
    scale_g=st.floats(min_value=1e-6, max_value=0.1),
    samples=st.integers(min_value=1, max_value=proto.MAX_ACCEL_SAMPLES).flatmap(
        lambda n: st.binary(min_size=6 * n, max_size=6 * n)
    ),
)
BED_ST = st.builds(
    BedState,
    presence=st.none() | st.booleans(),
    heart_rate=st.none() | _in(20, 300),
    resp_rate=st.none() | _in(0, 80),
    movement=st.none() | _in(0, 1e6),
)
BATTERY_ST = st.builds(Battery, level_pct=_in(0, 100), charging=st.none() | st.booleans())
POSITION_ST = st.builds(
    Position,
    lat=_in(-90, 90),
    lon=_in(-180, 180),
    accuracy_m=st.none() | _in(0, 1e6),
    indoor=st.none()
    | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=64),
)
DEVICE_ST = st.from_regex(r"\A[A-Za-z0-9_-]{3,64}\Z")


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    parts = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "vitals": VITALS_ST,
                "accel": BURST_ST,
                "bed": BED_ST,
                "battery": BATTERY_ST,
                "position": POSITION_ST,
            },
        ).filter(bool)
    )
    return Reading(
        ts_ms=draw(
            st.integers(
                min_value=NOW - LIMITS.max_age_ms, max_value=NOW + LIMITS.max_future_skew_ms
            )
        ),
        seq=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        device_id=draw(DEVICE_ST),
        **parts,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(readings(), min_size=1, max_size=5), DEVICE_ST)
def test_valid_readings_round_trip(batch: list[Reading], topic_device: str) -> None:
    wires = [proto.reading_wire(r, dev=r.device_id) for r in batch]
    decoded = proto.decode_telemetry(
        topic_device, proto.encode_telemetry(wires), Limits(NOW, max_payload_bytes=1 << 20)
    )
    assert decoded.rejected == []
    assert decoded.readings == batch


# Any text a device can send in UTF-8 but NUL, which the database cannot store and the
# decoder refuses (bad_text).
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        Event,
        ts_ms=st.integers(min_value=NOW - LIMITS.max_age_ms, max_value=NOW),
        seq=st.integers(min_value=0, max_value=2**63 - 1),
        device_id=st.just("wb-0001"),
        kind=st.sampled_from(EventKind),
        detail=st.dictionaries(_TEXT, st.integers() | _TEXT | st.booleans(), max_size=3),
    )
)
def test_valid_events_round_trip(event: Event) -> None:
    assert proto.decode_event("wb-0001", proto.encode_event(event), LIMITS).events == [event]


def test_a_telemetry_reading_naming_a_vital_twice_is_refused_whole() -> None:
    """A device and Anxin must read one message one way: {"hr": 60, "hr": 200} is refused."""
    single = b'{"v":1,"ts":%d,"seq":1,"vitals":{"hr":60,"hr":200}}' % NOW
    batch = (
        b'{"v":1,"readings":[{"ts":%d,"seq":1,"vitals":{"hr":60}},'
        b'{"ts":%d,"seq":2,"vitals":{"spo2":97,"spo2":80}}]}' % (NOW, NOW)
    )
    for payload in (single, batch):
        refusal(lambda p=payload: tel(p), Reason.DUPLICATE_KEY, "names a key twice")
    # The same keys in different objects are no repeat.
    ok = tel(
        b'{"v":1,"readings":[{"ts":%d,"seq":1,"vitals":{"hr":60}},{"ts":%d,"seq":2,"vitals":{"hr":61}}]}'
        % (NOW, NOW)
    )
    assert [r.vitals.heart_rate for r in ok.readings if r.vitals] == [60.0, 61.0]
