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
class FallFeatures:
    """Context features of candidate impacts (one row per candidate).

    All arrays have shape ``(k,)`` except ``window`` ``(k, w, 3)`` and ``pre_vec`` ``(k, 3)``.
    """

    peak_g: F32
    intensity_g: F32
    orientation_deg: F32
    stillness_g: F32
    free_fall_min_g: F32
    impact_index: I64
    pre_vec: F32
    window: F32
    window_start: I64

    def decide(self, config: FallConfig) -> B8:
        """Boolean mask of candidates that are suspected falls under ``config``.

        A NaN feature (no "before" signal after a restart, say) never passes.
        """
        keep = self.peak_g >= config.peak_g
        keep &= self.intensity_g >= config.intensity_g
        keep &= self.orientation_deg >= config.orientation_deg
        keep &= self.stillness_g <= config.stillness_g
        return keep


def fall_features(
    win: F32, valid: B8, *, first: int, rate: int, config: FallConfig
) -> FallFeatures:
    """Context features of candidates, each centred on its own first crossing.

    Args:
        win: float32 ``(k, W, 3)`` signal in g, the first crossing at index ``first`` of each row
            and at least ``merge_s + post_end_s`` of signal after it.
        valid: bool ``(k, W)``, False where the signal is missing (before a buffer restart).
        first: Index of the first crossing in every row.
        rate: Sample rate in Hz.
        config: Windows.

    Returns:
        The features; ``impact_index`` is the impact's index in ``win``.
    """
    k, w, _ = win.shape
    s = config.samples
    mag = np.sqrt(np.einsum("ijk,ijk->ij", win, win))
    merge = max(1, s(config.merge_s, rate))
    j = first + np.argmax(mag[:, first : first + merge], axis=1).astype(np.int64)
    rel = np.arange(w, dtype=np.int64)[None, :] - j[:, None]
    pre = valid & (rel >= -s(config.pre_start_s, rate)) & (rel < -s(config.pre_end_s, rate))
    post = valid & (rel >= s(config.post_start_s, rate)) & (rel < s(config.post_end_s, rate))
    half = s(0.5, rate)
    around = valid & (rel >= -half) & (rel < half)
    before = valid & (rel >= -s(1.0, rate)) & (rel <= 0)
    pre_vec = masked_mean_vec(win, pre)
    post_vec = masked_mean_vec(win, post)
    dev = np.where(around, np.abs(mag - 1.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        intensity = dev.sum(axis=1) / around.sum(axis=1)
    ff = np.where(before, mag, np.inf).min(axis=1)
    rows = np.arange(k)
    # The evidence window: from pre_start_s before the impact to post_end_s after it.
    wlen = s(config.pre_start_s, rate) + s(config.post_end_s, rate)
    start = np.clip(j - s(config.pre_start_s, rate), 0, w - wlen)
    idx = start[:, None] + np.arange(wlen)[None, :]
    window = np.take_along_axis(win, idx[:, :, None], axis=1) if k else win[:, :wlen]
    return FallFeatures(
        peak_g=mag[rows, j].astype(np.float32),
        intensity_g=intensity.astype(np.float32),
        orientation_deg=angle_deg(pre_vec, post_vec),
        stillness_g=masked_std(mag, post),
        free_fall_min_g=ff.astype(np.float32),
        impact_index=j,
        pre_vec=pre_vec,
        window=window.astype(np.float32),
        window_start=start.astype(np.int64),
    )


def take_row(f: FallFeatures, i: int) -> FallFeatures:
    sl = slice(i, i + 1)
    return FallFeatures(
        peak_g=f.peak_g[sl],
        intensity_g=f.intensity_g[sl],
        orientation_deg=f.orientation_deg[sl],
        stillness_g=f.stillness_g[sl],
        free_fall_min_g=f.free_fall_min_g[sl],
        impact_index=f.impact_index[sl],
        pre_vec=f.pre_vec[sl],
        window=f.window[sl],
        window_start=f.window_start[sl],
    )
