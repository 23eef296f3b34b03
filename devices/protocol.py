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
"""

from __future__ import annotations

import base64
import binascii
import inspect
from collections.abc import Sequence
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


class _Version(Struct):
    """Just enough of any payload to tell its protocol version."""

    v: Any = None


_TELEMETRY = msgspec.json.Decoder(TelemetryWire)
_EVENT = msgspec.json.Decoder(EventWire)
_STATUS = msgspec.json.Decoder(StatusWire)
_COMMAND = msgspec.json.Decoder(CommandWire)
_VERSION = msgspec.json.Decoder(_Version)
_ANY = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()

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


# --------------------------------------------------------------------------- topics


def topic(prefix: str, device_id: str, channel: Channel) -> str:
    return f"{prefix}/dev/{device_id}/{channel.value}"


def subscriptions(
    prefix: str, channels: Sequence[Channel] = (Channel.TELEMETRY, Channel.EVENT, Channel.STATUS)
) -> list[str]:
    """The topic filters the ingester subscribes to (all channels unless given)."""
    return [f"{prefix}/dev/+/{c.value}" for c in channels]


def parse_topic(prefix: str, name: str) -> tuple[str, Channel]:
    """Split a device topic into (device id, channel).

    Raises:
        ProtocolError: UNKNOWN_TOPIC when the topic is not ``{prefix}/dev/{id}/{channel}``.
    """
    head = prefix + "/dev/"
    if not name.startswith(head):
        raise ProtocolError(Reason.UNKNOWN_TOPIC, f"topic {name!r} is not under {head!r}")
    device_id, sep, chan = name[len(head) :].partition("/")
    if not sep or not device_id or len(device_id) > DEVICE_ID_MAX:
        raise ProtocolError(Reason.UNKNOWN_TOPIC, f"topic {name!r} has no valid device id")
    if chan == "telemetry":
        return device_id, Channel.TELEMETRY
    if chan == "event":
        return device_id, Channel.EVENT
    if chan == "status":
        return device_id, Channel.STATUS
    raise ProtocolError(
        Reason.UNKNOWN_TOPIC,
        f"topic {name!r} ends in {chan!r}, expected telemetry, event or status",
    )


# --------------------------------------------------------------------------- decoding


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _translate(exc: msgspec.MsgspecError, payload: bytes) -> ProtocolError:
    """Map a msgspec error to our reason codes, keeping its path (``$.vitals.hr``)."""
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        if "Number out of range" in text:
            return ProtocolError(Reason.NON_FINITE, f"{text}: the number is not finite")
        if (
            "` >= " in text
            or "` <= " in text
            or "` > " in text
            or "` < " in text
            or "length" in text
        ):
            return ProtocolError(Reason.OUT_OF_RANGE, text)
        return ProtocolError(Reason.SCHEMA, text)
    if b"NaN" in payload or b"Infinity" in payload:
        return ProtocolError(
            Reason.NON_FINITE, "payload holds NaN or Infinity, which JSON does not allow"
        )
    return ProtocolError(Reason.MALFORMED_JSON, f"payload is not JSON: {text}")


def _check_size(payload: bytes, limits: Limits) -> None:
    if len(payload) > limits.max_payload_bytes:
        raise ProtocolError(
            Reason.OVERSIZED,
            f"payload is {len(payload)} bytes, at most {limits.max_payload_bytes} accepted",
        )


def _check_version(version: Any) -> None:
    if version != PROTOCOL_VERSION or version.__class__ is not int:
        raise ProtocolError(
            Reason.UNSUPPORTED_VERSION,
            f"field v has value {_short(version)}, expected {PROTOCOL_VERSION}",
        )


_GENERIC = msgspec.json.Decoder()
#: Refusals that concern the message as a whole: a batch is not salvaged reading by reading.
_WHOLE_MESSAGE = frozenset({Reason.DUPLICATE_KEY, Reason.BAD_TEXT})
_REENCODE = msgspec.json.Encoder()


def _keys(payload: bytes) -> int:
    """Object keys in a JSON text: each is a string followed by ``:``; ``\\":`` can only be
    an escaped quote inside a string."""
    return payload.count(b'":') - payload.count(b'\\":')


def _check_duplicate_keys(payload: bytes) -> None:
    """Refuse an object that names a key twice (JSON leaves it to the reader which one counts;
    a device and Anxin must not read one message two ways). Decoding to plain objects keeps one
    of each key, so their re-encoding has fewer keys exactly when the payload repeated one."""
    try:
        again = _REENCODE.encode(_GENERIC.decode(payload))
    except (msgspec.MsgspecError, RecursionError):
        return  # the typed decode says what is wrong with it
    if _keys(again) != _keys(payload):
        raise ProtocolError(Reason.DUPLICATE_KEY, "an object of the payload names a key twice")


def _has_nul(node: Any) -> bool:
    if isinstance(node, str):
        return "\x00" in node
    if isinstance(node, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_nul(v) for v in node)
    return False


def _check_text(payload: bytes) -> None:
    """Refuse text that PostgreSQL cannot store (a NUL character, JSON ``\\u0000``), here
    rather than as a refused batch in the database. Lone surrogates and invalid UTF-8 are
    already refused by the JSON decoder."""
    if b"\\u0000" not in payload:
        return
    try:
        doc = _GENERIC.decode(payload)
    except (msgspec.MsgspecError, RecursionError):
        return
    if _has_nul(doc):
        raise ProtocolError(
            Reason.BAD_TEXT, "a text of the payload holds a NUL character (\\u0000)"
        )


def _typed(
    decoder: msgspec.json.Decoder[Any], payload: bytes, limits: Limits, *, exact_keys: bool = False
) -> Any:
    """Decode and check version, text and repeated keys (``exact_keys``; every device payload:
    the check costs about 4 us of the ingester's 35 us per message, measured on the 2-core
    development machine, and a payload must mean one thing to the device and to Anxin)."""
    _check_size(payload, limits)
    _check_text(payload)
    if exact_keys:
        _check_duplicate_keys(payload)
    try:
        doc = decoder.decode(payload)
    except RecursionError:
        # msgspec recurses per nesting level: a 2 KiB payload of brackets must not escape.
        raise _too_deep() from None
    except msgspec.MsgspecError as exc:
        # A payload of another protocol version fails the schema first: say so instead.
        try:
            version = _VERSION.decode(payload).v
        except (msgspec.MsgspecError, RecursionError):
            raise _translate(exc, payload) from None
        _check_version(version)
        raise _translate(exc, payload) from None
    _check_version(doc.v)
    return doc


def _too_deep() -> ProtocolError:
    return ProtocolError(Reason.SCHEMA, "payload nests arrays or objects too deeply to decode")


def _timestamp(ts: int, where: str, limits: Limits) -> int:
    if ts > limits.now_ms + limits.max_future_skew_ms:
        raise ProtocolError(
            Reason.FUTURE_TIMESTAMP,
            f"{where}.ts is {ts}, {(ts - limits.now_ms) / 1000:.0f} s ahead of the server clock "
            f"(at most {limits.max_future_skew_ms / 1000:.0f} s allowed)",
        )
    if ts < EPOCH_FLOOR_MS or ts < limits.now_ms - limits.max_age_ms:
        raise ProtocolError(
            Reason.TOO_OLD,
            f"{where}.ts is {ts}, older than the {limits.max_age_ms / 86_400_000:.0f} days accepted",
        )
    return ts


def _burst(wire: AccelWire, where: str) -> AccelBurst:
    data = wire.data
    if wire.enc == "i16":
        if wire.scale is None:
            raise ProtocolError(
                Reason.SCHEMA, f"{where}.scale is missing, expected g per count with enc 'i16'"
            )
        if data.__class__ is not str:
            raise ProtocolError(
                Reason.SCHEMA, f"{where}.data is a list, expected base64 text with enc 'i16'"
            )
        try:
            samples = binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(Reason.SCHEMA, f"{where}.data is not valid base64") from None
        if len(samples) % 6:
            raise ProtocolError(
                Reason.SCHEMA,
                f"{where}.data decodes to {len(samples)} bytes, expected a multiple of 6 (x, y, z int16)",
            )
        scale = wire.scale
    else:
        if data.__class__ is not list:
            raise ProtocolError(
                Reason.SCHEMA, f"{where}.data is text, expected a list of numbers with enc 'json'"
            )
        if len(data) % 3:
            raise ProtocolError(
                Reason.SCHEMA,
                f"{where}.data has {len(data)} values, expected a flat list of x,y,z triples",
            )
        samples = _counts_from_g(data)
        scale = JSON_ACCEL_SCALE_G
    n = len(samples) // 6
    if n == 0:
        raise ProtocolError(Reason.SCHEMA, f"{where}.data holds no samples")
    if n > MAX_ACCEL_SAMPLES:
        raise ProtocolError(
            Reason.OUT_OF_RANGE,
            f"{where}.data holds {n} samples, at most {MAX_ACCEL_SAMPLES} per burst",
        )
    return AccelBurst(rate_hz=wire.hz, scale_g=scale, samples=samples)


def _counts_from_g(values: Any) -> bytes:
    import numpy as np  # noqa: PLC0415 - only the JSON burst encoding needs numpy here

    counts = np.rint(np.asarray(values, dtype=np.float64) / JSON_ACCEL_SCALE_G)
    return bytes(counts.clip(-32768, 32767).astype("<i2").tobytes())


def _reading(wire: ReadingWire | TelemetryWire, where: str, device: str, limits: Limits) -> Reading:
    if wire.ts is None or wire.seq is None:
        raise ProtocolError(
            Reason.SCHEMA, f"{where} has no ts or seq, expected both (or a readings list)"
        )
    ts = _timestamp(wire.ts, where, limits)
    accel = _burst(wire.accel, where + ".accel") if wire.accel is not None else None
    if (
        wire.vitals is None
        and accel is None
        and wire.bed is None
        and wire.battery is None
        and wire.pos is None
    ):
        raise ProtocolError(
            Reason.SCHEMA, f"{where} carries none of vitals, accel, bed, battery, pos"
        )
    return Reading(
        ts, wire.seq, wire.dev or device, wire.vitals, accel, wire.bed, wire.battery, wire.pos
    )


def decode_telemetry(topic_device: str, payload: bytes, limits: Limits) -> Decoded:
    """Decode a telemetry message: one reading, or ``{"v":1,"readings":[...]}``.

    A batch whose envelope is valid keeps every valid reading; each bad reading comes back in
    ``rejected`` with its reason. A bad envelope raises.

    Raises:
        ProtocolError: the payload as a whole is unusable.
    """
    try:
        doc: TelemetryWire = _typed(_TELEMETRY, payload, limits, exact_keys=True)
    except ProtocolError as exc:
        if exc.reason in _WHOLE_MESSAGE:
            raise  # no reading of it can be trusted on its own
        batch = _batch_salvage(payload, limits)
        if batch is None:
            raise
        doc = batch
    default_dev = doc.dev or topic_device
    if doc.readings is None:
        return Decoded(
            Channel.TELEMETRY,
            topic_device,
            readings=[_reading(doc, "payload", default_dev, limits)],
        )
    if (
        doc.ts is not None
        or doc.seq is not None
        or doc.vitals
        or doc.accel
        or doc.bed
        or doc.battery
        or doc.pos
    ):
        raise ProtocolError(
            Reason.SCHEMA, "payload mixes a readings list with reading fields at the top"
        )
    if not doc.readings:
        raise ProtocolError(Reason.SCHEMA, "payload.readings is empty")
    if len(doc.readings) > limits.max_readings:
        raise ProtocolError(
            Reason.TOO_MANY_READINGS,
            f"payload.readings holds {len(doc.readings)} readings, at most {limits.max_readings} accepted",
        )
    readings: list[Reading] = []
    rejected: list[Rejected] = []
    indexes: list[int] = []
    for i, item in enumerate(doc.readings):
        if isinstance(item, _Invalid):
            rejected.append(Rejected(i, item.dev or default_dev, item.error))
            continue
        try:
            readings.append(_reading(item, f"readings[{i}]", default_dev, limits))
            indexes.append(i)
        except ProtocolError as exc:
            rejected.append(Rejected(i, item.dev or default_dev, exc))
    return Decoded(
        Channel.TELEMETRY, topic_device, readings=readings, rejected=rejected, indexes=indexes
    )


class _Invalid:
    """A batch item that failed its schema, kept in place so indexes stay right."""

    __slots__ = ("dev", "error")

    def __init__(self, dev: str | None, error: ProtocolError) -> None:
        self.dev = dev
        self.error = error


class _SalvagedBatch(Struct, frozen=True):
    v: int
    readings: list[Any]
    dev: str | None = None
    ts: None = None
    seq: None = None
    vitals: None = None
    accel: None = None
    bed: None = None
    battery: None = None
    pos: None = None


def _batch_salvage(payload: bytes, limits: Limits) -> Any:
    """When a batch fails as a whole, check each reading alone so good ones are kept.

    Returns None when the payload is not a batch with a valid envelope (the caller re-raises).
    """
    if len(payload) > limits.max_payload_bytes:
        return None
    try:
        doc = _ANY.decode(payload)
    except (msgspec.MsgspecError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("readings"), list):
        return None
    version = doc.get("v")
    # The class check too: true == 1.0 == 1 in Python, and the typed path refuses both.
    if version.__class__ is not int or version != PROTOCOL_VERSION:
        return None
    if set(doc) - {"v", "readings", "dev"}:
        return None
    dev = doc.get("dev")
    if dev is not None:
        try:
            msgspec.convert(dev, DeviceId)
        except msgspec.ValidationError:
            return None
    items: list[Any] = []
    for i, raw in enumerate(doc["readings"]):
        try:
            items.append(msgspec.convert(raw, ReadingWire))
        except msgspec.ValidationError as exc:
            sub = raw.get("dev") if isinstance(raw, dict) else None
            error = _translate(exc, b"")
            error = ProtocolError(error.reason, error.detail.replace("$", f"$.readings[{i}]", 1))
            items.append(_Invalid(sub if isinstance(sub, str) else None, error))
    return _SalvagedBatch(v=PROTOCOL_VERSION, readings=items, dev=dev)


def decode_event(topic_device: str, payload: bytes, limits: Limits) -> Decoded:
    """Decode an event: ``{"v":1,"ts":..,"seq":..,"type":"sos"|"fall"|"cancel"|"button"}``."""
    doc: EventWire = _typed(_EVENT, payload, limits, exact_keys=True)
    ts = _timestamp(doc.ts, "payload", limits)
    event = Event(ts, doc.seq, doc.dev or topic_device, doc.type, doc.detail or {})
    return Decoded(Channel.EVENT, topic_device, events=[event])


def decode_status(topic_device: str, payload: bytes, limits: Limits) -> Decoded:
    """Decode a status (also the Last Will): ``{"v":1,"ts":..,"online":bool,...}``."""
    doc: StatusWire = _typed(_STATUS, payload, limits, exact_keys=True)
    ts = _timestamp(doc.ts, "payload", limits)
    return Decoded(
        Channel.STATUS,
        topic_device,
        status=Status(ts, topic_device, doc.online, doc.fw, doc.battery, doc.reason),
    )


def decode(channel: Channel, topic_device: str, payload: bytes, limits: Limits) -> Decoded:
    if channel is Channel.TELEMETRY:
        return decode_telemetry(topic_device, payload, limits)
    if channel is Channel.EVENT:
        return decode_event(topic_device, payload, limits)
    if channel is Channel.STATUS:
        return decode_status(topic_device, payload, limits)
    raise ProtocolError(Reason.UNKNOWN_TOPIC, f"channel {channel.value!r} is server-to-device only")


def decode_command(payload: bytes) -> Command:
    """Decode a server-to-device command (simulators and firmware test benches use it)."""
    try:
        doc = _COMMAND.decode(payload)
    except msgspec.MsgspecError as exc:
        raise _translate(exc, payload) from None
    _check_version(doc.v)
    return Command(doc.id, doc.ts, doc.type, doc.alert_id, doc.text)


# --------------------------------------------------------------------------- encoding


def accel_i16(samples_g: Any, rate_hz: float, scale_g: float = 1.0 / 1024.0) -> AccelWire:
    """Compact burst: int16 counts (x,y,z interleaved, little-endian) in base64, plus scale."""
    import numpy as np  # noqa: PLC0415

    counts = (
        np.rint(np.asarray(samples_g, dtype=np.float64) / scale_g).clip(-32768, 32767).astype("<i2")
    )
    return AccelWire(
        hz=rate_hz, data=base64.b64encode(counts.tobytes()).decode(), enc="i16", scale=scale_g
    )


def accel_json(samples_g: Any, rate_hz: float) -> AccelWire:
    """JSON burst: a flat list x0,y0,z0,x1,... in g, rounded to 1 mg."""
    import numpy as np  # noqa: PLC0415

    flat = np.round(np.asarray(samples_g, dtype=np.float64).reshape(-1), 3)
    return AccelWire(hz=rate_hz, data=flat.tolist(), enc="json")


def burst_wire(burst: AccelBurst) -> AccelWire:
    return AccelWire(
        hz=burst.rate_hz,
        data=base64.b64encode(burst.samples).decode(),
        enc="i16",
        scale=burst.scale_g,
    )


def reading_wire(
    reading: Reading, *, dev: str | None = None, accel: AccelWire | None = None
) -> ReadingWire:
    """The wire form of a reading; ``accel`` lets a caller pass a burst encoded its own way."""
    if accel is None and reading.accel is not None:
        accel = burst_wire(reading.accel)
    return ReadingWire(
        ts=reading.ts_ms,
        seq=reading.seq,
        dev=dev,
        vitals=reading.vitals,
        accel=accel,
        bed=reading.bed,
        battery=reading.battery,
        pos=reading.position,
    )


def encode_telemetry(readings: list[ReadingWire]) -> bytes:
    """One reading as a flat object, several as ``{"v":1,"readings":[...]}``."""
    if len(readings) == 1:
        r = readings[0]
        return _ENCODER.encode(
            TelemetryWire(
                v=PROTOCOL_VERSION,
                ts=r.ts,
                seq=r.seq,
                dev=r.dev,
                vitals=r.vitals,
                accel=r.accel,
                bed=r.bed,
                battery=r.battery,
                pos=r.pos,
            )
        )
    return _ENCODER.encode(TelemetryWire(v=PROTOCOL_VERSION, readings=readings))


def encode_event(event: Event, *, dev: str | None = None) -> bytes:
    return _ENCODER.encode(
        EventWire(
            v=PROTOCOL_VERSION,
            ts=event.ts_ms,
            seq=event.seq,
            type=event.kind,
            dev=dev,
            detail=event.detail or None,
        )
    )


def encode_status(status: Status) -> bytes:
    return _ENCODER.encode(
        StatusWire(
            v=PROTOCOL_VERSION,
            ts=status.ts_ms,
            online=status.online,
            fw=status.firmware,
            battery=status.battery_pct,
            reason=status.reason,
        )
    )


def encode_command(command: Command) -> bytes:
    return _ENCODER.encode(
        CommandWire(
            v=PROTOCOL_VERSION,
            id=command.id,
            ts=command.ts_ms,
            type=command.kind,
            alert_id=command.alert_id,
            text=command.text,
        )
    )


def _clean_descriptions(node: Any) -> Any:
    """Descriptions as our docstrings say them (``inspect.cleandoc``), whatever indentation
    the schema generator of the msgspec version at hand keeps."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v)
            if k == "description" and isinstance(v, str)
            else _clean_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (2020-12) of each payload, as shipped in ``devices/schemas``."""
    out: dict[str, dict[str, Any]] = {}
    for name, typ in (
        ("telemetry", TelemetryWire),
        ("event", EventWire),
        ("status", StatusWire),
        ("command", CommandWire),
    ):
        schema = _clean_descriptions(msgspec.json.schema(typ))
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"Anxin protocol v{PROTOCOL_VERSION} {name} payload"
        out[name] = schema
    return out
