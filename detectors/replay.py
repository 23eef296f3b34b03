"""Stream recorded trials through a fall detector the way the ingester does (evaluation tool).

Every trial is one "device"; all trials of a run go in one :class:`FallBatch` per tick of 1 s,
through the same vectorised ``process`` the ingester calls. After the last sample, the detector
keeps being called with empty ticks until every confirmation window has ended, so a silent
device is judged as in service (``NO_DATA`` confirms).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detectors.datasets import Trial
from detectors.fall_input import FallBatch
from detectors.falls import FallDetector
from detectors.findings import FallEvidence, FallOutcome, FallOutcomeEvidence, FindingKind

T_BASE_MS = 1_700_000_000_000


@dataclass(frozen=True)
class TrialResult:
    """What the detector did on one trial.

    Attributes:
        suspected: ``FALL_SUSPECTED`` findings during the trial.
        recovered: ``FALL_CANCELLED`` findings with outcome ``RECOVERED``.
        first_delay_ms: Impact to ``FALL_SUSPECTED`` (detection time) of the first suspected
            fall, -1 if none.
        first_impact_s: Impact time of the first suspected fall from the trial start, -1.0 if
            none.
        confirmed_impacts_s: Impact time of every ``FALL_CONFIRMED`` (including after the
            trial's end), seconds from the trial start.
    """

    suspected: int
    recovered: int
    first_delay_ms: int
    first_impact_s: float
    confirmed_impacts_s: tuple[float, ...]

    @property
    def confirmed(self) -> int:
        """``FALL_CONFIRMED`` findings (including after the trial's end)."""
        return len(self.confirmed_impacts_s)


def run_trials(
    trials: Sequence[Trial], rate_hz: int, detector: FallDetector, *, drain: bool = True
) -> tuple[list[TrialResult], dict[int, list[FallEvidence]]]:
    """Stream ``trials`` through ``detector`` in 1 s bursts, all at once.

    Args:
        trials: Recordings at ``rate_hz``.
        rate_hz: Sample rate of every trial.
        detector: A fresh detector (its state is used as the devices' state).
        drain: Keep ticking after the last sample until the confirmation windows end.

    Returns:
        One result per trial, and the evidence of every suspected fall per trial index.
    """
    n = len(trials)
    lens = np.array([t.acc.shape[0] for t in trials], np.int64)
    max_len = int(lens.max()) if n else 0
    acc = np.zeros((n, max_len, 3), np.float32)
    for i, t in enumerate(trials):
        acc[i, : t.acc.shape[0]] = t.acc
    ids = [str(i) for i in range(n)]
    suspected = np.zeros(n, np.int64)
    recovered = np.zeros(n, np.int64)
    delay = np.full(n, -1, np.int64)
    impact_s = np.full(n, -1.0)
    confirmed_s: dict[int, list[float]] = {}
    evid: dict[int, list[FallEvidence]] = {}
    ticks = math.ceil(max_len / rate_hz)
    if drain:
        ticks += math.ceil(detector.config.confirm_s + detector.config.no_data_grace_s) + 2
    for k in range(ticks):
        lo = k * rate_hz
        length = np.clip(lens - lo, 0, rate_hz).astype(np.int32)
        rows = np.nonzero(length > 0)[0]
        t0 = T_BASE_MS + k * 1000
        batch = FallBatch(
            device_ids=[ids[i] for i in rows],
            resident_ids=[None] * rows.size,
            t0_ms=np.full(rows.size, t0, np.int64),
            rate_hz=rate_hz,
            samples=acc[rows, lo : lo + rate_hz],
            lengths=length[rows],
        )
        # The tick ends when its last sample arrives: that is "now" for the detector.
        for f in detector.process(batch, now_ms=t0 + 1000):
            i = int(f.device_id)
            if f.kind is FindingKind.FALL_SUSPECTED:
                suspected[i] += 1
                assert isinstance(f.evidence, FallEvidence)  # noqa: S101 - kind implies it
                evid.setdefault(i, []).append(f.evidence)
                if delay[i] < 0:
                    delay[i] = f.detected_ms - f.ts_ms
                    impact_s[i] = (f.ts_ms - T_BASE_MS) / 1000
            elif f.kind is FindingKind.FALL_CONFIRMED:
                confirmed_s.setdefault(i, []).append((f.ts_ms - T_BASE_MS) / 1000)
            elif (
                f.kind is FindingKind.FALL_CANCELLED
                and isinstance(f.evidence, FallOutcomeEvidence)
                and f.evidence.outcome is FallOutcome.RECOVERED
            ):
                recovered[i] += 1
    results = [
        TrialResult(
            int(suspected[i]),
            int(recovered[i]),
            int(delay[i]),
            float(impact_s[i]),
            tuple(confirmed_s.get(i, ())),
        )
        for i in range(n)
    ]
    return results, evid
