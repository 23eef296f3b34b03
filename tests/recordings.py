"""Real recordings for tests: WEDA-FALL trials from ``../shared/datasets/wrist`` (wrist) and
SisFall trials from ``../shared/datasets/sisfall`` (waist).

The folders are ``ANXIN_WRIST_DIR`` and ``ANXIN_SISFALL_DIR`` when set. Without them the test is
skipped, except in CI, where the datasets must be there and their absence fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.signal import resample_poly

from tests.services import IN_CI, ROOT

WEDA_RATE_HZ = 50


def weda_trial(subject: str, key: str, rate: int = WEDA_RATE_HZ) -> npt.NDArray[np.float64]:
    """WEDA-FALL trial ``key`` of ``subject`` in g, resampled to ``rate`` Hz."""
    env = os.environ.get("ANXIN_WRIST_DIR")
    folder = (Path(env) if env else ROOT.parent / "shared" / "datasets" / "wrist") / "weda-fall"
    if not (folder / f"{subject}.npz").exists():
        reason = f"wrist recordings not found at {folder} (set ANXIN_WRIST_DIR)"
        if IN_CI:
            pytest.fail(f"{reason}; in CI the dataset must be there", pytrace=False)
        pytest.skip(reason)
    with np.load(folder / f"{subject}.npz", allow_pickle=False) as z:
        acc = np.asarray(z[key], np.float64)
    if rate == WEDA_RATE_HZ:
        return acc
    return np.asarray(resample_poly(acc, rate, WEDA_RATE_HZ, axis=0), np.float64)


SISFALL_RATE_HZ = 200
ADXL345_G_PER_COUNT = 32.0 / 8192.0


def sisfall_dir() -> Path:
    """The SisFall folder of ``SUBJECT.npz`` files (skips, or fails in CI, without it)."""
    env = os.environ.get("ANXIN_SISFALL_DIR")
    folder = Path(env) if env else ROOT.parent / "shared" / "datasets" / "sisfall"
    if not (folder / "SA01.npz").exists():
        reason = (
            f"SisFall recordings not found at {folder} (set ANXIN_SISFALL_DIR to the folder "
            "of SUBJECT.npz files)"
        )
        if IN_CI:
            pytest.fail(f"{reason}; in CI the dataset must be there", pytrace=False)
        pytest.skip(reason)
    return folder


def sisfall_trial(subject: str, key: str, rate: int = 50) -> npt.NDArray[np.float64]:
    """SisFall trial ``key`` of ``subject``: the ADXL345 columns in g, decimated from 200 Hz
    to ``rate`` as ``detectors.datasets`` does."""
    with np.load(sisfall_dir() / f"{subject}.npz", allow_pickle=False) as z:
        raw = z[key][:, 0:3].astype(np.float64) * ADXL345_G_PER_COUNT
    return np.asarray(resample_poly(raw, rate, SISFALL_RATE_HZ, axis=0), np.float64)
