"""A wearable simulator: vitals and 50 Hz accelerometer bursts, one message per device-second.

Used by the tests, the ingest benchmark and the demo. A fleet of simulated wristbands shares
one MQTT connection when load matters (``publish_fleet``), or one connection each when
per-device credentials matter. Payloads are built with :mod:`devices.protocol`, so the
simulator sends exactly what ingest decodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from devices import protocol as proto

Encoding = Literal["i16", "json"]


def still_burst(
    rng: np.random.Generator, rate_hz: float, seconds: float = 1.0
) -> npt.NDArray[np.float64]:
    """Worn at rest or walking gently: gravity on z, small noise, in g, shape (n, 3)."""
    n = round(rate_hz * seconds)
    samples = rng.normal(0.0, 0.04, size=(n, 3))
    samples[:, 2] += 1.0
    return samples


def walking_burst(
    rng: np.random.Generator, rate_hz: float, seconds: float = 1.0
) -> npt.NDArray[np.float64]:
    n = round(rate_hz * seconds)
    t = np.arange(n) / rate_hz
    samples = rng.normal(0.0, 0.05, size=(n, 3))
    samples[:, 2] += 1.0 + 0.25 * np.sin(2 * np.pi * 1.8 * t + rng.uniform(0, 6.28))
    samples[:, 0] += 0.15 * np.sin(2 * np.pi * 0.9 * t)
    return samples


@dataclass(frozen=True, slots=True)
class VitalsModel:
    heart_rate: float = 72.0
    spo2: float = 97.0
    resp_rate: float = 15.0
    temperature: float = 36.6


class WearableFleet:
    """Builds the payloads of many simulated wristbands.

    Bursts come from a small pre-generated pool, so building a message costs one encode and
    the simulator can keep up with tens of thousands of messages a second.
    """

    def __init__(
        self,
        device_ids: Sequence[str],
        *,
        encoding: Encoding = "i16",
        rate_hz: float = 50.0,
        seed: int = 0,
        pool: int = 32,
        vitals: VitalsModel | None = None,
    ) -> None:
        self.device_ids = list(device_ids)
        self.encoding: Encoding = encoding
        self.rate_hz = rate_hz
        self._rng = np.random.default_rng(seed)
        self._vitals = vitals or VitalsModel()
        bursts = [
            walking_burst(self._rng, rate_hz) if i % 2 else still_burst(self._rng, rate_hz)
            for i in range(pool)
        ]
        make = proto.accel_i16 if encoding == "i16" else proto.accel_json
        self._bursts = [make(b, rate_hz) for b in bursts]
        self._hr_noise = self._rng.normal(0, 2.0, size=997)
        self.topics = [proto.topic("anxin/v1", d, proto.Channel.TELEMETRY) for d in self.device_ids]

    def with_prefix(self, prefix: str) -> WearableFleet:
        self.topics = [proto.topic(prefix, d, proto.Channel.TELEMETRY) for d in self.device_ids]
        return self

    def payload(self, index: int, seq: int, ts_ms: int) -> bytes:
        """One device-second: vitals plus a one-second accelerometer burst."""
        v = self._vitals
        noise = float(self._hr_noise[(index * 31 + seq) % len(self._hr_noise)])
        reading = proto.ReadingWire(
            ts=ts_ms,
            seq=seq,
            vitals=proto.Vitals(
                heart_rate=round(v.heart_rate + noise, 1),
                spo2=round(min(100.0, v.spo2 + noise / 4), 1),
                resp_rate=v.resp_rate,
                temperature=v.temperature,
            ),
            accel=self._bursts[(index + seq) % len(self._bursts)],
            battery=proto.Battery(level_pct=max(5.0, 100.0 - seq / 3600.0)),
        )
        return proto.encode_telemetry([reading])


class Publisher(Protocol):
    """What :func:`publish_fleet` needs of a client: :class:`core.mqtt.MqttClient` (paho) or
    :class:`simulators.rawmqtt.RawPublisher` (load generation)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> object: ...

    def pump(self, timeout_s: float = 0.0) -> None: ...

    def pending_out(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PublishReport:
    sent: int
    seconds: float
    unacknowledged: int

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def schedule(n_devices: int, seconds: int, *, start_seq: int = 0) -> Iterator[tuple[int, int, int]]:
    """(second, device index, seq) in publishing order: every device once per second."""
    for second in range(seconds):
        for index in range(n_devices):
            yield second, index, start_seq + second


def publish_fleet(
    client: Publisher,
    fleet: WearableFleet,
    *,
    seconds: int,
    start_seq: int = 0,
    paced: bool = False,
    clock_ms: Callable[[], int] | None = None,
    on_sent: Callable[[int, int, int], None] | None = None,
    max_unacked: int = 20000,
) -> PublishReport:
    """Publish ``seconds`` device-seconds for every device of the fleet, QoS 1.

    Args:
        client: connected with ``connect_inline`` (a paho :class:`MqttClient`, or a
            :class:`simulators.rawmqtt.RawPublisher` where the simulator's own CPU matters).
        paced: one message per device per wall-clock second (real time); otherwise as fast
            as the broker acknowledges (load test).
        clock_ms: the device clock (stamped at publish time); the system clock by default.
        on_sent: called with (device index, seq, ts_ms) after each publish.
        max_unacked: pause publishing while this many messages await the broker's PUBACK.
    """
    now_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
    started = time.perf_counter()
    sent = 0
    t0 = time.monotonic()
    n_devices = len(fleet.device_ids)
    for second, index, seq in schedule(n_devices, seconds, start_seq=start_seq):
        if paced and index % 16 == 0:
            # Devices are not synchronised: spread each second's messages evenly over it.
            due = t0 + second + index / n_devices
            while (wait := due - time.monotonic()) > 0:
                client.pump(min(0.05, wait))
        ts = now_ms()
        client.publish(fleet.topics[index], fleet.payload(index, seq, ts), qos=1)
        sent += 1
        if on_sent is not None:
            on_sent(index, seq, ts)
        if sent % 64 == 0:
            client.pump(0)
            while client.pending_out() > max_unacked:
                client.pump(0.01)
    deadline = time.monotonic() + 60
    while client.pending_out() and time.monotonic() < deadline:
        client.pump(0.01)
    return PublishReport(sent, time.perf_counter() - started, client.pending_out())
