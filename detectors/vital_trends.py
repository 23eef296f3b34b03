"""Slow rises of a daily vital series (resting heart rate, nightly respiration rate) against
each person's own baseline: ``VITAL_TREND`` findings for the family doctor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.findings import (
    DetectorInputError,
    Finding,
    FindingKind,
    Severity,
    TrendEvidence,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TrendConfig:
    """Personal baseline and trend rule for one daily series.

    Attributes:
        parameter: Series name, e.g. ``"resting_hr"`` or ``"night_rr"``.
        baseline_days: Days before the recent ones that form the baseline.
        recent_days: Latest days compared with the baseline.
        rise: Smallest rise of the recent median over the baseline median that is reported.
        min_days: Days with a value needed in each part.
    """

    parameter: str = "resting_hr"
    baseline_days: int = 14
    recent_days: int = 3
    rise: float = 10.0
    min_days: int = 3


RESTING_HR_TREND = TrendConfig("resting_hr", rise=10.0)
NIGHT_RR_TREND = TrendConfig("night_rr", rise=3.0)


def trend_findings(
    device_ids: Sequence[str],
    resident_ids: Sequence[str | None],
    daily: F64,
    now_ms: int,
    config: TrendConfig = RESTING_HR_TREND,
) -> list[Finding]:
    """Slow rises against each person's own baseline, as LOW findings for the doctor.

    Args:
        device_ids: One per row.
        resident_ids: One per row.
        daily: float64 ``(n, days)``, one value per day (oldest first, today last), NaN where
            the day has no value (e.g. resting heart rate, median nightly respiration rate).
        now_ms: Epoch milliseconds of the call.
        config: Windows and threshold.

    Returns:
        ``VITAL_TREND`` findings (LOW) where the recent median exceeds the baseline by ``rise``.

    Raises:
        DetectorInputError: On a wrong shape or infinite values.
    """
    daily = np.asarray(daily, np.float64)
    n = len(device_ids)
    need = config.baseline_days + config.recent_days
    if daily.ndim != 2 or daily.shape[0] != n or len(resident_ids) != n:
        raise DetectorInputError(
            f"trend_findings daily has shape {daily.shape} for {n} devices; expected ({n}, days)."
        )
    if np.isinf(daily).any():
        raise DetectorInputError("trend_findings daily has inf values; expected finite or NaN.")
    if n == 0 or daily.shape[1] < need:
        return []
    x = daily[:, -need:]
    base, recent = x[:, : config.baseline_days], x[:, config.baseline_days :]
    nb = np.isfinite(base).sum(axis=1)
    nr = np.isfinite(recent).sum(axis=1)
    ok = (nb >= config.min_days) & (nr >= config.min_days)
    if not ok.any():
        return []
    bmed = np.full(n, np.nan)
    rmed = np.full(n, np.nan)
    bmed[ok] = np.nanmedian(base[ok], axis=1)
    rmed[ok] = np.nanmedian(recent[ok], axis=1)
    # Least-squares slope over the days present (masked, vectorised).
    t = np.arange(need, dtype=np.float64)[None, :]
    w = np.isfinite(x)
    cnt = np.maximum(w.sum(axis=1), 1)
    tm = (t * w).sum(axis=1) / cnt
    xm = np.where(w, x, 0).sum(axis=1) / cnt
    cov = (np.where(w, (t - tm[:, None]) * (np.where(w, x, 0) - xm[:, None]), 0)).sum(axis=1)
    var = (np.where(w, (t - tm[:, None]) ** 2, 0)).sum(axis=1)
    slope = np.divide(cov, var, out=np.zeros(n), where=var > 0)
    fire = ok & (rmed - bmed >= config.rise)
    return [
        Finding(
            FindingKind.VITAL_TREND,
            Severity.LOW,
            device_ids[i],
            resident_ids[i],
            now_ms,
            now_ms,
            TrendEvidence(
                parameter=config.parameter,
                baseline=float(bmed[i]),
                recent=float(rmed[i]),
                change=float(rmed[i] - bmed[i]),
                slope_per_day=float(slope[i]),
                days=int(w[i].sum()),
            ),
        )
        for i in np.nonzero(fire)[0].tolist()
    ]
