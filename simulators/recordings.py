"""Accelerometer recordings a simulated body replays: real trials from the dataset folders, or a
generated fall when none are given.

A recording is named ``SOURCE:SUBJECT/TRIAL``:

* ``sisfall:SA01/F05_SA01_R04``: SisFall (``<data>/sisfall/SA01.npz``, waist, 200 Hz, the
  ADXL345 columns in counts of 32/8192 g);
* ``wrist:weda-fall/U01/F01_U01_R01``: the wrist layout (``<data>/wrist/weda-fall/U01.npz``,
  float32 g at 50 Hz);
* ``generated:fall`` (the default) and ``generated:fall-recovering``: a fall made here (walking,
  free fall, an impact of about 4 g, lying on the side), which the waist and the wrist
  detectors both flag; no dataset is needed.

Everything is resampled to the device's rate. Pure functions over files; no network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

from core.errors import AnxinError

F64 = npt.NDArray[np.float64]

SISFALL_RATE_HZ = 200
SISFALL_G_PER_COUNT = 32.0 / 8192.0
WRIST_RATE_HZ = 50
GENERATED = ("generated:fall", "generated:fall-recovering")


class RecordingError(AnxinError):
    """A recording that cannot be found or read; the message names it and where it looked."""


@dataclass(frozen=True, eq=False)
class Recording:
    """Samples in g, shape ``(n, 3)``, at ``rate_hz``.

    Attributes:
        name: As asked for, e.g. ``sisfall:SA01/F05_SA01_R04``.
        samples: float64 ``(n, 3)`` in g.
        rate_hz: Sample rate.
    """

    name: str
    samples: F64
    rate_hz: int

    @property
    def seconds(self) -> float:
        return float(self.samples.shape[0]) / self.rate_hz

    def rest_vector(self) -> F64:
        """The mean of the last second: the orientation the body is left in."""
        tail = self.samples[-self.rate_hz :]
        out: F64 = tail.mean(axis=0)
        return out


def _resample(x: F64, src: int, dst: int) -> F64:
    if src == dst:
        return x
    g = math.gcd(src, dst)
    out: F64 = resample_poly(x, dst // g, src // g, axis=0)
    return out


def generated_fall(rate_hz: int, *, recovering: bool = False, seed: int = 0) -> F64:
    """Six seconds of walking, a fall onto the side, then 30 s lying still (or, recovering,
    getting up and walking 4 s after the impact). In g, shape ``(n, 3)``."""
    rng = np.random.default_rng(seed)
    r = rate_hz
    t = np.arange(6 * r) / r
    walk = rng.normal(0, 0.05, (t.size, 3))
    walk[:, 2] += 1.0 + 0.25 * np.sin(2 * np.pi * 1.8 * t)
    walk[:, 0] += 0.15 * np.sin(2 * np.pi * 0.9 * t)
    n_free = round(0.35 * r)
    free = rng.normal(0, 0.05, (n_free, 3))
    free[:, 2] += np.linspace(0.8, 0.2, n_free)
    n_imp = max(2, round(0.12 * r))
    hann = np.hanning(n_imp)
    impact = np.stack([hann * 3.0 + 0.5, hann * 1.2, hann * 2.0], axis=1)
    n_settle = round(0.8 * r)
    w = np.linspace(0, 1, n_settle)
    settle = np.stack([w, np.zeros(n_settle), (1 - w) * 0.3], axis=1)
    settle += rng.normal(0, 0.25, (n_settle, 3)) * (1 - w)[:, None]
    n_after = 30 * r
    after = rng.normal(0, 0.01, (n_after, 3))
    after[:, 0] += 1.0
    if recovering:
        up = 4 * r
        tt = np.arange(n_after - up) / r
        after[up:] = rng.normal(0, 0.05, (n_after - up, 3))
        after[up:, 0] += 0.15 * np.sin(2 * np.pi * 0.9 * tt)
        after[up:, 2] += 1.0 + 0.25 * np.sin(2 * np.pi * 1.8 * tt)
    out: F64 = np.vstack([walk, free, impact, settle, after])
    return out


def load_recording(name: str, rate_hz: int, data_dir: Path | None) -> Recording:
    """The recording ``name`` at ``rate_hz`` (see the module's notes for names).

    Raises:
        RecordingError: an unknown source, a missing folder, file or trial.
    """
    source, _, rest = name.partition(":")
    if source == "generated":
        if name not in GENERATED:
            raise RecordingError(
                f"recording {name!r} is not one of the generated ones; expected one of "
                f"{', '.join(GENERATED)}"
            )
        samples = generated_fall(rate_hz, recovering=name.endswith("recovering"))
        return Recording(name, samples, rate_hz)
    if source not in ("sisfall", "wrist"):
        raise RecordingError(
            f"recording {name!r} has source {source!r}; expected sisfall:SUBJECT/TRIAL, "
            "wrist:SOURCE/SUBJECT/TRIAL or generated:fall"
        )
    if data_dir is None:
        raise RecordingError(
            f"recording {name!r} needs the datasets folder (--data, e.g. ../shared/datasets)"
        )
    parts = rest.split("/")
    expected = 2 if source == "sisfall" else 3
    if len(parts) != expected or not all(parts):
        raise RecordingError(
            f"recording {name!r} is not {source}:"
            + ("SUBJECT/TRIAL" if source == "sisfall" else "SOURCE/SUBJECT/TRIAL")
        )
    *folders, subject, trial = parts
    path = data_dir.joinpath(source, *folders, f"{subject}.npz")
    if not path.is_file():
        raise RecordingError(f"recording {name!r}: no file {path}")
    with np.load(path, allow_pickle=False) as z:
        if trial not in z.files:
            raise RecordingError(f"recording {name!r}: {path} holds no trial {trial!r}")
        raw = np.asarray(z[trial])
    if source == "sisfall":
        g = raw[:, :3].astype(np.float64) * SISFALL_G_PER_COUNT
        samples = _resample(g, SISFALL_RATE_HZ, rate_hz)
    else:
        samples = _resample(raw.astype(np.float64), WRIST_RATE_HZ, rate_hz)
    return Recording(name, samples, rate_hz)
