"""Behaviour: inactivity in the daytime, out of bed at night, bed empty at night.

Pure and vectorised over residents: the caller passes, per resident, when movement was last seen
and the bed sensor's state, plus the resident's UTC offset; the detector compares with the
per-elder settings and ``now_ms``. Windows are in local minutes of the day and may wrap midnight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.findings import BehaviourEvidence, DetectorInputError, Finding, FindingKind, Severity

I64 = npt.NDArray[np.int64]
DAY_MIN = 1440
NEVER = -1


@dataclass(frozen=True)
class BehaviourSettings:
    """Per-elder behaviour settings (set with the family and the doctor).

    Attributes:
        lives_alone: Inactivity is watched only for someone living alone.
        day_start_min: Start of the day window, local minutes after midnight.
        day_end_min: End of the day window, local minutes after midnight.
        max_inactive_s: Longest acceptable time without movement in the day window.
        night_start_min: Start of the night window, local minutes after midnight.
        night_end_min: End of the night window.
        out_of_bed_s: Out of bed at night for longer than this gives ``OUT_OF_BED``.
        bed_empty_s: Not in bed this long after the night started gives ``BED_EMPTY``.
    """

    lives_alone: bool = True
    day_start_min: int = 7 * 60
    day_end_min: int = 22 * 60
    max_inactive_s: float = 3 * 3600.0
    night_start_min: int = 22 * 60
    night_end_min: int = 7 * 60
    out_of_bed_s: float = 30 * 60.0
    bed_empty_s: float = 90 * 60.0

    def __post_init__(self) -> None:
        for name in ("day_start_min", "day_end_min", "night_start_min", "night_end_min"):
            v = getattr(self, name)
            if not 0 <= v < DAY_MIN:
                raise ValueError(f"BehaviourSettings {name} is {v}; expected 0..{DAY_MIN - 1}.")


DEFAULT_BEHAVIOUR = BehaviourSettings()


@dataclass(frozen=True, eq=False)
class BehaviourBatch:
    """Latest behaviour state of many residents.

    Attributes:
        device_ids: The device that reported it (motion sensor or bed sensor hub), per row.
        resident_ids: Resident per row.
        last_motion_ms: int64, last movement seen anywhere in the home, -1 if never.
        in_bed: int8, bed sensor presence: 1 in bed, 0 not in bed, -1 no bed sensor.
        bed_since_ms: int64, when ``in_bed`` last changed (-1 unknown).
        utc_offset_min: int, the resident's local time offset from UTC in minutes.

    Raises:
        DetectorInputError: On mismatched shapes or values outside their range.
    """

    device_ids: Sequence[str]
    resident_ids: Sequence[str | None]
    last_motion_ms: I64
    in_bed: npt.NDArray[np.int8]
    bed_since_ms: I64
    utc_offset_min: I64

    def __post_init__(self) -> None:
        n = len(self.device_ids)
        arrays = {
            "last_motion_ms": self.last_motion_ms,
            "in_bed": self.in_bed,
            "bed_since_ms": self.bed_since_ms,
            "utc_offset_min": self.utc_offset_min,
        }
        for name, arr in arrays.items():
            a = np.asarray(arr)
            if a.shape != (n,) or a.dtype.kind not in "iu":
                raise DetectorInputError(
                    f"BehaviourBatch {name} has shape {a.shape} and dtype {a.dtype}; "
                    f"expected integers of shape ({n},)."
                )
        if len(self.resident_ids) != n:
            raise DetectorInputError(
                f"BehaviourBatch has {len(self.resident_ids)} resident_ids for {n} device_ids."
            )
        bed = np.asarray(self.in_bed)
        if np.any((bed < -1) | (bed > 1)):
            raise DetectorInputError("BehaviourBatch in_bed has values outside -1, 0, 1.")
        off = np.asarray(self.utc_offset_min)
        if np.any(np.abs(off) > 14 * 60):
            raise DetectorInputError(
                "BehaviourBatch utc_offset_min has values beyond +-840 min; expected a UTC offset."
            )


def _in_window(minute: I64, start: I64, end: I64) -> npt.NDArray[np.bool_]:
    straight = (start <= minute) & (minute < end)
    wrapped = (minute >= start) | (minute < end)
    return np.where(start <= end, straight, wrapped)


def behaviour_findings(
    batch: BehaviourBatch,
    now_ms: int | I64,
    settings: Mapping[str, BehaviourSettings] | None = None,
) -> list[Finding]:
    """Inactivity (HIGH), out of bed at night (MEDIUM) and bed empty at night (MEDIUM).

    ``now_ms`` is one time for every row, or an int64 array of one time per row (the ingester
    judges each elder at the time its own stream has reached, so a backlog is judged as it
    happened).

    * ``INACTIVITY``: lives alone, local time in the day window, and no movement for longer than
      ``max_inactive_s`` (never fires when no movement was ever seen: no sensor, no claim).
    * ``OUT_OF_BED``: night window, the bed sensor says "not in bed" since a moment *during this
      night*, for longer than ``out_of_bed_s``.
    * ``BED_EMPTY``: night window, not in bed since before the night began, and the night began
      more than ``bed_empty_s`` ago.
    """
    n = len(batch.device_ids)
    if n == 0:
        return []
    if np.ndim(now_ms) not in (0, 1) or (np.ndim(now_ms) == 1 and np.shape(now_ms) != (n,)):
        raise DetectorInputError(
            f"behaviour_findings now_ms has shape {np.shape(now_ms)}; expected () or ({n},)."
        )
    cfgs = [
        (settings.get(r) if settings and r is not None else None) or DEFAULT_BEHAVIOUR
        for r in batch.resident_ids
    ]

    def col(name: str) -> npt.NDArray[np.float64]:
        return np.array([getattr(c, name) for c in cfgs], np.float64)

    now = np.broadcast_to(np.asarray(now_ms, np.int64), (n,))
    minute = ((now // 60_000 + np.asarray(batch.utc_offset_min)) % DAY_MIN).astype(np.int64)
    day = _in_window(
        minute, col("day_start_min").astype(np.int64), col("day_end_min").astype(np.int64)
    )
    n_start = col("night_start_min").astype(np.int64)
    night = _in_window(minute, n_start, col("night_end_min").astype(np.int64))
    alone = col("lives_alone") > 0
    last = np.asarray(batch.last_motion_ms)
    idle_s = (now - last) / 1000.0
    inactive = alone & day & (last >= 0) & (idle_s > col("max_inactive_s"))
    bed = np.asarray(batch.in_bed)
    since = np.asarray(batch.bed_since_ms)
    out_s = (now - since) / 1000.0
    night_age_s = ((minute - n_start) % DAY_MIN) * 60.0
    out = night & (bed == 0) & (since >= 0)
    left_tonight = out & (out_s <= night_age_s)
    out_of_bed = left_tonight & (out_s > col("out_of_bed_s"))
    bed_empty = out & ~left_tonight & (night_age_s > col("bed_empty_s"))

    found: list[Finding] = []
    for mask, kind, sev, t, dur, lim in (
        (inactive, FindingKind.INACTIVITY, Severity.HIGH, last, idle_s, col("max_inactive_s")),
        (out_of_bed, FindingKind.OUT_OF_BED, Severity.MEDIUM, since, out_s, col("out_of_bed_s")),
        (bed_empty, FindingKind.BED_EMPTY, Severity.MEDIUM, since, night_age_s, col("bed_empty_s")),
    ):
        for i in np.nonzero(mask)[0].tolist():
            found.append(
                Finding(
                    kind,
                    sev,
                    batch.device_ids[i],
                    batch.resident_ids[i],
                    int(t[i]),
                    int(now[i]),
                    BehaviourEvidence(int(t[i]), float(dur[i]), float(lim[i])),
                )
            )
    return found


def burst_movement(
    samples: npt.NDArray[np.int16], lengths: npt.NDArray[np.int64], scale_g: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Standard deviation of the acceleration magnitude of each burst, in g (vectorised).

    Args:
        samples: int16 ``(total, 3)``: the bursts' x, y, z counts one after the other.
        lengths: Samples per burst, int64 ``(n,)``, each at least 1, summing to ``total``.
        scale_g: g per count of each burst, ``(n,)``.

    Returns:
        float64 ``(n,)``: about 0.01 g for a device lying still, 0.1-0.5 g while walking.

    Raises:
        DetectorInputError: On mismatched shapes or an empty burst.
    """
    lengths = np.asarray(lengths, np.int64)
    scale_g = np.asarray(scale_g, np.float64)
    n = lengths.shape[0]
    if samples.ndim != 2 or samples.shape[1] != 3 or scale_g.shape != (n,):
        raise DetectorInputError(
            f"burst_movement samples have shape {samples.shape} and scale_g {scale_g.shape}; "
            f"expected (total, 3) and ({n},)."
        )
    if n == 0:
        return np.zeros(0)
    if np.any(lengths < 1) or int(lengths.sum()) != samples.shape[0]:
        raise DetectorInputError(
            f"burst_movement lengths sum to {int(lengths.sum())} for {samples.shape[0]} samples "
            "(each burst needs at least one sample)."
        )
    row = np.repeat(np.arange(n), lengths)
    mag = np.sqrt(np.square(samples.astype(np.float64)).sum(axis=1)) * scale_g[row]
    starts = np.cumsum(lengths) - lengths
    s1 = np.add.reduceat(mag, starts)
    s2 = np.add.reduceat(mag * mag, starts)
    mean = s1 / lengths
    return np.asarray(np.sqrt(np.maximum(s2 / lengths - mean * mean, 0.0)), np.float64)
