"""Device health: offline devices (silence or MQTT Last Will) and low, falling batteries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.findings import (
    DetectorInputError,
    DeviceHealthEvidence,
    Finding,
    FindingKind,
    Severity,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class HealthConfig:
    """Device health thresholds.

    Attributes:
        offline_factor: Silent for more than this many expected intervals means offline.
        battery_low_pct: At or below this level and falling: ``BATTERY_LOW`` (LOW).
        battery_critical_pct: At or below this level: ``BATTERY_LOW`` (MEDIUM), falling or not.
    """

    offline_factor: float = 3.0
    battery_low_pct: float = 20.0
    battery_critical_pct: float = 10.0


@dataclass(frozen=True, eq=False)
class DeviceHealthBatch:
    """Health state of many devices.

    Attributes:
        device_ids: One per row.
        resident_ids: One per row.
        last_seen_ms: int64, epoch ms of the last message, -1 if never seen.
        expected_interval_s: float64, how often each device should report (> 0).
        last_will: bool, the broker published the device's Last Will ("offline") and no message
            came since.
        battery_pct: float64, latest battery level, NaN if unknown.
        battery_slope_pct_per_day: float64, change of the battery level per day, NaN if unknown.

    Raises:
        DetectorInputError: On mismatched shapes, non-positive intervals, battery out of 0..100.
    """

    device_ids: Sequence[str]
    resident_ids: Sequence[str | None]
    last_seen_ms: I64
    expected_interval_s: F64
    last_will: npt.NDArray[np.bool_]
    battery_pct: F64
    battery_slope_pct_per_day: F64

    def __post_init__(self) -> None:
        n = len(self.device_ids)
        if len(self.resident_ids) != n:
            raise DetectorInputError(
                f"DeviceHealthBatch has {len(self.resident_ids)} resident_ids for {n} devices."
            )
        for name in (
            "last_seen_ms",
            "expected_interval_s",
            "last_will",
            "battery_pct",
            "battery_slope_pct_per_day",
        ):
            shape = np.shape(getattr(self, name))
            if shape != (n,):
                raise DetectorInputError(
                    f"DeviceHealthBatch {name} has shape {shape}; expected ({n},)."
                )
        iv = np.asarray(self.expected_interval_s, np.float64)
        if np.any(~np.isfinite(iv) | (iv <= 0)):
            raise DetectorInputError(
                "DeviceHealthBatch expected_interval_s has values that are not positive finite "
                "seconds."
            )
        bat = np.asarray(self.battery_pct, np.float64)
        if np.any((bat < 0) | (bat > 100)):
            raise DetectorInputError(
                f"DeviceHealthBatch battery_pct has values {bat[(bat < 0) | (bat > 100)][:5]}; "
                "expected 0..100 or NaN."
            )


def health_findings(
    batch: DeviceHealthBatch, now_ms: int, config: HealthConfig | None = None
) -> list[Finding]:
    """``DEVICE_OFFLINE`` (MEDIUM) and ``BATTERY_LOW`` (LOW, or MEDIUM when critical)."""
    cfg = config or HealthConfig()
    n = len(batch.device_ids)
    if n == 0:
        return []
    last = np.asarray(batch.last_seen_ms, np.int64)
    iv = np.asarray(batch.expected_interval_s, np.float64)
    will = np.asarray(batch.last_will, np.bool_)
    bat = np.asarray(batch.battery_pct, np.float64)
    slope = np.asarray(batch.battery_slope_pct_per_day, np.float64)
    silent = np.where(last >= 0, (now_ms - last) / 1000.0, np.inf)
    offline = will | (silent > cfg.offline_factor * iv)
    known = np.isfinite(bat)
    critical = known & (bat <= cfg.battery_critical_pct)
    falling = np.isfinite(slope) & (slope < 0)
    low = known & (bat <= cfg.battery_low_pct) & falling & ~critical
    out: list[Finding] = []
    for mask, kind, sev in (
        (offline, FindingKind.DEVICE_OFFLINE, Severity.MEDIUM),
        (critical, FindingKind.BATTERY_LOW, Severity.MEDIUM),
        (low, FindingKind.BATTERY_LOW, Severity.LOW),
    ):
        for i in np.nonzero(mask)[0].tolist():
            ev = DeviceHealthEvidence(
                last_seen_ms=int(last[i]),
                silent_s=float(silent[i]),
                expected_interval_s=float(iv[i]),
                last_will=bool(will[i]),
                battery_pct=float(bat[i]),
                battery_slope_pct_per_day=float(slope[i]),
            )
            ts = int(last[i]) if kind is FindingKind.DEVICE_OFFLINE and last[i] >= 0 else now_ms
            out.append(
                Finding(kind, sev, batch.device_ids[i], batch.resident_ids[i], ts, now_ms, ev)
            )
    return out
