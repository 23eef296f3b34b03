"""Figures of the evaluation (matplotlib, the "plots" extra; imported only when asked for)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt


def score_curve(
    scores: npt.NDArray[np.float64], is_fall: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Thresholds 0..1 and the per-trial sensitivity and specificity at each.

    Args:
        scores: Largest held-out model score of each trial's candidates (0 without one).
        is_fall: Which trials are falls.
    """
    ts = np.linspace(0.0, 1.0, 101)
    sens = np.array([(scores[is_fall] >= t).mean() for t in ts])
    spec = np.array([(scores[~is_fall] < t).mean() for t in ts])
    return ts, sens, spec


def tradeoff_plot(
    path: Path,
    curve: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]],
    *,
    xlabel: str,
    title: str,
) -> None:
    """Held-out sensitivity and specificity per trial as the main threshold sweeps.

    Args:
        path: PNG to write.
        curve: Thresholds, sensitivity and specificity (fractions) at each.
        xlabel: What the threshold is.
        title: Figure title (the mode of the run).
    """
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ts, sens, spec = curve
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    ax.plot(ts, 100 * sens, label="sensitivity (fall trials detected)")
    ax.plot(ts, 100 * spec, label="specificity (activity trials without alarm)")
    ax.axhline(95, color="tab:blue", ls="--", lw=0.8)
    ax.axhline(98, color="tab:orange", ls="--", lw=0.8)
    ax.set_ylim(50, 100.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("% of trials, held out")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax = axes[1]
    ax.plot(100 * (1 - spec), 100 * sens)
    ax.axvline(2, color="tab:orange", ls="--", lw=0.8, label="bar: specificity 98 %")
    ax.axhline(95, color="tab:blue", ls="--", lw=0.8, label="bar: sensitivity 95 %")
    ax.set_xlim(0, 20)
    ax.set_ylim(50, 100.5)
    ax.set_xlabel("activity trials with an alarm (%)")
    ax.set_ylabel("fall trials detected (%)")
    ax.set_title("trade-off (per trial, FALL_SUSPECTED)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
