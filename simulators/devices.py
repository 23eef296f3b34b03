"""What each kind of device measures and says, as pure values (no I/O, no clock reads).

:class:`DeviceSpec` describes one simulated device: its kind (every kind of the protocol:
wristband, watch, pendant, belt clip, bed sensor, SOS button, bedside hub), the hub it sits
behind, its rates, battery, clock skew and firmware. :func:`measure` gives the readings it
takes in a stretch of scenario time from a :class:`simulators.physiology.Body`, stamped with the
device's own clock (``origin_ms`` plus the scenario time plus its skew). What happens to them on
the way to the broker (connections, backlog, batches) is :mod:`simulators.firmware`.

=============  =====================================================================
kind           readings
=============  =====================================================================
wristband      vitals, accelerometer bursts, battery
watch          vitals, accelerometer bursts, battery, position
pendant        accelerometer bursts (chest), battery, position
belt_clip      accelerometer bursts (waist), battery
bed_sensor     presence, heart and respiration rate, movement
sos_button     battery (and SOS presses, as events)
hub            none of its own: publishes for the devices bound to it
=============  =====================================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from devices import protocol as proto
from devices.model import DeviceKind
from simulators.physiology import Body, Vital

SCALE_G = 1.0 / 1024.0

#: The parts each kind measures.
PARTS: dict[DeviceKind, frozenset[str]] = {
    DeviceKind.WRISTBAND: frozenset({"vitals", "accel", "battery"}),
    DeviceKind.WATCH: frozenset({"vitals", "accel", "battery", "pos"}),
    DeviceKind.PENDANT: frozenset({"accel", "battery", "pos"}),
    DeviceKind.BELT_CLIP: frozenset({"accel", "battery"}),
    DeviceKind.BED_SENSOR: frozenset({"bed"}),
    DeviceKind.SOS_BUTTON: frozenset({"battery"}),
    DeviceKind.HUB: frozenset(),
}


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated device.

    Attributes:
        device_id: Its id (the MQTT username and client id when it has its own connection).
        kind: Device kind.
        hub: The bedside hub it sits behind (no connection of its own), or None.
        rate_hz: Accelerometer sample rate.
        accel_every_s: A burst every this many seconds (1: a continuous stream of 1 s bursts).
        burst_s: Length of each burst.
        vitals_every_s, battery_every_s, position_every_s, bed_every_s: Reading intervals.
        battery_pct: Battery at the scenario's start.
        drain_pct_per_h: Battery used per hour.
        clock_skew_s: The device clock's error (positive: ahead).
        firmware: Firmware version in its status.
        upload_every_s: 0: each reading is published when taken; otherwise readings are gathered
            and published as one batch this often (hubs and battery-saving firmware do).
        home: Latitude and longitude of the position readings.
    """

    device_id: str
    kind: DeviceKind
    hub: str | None = None
    rate_hz: int = 25
    accel_every_s: float = 1.0
    burst_s: float = 1.0
    vitals_every_s: float = 60.0
    battery_every_s: float = 600.0
    position_every_s: float = 300.0
    bed_every_s: float = 30.0
    battery_pct: float = 90.0
    drain_pct_per_h: float = 0.5
    clock_skew_s: float = 0.0
    firmware: str = "sim-1.0"
    upload_every_s: float = 0.0
    home: tuple[float, float] = (34.7802, 113.6651)
    parts: frozenset[str] = field(default=frozenset())

    def __post_init__(self) -> None:
        if not self.parts:
            object.__setattr__(self, "parts", PARTS[self.kind])

    def battery_at(self, t: float) -> float:
        """Battery percent at scenario time ``t`` (never below 0)."""
        return max(0.0, round(self.battery_pct - self.drain_pct_per_h * t / 3600.0, 1))

    def clock_ms(self, origin_ms: int, t: float) -> int:
        """The device's timestamp for scenario time ``t``."""
        return origin_ms + round((t + self.clock_skew_s) * 1000)


def _due(period: float, t0: float, t1: float) -> Iterator[float]:
    """Multiples of ``period`` in ``[t0, t1)``."""
    if period <= 0:
        return
    k = math.ceil(t0 / period - 1e-9)
    while (t := k * period) < t1 - 1e-9:
        yield t
        k += 1


@dataclass
class Measured:
    """A reading taken at scenario time ``t`` (seq and timestamp already set)."""

    t: float
    reading: proto.ReadingWire


@dataclass
class DeviceModel:
    """A device's measuring side: ``measure`` advances its sequence number."""

    spec: DeviceSpec
    body: Body | None
    origin_ms: int
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def measure(self, t0: float, t1: float) -> list[Measured]:
        """The readings due in ``[t0, t1)``, oldest first; parts due together share a reading."""
        s = self.spec
        parts = s.parts
        times: dict[float, set[str]] = {}
        periods = {
            "vitals": s.vitals_every_s,
            "accel": s.accel_every_s,
            "battery": s.battery_every_s,
            "pos": s.position_every_s,
            "bed": s.bed_every_s,
        }
        for part in parts:
            if part in ("vitals", "accel", "bed", "pos") and self.body is None:
                continue  # nobody wears it: only its battery
            for t in _due(periods[part], t0, t1):
                times.setdefault(round(t, 3), set()).add(part)
        out: list[Measured] = []
        for t in sorted(times):
            out.append(Measured(t, self._reading(t, times[t])))
        return out

    def _reading(self, t: float, parts: set[str]) -> proto.ReadingWire:
        s = self.spec
        body = self.body
        vitals = accel = bed = battery = pos = None
        if "vitals" in parts and body is not None:
            v = body.vitals(t)
            vitals = proto.Vitals(
                heart_rate=v[Vital.HEART_RATE],
                spo2=v[Vital.SPO2],
                resp_rate=v[Vital.RESP_RATE],
                temperature=v[Vital.TEMPERATURE],
            )
        if "accel" in parts and body is not None:
            accel = proto.accel_i16(body.accel(t, s.burst_s, s.rate_hz), s.rate_hz, SCALE_G)
        if "bed" in parts and body is not None:
            in_bed = body.in_bed(t)
            v = body.vitals(t)
            turned = in_bed and body.turning(t - s.bed_every_s, t)
            bed = proto.BedState(
                presence=in_bed,
                heart_rate=v[Vital.HEART_RATE] if in_bed else None,
                resp_rate=v[Vital.RESP_RATE] if in_bed else None,
                movement=3.0 if turned else 0.0,
            )
        if "battery" in parts:
            battery = proto.Battery(level_pct=s.battery_at(t), charging=False)
        if "pos" in parts and body is not None:
            lat, lon = s.home
            pos = proto.Position(lat=lat, lon=lon, accuracy_m=8.0, indoor=body.moment(t).room)
        return proto.ReadingWire(
            ts=s.clock_ms(self.origin_ms, t),
            seq=self.next_seq(),
            vitals=vitals,
            accel=accel,
            bed=bed,
            battery=battery,
            pos=pos,
        )

    def event(
        self, t: float, kind: proto.EventKind, detail: dict[str, object] | None = None
    ) -> proto.Event:
        """An event of this device at scenario time ``t`` (its own sequence number)."""
        return proto.Event(
            self.spec.clock_ms(self.origin_ms, t),
            self.next_seq(),
            self.spec.device_id,
            kind,
            dict(detail or {}),
        )
