"""Events the devices report themselves: the SOS hotkey, a fall seen on the device, "I'm fine".

An SOS is an emergency at once and nothing cancels it. A fall reported by the device and the
wearer's ``cancel`` act on a fall detector's confirmation window, through the small
:class:`FallWindows` interface, so this module does not depend on any fall detector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from detectors.findings import (
    DetectorInputError,
    DeviceEventEvidence,
    Finding,
    FindingKind,
    Severity,
)


class DeviceEventKind:
    """Event names a device codec reports (strings, so codecs need not import this module)."""

    FALL = "fall"
    CANCEL = "cancel"
    SOS = "sos"


class FallWindows(Protocol):
    """What a fall detector offers to device events: open and cancel a confirmation window."""

    def open_device_fall(self, device_id: str, ts_ms: int) -> None:
        """Open a confirmation window (no automatic recovery) unless one is open."""

    def cancel_by_wearer(self, device_id: str, now_ms: int) -> Finding | None:
        """Close an open confirmation window as cancelled; None when none is open."""

    def note_resident(self, device_id: str, resident_id: str | None) -> None:
        """Remember who wears the device (for findings of later calls)."""


def sos_finding(
    device_id: str, resident_id: str | None, *, ts_ms: int, now_ms: int, source: str = "hotkey"
) -> Finding:
    """The SOS hotkey: an EMERGENCY finding at once, never cancellable by the device."""
    return Finding(
        FindingKind.SOS,
        Severity.EMERGENCY,
        device_id,
        resident_id,
        ts_ms,
        now_ms,
        DeviceEventEvidence(source),
    )


def device_event_findings(
    windows: FallWindows,
    *,
    device_ids: Sequence[str],
    resident_ids: Sequence[str | None],
    kinds: Sequence[str],
    ts_ms: npt.ArrayLike,
    now_ms: int,
    source: str = "device",
) -> list[Finding]:
    """Findings of events reported by the devices: ``"sos"``, ``"fall"`` and ``"cancel"``.

    * ``sos``: an ``SOS`` finding of severity EMERGENCY at once. Nothing cancels it: a
      ``cancel`` from the device only ever closes a fall confirmation window.
    * ``fall``: a ``DEVICE_FALL`` finding (HIGH) that opens a confirmation window in
      ``windows`` like a suspected fall (no automatic recovery, as the posture before is unknown).
    * ``cancel``: closes an open fall confirmation window with ``FALL_CANCELLED``; ignored
      when none is open.

    Args:
        windows: The fall detector whose confirmation windows the events act on.
        device_ids: Device per event.
        resident_ids: Resident per event (None if unassigned).
        kinds: ``"sos"``, ``"fall"`` or ``"cancel"`` per event.
        ts_ms: Epoch milliseconds of each event (int64-compatible), shape ``(n,)``.
        now_ms: Epoch milliseconds of the call.
        source: Text stored in the evidence (e.g. the codec's name).

    Returns:
        The findings, in event order.

    Raises:
        DetectorInputError: On an unknown kind or mismatched lengths.
    """
    ts = np.asarray(ts_ms)
    n = len(device_ids)
    if len(resident_ids) != n or len(kinds) != n or ts.shape != (n,):
        raise DetectorInputError(
            f"device_events got {n} device_ids, {len(resident_ids)} resident_ids, "
            f"{len(kinds)} kinds and ts_ms of shape {ts.shape}; expected {n} of each."
        )
    allowed = {DeviceEventKind.SOS, DeviceEventKind.FALL, DeviceEventKind.CANCEL}
    bad = sorted({k for k in kinds if k not in allowed})
    if bad:
        raise DetectorInputError(
            f"device_events kinds {bad} unknown; expected one of {sorted(allowed)}."
        )
    out: list[Finding] = []
    for dev, res, kind, t in zip(device_ids, resident_ids, kinds, ts.tolist(), strict=True):
        t_ms = int(t)
        windows.note_resident(dev, res)
        if kind == DeviceEventKind.SOS:
            out.append(sos_finding(dev, res, ts_ms=t_ms, now_ms=now_ms, source=source))
        elif kind == DeviceEventKind.FALL:
            windows.open_device_fall(dev, t_ms)
            out.append(
                Finding(
                    FindingKind.DEVICE_FALL,
                    Severity.HIGH,
                    dev,
                    res,
                    t_ms,
                    now_ms,
                    DeviceEventEvidence(source),
                )
            )
        else:
            cancelled = windows.cancel_by_wearer(dev, now_ms)
            if cancelled is not None:
                out.append(cancelled)
    return out
