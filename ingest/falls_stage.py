"""The detection sink's falls stage: accelerometer bursts to the fall detector of each placement.

:class:`FallsStage` turns the accelerometer bursts of a committed batch into
:class:`detectors.falls.FallBatch` rounds (int16 counts times scale, as float32 g, ragged
bursts padded; round k holds the k-th burst of each device) and runs them through a
:class:`detectors.placement.FallRouter`, which hands each device's rows to the fall detector of
its placement. The device's own ``fall`` and ``cancel`` events go to the router's
``device_events``.

It remembers up to when it has fed each device's stream, so a burst redelivered after a restart
(or older than what was fed) is skipped and counted, not fed twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from core.placement import Placement
from detectors.events import device_event_findings
from detectors.fall_input import MAX_RATE_HZ, MIN_RATE_HZ, FallBatch
from detectors.findings import Finding
from detectors.placement import FallRouter
from detectors.waist import WaistConfig
from devices.protocol import Event
from ingest.pipeline import Batch

Resident = Callable[[str], str | None]


@dataclass(slots=True)
class _Burst:
    device_id: str
    t0_ms: int
    rate: int
    scale: float
    samples: bytes


class FallsStage:
    """Feeds the fall detectors; see the module docstring.

    Args:
        placement: Device id -> where it is worn (the registry's).
        config: The waist detector's configuration (its burst and gap limits apply to all).
        skipped: Counter of bursts not fed, by reason (``rate``, ``old``).
    """

    def __init__(
        self, placement: Callable[[str], Placement], config: WaistConfig, skipped: Counter
    ) -> None:
        self.router = FallRouter(placement, waist=config)
        self._config = config
        self._skipped = skipped
        self._accel_end: dict[str, float] = {}

    def process(
        self, batch: Batch, now_ms: int, resident: Resident
    ) -> tuple[list[Finding], list[str]]:
        """Run the batch's bursts through the detectors; the findings and the devices fed."""
        bursts = self._bursts(batch)
        if len(bursts) > 1:
            bursts.sort(key=lambda b: (b.device_id, b.t0_ms))
        rounds: list[list[_Burst]] = [[]]
        occurrence: dict[str, int] = {}
        gap = self._config.max_gap_ms
        for b in bursts:
            end = self._accel_end.get(b.device_id)
            if end is not None and b.t0_ms < end - gap:
                # Already seen (a redelivery after a restart) or older than what was fed.
                self._skipped.labels("old").inc()
                continue
            k = occurrence.get(b.device_id, -1) + 1
            occurrence[b.device_id] = k
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(b)
            self._accel_end[b.device_id] = b.t0_ms + len(b.samples) // 6 * 1000.0 / b.rate
        out: list[Finding] = []
        for items in rounds:
            out.extend(self.router.process(_fall_batch(items, resident), now_ms))
        return out, list(occurrence)

    def device_events(
        self, events: Sequence[Event], now_ms: int, resident: Resident
    ) -> tuple[list[Finding], list[str]]:
        """A fall detected on the device, or the wearer's cancel; the findings and the devices."""
        ordered = sorted(events, key=lambda e: e.ts_ms)
        ids = [e.device_id for e in ordered]
        found = device_event_findings(
            self.router,
            device_ids=ids,
            resident_ids=[resident(d) for d in ids],
            kinds=[e.kind.value for e in ordered],
            ts_ms=np.array([e.ts_ms for e in ordered], np.int64),
            now_ms=now_ms,
        )
        return found, ids

    def export_device(self, device_id: str) -> bytes | None:
        """The device's saved state, None when no detector holds it."""
        return self.router.export_device(device_id) if device_id in self.router else None

    def import_device(self, device_id: str, data: bytes) -> None:
        self.router.import_device(device_id, data)

    def loaded(self) -> None:
        """Take up to when each device's stream was fed from the state just loaded."""
        for dev in self.router.devices():
            end = self.router.stream_end_ms(dev)
            if end is not None:
                self._accel_end[dev] = end

    def stream_ends(self) -> dict[str, int]:
        """Device id -> epoch ms up to which its accelerometer stream was fed."""
        return {d: int(t) for d, t in self._accel_end.items()}

    def _bursts(self, batch: Batch) -> list[_Burst]:
        bursts: list[_Burst] = []
        max_s = self._config.max_burst_s
        for r in batch.readings:
            a = r.accel
            if a is None:
                continue
            rate = a.rate_hz
            if rate != int(rate) or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
                self._skipped.labels("rate").inc()
                continue
            rate_i = int(rate)
            step = round(max_s * rate_i) * 6
            data = a.samples
            if len(data) <= step:
                bursts.append(_Burst(r.device_id, r.ts_ms, rate_i, a.scale_g, data))
            else:  # longer than the detector takes in one call: split it
                for k in range(0, len(data), step):
                    t0 = r.ts_ms + round(k // 6 * 1000 / rate_i)
                    bursts.append(_Burst(r.device_id, t0, rate_i, a.scale_g, data[k : k + step]))
        return bursts


def _fall_batch(items: list[_Burst], resident: Resident) -> FallBatch:
    """Int16 bursts -> one padded float32 batch in g (one ``frombuffer`` for all of them)."""
    n = len(items)
    lengths = np.fromiter((len(b.samples) // 6 for b in items), np.int32, n)
    scale = np.fromiter((b.scale for b in items), np.float32, n)
    width = int(lengths.max()) if n else 0
    counts = np.frombuffer(b"".join(b.samples for b in items), "<i2").reshape(-1, 3)
    if n and np.all(lengths == width):
        samples = counts.reshape(n, width, 3).astype(np.float32)
        samples *= scale[:, None, None]
    else:
        samples = np.zeros((n, width, 3), np.float32)
        row = np.repeat(np.arange(n), lengths)
        col = np.arange(counts.shape[0]) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        samples[row, col] = counts.astype(np.float32) * scale[row, None]
    ids = [b.device_id for b in items]
    return FallBatch(
        device_ids=ids,
        resident_ids=[resident(d) for d in ids],
        t0_ms=np.fromiter((b.t0_ms for b in items), np.int64, n),
        rate_hz=np.fromiter((b.rate for b in items), np.int32, n),
        samples=samples,
        lengths=lengths,
    )
