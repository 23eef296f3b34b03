"""From raw MQTT messages to rows, dead letters and events. Pure: no I/O, no clock reads.

The I/O shell (:mod:`ingest.service`) hands a batch of raw messages, a snapshot of the device
registry and the server time to :func:`process_batch`; it gets back everything to write in
one transaction. Every message ends up somewhere: stored rows, a duplicate dropped on
purpose, or a dead letter with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from msgspec import Struct

from devices.protocol import (
    Decoded,
    Event,
    Limits,
    ProtocolError,
    Reading,
    Reason,
    Status,
    decode,
    parse_topic,
)

#: PostgreSQL's epoch (2000-01-01) in Unix milliseconds. Binary COPY of a timestamptz is the
#: int64 count of microseconds since it, so rows carry that integer instead of a datetime.
PG_EPOCH_MS = 946_684_800_000


def pg_time(ms: int) -> int:
    """Unix milliseconds -> PostgreSQL binary timestamptz (microseconds since 2000-01-01)."""
    return (ms - PG_EPOCH_MS) * 1000


class DeviceState(StrEnum):
    PROVISIONED = "provisioned"
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What ingest needs to know of a registered device."""

    device_id: str
    kind: str
    status: DeviceState
    registered_ms: int
    gateway_id: str | None = None
    resident_id: str | None = None
    revoked: bool = False
    placement: str | None = None


class RawMessage(Struct, frozen=True):
    topic: str
    payload: bytes
    received_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_ms: int
    topic: str
    device_id: str | None
    reason: Reason
    detail: str
    payload: bytes


@dataclass(slots=True)
class Batch:
    """Rows per table, in COPY column order, plus what else came out of the messages."""

    vitals: list[tuple[object, ...]] = field(default_factory=list)
    accel: list[tuple[object, ...]] = field(default_factory=list)
    bed: list[tuple[object, ...]] = field(default_factory=list)
    battery: list[tuple[object, ...]] = field(default_factory=list)
    positions: list[tuple[object, ...]] = field(default_factory=list)
    events: list[tuple[object, ...]] = field(default_factory=list)
    statuses: list[tuple[object, ...]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    device_events: list[Event] = field(default_factory=list)
    device_statuses: list[Status] = field(default_factory=list)
    duplicates_in_batch: int = 0
    messages: int = 0

    def row_count(self) -> int:
        return (
            len(self.vitals)
            + len(self.accel)
            + len(self.bed)
            + len(self.battery)
            + len(self.positions)
            + len(self.events)
            + len(self.statuses)
        )


#: Tolerance for clocks set a little before the registration was written.
REGISTRATION_SLACK_MS = 60_000


def _device_error(info: DeviceInfo | None, device_id: str) -> ProtocolError | None:
    if info is None:
        return ProtocolError(Reason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered")
    if info.status is DeviceState.RETIRED or info.revoked:
        return ProtocolError(
            Reason.RETIRED_DEVICE, f"device {device_id!r} is retired or its credentials revoked"
        )
    return None


def _reading_error(
    reading: Reading, topic_device: str, devices: Mapping[str, DeviceInfo], where: str
) -> ProtocolError | None:
    info = devices.get(reading.device_id)
    if reading.device_id != topic_device:
        # A gateway (bedside hub) may publish for the devices bound to it, and only those.
        if info is None or info.gateway_id != topic_device:
            return ProtocolError(
                Reason.DEVICE_MISMATCH,
                f"{where} is for device {reading.device_id!r}, which is not bound to gateway {topic_device!r}",
            )
        error = _device_error(info, reading.device_id)
        if error is not None:
            return error
    assert info is not None  # noqa: S101 - the topic device was checked before
    if reading.ts_ms < info.registered_ms - REGISTRATION_SLACK_MS:
        return ProtocolError(
            Reason.BEFORE_REGISTRATION,
            f"{where}.ts is {reading.ts_ms}, before device {reading.device_id!r} was registered "
            f"({info.registered_ms})",
        )
    return None


def process_batch(
    messages: Sequence[RawMessage],
    devices: Mapping[str, DeviceInfo],
    limits: Limits,
    prefix: str,
) -> Batch:
    """Decode, validate and route a batch of messages.

    Args:
        messages: raw messages in arrival order.
        devices: registry snapshot, device id -> info.
        limits: decoding limits with the server time of this batch.
        prefix: the topic prefix (``anxin/v1``).

    Returns:
        A :class:`Batch`; every message is accounted for in it.
    """
    out = Batch(messages=len(messages))
    # Readings and events live in different tables with their own unique keys: an event may
    # share (device, ts, seq) with a reading (separate counters per channel) and is kept.
    seen: set[tuple[str, int, int]] = set()
    seen_events: set[tuple[str, int, int]] = set()
    vitals, accel, bed, battery, positions = (
        out.vitals,
        out.accel,
        out.bed,
        out.battery,
        out.positions,
    )
    for msg in messages:
        topic_device: str | None = None
        try:
            topic_device, channel = parse_topic(prefix, msg.topic)
            error = _device_error(devices.get(topic_device), topic_device)
            if error is not None:
                raise error
            decoded: Decoded = decode(channel, topic_device, msg.payload, limits)
        except ProtocolError as exc:
            out.dead_letters.append(
                DeadLetter(
                    msg.received_ms, msg.topic, topic_device, exc.reason, exc.detail, msg.payload
                )
            )
            continue
        for rejected in decoded.rejected:
            out.dead_letters.append(
                DeadLetter(
                    msg.received_ms,
                    msg.topic,
                    rejected.device_id,
                    rejected.error.reason,
                    rejected.error.detail,
                    msg.payload,
                )
            )
        recv = pg_time(msg.received_ms)
        for index, reading in enumerate(decoded.readings):
            where = f"readings[{decoded.indexes[index]}]" if decoded.indexes else "payload"
            error = _reading_error(reading, topic_device, devices, where)
            if error is not None:
                out.dead_letters.append(
                    DeadLetter(
                        msg.received_ms,
                        msg.topic,
                        reading.device_id,
                        error.reason,
                        error.detail,
                        msg.payload,
                    )
                )
                continue
            key = (reading.device_id, reading.ts_ms, reading.seq)
            if key in seen:
                out.duplicates_in_batch += 1
                continue
            seen.add(key)
            out.readings.append(reading)
            ts = pg_time(reading.ts_ms)
            dev = reading.device_id
            seq = reading.seq
            v = reading.vitals
            if v is not None:
                vitals.append(
                    (
                        ts,
                        dev,
                        seq,
                        recv,
                        v.heart_rate,
                        v.spo2,
                        v.resp_rate,
                        v.temperature,
                        v.systolic,
                        v.diastolic,
                        v.on_oxygen,
                        v.consciousness.value if v.consciousness is not None else None,
                    )
                )
            a = reading.accel
            if a is not None:
                accel.append(
                    (ts, dev, seq, recv, a.rate_hz, a.scale_g, len(a.samples) // 6, a.samples)
                )
            b = reading.bed
            if b is not None:
                bed.append((ts, dev, seq, recv, b.presence, b.heart_rate, b.resp_rate, b.movement))
            bat = reading.battery
            if bat is not None:
                battery.append((ts, dev, seq, recv, bat.level_pct, bat.charging))
            p = reading.position
            if p is not None:
                positions.append((ts, dev, seq, recv, p.lat, p.lon, p.accuracy_m, p.indoor))
        for event in decoded.events:
            if event.device_id != topic_device:
                info = devices.get(event.device_id)
                if info is None or info.gateway_id != topic_device:
                    out.dead_letters.append(
                        DeadLetter(
                            msg.received_ms,
                            msg.topic,
                            event.device_id,
                            Reason.DEVICE_MISMATCH,
                            f"event for device {event.device_id!r}, which is not bound to gateway {topic_device!r}",
                            msg.payload,
                        )
                    )
                    continue
            key = (event.device_id, event.ts_ms, event.seq)
            if key in seen_events:
                out.duplicates_in_batch += 1
                continue
            seen_events.add(key)
            out.device_events.append(event)
            out.events.append(
                (
                    pg_time(event.ts_ms),
                    event.device_id,
                    event.seq,
                    recv,
                    event.kind.value,
                    event.detail or None,
                )
            )
        status = decoded.status
        if status is not None:
            out.device_statuses.append(status)
            out.statuses.append(
                (
                    pg_time(status.ts_ms),
                    status.device_id,
                    recv,
                    status.online,
                    status.reason,
                    status.firmware,
                    status.battery_pct,
                )
            )
    if len(out.statuses) > 1:
        # A retained status is delivered again on every resubscribe: keep one row per key.
        unique = {(row[0], row[1], row[3]): row for row in out.statuses}
        out.duplicates_in_batch += len(out.statuses) - len(unique)
        out.statuses = list(unique.values())
    return out
