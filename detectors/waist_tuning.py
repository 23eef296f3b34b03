"""Threshold search of the waist fall detector, per cross-validation fold (evaluation tool).

The candidates of a run do not depend on the decision thresholds: one recording pass gives them
all, then :func:`tune` grid-searches peak, intensity, orientation and stillness on the training
subjects' trials (maximising sensitivity + specificity, ties to the middle of the grid).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from detectors.datasets import Trial
from detectors.fall_config import FallConfig
from detectors.fall_features import FallFeatures
from detectors.falls import FallDetector
from detectors.replay import run_trials


def record(
    trials: Sequence[Trial], rate_hz: int, base: FallConfig
) -> dict[int, list[FallFeatures]]:
    """Features of every candidate of every trial (index), with no decision made."""
    det = FallDetector(base)
    det.record_candidates()
    run_trials(trials, rate_hz, det, drain=False)
    feats: dict[int, list[FallFeatures]] = {}
    for dev, ff in det.candidates or []:
        feats.setdefault(int(dev), []).append(ff)
    return feats


@dataclass(frozen=True, eq=False)
class CandidateTable:
    """Features of all candidates of all trials, flat, for threshold search."""

    trial: npt.NDArray[np.int64]
    peak: npt.NDArray[np.float32]
    intensity: npt.NDArray[np.float32]
    orientation: npt.NDArray[np.float32]
    stillness: npt.NDArray[np.float32]

    @classmethod
    def build(cls, feats: dict[int, list[FallFeatures]]) -> CandidateTable:
        """Flatten per-trial candidate features."""
        tr, pk, it, orr, st = [], [], [], [], []
        for i, lst in sorted(feats.items()):
            for f in lst:
                tr.append(i)
                pk.append(float(f.peak_g[0]))
                it.append(float(f.intensity_g[0]))
                orr.append(float(f.orientation_deg[0]))
                st.append(float(f.stillness_g[0]))
        return cls(
            np.array(tr, np.int64),
            np.array(pk, np.float32),
            np.array(it, np.float32),
            np.array(orr, np.float32),
            np.array(st, np.float32),
        )

    def alarms(self, cfg: FallConfig, n_trials: int) -> npt.NDArray[np.bool_]:
        """Per trial: does any candidate pass ``cfg`` (same rule as the detector)?"""
        keep = self.peak >= cfg.peak_g
        keep &= self.intensity >= cfg.intensity_g
        keep &= self.orientation >= cfg.orientation_deg
        keep &= self.stillness <= cfg.stillness_g
        out = np.zeros(n_trials, np.bool_)
        out[self.trial[keep]] = True
        return out


GRID_INTENSITY = tuple(round(0.15 + 0.02 * i, 2) for i in range(11))
GRID_ORIENTATION = (30.0, 35.0, 40.0, 45.0, 50.0, 60.0)
GRID_STILLNESS = (0.1, 0.2, 0.3, 0.5)
GRID_PEAK = (1.5, 1.8, 2.0)


def tune(
    table: CandidateTable,
    is_fall: npt.NDArray[np.bool_],
    train: npt.NDArray[np.bool_],
    base: FallConfig,
) -> FallConfig:
    """Thresholds maximising sensitivity + specificity on the ``train`` trials.

    Ties go to the grid point nearest the middle of the grid (not to the shipped defaults,
    which were themselves chosen on all subjects).
    """
    n = is_fall.shape[0]
    best: tuple[float, float, FallConfig] | None = None
    for pk, it, orr, st in itertools.product(
        GRID_PEAK, GRID_INTENSITY, GRID_ORIENTATION, GRID_STILLNESS
    ):
        cfg = replace(base, peak_g=pk, intensity_g=it, orientation_deg=orr, stillness_g=st)
        al = table.alarms(cfg, n)
        score = float(al[train & is_fall].mean() + (~al[train & ~is_fall]).mean())
        dist = sum(
            abs(grid.index(v) - (len(grid) - 1) / 2)
            for grid, v in (
                (GRID_PEAK, pk),
                (GRID_INTENSITY, it),
                (GRID_ORIENTATION, orr),
                (GRID_STILLNESS, st),
            )
        )
        better = best is None or score > best[0] + 1e-12
        if better or (best is not None and abs(score - best[0]) <= 1e-12 and dist < best[1]):
            best = (score, dist, cfg)
    assert best is not None  # noqa: S101 - the grid is not empty
    return best[2]


def tradeoff(
    table: CandidateTable,
    is_fall: npt.NDArray[np.bool_],
    fold_of: npt.NDArray[np.int64],
    chosen: list[FallConfig],
    n: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Held-out sensitivity and specificity as the main threshold (intensity) sweeps.

    Each fold keeps its other tuned thresholds; only ``intensity_g`` moves.
    """
    ts = np.round(np.arange(0.05, 0.61, 0.01), 2)
    sens = np.zeros(ts.size)
    spec = np.zeros(ts.size)
    for k, t in enumerate(ts.tolist()):
        al = np.zeros(n, np.bool_)
        for fi, cfg in enumerate(chosen):
            a = table.alarms(replace(cfg, intensity_g=t), n)
            al |= a & (fold_of == fi)
        sens[k] = al[is_fall].mean()
        spec[k] = (~al[~is_fall]).mean()
    return ts, sens, spec
