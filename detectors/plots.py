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
    bar: tuple[float, float] = (0.95, 0.98),
) -> None:
    """Held-out sensitivity and specificity per trial as the main threshold sweeps.

    Args:
        path: PNG to write.
        curve: Thresholds, sensitivity and specificity (fractions) at each.
        xlabel: What the threshold is.
        title: Figure title (the mode of the run).
        bar: The sensitivity and specificity asked of the detector (fractions), drawn as lines;
            the right panel spans ten times what the bar allows.
    """
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ts, sens, spec = curve
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    ax.plot(ts, 100 * sens, label="sensitivity (fall trials detected)")
    ax.plot(ts, 100 * spec, label="specificity (activity trials without alarm)")
    sens_bar, spec_bar = 100 * bar[0], 100 * bar[1]
    ax.axhline(sens_bar, color="tab:blue", ls="--", lw=0.8)
    ax.axhline(spec_bar, color="tab:orange", ls="--", lw=0.8)
    ax.set_ylim(50, 100.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("% of trials, held out")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax = axes[1]
    ax.plot(100 * (1 - spec), 100 * sens)
    ax.axvline(
        100 - spec_bar,
        color="tab:orange",
        ls="--",
        lw=0.8,
        label=f"bar: specificity {spec_bar:g} %",
    )
    ax.axhline(
        sens_bar, color="tab:blue", ls="--", lw=0.8, label=f"bar: sensitivity {sens_bar:g} %"
    )
    ax.set_xlim(0, 10 * (100 - spec_bar))
    ax.set_ylim(100 - 10 * (100 - sens_bar), 100.5)
    ax.set_xlabel("activity trials with an alarm (%)")
    ax.set_ylabel("fall trials detected (%)")
    ax.set_title("trade-off (per trial, FALL_SUSPECTED)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
