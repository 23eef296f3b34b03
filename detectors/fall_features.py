"""Context features of candidate impacts (:func:`fall_features`) and the masked helpers.

All functions take whole arrays of candidates (one row each) and use masks for missing signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.fall_config import FallConfig

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
B8 = npt.NDArray[np.bool_]


def angle_deg(u: F32, v: F32) -> F32:
    """Angle between row vectors, degrees; NaN where either is zero or NaN."""
    dot = np.einsum("ij,ij->i", u, v)
    nu = np.linalg.norm(u, axis=1)
    nv = np.linalg.norm(v, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (nu * nv)
    out: F32 = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).astype(np.float32)
    return out


def masked_mean_vec(x: F32, mask: B8) -> F32:
    cnt = mask.sum(axis=1)
    tot = np.einsum("ijk,ij->ik", x, mask.astype(np.float32))
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F32 = (tot / cnt[:, None]).astype(np.float32)
    return out


def masked_std(x: F32, mask: B8) -> F32:
    m = mask.astype(np.float32)
    cnt = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (x * m).sum(axis=1) / cnt
        var = (((x - mean[:, None]) ** 2) * m).sum(axis=1) / cnt
    out: F32 = np.sqrt(var).astype(np.float32)
    return out


@dataclass(frozen=True, eq=False)
class ImpactWindows:
    """The signal around candidate impacts, one row per candidate, aligned on each impact.

    Built by the detector from its ring buffers (:meth:`detectors.falls.FallDetector._analyse`)
    with one gather, so that every feature window is a plain slice of columns.

    Attributes:
        win: float32 ``(k, W, 3)`` signal in g from ``pre_start_s`` before the impact to
            ``post_end_s`` after it, zero where missing. It is also a finding's evidence window.
        mag: float32 ``(k, W)`` its magnitude ``|a|``, zero where missing.
        valid: bool ``(k, W)``, False where the signal is missing (before a buffer restart).
        impact: Column of the impact in every row (``pre_start_s`` in samples).
        span_mag: float32 ``(k, S)`` magnitude over everything scanned for the candidate, from
            ``pre_start_s`` before its first crossing of ``candidate_g`` to ``merge_s +
            post_end_s`` after it, zero where missing.
        span_valid: bool ``(k, S)``.
        span_impact: int64 ``(k,)`` column of the impact in ``span_mag``.
    """

    win: F32
    mag: F32
    valid: B8
    impact: int
    span_mag: F32
    span_valid: B8
    span_impact: I64

    def cols(self, lo: int, hi: int) -> slice:
        """Columns from ``lo`` to ``hi`` samples (exclusive) relative to the impact, clipped."""
        width = self.win.shape[1]
        return slice(max(0, self.impact + lo), min(width, self.impact + hi))


@dataclass(frozen=True, eq=False)
class FallFeatures:
    """Context features of candidate impacts (one row per candidate).

    All arrays have shape ``(k,)`` except ``window`` ``(k, w, 3)`` (the evidence: from
    ``pre_start_s`` before the impact to ``post_end_s`` after it) and ``pre_vec`` ``(k, 3)``.
    """

    peak_g: F32
    intensity_g: F32
    orientation_deg: F32
    stillness_g: F32
    free_fall_min_g: F32
    pre_vec: F32
    window: F32

    def decide(self, config: FallConfig) -> B8:
        """Boolean mask of candidates that are suspected falls under ``config``.

        A NaN feature (no "before" signal after a restart, say) never passes.
        """
        keep = self.peak_g >= config.peak_g
        keep &= self.intensity_g >= config.intensity_g
        keep &= self.orientation_deg >= config.orientation_deg
        keep &= self.stillness_g <= config.stillness_g
        return keep


def fall_features(c: ImpactWindows, *, rate: int, config: FallConfig) -> FallFeatures:
    """Context features of candidates, each row aligned on its own impact.

    Args:
        c: The signal around each impact.
        rate: Sample rate in Hz.
        config: Windows.

    Returns:
        The features.
    """
    s = config.samples
    win, mag, valid = c.win, c.mag, c.valid
    pre = c.cols(-s(config.pre_start_s, rate), -s(config.pre_end_s, rate))
    post = c.cols(s(config.post_start_s, rate), s(config.post_end_s, rate))
    half = s(0.5, rate)
    around = c.cols(-half, half)
    before = c.cols(-s(1.0, rate), 1)
    pre_vec = masked_mean_vec(win[:, pre], valid[:, pre])
    post_vec = masked_mean_vec(win[:, post], valid[:, post])
    dev = np.where(valid[:, around], np.abs(mag[:, around] - 1.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        intensity = dev.sum(axis=1) / valid[:, around].sum(axis=1)
    ff = np.where(valid[:, before], mag[:, before], np.inf).min(axis=1)
    return FallFeatures(
        peak_g=mag[:, c.impact].astype(np.float32),
        intensity_g=intensity.astype(np.float32),
        orientation_deg=angle_deg(pre_vec, post_vec),
        stillness_g=masked_std(mag[:, post], valid[:, post]),
        free_fall_min_g=ff.astype(np.float32),
        pre_vec=pre_vec,
        window=win,
    )


def take_row(f: FallFeatures, i: int) -> FallFeatures:
    sl = slice(i, i + 1)
    return FallFeatures(
        peak_g=f.peak_g[sl],
        intensity_g=f.intensity_g[sl],
        orientation_deg=f.orientation_deg[sl],
        stillness_g=f.stillness_g[sl],
        free_fall_min_g=f.free_fall_min_g[sl],
        pre_vec=f.pre_vec[sl],
        window=f.window[sl],
    )
