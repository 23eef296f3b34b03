"""Learned fall decision for devices worn on the trunk: a belt or waist clip, a chest pendant.

The wrist detector's streaming core, candidates and :data:`~detectors.wrist.FEATURES`, scored by
a random forest trained on waist recordings (SisFall, ``detectors/training/train_waist.py``;
``detectors/models/waist-fall-v1.json`` at 50 Hz, with ``-32hz-`` and ``-25hz-`` models for slower
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

from detectors.falls import FallDetector
from detectors.wrist import WRIST_MODEL_RATE_HZ, WristConfig, WristFallDetector, model_name

F32 = npt.NDArray[np.float32]
B8 = npt.NDArray[np.bool_]

WAIST_MODEL = "waist-fall-v1"
"""The trunk model trained at the recordings' rate (50 Hz)."""

WAIST_MODELS: tuple[str, ...] = tuple(
    model_name(r, WAIST_MODEL) for r in (WRIST_MODEL_RATE_HZ, 32, 25)
)
"""The shipped trunk models, one per training rate."""


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

    def _recovering(self, win: F32, mag: F32, valid: B8, *, std: F32, vec: F32, pre_vec: F32) -> B8:
        """Moving again and upright again (the trunk's rule, :class:`FallDetector`'s)."""
        return FallDetector._recovering(self, win, mag, valid, std=std, vec=vec, pre_vec=pre_vec)
