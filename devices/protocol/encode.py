"""Encoding payloads (the simulators, firmware test benches and the alert service's commands)."""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from devices.protocol.payloads import (
    PROTOCOL_VERSION,
    AccelBurst,
    AccelWire,
    Command,
    CommandWire,
    Event,
    EventWire,
    Reading,
    ReadingWire,
    Status,
    StatusWire,
    TelemetryWire,
)

_ENCODER = msgspec.json.Encoder()


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
