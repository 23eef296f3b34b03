"""Fall detection for a device worn on the wrist (wristband, watch).

A wrist moves far more than a waist in daily life: clapping, waving, hitting a table, lying down
on a bed all give impacts of several g. The wrist detector keeps the streaming machinery of
:class:`detectors.falls.FallDetector` (ring buffers per device, candidates, confirmation windows,
the same :class:`~detectors.fall_input.FallBatch` input and state bytes) and changes two stages:

1. **Decision**: every candidate impact (``|a| > candidate_g``) is described by
   :data:`FEATURES` over the seconds before and after it (orientation-free magnitudes, how many
   other peaks surround it, the forearm's change of orientation, stillness afterwards) and scored
   by a small boosted-trees model (:class:`~detectors.fall_model.TreeModel`, numpy only, shipped
   as ``detectors/models/wrist-fall-v1.json``, trained at 50 Hz, with ``wrist-fall-32hz-v1``
   and ``wrist-fall-25hz-v1`` trained at 32 and 25 Hz). Each rate group of a tick is scored by
   the model trained nearest its rate by ratio (25-28 Hz: 25; 29-39 Hz: 32; 40 Hz and up: 50).
   A score at or above that model's threshold gives ``FALL_SUSPECTED``.
2. **Confirmation**: the wearer is taken as recovered (``FALL_CANCELLED``, ``RECOVERED``) when
   the last ``recover_s`` seconds, all after the impact's context, show ordinary movement: at
   least ``recover_active_frac`` of its one-second pieces have a standard deviation of ``|a|``
   of ``recover_std_g`` or more (walking, using the hands). Lying still, or a few isolated
   movements, leave the window open until ``FALL_CONFIRMED``.

Pure: no I/O, ``now_ms`` passed in; the model file is read when a detector is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.fall_config import FallConfig
from detectors.fall_features import (
    FallFeatures,
    ImpactWindows,
    angle_deg,
    fall_features,
    masked_mean_vec,
)
from detectors.fall_model import TreeModel
from detectors.fall_state import FallStateStore
from detectors.falls import FallDetector

F32 = npt.NDArray[np.float32]
B8 = npt.NDArray[np.bool_]

WRIST_MODEL = "wrist-fall-v1"
"""The model trained at :data:`WRIST_MODEL_RATE_HZ`, the rate of the recordings."""
WRIST_MODEL_RATE_HZ = 50


def model_name(rate_hz: int, base: str = WRIST_MODEL) -> str:
    """Name of the model trained at ``rate_hz``: ``wrist-fall-v1`` (50 Hz, the recordings'
    rate), ``wrist-fall-25hz-v1``; likewise for another ``base`` (``waist-fall-v2``)."""
    if rate_hz == WRIST_MODEL_RATE_HZ:
        return base
    return base.replace("-v", f"-{rate_hz}hz-v")


WRIST_MODELS: tuple[str, ...] = (model_name(WRIST_MODEL_RATE_HZ), model_name(32), model_name(25))
"""The shipped wrist models, one per training rate."""

FEATURES: tuple[str, ...] = (
    "peak_g",
    "intensity_g",
    "orientation_deg",
    "stillness_g",
    "free_fall_min_g",
    "pre_std_g",
    "pre_dev_g",
    "pre_max_g",
    "post_dev_g",
    "post_max_g",
    "post_mean_g",
    "post_gravity_ratio",
    "pre_gravity_ratio",
    "post_turn_deg",
    "peaks_around",
    "above_1g5_s",
    "jerk_g_per_s",
    "energy_g2",
    "late_std_g",
)
"""Columns of the wrist feature matrix, in order (see :func:`wrist_features`)."""


@dataclass(frozen=True)
class WristConfig(FallConfig):
    """Windows and thresholds of the wrist detector (see :class:`FallConfig` for the rest).

    ``peak_g`` and ``intensity_g`` only pre-filter candidates before the model; the model's own
    threshold decides. ``orientation_deg``, ``stillness_g`` and ``recover_deg`` are unused.

    Attributes:
        recover_active_frac: Fraction of the one-second pieces of the last ``recover_s`` that
            must show movement (std of ``|a|`` >= ``recover_std_g``) for a recovery.
        models: Names of the shipped model files in ``detectors/models`` (without ``.json``),
            one per training rate.
        threshold: Score at or above which a candidate is a suspected fall; None takes the
            threshold of the model file that scores it.
    """

    candidate_g: float = 2.0
    peak_g: float = 2.0
    intensity_g: float = 0.1
    merge_s: float = 0.5
    pre_start_s: float = 4.0
    pre_end_s: float = 1.0
    post_start_s: float = 1.0
    post_end_s: float = 3.0
    recover_s: float = 8.0
    recover_std_g: float = 0.03
    recover_active_frac: float = 0.3
    models: tuple[str, ...] = WRIST_MODELS
    threshold: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.recover_s > self.pre_start_s + self.merge_s + self.post_end_s + self.max_burst_s:
            raise ValueError(
                f"WristConfig recover_s={self.recover_s} is longer than the ring buffer; "
                "expected recover_s <= pre_start_s + merge_s + post_end_s + max_burst_s."
            )
        if not 0.0 < self.recover_active_frac <= 1.0:
            raise ValueError(
                f"WristConfig recover_active_frac={self.recover_active_frac}; expected 0 < x <= 1."
            )


def _mstat(x: F32, mask: B8) -> tuple[F32, F32, F32]:
    """Masked mean, standard deviation and maximum per row (NaN where the mask is empty)."""
    cnt = mask.sum(axis=1).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mask, x, 0.0).sum(axis=1) / cnt
        var = np.where(mask, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / cnt
    mx = np.where(mask, x, -np.inf).max(axis=1, initial=-np.inf)
    mx = np.where(np.isfinite(mx), mx, np.nan)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32), mx.astype(np.float32)


def wrist_features(c: ImpactWindows, *, rate: int, config: WristConfig) -> tuple[FallFeatures, F32]:
    """Features of wrist candidates, each row aligned on its own impact.

    Every window but one is a slice of columns of ``c.win`` around the impact; the count of
    other peaks looks over everything scanned for the candidate (``c.span_mag``).

    Args:
        c: The signal around each impact.
        rate: Sample rate in Hz (25..100).
        config: Windows.

    Returns:
        The common :class:`FallFeatures` (evidence) and a float32 ``(k, len(FEATURES))``
        matrix. A feature whose window has no signal is NaN (the model maps NaN as in training).
    """
    base = fall_features(c, rate=rate, config=config)
    k = c.win.shape[0]
    s = config.samples
    win, mag, valid = c.win, c.mag, c.valid
    pre = c.cols(-s(config.pre_start_s, rate), -s(config.pre_end_s, rate))
    post = c.cols(s(config.post_start_s, rate), s(config.post_end_s, rate))
    late = c.cols(s(config.post_end_s - 1.0, rate), s(config.post_end_s, rate))
    near = c.cols(-s(1.0, rate), s(1.0, rate))
    half = s(0.5, rate)
    pre_mean, pre_std, pre_max = _mstat(mag[:, pre], valid[:, pre])
    pre_dev, _, _ = _mstat(np.abs(mag[:, pre] - 1.0), valid[:, pre])
    post_dev, _, _ = _mstat(np.abs(mag[:, post] - 1.0), valid[:, post])
    post_mean, _, post_max = _mstat(mag[:, post], valid[:, post])
    _, late_std, _ = _mstat(mag[:, late], valid[:, late])
    energy, _, _ = _mstat((mag[:, near] - 1.0) ** 2, valid[:, near])
    with np.errstate(invalid="ignore", divide="ignore"):
        post_ratio = np.linalg.norm(masked_mean_vec(win[:, post], valid[:, post]), axis=1)
        post_ratio /= post_mean
        pre_ratio = np.linalg.norm(masked_mean_vec(win[:, pre], valid[:, pre]), axis=1)
        pre_ratio /= pre_mean
    mid = s((config.post_start_s + config.post_end_s) / 2, rate)
    p1 = c.cols(s(config.post_start_s, rate), mid)
    p2 = c.cols(mid, s(config.post_end_s, rate))
    turn = angle_deg(
        masked_mean_vec(win[:, p1], valid[:, p1]), masked_mean_vec(win[:, p2], valid[:, p2])
    )
    # Local maxima above 1.5 g over everything scanned other than the impact itself: clapping,
    # waving and hitting a table repeat; a fall is one impact (and its bounce).
    m = c.span_mag
    peak = np.zeros_like(c.span_valid)
    peak[:, 1:-1] = (m[:, 1:-1] > 1.5) & (m[:, 1:-1] > m[:, :-2]) & (m[:, 1:-1] >= m[:, 2:])
    rel = np.arange(m.shape[1], dtype=np.int64)[None, :] - c.span_impact[:, None]
    peak &= c.span_valid & (np.abs(rel) > half)
    peaks_around = peak.sum(axis=1).astype(np.float32)
    above = (valid[:, near] & (mag[:, near] > 1.5)).sum(axis=1) / rate
    # Jerk over the second around the impact: each sample against the one before it.
    jc = c.cols(-half, half)
    jp = slice(jc.start - 1, jc.stop - 1) if jc.start > 0 else jc
    diff = np.linalg.norm(win[:, jc] - win[:, jp], axis=2) * rate
    jerk, _, _ = _mstat(diff, valid[:, jc] & valid[:, jp])
    x = np.stack(
        [
            base.peak_g,
            base.intensity_g,
            base.orientation_deg,
            base.stillness_g,
            base.free_fall_min_g,
            pre_std,
            pre_dev,
            pre_max,
            post_dev,
            post_max,
            post_mean,
            post_ratio,
            pre_ratio,
            turn,
            peaks_around,
            above,
            jerk,
            energy,
            late_std,
        ],
        axis=1,
    ).astype(np.float32)
    x = x.reshape(k, len(FEATURES))
    x[~np.isfinite(x)] = np.nan
    return base, x


class WristFallDetector(FallDetector):
    """Vectorised fall detector for wrist-worn devices (see the module docstring).

    Same API as :class:`FallDetector`: ``process(batch, now_ms)``, the confirmation windows that
    :func:`detectors.events.device_event_findings` acts on, ``store`` for persistence.

    Attributes:
        models: The boosted-trees models scoring candidates, one per training rate, highest
            rate first.
        threshold: Score at or above which a candidate is a suspected fall, for every model;
            None: each model's own threshold.
        rows: When recording (:meth:`record_candidates`), ``(device_id, feature row, score)`` of
            every analysed candidate, for training and evaluation.
    """

    config: WristConfig
    #: The configuration class this detector takes (and makes by default).
    config_type: type[WristConfig] = WristConfig
    #: The columns its models score, in order (:meth:`_features` computes them).
    features: tuple[str, ...] = FEATURES

    def __init__(
        self,
        config: WristConfig | None = None,
        store: FallStateStore | None = None,
        model: TreeModel | None = None,
    ) -> None:
        """Make a detector with the shipped models, or ``model`` alone (it then scores every rate).

        Raises:
            TypeError: If the config is not a :attr:`config_type` (a :class:`WristConfig`).
            ValueError: If a model's features are not :attr:`features`, or two models share a
                training rate.
        """
        cfg = config or (store.config if store is not None else self.config_type())
        if not isinstance(cfg, self.config_type):
            raise TypeError(
                f"{type(self).__name__} config is a {type(cfg).__name__}; expected a "
                f"{self.config_type.__name__}."
            )
        super().__init__(cfg, store)
        models = [model] if model is not None else [TreeModel.load(n) for n in cfg.models]
        for m in models:
            if m.features != self.features:
                raise ValueError(
                    f"Model {m.name} has features {m.features}; expected {self.features} "
                    "(retrain it with its script in detectors/training/)."
                )
        rates = [m.rate_hz for m in models]
        if not models or len(set(rates)) != len(rates):
            raise ValueError(
                f"WristFallDetector models are trained at {rates} Hz; expected at least one "
                "model and one per rate."
            )
        self.models = tuple(sorted(models, key=lambda m: -m.rate_hz))
        self.threshold = cfg.threshold
        self.rows: list[tuple[str, F32, float]] | None = None
        self._last: tuple[F32, npt.NDArray[np.float64]] = (
            np.zeros((0, len(self.features)), np.float32),
            np.zeros(0),
        )

    def model_for(self, rate: int) -> TreeModel:
        """The model trained nearest ``rate`` by ratio (the higher rate on a tie)."""
        return min(self.models, key=lambda m: abs(np.log(rate / m.rate_hz)))

    def record_candidates(self, on: bool = True) -> None:
        """Keep every analysed candidate's features and score in :attr:`rows`."""
        super().record_candidates(on)
        self.rows = [] if on else None

    def _features(self, windows: ImpactWindows, *, rate: int) -> tuple[FallFeatures, F32]:
        """The evidence and the :attr:`features` matrix of the candidates."""
        return wrist_features(windows, rate=rate, config=self.config)

    def _decide(self, windows: ImpactWindows, *, rate: int) -> tuple[FallFeatures, B8]:
        feats, x = self._features(windows, rate=rate)
        model = self.model_for(rate)
        score = model.predict_proba(x)
        self._last = (x, score)
        fire: B8 = score >= (model.threshold if self.threshold is None else self.threshold)
        return feats, fire

    def _record(self, device_ids: list[str], feats: FallFeatures) -> None:
        super()._record(device_ids, feats)
        if self.rows is not None:
            x, score = self._last
            for i, dev in enumerate(device_ids):
                self.rows.append((dev, x[i], float(score[i])))

    def _recovering(self, win: F32, mag: F32, valid: B8, *, std: F32, vec: F32, pre_vec: F32) -> B8:
        """Ordinary movement in most one-second pieces of the last ``recover_s``."""
        k, length = mag.shape
        rate = max(1, round(length / self.config.recover_s))
        pieces = length // rate
        if pieces == 0:
            return np.zeros(k, np.bool_)
        m = mag[:, : pieces * rate].reshape(k, pieces, rate)
        ok = valid[:, : pieces * rate].reshape(k, pieces, rate).all(axis=2)
        active = (m.std(axis=2) >= self.config.recover_std_g) & ok
        out: B8 = active.mean(axis=1) >= self.config.recover_active_frac
        return out
