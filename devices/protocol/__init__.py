"""The Anxin device protocol, version 1: topics, payloads, codecs. Pure: no I/O, no clock.

Ingest decodes with it and the simulators encode with it, so both sides share one
definition. docs/protocol.md is the firmware author's description of the same thing and
``devices/schemas/*.schema.json`` the machine-readable one (generated from these types).

Topics (``{prefix}`` defaults to ``anxin/v1``)::

    {prefix}/dev/{device_id}/telemetry   device -> server, QoS 1
    {prefix}/dev/{device_id}/event       device -> server, QoS 1
    {prefix}/dev/{device_id}/status      device -> server, QoS 1, retained, also the Last Will
    {prefix}/dev/{device_id}/cmd         server -> device, QoS 1

Decoding is the hot path (tens of thousands of messages a second): the payload types are
``msgspec`` structs, so types, ranges and unknown fields are checked in C while parsing
(about 1 us for a vitals + 50 Hz burst message, against about 15 us for the same checks
written in Python). Every refusal is a :class:`ProtocolError` with a :class:`Reason` code
and a message that names the field, the value or the rule, and what was expected.

Modules: :mod:`~devices.protocol.payloads` (the types, reasons and limits),
:mod:`~devices.protocol.topics`, :mod:`~devices.protocol.decode`,
:mod:`~devices.protocol.encode` and :mod:`~devices.protocol.schema`; every public name is
re-exported here, so callers write ``from devices import protocol``.
"""

from __future__ import annotations

from devices.protocol.decode import (
    decode,
    decode_command,
    decode_event,
    decode_status,
    decode_telemetry,
)
from devices.protocol.encode import (
    accel_i16,
    accel_json,
    burst_wire,
    encode_command,
    encode_event,
    encode_status,
    encode_telemetry,
    reading_wire,
)
from devices.protocol.payloads import (
    DEVICE_ID_MAX,
    EPOCH_FLOOR_MS,
    JSON_ACCEL_SCALE_G,
    MAX_ACCEL_G,
    MAX_ACCEL_SAMPLES,
    PROTOCOL_VERSION,
    AccelBurst,
    AccelWire,
    Battery,
    BedState,
    Channel,
    Command,
    CommandKind,
    CommandWire,
    Consciousness,
    Decoded,
    DeviceId,
    Diastolic,
    Event,
    EventKind,
    EventWire,
    HeartRate,
    Limits,
    Percent,
    Position,
    ProtocolError,
    Reading,
    ReadingWire,
    Reason,
    Rejected,
    RespRate,
    Seq,
    ShortText,
    SpO2,
    Status,
    StatusWire,
    Systolic,
    TelemetryWire,
    Temperature,
    Timestamp,
    Vitals,
)
from devices.protocol.schema import (
    json_schemas,
)
from devices.protocol.topics import (
    parse_topic,
    subscriptions,
    topic,
)

__all__ = [
    "DEVICE_ID_MAX",
    "EPOCH_FLOOR_MS",
    "JSON_ACCEL_SCALE_G",
    "MAX_ACCEL_G",
    "MAX_ACCEL_SAMPLES",
    "PROTOCOL_VERSION",
    "AccelBurst",
    "AccelWire",
    "Battery",
    "BedState",
    "Channel",
    "Command",
    "CommandKind",
    "CommandWire",
    "Consciousness",
    "Decoded",
    "DeviceId",
    "Diastolic",
    "Event",
    "EventKind",
    "EventWire",
    "HeartRate",
    "Limits",
    "Percent",
    "Position",
    "ProtocolError",
    "Reading",
    "ReadingWire",
    "Reason",
    "Rejected",
    "RespRate",
    "Seq",
    "ShortText",
    "SpO2",
    "Status",
    "StatusWire",
    "Systolic",
    "TelemetryWire",
    "Temperature",
    "Timestamp",
    "Vitals",
    "accel_i16",
    "accel_json",
    "burst_wire",
    "decode",
    "decode_command",
    "decode_event",
    "decode_status",
    "decode_telemetry",
    "encode_command",
    "encode_event",
    "encode_status",
    "encode_telemetry",
    "json_schemas",
    "parse_topic",
    "reading_wire",
    "subscriptions",
    "topic",
]
