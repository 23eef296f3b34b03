"""Real wrist recordings for tests: WEDA-FALL trials from ``../shared/datasets/wrist``.

The folder is ``ANXIN_WRIST_DIR`` when set. Without it the test is skipped, except in CI, where
the dataset must be there and its absence fails the test.
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
