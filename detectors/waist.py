"""Learned fall decision for devices worn on the trunk: a belt or waist clip, a chest pendant.

The wrist detector's streaming core, candidates and :data:`~detectors.wrist.FEATURES`, plus the
speed the body gained falling before the impact (:data:`TRUNK_FEATURES`), scored by a random
forest trained on waist recordings (SisFall, ``detectors/training/train_waist.py``;
``detectors/models/waist-fall-v2.json`` at 50 Hz, with ``-32hz-`` and ``-25hz-`` models for slower
devices), and the trunk's recovery of :class:`~detectors.falls.FallDetector`: the wearer counts
as recovered when moving again (std of ``|a|`` >= ``recover_std_g`` over ``recover_s``) with the
gravity direction back within ``recover_deg`` of the one before the impact. A trunk's
orientation says whether the wearer is upright again; a wrist's does not, which is why the wrist
detector judges recovery by movement alone.

Pure: no I/O, ``now_ms`` passed in; the model files are read when a detector is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.fall_features import FallFeatures, ImpactWindows
from detectors.falls import FallDetector
from detectors.wrist import (
    FEATURES,
    WRIST_MODEL_RATE_HZ,
    WristConfig,
    WristFallDetector,
    model_name,
    wrist_features,
)

F32 = npt.NDArray[np.float32]
B8 = npt.NDArray[np.bool_]

WAIST_MODEL = "waist-fall-v2"
"""The trunk model trained at the recordings' rate (50 Hz)."""

WAIST_MODELS: tuple[str, ...] = tuple(
    model_name(r, WAIST_MODEL) for r in (WRIST_MODEL_RATE_HZ, 32, 25)
)
"""The shipped trunk models, one per training rate."""

TRUNK_FEATURES: tuple[str, ...] = (*FEATURES, "descent_m_s")
"""Columns of the trunk models: the wrist detector's, and :func:`descent_speed`."""

G_M_S2 = 9.81
"""Standard gravity, m/s² per g."""


def descent_speed(c: ImpactWindows, *, rate: int) -> F32:
    """Speed in m/s the trunk gained falling before each impact (NaN where no signal).

    The time integral of ``1 g - |a|`` over the second before the impact, up to the last sample
    below 1 g before it: while the support gives way the accelerometer reads less than gravity,
    and what it misses is the speed gained downward (Bourke et al., 2008, use the same integral
    as a vertical velocity); negative where the trunk was braked more than it fell. Medians
    over SisFall's candidates at 50 Hz: falls 0.94 m/s, sitting down quickly 0.48, walking
    -0.18; turning in bed 0.69 (which this does not tell from a fall). Only ``|a|`` is used, so
    no axis convention is needed.
    """
    k = c.win.shape[0]
    cols = c.cols(-rate, 1)
    ok = c.valid[:, cols]
    short = np.where(ok, 1.0 - c.mag[:, cols], 0.0)
    below = ok & (short > 0.0)
    last = short.shape[1] - 1 - np.argmax(below[:, ::-1], axis=1)
    gained = np.cumsum(short, axis=1)[np.arange(k), last] * (G_M_S2 / rate)
    gained = np.where(below.any(axis=1), gained, 0.0)
    out: F32 = np.where(ok.any(axis=1), gained, np.nan).astype(np.float32)
    return out


@dataclass(frozen=True)
class WaistConfig(WristConfig):
    """The wrist detector's windows and candidates, the trunk's models and recovery.

    ``recover_s``, ``recover_std_g`` and ``recover_deg`` are :class:`FallConfig`'s (2 s of
    movement, upright again); ``recover_active_frac`` is unused.
    """

    recover_s: float = 2.0
    recover_std_g: float = 0.1
    models: tuple[str, ...] = WAIST_MODELS


class WaistFallDetector(WristFallDetector):
    """Fall detector for trunk-worn devices (see the module docstring); the API of
    :class:`FallDetector`."""

    config: WaistConfig
    config_type = WaistConfig
    features = TRUNK_FEATURES

    def _features(self, windows: ImpactWindows, *, rate: int) -> tuple[FallFeatures, F32]:
        """The wrist detector's columns and :func:`descent_speed`."""
        feats, x = wrist_features(windows, rate=rate, config=self.config)
        return feats, np.column_stack([x, descent_speed(windows, rate=rate)])

    def _recovering(self, win: F32, mag: F32, valid: B8, *, std: F32, vec: F32, pre_vec: F32) -> B8:
        """Moving again and upright again (the trunk's rule, :class:`FallDetector`'s)."""
        return FallDetector._recovering(self, win, mag, valid, std=std, vec=vec, pre_vec=pre_vec)
