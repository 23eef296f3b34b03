"""Typed findings shared by every detector.

A detector takes arrays and small per-device state and returns a list of :class:`Finding`
values. A finding says what was seen (``kind``), how urgent it is (``severity``), on which
device and for which resident, when it happened (``ts_ms``, epoch milliseconds of the event,
not of the call) and why (``evidence``, one typed frozen dataclass per kind).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from core.errors import AnxinError


class DetectorError(AnxinError):
    """Base exception of the ``detectors`` package."""


class DetectorInputError(DetectorError, ValueError):
    """Input arrays have the wrong shape, dtype, rate or contain NaN/inf where not allowed."""


class FindingKind(enum.Enum):
    """What a detector saw."""

    FALL_SUSPECTED = "fall_suspected"
    FALL_CONFIRMED = "fall_confirmed"
    FALL_CANCELLED = "fall_cancelled"
    DEVICE_FALL = "device_fall"
    SOS = "sos"
    NEWS2 = "news2"
    VITAL_SINGLE = "vital_single"
    VITAL_TREND = "vital_trend"
    INACTIVITY = "inactivity"
    OUT_OF_BED = "out_of_bed"
    BED_EMPTY = "bed_empty"
    DEVICE_OFFLINE = "device_offline"
    BATTERY_LOW = "battery_low"


class Severity(enum.IntEnum):
    """How urgent a finding is; ordered, so ``max()`` and comparisons work."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    EMERGENCY = 4


class FallOutcome(enum.Enum):
    """How a fall confirmation window ended."""

    LYING_STILL = "lying_still"
    """No recovery and the last seconds of signal are still: the classic long lie."""
    MOVING_NOT_RECOVERED = "moving_not_recovered"
    """Movement but no return to the posture before the fall (struggling on the floor)."""
    NO_DATA = "no_data"
    """The device went silent during the window; silence is no reassurance."""
    RECOVERED = "recovered"
    """Walking again in the posture of before the fall: cancelled automatically."""
    CANCELLED_BY_WEARER = "cancelled_by_wearer"
    """The wearer pressed cancel on the device inside the window."""


@dataclass(frozen=True, eq=False)
class FallEvidence:
    """Why a fall was suspected.

    Attributes:
        peak_g: Largest acceleration magnitude at the impact, in g.
        impact_intensity_g: Mean of ``| |a| - 1 g |`` over one second centred on the impact, in g.
        orientation_change_deg: Angle between the mean acceleration (gravity direction)
            2 s before the fall and the one 1-2.5 s after the impact, in degrees.
        stillness_g: Standard deviation of ``|a|`` 1-2.5 s after the impact, in g (small = still).
        free_fall_min_g: Smallest magnitude in the second before the impact, in g.
        impact_ts_ms: Epoch milliseconds of the impact sample.
        window: Signal around the impact, float32 ``(n, 3)`` in g, at ``rate_hz``.
        window_t0_ms: Epoch milliseconds of ``window[0]``.
        rate_hz: Sample rate of ``window``.
    """

    peak_g: float
    impact_intensity_g: float
    orientation_change_deg: float
    stillness_g: float
    free_fall_min_g: float
    impact_ts_ms: int
    window: npt.NDArray[np.float32] = field(repr=False)
    window_t0_ms: int
    rate_hz: int


@dataclass(frozen=True)
class FallOutcomeEvidence:
    """How the confirmation window of a suspected fall ended.

    Attributes:
        impact_ts_ms: Epoch milliseconds of the impact that opened the window.
        outcome: Why the fall was confirmed or cancelled.
        window_s: Length of the confirmation window, in seconds.
    """

    impact_ts_ms: int
    outcome: FallOutcome
    window_s: float


@dataclass(frozen=True)
class DeviceEventEvidence:
    """A fall or SOS reported by the device itself.

    Attributes:
        source: Free text from the device codec, e.g. ``"hotkey"`` or ``"fall_algorithm"``.
    """

    source: str


@dataclass(frozen=True)
class News2Evidence:
    """A (possibly partial) NEWS2 score.

    Attributes:
        score: Sum of the sub-scores of the parameters present. With missing parameters it is
            a lower bound of the full score, never a silent zero for them.
        subscores: Sub-score per parameter name present, in chart order.
        missing: Parameter names with no reading in the window.
        coverage: Fraction of the seven NEWS2 parameters present, 0..1.
        values: Median value per parameter present (the value that was scored).
        spo2_scale: 1 or 2 (scale 2 for confirmed hypercapnic respiratory failure).
        window_s: Length of the median window, in seconds.
    """

    score: int
    subscores: tuple[tuple[str, int], ...]
    missing: tuple[str, ...]
    coverage: float
    values: tuple[tuple[str, float], ...]
    spo2_scale: int
    window_s: float


@dataclass(frozen=True)
class TrendEvidence:
    """A slow change against the person's own baseline.

    Attributes:
        parameter: ``"resting_hr"`` or ``"night_rr"`` (or another daily series name).
        baseline: Median over the baseline days.
        recent: Median over the recent days.
        change: ``recent - baseline`` in the parameter's unit.
        slope_per_day: Least-squares slope over all days present, unit per day.
        days: Number of days with a value.
    """

    parameter: str
    baseline: float
    recent: float
    change: float
    slope_per_day: float
    days: int


@dataclass(frozen=True)
class BehaviourEvidence:
    """A behaviour finding.

    Attributes:
        since_ms: Epoch milliseconds of the last movement / bed exit / last presence.
        duration_s: Seconds since then, at the time of the call.
        limit_s: The per-resident limit that was exceeded, in seconds.
    """

    since_ms: int
    duration_s: float
    limit_s: float


@dataclass(frozen=True)
class DeviceHealthEvidence:
    """A device health finding.

    Attributes:
        last_seen_ms: Epoch milliseconds of the last message (-1 if never seen).
        silent_s: Seconds of silence at the time of the call.
        expected_interval_s: How often the device should report.
        last_will: True if the broker published the device's MQTT Last Will (offline).
        battery_pct: Battery level in percent, NaN if unknown.
        battery_slope_pct_per_day: Change of the battery level per day, NaN if unknown.
    """

    last_seen_ms: int
    silent_s: float
    expected_interval_s: float
    last_will: bool
    battery_pct: float
    battery_slope_pct_per_day: float


Evidence = (
    FallEvidence
    | FallOutcomeEvidence
    | DeviceEventEvidence
    | News2Evidence
    | TrendEvidence
    | BehaviourEvidence
    | DeviceHealthEvidence
)


@dataclass(frozen=True)
class Finding:
    """One thing a detector saw.

    Attributes:
        kind: What was seen.
        severity: How urgent.
        device_id: Device whose data showed it.
        resident_id: Resident wearing / owning the device, None if not assigned.
        ts_ms: Epoch milliseconds of the event itself (the impact, the SOS press).
        detected_ms: Epoch milliseconds of the call that produced the finding (``now_ms``).
        evidence: Typed evidence for this kind.
    """

    kind: FindingKind
    severity: Severity
    device_id: str
    resident_id: str | None
    ts_ms: int
    detected_ms: int
    evidence: Evidence


def _plain(value: object) -> object:
    """Evidence values as JSON: enums by value, pairs as objects, NaN/inf as null."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | np.floating):
        x = float(value)
        return x if np.isfinite(x) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, tuple | list):
        if value and all(
            isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value
        ):
            return {k: _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    raise TypeError(f"evidence value {value!r} of type {type(value).__name__} is not plain data")


def evidence_json(finding: Finding) -> dict[str, object]:
    """The evidence of a finding as JSON-ready numbers and names, never the raw signal window.

    The one serialisation of evidence: the findings table, alerts and digest items store it.
    """
    ev = finding.evidence
    return {
        f.name: _plain(getattr(ev, f.name)) for f in dataclasses.fields(ev) if f.name != "window"
    }


@dataclass(frozen=True, slots=True)
class StoredFinding:
    """A finding with the id of its ``findings`` row (stored once: the alert side acts on it
    once, by that id)."""

    id: int
    finding: Finding
