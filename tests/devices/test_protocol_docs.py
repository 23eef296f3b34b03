"""Device protocol v1: the examples, sizes, limits and ranges of ``docs/protocol.md``.

The examples are parsed from the document itself and decoded here, so the document cannot drift
from the code.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import msgspec
import numpy as np
import pytest

from devices import protocol as proto
from devices.protocol import (
    Battery,
    BedState,
    Channel,
    CommandKind,
    EventKind,
    Limits,
    Position,
    Vitals,
)
from simulators.wearable import still_burst
from tests.devices.protocol_cases import DOC, LIMITS, T0


def three_samples() -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([[0.0, 0.0, 1.0], [0.5, -0.25, 0.98], [-1.5, 2.0, 0.75]])


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
