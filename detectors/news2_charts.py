"""NEWS2 charts: the seven parameters, the Royal College of Physicians' bands (2017), the
per-elder settings a family doctor may change, and those settings of many elders as arrays.

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
CHART_PARAM: Final = {
    "respiration_rate": Param.RESPIRATION_RATE,
    "spo2_scale1": Param.SPO2,
    "spo2_scale2_air": Param.SPO2,
    "spo2_scale2_oxygen": Param.SPO2,
    "systolic_bp": Param.SYSTOLIC_BP,
    "pulse": Param.PULSE,
    "temperature": Param.TEMPERATURE,
}
CHARTS: Final = tuple(CHART_PARAM)


def chart_of(settings: News2Settings, chart: str) -> Bands:
    """The bands of one chart (a name of :data:`CHARTS`) in ``settings``."""
    if chart not in CHART_PARAM:
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
