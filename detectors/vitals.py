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

The charts and per-elder settings are in :mod:`detectors.news2_charts`; slow trends against a
personal baseline in :mod:`detectors.vital_trends`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.findings import (
    DetectorInputError,
    Finding,
    FindingKind,
    News2Evidence,
    Severity,
)
from detectors.news2_charts import (
    CHART_PARAM,
    CONSCIOUSNESS,
    DEFAULT_SETTINGS,
    N_PARAMS,
    PARAM_NAMES,
    SUPPLEMENTAL_O2,
    News2Settings,
    News2Table,
    Param,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


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
    for chart, param in CHART_PARAM.items():
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
