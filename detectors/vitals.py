"""Vital signs: NEWS2 from whatever parameters exist, sustained, with per-elder thresholds.

NEWS2 is the National Early Warning Score 2 of the Royal College of Physicians (2017). Each of
seven parameters scores 0-3 from a chart; the aggregate guides the response. Here:

* Readings arrive in long format (one row per reading: device row, timestamp, parameter, value)
  for many devices at once. Per device and parameter the **median** over the last ``window_s``
  is scored, and only when at least ``min_readings`` readings exist, so one noisy sample pages
  nobody.
* A missing parameter is reported as missing: the score is then a *partial* score (a lower bound
  of the full one) with its ``coverage``; it is never scored as a silent zero.
* SpO2 uses scale 1, or scale 2 for residents with hypercapnic respiratory failure (set by the
  doctor); on scale 2, saturations of 93 % and more score only when breathing oxygen.
* The family doctor may override any parameter's bands per resident (:class:`News2Settings`).

Values between chart rows are assigned by rounding to the chart's resolution (whole numbers,
0.1 degC for temperature), i.e. a band starts half a unit below its first chart value.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from detectors.findings import (
    DetectorInputError,
    Finding,
    FindingKind,
    News2Evidence,
    Severity,
    TrendEvidence,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


class Param(enum.IntEnum):
    """The seven NEWS2 parameters, in chart order (the values index arrays)."""

    RESPIRATION_RATE = 0
    """Breaths per minute."""
    SPO2 = 1
    """Oxygen saturation, percent."""
    SUPPLEMENTAL_O2 = 2
    """1 when breathing supplemental oxygen, 0 on air."""
    SYSTOLIC_BP = 3
    """Systolic blood pressure, mmHg."""
    PULSE = 4
    """Pulse, beats per minute."""
    CONSCIOUSNESS = 5
    """ACVPU code, see :class:`Consciousness`."""
    TEMPERATURE = 6
    """Degrees Celsius."""


N_PARAMS = len(Param)
PARAM_NAMES = tuple(p.name.lower() for p in Param)


class Consciousness(enum.IntEnum):
    """ACVPU: Alert, new Confusion, responds to Voice, to Pain, Unresponsive."""

    ALERT = 0
    CONFUSION = 1
    VOICE = 2
    PAIN = 3
    UNRESPONSIVE = 4


@dataclass(frozen=True)
class Bands:
    """A piecewise-constant score chart for one parameter.

    Attributes:
        starts: First chart value of each band after the first, ascending (e.g. respiration
            rate ``(9, 12, 21, 25)`` for the rows 9-11, 12-20, 21-24, >=25).
        scores: Score of each band, one more than ``starts`` (``(3, 1, 0, 2, 3)``).
        resolution: Chart resolution; a band starts ``resolution / 2`` below its first value.
    """

    starts: tuple[float, ...]
    scores: tuple[int, ...]
    resolution: float = 1.0

    def __post_init__(self) -> None:
        if len(self.scores) != len(self.starts) + 1:
            raise ValueError(
                f"Bands has {len(self.scores)} scores for {len(self.starts)} starts; expected "
                "one more score than starts."
            )
        if any(b <= a for a, b in zip(self.starts, self.starts[1:], strict=False)):
            raise ValueError(f"Bands starts {self.starts} are not strictly ascending.")
        if any(not 0 <= s <= 3 for s in self.scores):
            raise ValueError(f"Bands scores {self.scores} outside 0..3; NEWS2 scores are 0..3.")

    def score(self, values: F64) -> npt.NDArray[np.int8]:
        """Score each value (NaN scores 0; callers mask missing values themselves)."""
        edges = np.asarray(self.starts, np.float64) - self.resolution / 2
        band = np.searchsorted(edges, values, side="right")
        return np.asarray(self.scores, np.int8)[band]


RESPIRATION_RATE = Bands((9, 12, 21, 25), (3, 1, 0, 2, 3))
SPO2_SCALE1 = Bands((92, 94, 96), (3, 2, 1, 0))
SPO2_SCALE2_AIR = Bands((84, 86, 88), (3, 2, 1, 0))
SPO2_SCALE2_OXYGEN = Bands((84, 86, 88, 93, 95, 97), (3, 2, 1, 0, 1, 2, 3))
SUPPLEMENTAL_O2 = Bands((1,), (0, 2))
SYSTOLIC_BP = Bands((91, 101, 111, 220), (3, 2, 1, 0, 3))
PULSE = Bands((41, 51, 91, 111, 131), (3, 1, 0, 1, 2, 3))
CONSCIOUSNESS = Bands((1,), (0, 3))
TEMPERATURE = Bands((35.1, 36.1, 38.1, 39.1), (3, 1, 0, 1, 2), resolution=0.1)


@dataclass(frozen=True)
class News2Settings:
    """Per-resident NEWS2 settings, set by the family doctor.

    Attributes:
        spo2_scale: 1, or 2 for confirmed hypercapnic respiratory failure.
        respiration_rate: Bands overriding the chart's.
        spo2_scale1: Bands overriding scale 1.
        spo2_scale2_air: Bands overriding scale 2 on air.
        spo2_scale2_oxygen: Bands overriding scale 2 on oxygen.
        systolic_bp: Bands overriding the chart's.
        pulse: Bands overriding the chart's.
        temperature: Bands overriding the chart's.
    """

    spo2_scale: int = 1
    respiration_rate: Bands = RESPIRATION_RATE
    spo2_scale1: Bands = SPO2_SCALE1
    spo2_scale2_air: Bands = SPO2_SCALE2_AIR
    spo2_scale2_oxygen: Bands = SPO2_SCALE2_OXYGEN
    systolic_bp: Bands = SYSTOLIC_BP
    pulse: Bands = PULSE
    temperature: Bands = TEMPERATURE

    def __post_init__(self) -> None:
        if self.spo2_scale not in (1, 2):
            raise ValueError(f"News2Settings spo2_scale is {self.spo2_scale}; expected 1 or 2.")


DEFAULT_SETTINGS = News2Settings()

#: The charts a family doctor may change, by their :class:`News2Settings` field, and the
#: parameter each scores.
_CHART_PARAM: Final = {
    "respiration_rate": Param.RESPIRATION_RATE,
    "spo2_scale1": Param.SPO2,
    "spo2_scale2_air": Param.SPO2,
    "spo2_scale2_oxygen": Param.SPO2,
    "systolic_bp": Param.SYSTOLIC_BP,
    "pulse": Param.PULSE,
    "temperature": Param.TEMPERATURE,
}
CHARTS: Final = tuple(_CHART_PARAM)


def chart_of(settings: News2Settings, chart: str) -> Bands:
    """The bands of one chart (a name of :data:`CHARTS`) in ``settings``."""
    if chart not in _CHART_PARAM:
        raise KeyError(f"unknown NEWS2 chart {chart!r}; expected one of {CHARTS}")
    bands: Bands = getattr(settings, chart)
    return bands


@dataclass(frozen=True, eq=False)
class News2Table:
    """The NEWS2 settings of many elders as arrays, so scoring needs no pass per elder.

    Row 0 is the RCP chart on scale 1; every distinct :class:`News2Settings` has a row. Per
    chart, ``edges[chart]`` is float64 ``(rows, k)``: each band's lower edge (its first chart
    value less half the resolution), padded with +inf; ``scores[chart]`` is int8
    ``(rows, k + 1)`` (padding never reached). A value's band is the number of edges at or
    below it, as ``np.searchsorted(..., side="right")`` gives for one chart.

    Attributes:
        index: Resident id -> row (residents without settings of their own are row 0).
        spo2_scale: int8 ``(rows,)``.
        edges: Chart name -> float64 ``(rows, k)``.
        scores: Chart name -> int8 ``(rows, k + 1)``.
    """

    index: Mapping[str, int]
    spo2_scale: npt.NDArray[np.int8]
    edges: Mapping[str, F64]
    scores: Mapping[str, npt.NDArray[np.int8]]

    @property
    def size(self) -> int:
        return int(self.spo2_scale.shape[0])

    @classmethod
    def of(cls, by_resident: Mapping[str, News2Settings]) -> News2Table:
        """The table of per-resident settings (identical settings share a row)."""
        distinct: dict[News2Settings, int] = {DEFAULT_SETTINGS: 0}
        index: dict[str, int] = {}
        for resident, s in by_resident.items():
            index[resident] = distinct.setdefault(s, len(distinct))
        return cls._build(list(distinct), index)

    @classmethod
    def of_list(cls, settings: Sequence[News2Settings]) -> News2Table:
        """A table whose row ``k`` is ``settings[k]`` (no resident index)."""
        if not settings:
            raise DetectorInputError("News2Table needs at least one settings object.")
        return cls._build(list(settings), {})

    @classmethod
    def _build(cls, rows: list[News2Settings], index: dict[str, int]) -> News2Table:
        edges: dict[str, F64] = {}
        scores: dict[str, npt.NDArray[np.int8]] = {}
        for chart in CHARTS:
            bands = [chart_of(s, chart) for s in rows]
            k = max(len(b.starts) for b in bands)
            e = np.full((len(rows), k), np.inf)
            sc = np.zeros((len(rows), k + 1), np.int8)
            for i, b in enumerate(bands):
                m = len(b.starts)
                e[i, :m] = np.asarray(b.starts, np.float64) - b.resolution / 2
                sc[i, : m + 1] = b.scores
            edges[chart], scores[chart] = e, sc
        scale = np.array([s.spo2_scale for s in rows], np.int8)
        return cls(index=index, spo2_scale=scale, edges=edges, scores=scores)

    def rows(self, resident_ids: Sequence[str | None]) -> I64:
        """The table row of each resident (0: the chart)."""
        get = self.index.get
        return np.fromiter(
            (get(r, 0) if r is not None else 0 for r in resident_ids), np.int64, len(resident_ids)
        )

    def lookup(self, chart: str, rows: I64, values: F64) -> npt.NDArray[np.int8]:
        """Score ``values`` (one per row) on each row's own chart; NaN falls in the first band."""
        e = self.edges[chart][rows]
        band = (values[:, None] >= e).sum(axis=1)
        out: npt.NDArray[np.int8] = self.scores[chart][rows, band]
        return out


@dataclass(frozen=True)
class VitalsConfig:
    """How readings are made sustained.

    Attributes:
        window_s: Readings older than ``now - window_s`` are ignored.
        min_readings: Readings needed in the window for a parameter to count as present.
        report_min_score: Smallest aggregate score that yields a NEWS2 finding.
    """

    window_s: float = 600.0
    min_readings: int = 3
    report_min_score: int = 1


@dataclass(frozen=True, eq=False)
class VitalReadings:
    """Vital-sign readings of many devices, long format, validated once.

    Attributes:
        device_ids: One per device row.
        resident_ids: Resident per device row (None if unassigned).
        row: int64 ``(m,)``, device row of each reading.
        ts_ms: int64 ``(m,)``, epoch milliseconds of each reading.
        param: int ``(m,)``, :class:`Param` value of each reading.
        value: float64 ``(m,)``, the reading in the unit of its parameter; NaN is refused
            (a missing reading is simply absent).

    Raises:
        DetectorInputError: On mismatched shapes, out-of-range rows or parameters, NaN values.
    """

    device_ids: Sequence[str]
    resident_ids: Sequence[str | None]
    row: I64
    ts_ms: I64
    param: I64
    value: F64

    def __post_init__(self) -> None:
        n = len(self.device_ids)
        if len(self.resident_ids) != n:
            raise DetectorInputError(
                f"VitalReadings has {len(self.resident_ids)} resident_ids for {n} device_ids."
            )
        arrays = {"row": self.row, "ts_ms": self.ts_ms, "param": self.param, "value": self.value}
        shapes = {k: np.shape(v) for k, v in arrays.items()}
        m = shapes["row"]
        if len(m) != 1 or any(s != m for s in shapes.values()):
            raise DetectorInputError(
                f"VitalReadings arrays have shapes {shapes}; expected one equal 1-D shape."
            )
        row = np.asarray(self.row)
        param = np.asarray(self.param)
        value = np.asarray(self.value, dtype=np.float64)
        if row.dtype.kind not in "iu" or param.dtype.kind not in "iu":
            raise DetectorInputError(
                f"VitalReadings row/param have dtypes {row.dtype}/{param.dtype}; expected integers."
            )
        if np.any((row < 0) | (row >= n)):
            raise DetectorInputError(f"VitalReadings row has values outside 0..{n - 1}.")
        if np.any((param < 0) | (param >= N_PARAMS)):
            raise DetectorInputError(
                f"VitalReadings param has values {np.unique(param[(param < 0) | (param >= N_PARAMS)])[:5].tolist()}; "
                f"expected 0..{N_PARAMS - 1} (Param)."
            )
        bad = ~np.isfinite(value)
        if np.any(bad):
            devs = sorted({self.device_ids[i] for i in row[bad][:5].tolist()})
            raise DetectorInputError(
                f"VitalReadings values of devices {devs} are NaN or inf; expected finite "
                "readings (leave missing readings out)."
            )
        object.__setattr__(self, "row", row.astype(np.int64))
        object.__setattr__(self, "ts_ms", np.asarray(self.ts_ms).astype(np.int64))
        object.__setattr__(self, "param", param.astype(np.int64))
        object.__setattr__(self, "value", value)


@dataclass(frozen=True, eq=False)
class News2Scores:
    """NEWS2 of many devices (row order of the readings).

    Attributes:
        values: float64 ``(n, 7)``, sustained (median) value per parameter, NaN if missing.
        counts: int64 ``(n, 7)``, readings per parameter in the window.
        present: bool ``(n, 7)``.
        subscores: int8 ``(n, 7)``, -1 where missing.
        score: int64 ``(n,)``, sum of the sub-scores present (a lower bound when partial).
        coverage: float64 ``(n,)``, fraction of the seven parameters present.
        spo2_scale: int8 ``(n,)``.
    """

    values: F64
    counts: I64
    present: npt.NDArray[np.bool_]
    subscores: npt.NDArray[np.int8]
    score: I64
    coverage: F64
    spo2_scale: npt.NDArray[np.int8]


def sustained_medians(readings: VitalReadings, now_ms: int, window_s: float) -> tuple[F64, I64]:
    """Median and count per device row and parameter over ``[now - window_s, now]``.

    Fully vectorised. Readings are grouped by the integer key ``row * 7 + param`` with one
    stable integer sort (nearly free when the readings arrive grouped, as a per-device buffer
    gives them), scattered into a ``(groups, max count)`` array padded with ``+inf``, and each
    group's row is sorted on its own (short rows, no global sort by value); the middle of each
    row is the median. When one group is much longer than the others (the padded array would
    be more than ``_PAD_LIMIT`` times the readings), a single sort by (key, value) is used.

    Returns:
        ``(medians (n, 7) with NaN where no reading, counts (n, 7))``.
    """
    n = len(readings.device_ids)
    groups = n * N_PARAMS
    keep = (readings.ts_ms <= now_ms) & (readings.ts_ms >= now_ms - round(window_s * 1000))
    key = readings.row[keep] * N_PARAMS + readings.param[keep]
    val = readings.value[keep]
    counts = np.bincount(key, minlength=groups).astype(np.int64)
    med = np.full(groups, np.nan)
    has = np.flatnonzero(counts)
    if has.size:
        c = counts[has]
        width = int(c.max())
        if has.size * width <= _PAD_LIMIT * key.size + 1024:
            order = np.argsort(key, kind="stable")
            ks = key[order]
            starts = np.cumsum(counts) - counts
            slot = np.empty(groups, np.int64)
            slot[has] = np.arange(has.size)
            pad = np.full((has.size, width), np.inf)
            pad[slot[ks], np.arange(ks.size) - starts[ks]] = val[order]
            pad.sort(axis=1)
            rows = np.arange(has.size)
            med[has] = (pad[rows, (c - 1) // 2] + pad[rows, c // 2]) / 2
        else:
            order = np.lexsort((val, key))
            sval = val[order]
            lo = (np.cumsum(counts) - counts)[has]
            med[has] = (sval[lo + (c - 1) // 2] + sval[lo + c // 2]) / 2
    return med.reshape(n, N_PARAMS), counts.reshape(n, N_PARAMS)


#: Largest padding overhead (padded cells per reading) before the single-sort path is used.
_PAD_LIMIT = 4


def score_news2(
    values: F64,
    present: npt.NDArray[np.bool_],
    *,
    settings: Sequence[News2Settings] = (DEFAULT_SETTINGS,),
    settings_row: I64 | None = None,
    table: News2Table | None = None,
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]:
    """Sub-scores of sustained values (pure chart lookup, vectorised).

    Each row is scored with its own chart: the row's band edges and scores are gathered from
    the table's arrays (``table.edges[chart][settings_row]``), so many elders with settings of
    their own cost one comparison of ``(n, bands)`` arrays per chart, not a pass per elder.

    Args:
        values: float64 ``(n, 7)`` in :class:`Param` order.
        present: bool ``(n, 7)``; missing parameters get sub-score -1.
        settings: Distinct settings in use (when no ``table`` is given).
        settings_row: int ``(n,)`` index into ``settings`` (or the table's rows) per row
            (default all 0).
        table: The settings as arrays (:class:`News2Table`); built from ``settings`` if None.

    Returns:
        ``(subscores int8 (n, 7) with -1 where missing, spo2_scale int8 (n,))``.
    """
    n = values.shape[0]
    if values.shape != (n, N_PARAMS) or present.shape != (n, N_PARAMS):
        raise DetectorInputError(
            f"score_news2 got values {values.shape} and present {present.shape}; "
            f"expected (n, {N_PARAMS}) each."
        )
    t = table if table is not None else News2Table.of_list(settings)
    srow = np.zeros(n, np.int64) if settings_row is None else np.asarray(settings_row, np.int64)
    if srow.shape != (n,) or (n and (srow.min() < 0 or srow.max() >= t.size)):
        raise DetectorInputError(
            f"score_news2 settings_row has shape {srow.shape} or rows outside 0..{t.size - 1}; "
            f"expected ({n},) rows of the settings."
        )
    sub = np.zeros((n, N_PARAMS), np.int8)
    for chart, param in _CHART_PARAM.items():
        if chart.startswith("spo2"):
            continue
        sub[:, param] = t.lookup(chart, srow, values[:, param])
    scale = t.spo2_scale[srow]
    on_o2 = present[:, Param.SUPPLEMENTAL_O2] & (values[:, Param.SUPPLEMENTAL_O2] >= 0.5)
    spo2 = values[:, Param.SPO2]
    sub[:, Param.SPO2] = np.where(
        scale == 1,
        t.lookup("spo2_scale1", srow, spo2),
        np.where(
            on_o2,
            t.lookup("spo2_scale2_oxygen", srow, spo2),
            t.lookup("spo2_scale2_air", srow, spo2),
        ),
    )
    sub[:, Param.SUPPLEMENTAL_O2] = SUPPLEMENTAL_O2.score(values[:, Param.SUPPLEMENTAL_O2])
    sub[:, Param.CONSCIOUSNESS] = CONSCIOUSNESS.score(values[:, Param.CONSCIOUSNESS])
    sub[~present] = -1
    return sub, scale


def news2(
    readings: VitalReadings,
    now_ms: int,
    *,
    config: VitalsConfig | None = None,
    settings: Mapping[str, News2Settings] | News2Table | None = None,
) -> News2Scores:
    """Sustained NEWS2 per device row.

    Args:
        readings: Readings of many devices (any time span; the window is applied here).
        now_ms: Epoch milliseconds of the call; the window ends here.
        config: Window and minimum readings.
        settings: Per-resident settings by resident id, as a mapping or already as a
            :class:`News2Table` (others use the RCP chart, scale 1).

    Returns:
        Scores, partial where parameters are missing.
    """
    cfg = config or VitalsConfig()
    med, counts = sustained_medians(readings, now_ms, cfg.window_s)
    present = counts >= cfg.min_readings
    values = np.where(present, med, np.nan)
    table = settings if isinstance(settings, News2Table) else News2Table.of(settings or {})
    srow = table.rows(readings.resident_ids)
    sub, scale = score_news2(values, present, table=table, settings_row=srow)
    score = np.where(present, sub, 0).sum(axis=1).astype(np.int64)
    return News2Scores(
        values=values,
        counts=counts,
        present=present,
        subscores=sub,
        score=score,
        coverage=present.mean(axis=1),
        spo2_scale=scale,
    )


def news2_severity(score: int, red: bool) -> Severity:
    """RCP clinical response as a severity: 0 INFO, 1-4 LOW, a single 3 MEDIUM, 5-6 HIGH,
    7+ EMERGENCY."""
    if score >= 7:
        return Severity.EMERGENCY
    if score >= 5:
        return Severity.HIGH
    if red:
        return Severity.MEDIUM
    return Severity.LOW if score >= 1 else Severity.INFO


def news2_findings(
    readings: VitalReadings,
    now_ms: int,
    *,
    config: VitalsConfig | None = None,
    settings: Mapping[str, News2Settings] | News2Table | None = None,
) -> list[Finding]:
    """NEWS2 and single-parameter findings for the devices whose score is worth reporting.

    A ``NEWS2`` finding when the (possibly partial) aggregate reaches ``report_min_score``; a
    ``VITAL_SINGLE`` finding (MEDIUM) for each parameter scoring 3 on its own.
    """
    cfg = config or VitalsConfig()
    res = news2(readings, now_ms, config=cfg, settings=settings)
    red = (res.subscores == 3).any(axis=1)
    report = (res.score >= cfg.report_min_score) | red
    out: list[Finding] = []
    for i in np.nonzero(report)[0].tolist():
        p = res.present[i]
        ev = News2Evidence(
            score=int(res.score[i]),
            subscores=tuple(
                (PARAM_NAMES[j], int(res.subscores[i, j])) for j in range(N_PARAMS) if p[j]
            ),
            missing=tuple(PARAM_NAMES[j] for j in range(N_PARAMS) if not p[j]),
            coverage=float(res.coverage[i]),
            values=tuple(
                (PARAM_NAMES[j], float(res.values[i, j])) for j in range(N_PARAMS) if p[j]
            ),
            spo2_scale=int(res.spo2_scale[i]),
            window_s=cfg.window_s,
        )
        dev, resident = readings.device_ids[i], readings.resident_ids[i]
        if res.score[i] >= cfg.report_min_score:
            sev = news2_severity(int(res.score[i]), bool(red[i]))
            out.append(Finding(FindingKind.NEWS2, sev, dev, resident, now_ms, now_ms, ev))
        if red[i]:
            out.append(
                Finding(
                    FindingKind.VITAL_SINGLE, Severity.MEDIUM, dev, resident, now_ms, now_ms, ev
                )
            )
    return out


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
