"""One fall detector per placement, behind the API of one detector (:class:`FallRouter`).

The registry says where each device is worn (:class:`core.placement.Placement`); the router
splits each tick's :class:`FallBatch` by placement (boolean masks over the rows, one sub-batch
per placement present) and hands each part to its detector:

* wrist: :class:`detectors.wrist.WristFallDetector`;
* waist and chest: :class:`detectors.waist.WaistFallDetector` (trained on the waist; a pendant
  on the chest moves with the trunk like a belt clip does);
* unknown: :data:`UNKNOWN_AS` (see its note).

Device events (``sos``, ``fall``, ``cancel``) go to the detector of the device's placement; a
``cancel`` closes a window in whichever detector holds one. Pure: ``now_ms`` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from core.placement import Placement
from detectors.fall_input import FallBatch
from detectors.falls import FallDetector
from detectors.findings import DetectorInputError, Finding
from detectors.waist import WaistConfig, WaistFallDetector
from detectors.wrist import WristConfig, WristFallDetector

UNKNOWN_AS = Placement.WRIST
"""The detector for a device of unknown placement: the wrist's. Most wearables of the service
are on the wrist, where the waist detector raises many false alarms an hour (issue 11); the
wrist detector also looks at what follows the impact, so on the trunk it still finds most
falls (docs/detection.md gives its figures on SisFall) while staying quiet in daily life."""

_ORDER = (Placement.WRIST, Placement.WAIST, Placement.CHEST)


class FallRouter:
    """Fall detectors by placement with the API of one :class:`FallDetector`.

    Args:
        placement_of: Placement of a device id (the registry's answer); called once per device
            and call, so it should be cheap (a dict lookup).
        waist: Configuration of the waist/chest detector.
        wrist: Configuration of the wrist detector.
    """

    def __init__(
        self,
        placement_of: Callable[[str], Placement],
        *,
        waist: WaistConfig | None = None,
        wrist: WristConfig | None = None,
    ) -> None:
        self._placement_of = placement_of
        trunk = WaistFallDetector(waist)
        self.detectors: dict[Placement, FallDetector] = {
            Placement.WRIST: WristFallDetector(wrist),
            Placement.WAIST: trunk,
            Placement.CHEST: trunk,
        }

    def detector_for(self, device_id: str) -> FallDetector:
        """The detector that judges ``device_id`` (by its placement)."""
        p = self._placement_of(device_id)
        return self.detectors[UNKNOWN_AS if p is Placement.UNKNOWN else p]

    def _distinct(self) -> list[FallDetector]:
        out: list[FallDetector] = []
        for p in _ORDER:
            if all(d is not self.detectors[p] for d in out):
                out.append(self.detectors[p])
        return out

    def process(self, batch: FallBatch, now_ms: int) -> list[Finding]:
        """Feed one tick of bursts to the detector of each device's placement.

        Args:
            batch: New samples of the devices that sent some this tick (any placements).
            now_ms: Epoch milliseconds of the call.

        Returns:
            The findings of every detector, in the order wrist, waist/chest.

        Raises:
            DetectorInputError: As :meth:`FallDetector.process`.
        """
        dets = [self.detector_for(d) for d in batch.device_ids]
        out: list[Finding] = []
        for det in self._distinct():
            mask = np.fromiter((d is det for d in dets), np.bool_, len(dets))
            if mask.all():
                out.extend(det.process(batch, now_ms))
            elif mask.any():
                out.extend(det.process(_rows(batch, mask), now_ms))
            else:
                # Nothing for it this tick: still let it confirm windows of silent devices.
                out.extend(det.process(_rows(batch, mask), now_ms))
        return out

    def note_resident(self, device_id: str, resident_id: str | None) -> None:
        """Remember who wears the device."""
        self.detector_for(device_id).note_resident(device_id, resident_id)

    def open_device_fall(self, device_id: str, ts_ms: int) -> None:
        """Open a confirmation window in the detector of the device's placement."""
        self.detector_for(device_id).open_device_fall(device_id, ts_ms)

    def cancel_by_wearer(self, device_id: str, now_ms: int) -> Finding | None:
        """Close the device's open window, in whichever detector holds it."""
        for det in self._distinct():
            found = det.cancel_by_wearer(device_id, now_ms)
            if found is not None:
                return found
        return None

    # -- state -----------------------------------------------------------------------------
    def __contains__(self, device_id: object) -> bool:
        return any(device_id in det.store for det in self._distinct())

    def devices(self) -> list[str]:
        """Ids of all devices with state in any detector."""
        return [d for det in self._distinct() for d in det.store.devices()]

    def _holder(self, device_id: str) -> tuple[int, FallDetector] | None:
        for i, det in enumerate(self._distinct()):
            if device_id in det.store:
                return i, det
        return None

    def export_device(self, device_id: str) -> bytes:
        """One device's state: a byte naming the detector, then that detector's bytes.

        Raises:
            KeyError: If no detector holds the device.
        """
        held = self._holder(device_id)
        if held is None:
            raise KeyError(device_id)
        return bytes([held[0]]) + held[1].store.export_device(device_id)

    def import_device(self, device_id: str, data: bytes) -> None:
        """Restore bytes of :meth:`export_device` (or of a bare waist detector, before routing).

        Raises:
            DetectorInputError: If the bytes name no detector or do not fit it.
        """
        dets = self._distinct()
        if data[:4] == b"AXF1":  # saved before placements: the waist detector's state
            self.detectors[Placement.WAIST].store.import_device(device_id, data)
            return
        if not data or data[0] >= len(dets):
            raise DetectorInputError(
                f"Fall state of device {device_id!r} starts with {data[:1]!r}; expected a "
                f"detector byte below {len(dets)}."
            )
        dets[data[0]].store.import_device(device_id, data[1:])

    def stream_end_ms(self, device_id: str) -> float | None:
        """Epoch ms just after the last sample fed for the device, None if none."""
        held = self._holder(device_id)
        if held is None:
            return None
        store = held[1].store
        where = store.where(device_id)
        if where is None:
            return None
        tab = store.table(where[0])
        n = int(tab.n_seen[where[1]])
        return float(tab.t0_abs[where[1]]) + n * 1000.0 / where[0] if n else None


def _rows(batch: FallBatch, mask: npt.NDArray[np.bool_]) -> FallBatch:
    idx = np.nonzero(mask)[0]
    return FallBatch(
        device_ids=[batch.device_ids[i] for i in idx.tolist()],
        resident_ids=[batch.resident_ids[i] for i in idx.tolist()],
        t0_ms=batch.t0_ms[idx],
        rate_hz=batch.rates[idx],
        samples=batch.samples[idx],
        lengths=batch.lengths[idx],
    )
