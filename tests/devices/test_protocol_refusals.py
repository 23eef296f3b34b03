"""Device protocol v1: every refusal, with the reason and the message a device is told."""

# Payload literals are JSON: %-formatting keeps their braces readable where f-strings double them.
# ruff: noqa: UP031

from __future__ import annotations

import base64
from typing import Any

import pytest

from devices import protocol as proto
from devices.protocol import Limits, ProtocolError, Reason
from tests.devices.protocol_cases import LIMITS, NOW, PREFIX, T0, tel


def refusal(call: Any, reason: Reason, match: str) -> ProtocolError:
    with pytest.raises(ProtocolError, match=match) as info:
        call()
    assert info.value.reason is reason
    assert str(info.value) == f"{reason.value}: {info.value.detail}"
    return info.value


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
