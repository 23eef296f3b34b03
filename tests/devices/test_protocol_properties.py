"""Device protocol v1: hypothesis properties of the decoders.

Any bytes or JSON decode or are refused with a reason, and any valid reading or event round trips.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import protocol as proto
from devices.protocol import (
    AccelBurst,
    Battery,
    BedState,
    Consciousness,
    Event,
    EventKind,
    Limits,
    Position,
    ProtocolError,
    Reading,
    Reason,
    Vitals,
)
from tests.devices.protocol_cases import LIMITS, NOW, T0

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
