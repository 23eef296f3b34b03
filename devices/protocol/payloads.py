"""Protocol v1 payload types: the wire structs msgspec checks while parsing, the decoded values
the ingester gets, the reason codes of refusals and the decoder's limits. Pure.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from core.errors import AnxinError

PROTOCOL_VERSION: Final = 1
DEVICE_ID_MAX: Final = 64
#: Scale of JSON-encoded bursts once stored as int16: 1/2048 g per count (+-16 g).
JSON_ACCEL_SCALE_G: Final = 1.0 / 2048.0
MAX_ACCEL_SAMPLES: Final = 2048
MAX_ACCEL_G: Final = 32.0
#: Earliest timestamp accepted at all (2020-01-01): anything before is a device with no clock.
EPOCH_FLOOR_MS: Final = 1_577_836_800_000


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"
    CMD = "cmd"


class Reason(StrEnum):
    """Why a message (or one reading of it) was dead-lettered."""

    UNKNOWN_TOPIC = "unknown_topic"
    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    UNSUPPORTED_VERSION = "unsupported_version"
    SCHEMA = "schema"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    TOO_MANY_READINGS = "too_many_readings"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_OLD = "too_old"
    BEFORE_REGISTRATION = "before_registration"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_MISMATCH = "device_mismatch"
    RETIRED_DEVICE = "retired_device"
    STORAGE_REJECTED = "storage_rejected"
    BAD_TEXT = "bad_text"
    DUPLICATE_KEY = "duplicate_key"


class ProtocolError(AnxinError, ValueError):
    """A payload or topic that does not follow the protocol."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class EventKind(StrEnum):
    SOS = "sos"
    FALL = "fall"
    CANCEL = "cancel"
    BUTTON = "button"


class Consciousness(StrEnum):
    """ACVPU, as NEWS2 uses it."""

    ALERT = "A"
    CONFUSION = "C"
    VOICE = "V"
    PAIN = "P"
    UNRESPONSIVE = "U"


class CommandKind(StrEnum):
    HELP_COMING = "help_coming"
    CALL_BACK = "call_back"
    ALERT_RECEIVED = "alert_received"
    CANCEL_ACK = "cancel_ack"
    ARE_YOU_OK = "are_you_ok"


# --------------------------------------------------------------------------- payload types
# Physiologically possible ranges, not normal ranges: a value outside them is a sensor or
# firmware fault, dead-lettered rather than scored.
HeartRate = Annotated[float, Meta(ge=20, le=300, description="beats per minute")]
SpO2 = Annotated[float, Meta(ge=40, le=100, description="percent")]
RespRate = Annotated[float, Meta(ge=0, le=80, description="breaths per minute")]
Temperature = Annotated[float, Meta(ge=25, le=45, description="degrees Celsius")]
Systolic = Annotated[float, Meta(ge=40, le=300, description="mmHg")]
Diastolic = Annotated[float, Meta(ge=20, le=200, description="mmHg")]
Percent = Annotated[float, Meta(ge=0, le=100)]
Timestamp = Annotated[
    int, Meta(description="device clock, milliseconds since the Unix epoch (UTC)")
]
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1, description="per-device sequence number")]
DeviceId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{3,64}$")]
ShortText = Annotated[str, Meta(max_length=64)]


class _Wire(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of payload types: immutable, unknown fields refused."""


class Vitals(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    heart_rate: HeartRate | None = msgspec.field(default=None, name="hr")
    spo2: SpO2 | None = None
    resp_rate: RespRate | None = msgspec.field(default=None, name="rr")
    temperature: Temperature | None = msgspec.field(default=None, name="temp")
    systolic: Systolic | None = msgspec.field(default=None, name="sbp")
    diastolic: Diastolic | None = msgspec.field(default=None, name="dbp")
    on_oxygen: bool | None = msgspec.field(default=None, name="o2")
    consciousness: Consciousness | None = msgspec.field(default=None, name="acvpu")


class AccelWire(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A burst as sent: ``enc="i16"`` base64 of int16 counts with ``scale`` g/count, or
    ``enc="json"`` a flat list x0,y0,z0,x1,... in g."""

    hz: Annotated[float, Meta(ge=10, le=400, description="sample rate")]
    data: str | list[Annotated[float, Meta(ge=-MAX_ACCEL_G, le=MAX_ACCEL_G)]]
    enc: Literal["i16", "json"] = "i16"
    scale: Annotated[float, Meta(gt=0, le=0.1, description="g per count")] | None = None


class BedState(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    presence: bool | None = None
    heart_rate: HeartRate | None = msgspec.field(default=None, name="hr")
    resp_rate: RespRate | None = msgspec.field(default=None, name="rr")
    movement: Annotated[float, Meta(ge=0, le=1e6)] | None = msgspec.field(default=None, name="move")


class Battery(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    level_pct: Percent = msgspec.field(name="pct")
    charging: bool | None = None


class Position(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]
    accuracy_m: Annotated[float, Meta(ge=0, le=1e6)] | None = msgspec.field(
        default=None, name="acc"
    )
    indoor: ShortText | None = None


class ReadingWire(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    ts: Timestamp
    seq: Seq
    dev: DeviceId | None = None
    vitals: Vitals | None = None
    accel: AccelWire | None = None
    bed: BedState | None = None
    battery: Battery | None = None
    pos: Position | None = None


class TelemetryWire(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Either one reading (its fields at the top) or ``readings``: a batch."""

    v: int
    ts: Timestamp | None = None
    seq: Seq | None = None
    dev: DeviceId | None = None
    vitals: Vitals | None = None
    accel: AccelWire | None = None
    bed: BedState | None = None
    battery: Battery | None = None
    pos: Position | None = None
    readings: list[ReadingWire] | None = None


class EventWire(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    v: int
    ts: Timestamp
    seq: Seq
    type: EventKind
    dev: DeviceId | None = None
    detail: dict[str, Any] | None = None


class StatusWire(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    v: int
    ts: Timestamp
    online: bool
    fw: ShortText | None = None
    battery: Percent | None = None
    reason: ShortText | None = None


class CommandWire(_Wire, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    v: int
    id: str
    ts: Timestamp
    type: CommandKind
    alert_id: str | None = None
    text: Annotated[str, Meta(max_length=500)] | None = None


# --------------------------------------------------------------------------- decoded values
# Plain frozen structs rather than frozen dataclasses: a frozen dataclass sets each field
# through object.__setattr__, which was an eighth of the ingest CPU at 10,000 messages/s.


class AccelBurst(Struct, frozen=True):
    """A burst of three-axis samples: ``samples`` is little-endian int16 x,y,z interleaved."""

    rate_hz: float
    scale_g: float
    samples: bytes

    @property
    def n_samples(self) -> int:
        return len(self.samples) // 6


class Reading(Struct, frozen=True):
    """One timestamped, numbered reading; at least one of its parts is present."""

    ts_ms: int
    seq: int
    device_id: str
    vitals: Vitals | None = None
    accel: AccelBurst | None = None
    bed: BedState | None = None
    battery: Battery | None = None
    position: Position | None = None


class Event(Struct, frozen=True):
    ts_ms: int
    seq: int
    device_id: str
    kind: EventKind
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class Status(Struct, frozen=True):
    ts_ms: int
    device_id: str
    online: bool
    firmware: str | None = None
    battery_pct: float | None = None
    reason: str | None = None


class Command(Struct, frozen=True):
    id: str
    ts_ms: int
    kind: CommandKind
    alert_id: str | None = None
    text: str | None = None


class Rejected(Struct, frozen=True):
    """One reading of a batch that was refused while the rest of the message was kept."""

    index: int
    device_id: str | None
    error: ProtocolError


class Decoded(Struct, frozen=True):
    """A decoded message: what to keep and what was refused inside it."""

    channel: Channel
    topic_device: str
    readings: list[Reading] = msgspec.field(default_factory=list)
    events: list[Event] = msgspec.field(default_factory=list)
    status: Status | None = None
    rejected: list[Rejected] = msgspec.field(default_factory=list)
    #: Position of each kept reading in the payload's ``readings`` list (empty for a single one).
    indexes: list[int] = msgspec.field(default_factory=list)


class Limits(Struct, frozen=True):
    """Bounds the decoder enforces. ``now_ms`` is the server clock at receipt."""

    now_ms: int
    max_payload_bytes: int = 65536
    max_readings: int = 600
    max_future_skew_ms: int = 300_000
    max_age_ms: int = 30 * 86_400_000
