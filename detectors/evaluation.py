"""``anxin detectors evaluate-falls``: judge a fall detector on recordings, as it runs in service.

Reads a SisFall folder (waist) or a wrist folder (one source, or a root of sources), told apart
from the folder, and streams every trial through the detector for ``--placement`` in 1 s bursts
(:mod:`detectors.replay`). Modes:

* default, **subject-wise cross-validation**: the placement's model is retrained (wrist:
  boosted trees, ``train_wrist``; waist: a random forest, ``train_waist``), its threshold from
  inner folds, on the other subjects' trials, then the held-out subjects are streamed through
  it;
* ``--loso`` (wrist), **leave-one-source-out**: trained on the other sources, tested on one;
* ``--shipped``: the detector and model exactly as shipped, no tuning on the data judged.

A fall trial is *detected* when ``FALL_SUSPECTED`` is raised during it; an activity trial is a
*false alarm* when ``FALL_SUSPECTED`` is raised during it. *Confirmed false alarms per hour*:
every subject's activity trials joined end to end, then 60 s of rest, streamed through the
detector including its confirmation stage; ``FALL_CONFIRMED`` findings per hour of activity.
The last four lines printed are sensitivity, specificity, confirmed false alarms per hour and
the median delay from impact to ``FALL_SUSPECTED``; before them, every confirmed false alarm
is listed with where its impact lies in the joined stream.

This module reads files and prints; the detectors stay pure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from detectors.datasets import Trial, joined_activity, load_trials, subject_folds, subject_keys
from detectors.fall_input import MAX_RATE_HZ, MIN_RATE_HZ
from detectors.fall_model import TreeModel
from detectors.falls import FallDetector
from detectors.replay import run_trials
from detectors.waist import WaistFallDetector
from detectors.wrist import WristFallDetector

B8 = npt.NDArray[np.bool_]

#: What issue 11 asks of each placement on people it never saw: (sensitivity, specificity).
BARS = {"wrist": (0.95, 0.98), "waist": (0.98, 0.995)}
Factory = Callable[[], FallDetector]


@dataclass
class Outcome:
    """Held-out results of a whole run, per trial and per joined subject stream."""

    detected: B8
    delay_s: npt.NDArray[np.float64]
    joined_hours: float
    scores: npt.NDArray[np.float64]
    curve: (
        tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None
    ) = None
    confirmed_where: list[ConfirmedAt] = field(default_factory=list)

    @property
    def confirmed_joined(self) -> int:
        """Confirmed false alarms on joined activity."""
        return len(self.confirmed_where)


@dataclass(frozen=True)
class ConfirmedAt:
    """Where in a joined activity stream a confirmed false alarm's impact lies.

    Attributes:
        stream: ``source/subject`` of the joined stream.
        recording: The recording holding the impact (``REST`` for the closing rest).
        into_s: Seconds from the recording's start to the impact.
        before_end_s: Seconds from the impact to the recording's end (the next junction).
        then: The recording that follows (``REST``, or empty after the rest).
    """

    stream: str
    recording: str
    into_s: float
    before_end_s: float
    then: str

    @property
    def near_junction(self) -> bool:
        """The impact is within :data:`JUNCTION_S` of where two recordings were joined."""
        return min(self.into_s, self.before_end_s) < JUNCTION_S

    def __str__(self) -> str:
        return (
            f"{self.stream}: impact {self.into_s:.1f} s into {self.recording} "
            f"({self.before_end_s:.1f} s before its end), then {self.then or 'nothing'}"
        )


JUNCTION_S = 2.0
"""An impact this close to a junction has its context windows (4 s before, 3 s after) partly in
another recording: the joined stream jumps there, which no wrist can do."""


def confirmed_at(stream: Trial, impact_s: float, rate: int) -> ConfirmedAt:
    """Locate an impact ``impact_s`` seconds into a joined stream (see ``Trial.parts``)."""
    starts = [start for _, start in stream.parts]
    i = max(0, int(np.searchsorted(starts, impact_s, side="right")) - 1)
    end = starts[i + 1] if i + 1 < len(starts) else stream.acc.shape[0] / rate
    return ConfirmedAt(
        f"{stream.source}/{stream.subject}",
        stream.parts[i][0],
        impact_s - starts[i],
        end - impact_s,
        stream.parts[i + 1][0] if i + 1 < len(starts) else "",
    )


def _judge(
    trials: Sequence[Trial], idx: npt.NDArray[np.intp], rate: int, make: Factory, out: Outcome
) -> None:
    """Stream the trials ``idx`` and their subjects' joined activities through ``make()``."""
    sub = [trials[i] for i in idx.tolist()]
    res, _ = run_trials(sub, rate, make(), drain=False)
    for j, i in enumerate(idx.tolist()):
        out.detected[i] = res[j].suspected > 0
        out.delay_s[i] = res[j].first_delay_ms / 1000 if res[j].suspected else math.nan
    joined = joined_activity(sub, rate)
    jres, _ = run_trials(joined, rate, make(), drain=True)
    for stream, r in zip(joined, jres, strict=True):
        out.confirmed_where += [confirmed_at(stream, s, rate) for s in r.confirmed_impacts_s]
    out.joined_hours += sum(t.acc.shape[0] / rate - 60.0 for t in joined) / 3600


def evaluate(
    trials: Sequence[Trial],
    rate: int,
    placement: str,
    *,
    shipped: bool,
    folds: int,
    loso: bool,
    log: Callable[[str], None] = print,
) -> Outcome:
    """Run one evaluation (see the module docstring); returns the held-out outcome."""
    n = len(trials)
    out = Outcome(np.zeros(n, np.bool_), np.full(n, math.nan), 0.0, np.zeros(n))
    everything = np.arange(n)
    detector: type[WristFallDetector] = (
        WristFallDetector if placement == "wrist" else WaistFallDetector
    )
    if shipped:
        _judge(trials, everything, rate, detector, out)
        return out
    # Training needs scikit-learn (the "train" extra); the shipped path never imports it.
    from detectors.plots import score_curve  # noqa: PLC0415
    from detectors.training import train_waist, train_wrist  # noqa: PLC0415

    train = train_wrist.train if placement == "wrist" else train_waist.train
    cands = train_wrist.candidates(trials, rate, detector.config_type(), detector=detector)
    groups = subject_keys(trials)
    for fi, fold in enumerate(subject_folds(trials, folds, by_source=loso)):
        test = np.isin(groups, fold)
        model = TreeModel.from_json(
            json.dumps(train(trials, cands, ~test, rate_hz=rate, inner_folds=3))
        )
        out.scores[test] = train_wrist.trial_scores(model, cands, n)[test]
        log(f"fold {fi + 1}: {len(fold)} subjects held out, threshold {model.threshold:.3f}")

        def make(model: TreeModel = model) -> FallDetector:
            return detector(model=model)

        _judge(trials, np.nonzero(test)[0], rate, make, out)
    out.curve = score_curve(out.scores, np.array([t.is_fall for t in trials]))
    return out


def _table(
    trials: Sequence[Trial], hit: B8, falls: bool, names: dict[str, dict[str, str]]
) -> list[str]:
    what = "detected" if falls else "false alarms"
    lines = [
        f"| source | code | activity | trials | {what} | rate |",
        "|---|---|---|---:|---:|---:|",
    ]
    keys = sorted({(t.source, t.code) for t in trials if t.is_fall == falls})
    src = np.array([t.source for t in trials])
    code = np.array([t.code for t in trials])
    for s, c in keys:
        m = (src == s) & (code == c)
        k = int((hit & m).sum())
        name = names.get(s, {}).get(c, "")
        lines.append(f"| {s} | {c} | {name} | {int(m.sum())} | {k} | {100 * k / m.sum():.1f} % |")
    return lines


def _code_names(folder: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for meta in [folder / "meta.json", *sorted(folder.glob("*/meta.json"))]:
        if meta.is_file():
            out[meta.parent.name] = json.loads(meta.read_text("utf-8")).get("codes", {})
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``evaluate-falls``."""
    ap = argparse.ArgumentParser(prog="evaluate-falls", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="SisFall folder or wrist folder")
    ap.add_argument(
        "--placement",
        choices=("wrist", "waist"),
        default=None,
        help="detector to judge (default: wrist for the wrist layout, else waist)",
    )
    ap.add_argument("--shipped", action="store_true", help="run the shipped detector as is")
    ap.add_argument("--loso", action="store_true", help="leave one source out (wrist layout)")
    ap.add_argument("--rate", type=int, default=50, help="evaluation rate in Hz (25..100)")
    ap.add_argument(
        "--folds",
        type=int,
        default=0,
        help="subject folds (0: leave one subject out for waist, 5 for wrist)",
    )
    ap.add_argument(
        "--subjects",
        type=int,
        default=0,
        help="use only the first N subjects of each source (a quick check)",
    )
    ap.add_argument("--plot", type=Path, default=None, help="write the trade-off figure here")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``evaluate-falls``; returns a process exit code."""
    args = build_parser().parse_args(argv)
    if not MIN_RATE_HZ <= args.rate <= MAX_RATE_HZ:
        print(f"--rate {args.rate} is outside {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz.", file=sys.stderr)
        return 2
    try:
        kind, trials = load_trials(args.data, args.rate)
    except FileNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    placement = args.placement or ("wrist" if kind == "wrist" else "waist")
    if args.subjects > 0:
        keep: dict[str, list[str]] = {}
        for t in trials:
            lst = keep.setdefault(t.source, [])
            if t.subject not in lst and len(lst) < args.subjects:
                lst.append(t.subject)
        trials = [t for t in trials if t.subject in keep[t.source]]
    if args.loso and len({t.source for t in trials}) < 2:
        print("--loso needs a wrist folder with at least two sources.", file=sys.stderr)
        return 2
    folds = args.folds or (5 if placement == "wrist" else 0)
    mode = (
        "shipped detector"
        if args.shipped
        else (
            "leave one source out"
            if args.loso
            else f"subject-wise cross-validation ({folds or 'leave one subject out'} folds)"
        )
    )
    rate = args.rate
    out = evaluate(trials, rate, placement, shipped=args.shipped, folds=folds, loso=args.loso)
    is_fall = np.array([t.is_fall for t in trials])
    n_f, n_d = int(is_fall.sum()), int((~is_fall).sum())
    d = out.detected
    sens = float(d[is_fall].mean()) if n_f else math.nan
    spec = float((~d[~is_fall]).mean()) if n_d else math.nan
    fa_h = out.confirmed_joined / out.joined_hours if out.joined_hours else math.nan
    delays = out.delay_s[is_fall & d]
    names = _code_names(args.data) if kind == "wrist" else {}
    print(f"{kind} layout, {placement} detector, {mode}, {rate} Hz")
    print(
        f"sources: {sorted({t.source for t in trials})}; subjects: {len(set(subject_keys(trials).tolist()))}"
    )
    print(f"trials: {n_f} falls, {n_d} activities; joined activity {out.joined_hours:.2f} h")
    for s in sorted({t.source for t in trials}):
        m = np.array([t.source == s for t in trials])
        fs = f"{100 * d[m & is_fall].mean():.2f} %" if (m & is_fall).any() else "-"
        print(
            f"  {s}: falls detected {fs}, activities without alarm {100 * (~d[m & ~is_fall]).mean():.2f} %"
        )
    print()
    print("\n".join(_table(trials, d, False, names)))
    print()
    print("\n".join(_table(trials, d, True, names)))
    print()
    print(
        f"falls detected {int(d[is_fall].sum())}/{n_f}, activities with an alarm {int(d[~is_fall].sum())}/{n_d}"
    )
    print(
        f"confirmed false alarms on joined activity: {out.confirmed_joined} in {out.joined_hours:.2f} h"
    )
    near = sum(w.near_junction for w in out.confirmed_where)
    print(
        f"  of which {near} with the impact within {JUNCTION_S:.0f} s of a junction between "
        "recordings (the joined stream jumps there):"
    )
    for w in sorted(out.confirmed_where, key=lambda w: (w.stream, w.recording)):
        print(f"  - {w}")
    if args.plot is not None and out.curve is not None:
        # matplotlib is optional (the "plots" extra): imported only when a plot is asked for.
        from detectors.plots import tradeoff_plot  # noqa: PLC0415

        tradeoff_plot(
            args.plot,
            out.curve,
            xlabel="model score threshold",
            title=f"{placement}, {mode}",
            bar=BARS[placement],
        )
        print(f"plot written to {args.plot}")
    elif args.plot is not None:
        print("no plot: --shipped has no threshold sweep (run cross-validation for one)")
    print(f"sensitivity {100 * sens:.2f} %")
    print(f"specificity {100 * spec:.2f} %")
    print(f"confirmed false alarms per hour {fa_h:.2f}")
    med = float(np.median(delays)) if delays.size else math.nan
    print(f"median delay impact -> FALL_SUSPECTED {med:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
