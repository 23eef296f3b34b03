"""Fall detection from accelerometer bursts of many devices at once.

The ingester calls :meth:`FallDetector.process` about once a second with a :class:`FallBatch`:
the new samples of every device that sent some in that tick, padded into one array. The detector
keeps a small ring buffer per device (12 s of samples plus a few counters) in a
:class:`FallStateStore`, which the ingester can persist with :meth:`FallStateStore.to_bytes` /
:meth:`FallStateStore.export_device` and restore after a restart.

The algorithm, per device (but computed for all devices of a call as whole arrays):

1. **Candidate**: the first sample whose magnitude ``|a|`` exceeds ``candidate_g``. The impact is
   the largest magnitude in the ``merge_s`` after it (falls bounce; one fall is one candidate).
2. **Context**, once ``post_end_s`` of signal after the impact has arrived:
   peak ``|a|``; *impact intensity*, the mean of ``| |a| - 1 g |`` over the second centred on the
   impact (a fall dissipates much more energy than sitting or lying down); *orientation change*,
   the angle between the gravity direction before the fall (mean acceleration from
   ``pre_start_s`` to ``pre_end_s`` before the impact) and after it (``post_start_s`` to
   ``post_end_s``); *stillness*, the standard deviation of ``|a|`` after the impact.
3. **Decision**: ``peak >= peak_g and intensity >= intensity_g and orientation change >=
   orientation_deg and stillness <= stillness_g`` gives a ``FALL_SUSPECTED`` finding (HIGH) with
   its evidence and the signal around the impact. This opens a confirmation window.
4. **Confirmation window** of ``confirm_s``: the wearer can cancel from the device
   (:func:`detectors.events.device_event_findings`), or the detector cancels when the wearer clearly
   recovered (moving again with the gravity direction back within ``recover_deg`` of the one
   before the fall). Otherwise, when the window ends, ``FALL_CONFIRMED`` (EMERGENCY), with the
   outcome ``LYING_STILL``, ``MOVING_NOT_RECOVERED`` or ``NO_DATA`` (the device went silent).

Only one Python loop runs per call: over the distinct sample rates in the batch (and a couple of
catch-up passes when one burst holds two candidates). Everything else is array work with masks.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from detectors.events import DeviceEventKind, sos_finding
from detectors.fall_config import FallConfig
from detectors.fall_features import (
    FallFeatures,
    ImpactWindows,
    angle_deg,
    fall_features,
    masked_mean_vec,
    masked_std,
    take_row,
)
from detectors.fall_input import MAX_RATE_HZ, MIN_RATE_HZ, FallBatch
from detectors.fall_state import NONE, SAMPLE, FallStateStore, RateTable
from detectors.findings import (
    DetectorInputError,
    DeviceEventEvidence,
    FallEvidence,
    FallOutcome,
    FallOutcomeEvidence,
    Finding,
    FindingKind,
    Severity,
)

__all__ = [
    "MAX_RATE_HZ",
    "MIN_RATE_HZ",
    "DeviceEventKind",
    "FallBatch",
    "FallConfig",
    "FallDetector",
    "FallFeatures",
    "FallStateStore",
    "fall_features",
    "sos_finding",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
B8 = npt.NDArray[np.bool_]


def _finding(
    kind: FindingKind,
    *,
    severity: Severity,
    device_id: str,
    resident_id: str | None,
    ts_ms: int,
    now_ms: int,
    evidence: FallEvidence | FallOutcomeEvidence | DeviceEventEvidence,
) -> Finding:
    return Finding(kind, severity, device_id, resident_id, ts_ms, now_ms, evidence)


class FallDetector:
    """Vectorised fall detector over many devices.

    Example:
        >>> det = FallDetector()
        >>> findings = det.process(batch, now_ms=1_700_000_000_000)  # doctest: +SKIP

    Attributes:
        config: Thresholds and windows.
        store: Per-device state; persist it with ``store.to_bytes()``.
    """

    def __init__(self, config: FallConfig | None = None, store: FallStateStore | None = None):
        self.config = config or (store.config if store is not None else FallConfig())
        self.store = store or FallStateStore(self.config)
        if self.store.config != self.config:
            raise ValueError(
                "FallDetector config differs from its store's config; expected the same "
                "FallConfig (ring sizes depend on it)."
            )
        self._residents: dict[str, str | None] = {}
        self.candidates: list[tuple[str, FallFeatures]] | None = None

    def record_candidates(self, on: bool = True) -> None:
        """Keep the features of every analysed candidate in ``self.candidates`` (evaluation)."""
        self.candidates = [] if on else None

    def process(self, batch: FallBatch, now_ms: int) -> list[Finding]:
        """Feed one tick of bursts; return the findings it produces.

        Args:
            batch: New samples of the devices that sent some this tick.
            now_ms: Epoch milliseconds of the call (used for the ``detected_ms`` of findings
                and to confirm windows of devices that went silent).

        Returns:
            ``FALL_SUSPECTED``, ``FALL_CONFIRMED`` and ``FALL_CANCELLED`` findings, in device order
            of the batch, then confirmations of silent devices.

        Raises:
            DetectorInputError: If a burst is longer than ``max_burst_s``.
        """
        out: list[Finding] = []
        n = len(batch.device_ids)
        for i, dev in enumerate(batch.device_ids):
            self._residents[dev] = batch.resident_ids[i]
        if n:
            rates = batch.rates
            too_long = batch.lengths > np.round(self.config.max_burst_s * rates)
            if np.any(too_long):
                devs = [batch.device_ids[i] for i in np.nonzero(too_long)[0][:5]]
                raise DetectorInputError(
                    f"FallBatch bursts of {devs} are longer than max_burst_s="
                    f"{self.config.max_burst_s} s; expected shorter bursts (split them)."
                )
            for rate in np.unique(rates).tolist():
                sel = np.nonzero(rates == rate)[0]
                out.extend(self._process_rate(batch, sel, int(rate), now_ms))
        out.extend(self._expire_silent(now_ms, set(batch.device_ids)))
        return out

    def _process_rate(
        self, batch: FallBatch, sel: npt.NDArray[np.intp], rate: int, now_ms: int
    ) -> list[Finding]:
        cfg = self.config
        store = self.store
        dev_ids = [batch.device_ids[i] for i in sel]
        rows = store.rows_for(dev_ids, rate)
        tab = store.table(rate)
        ring = tab.ring
        period = 1000.0 / rate
        lengths = batch.lengths[sel].astype(np.int64)
        t0 = batch.t0_ms[sel].astype(np.float64)
        width = int(lengths.max()) if lengths.size else 0
        if sel.size == len(batch.device_ids):
            samples = batch.samples[:, :width]  # one rate in the batch: a view, no copy
        else:
            samples = batch.samples[sel, :width]

        # 1. Continuity: a gap or clock jump restarts the buffer (the confirmation stays).
        n_seen = tab.n_seen[rows]
        expected = tab.t0_abs[rows] + n_seen * period
        restart = (n_seen == 0) | (np.abs(t0 - expected) > cfg.max_gap_ms)
        if np.any(restart):
            r = rows[restart]
            tab.n_seen[r] = 0
            tab.t0_abs[r] = t0[restart]
            tab.scan_from[r] = 0
            tab.cand_first[r] = NONE
            n_seen = tab.n_seen[rows]

        # 2. Append the new samples to the ring buffers (only the new samples are touched).
        max_n = samples.shape[1]
        valid_new = np.arange(max_n)[None, :] < lengths[:, None]
        mag_new = np.sqrt(np.einsum("ijk,ijk->ij", samples, samples))
        flat = tab.flat_index(rows, n_seen, max_n)
        src = np.ascontiguousarray(samples).reshape(-1, 3).view(SAMPLE).reshape(-1)
        if np.all(lengths == max_n):
            # The usual tick (every burst full length): no compress needed.
            tab.samples[flat.ravel()] = src
            tab.mag.reshape(-1)[flat.ravel()] = mag_new.ravel()
        else:
            tab.samples[flat[valid_new]] = src[valid_new.ravel()]
            tab.mag.reshape(-1)[flat[valid_new]] = mag_new[valid_new]
        old_seen = n_seen
        n_seen = n_seen + lengths
        tab.n_seen[rows] = n_seen

        out: list[Finding] = []
        # 3. Candidates and their analysis. Cheapest test first: most devices have no sample
        # above candidate_g and nothing left to scan, and are skipped entirely.
        hot_new = (np.where(valid_new, mag_new, 0) > cfg.candidate_g).any(axis=1)
        busy = hot_new | (tab.scan_from[rows] < old_seen) | (tab.cand_first[rows] != NONE)
        active = np.nonzero(busy)[0]
        merge = max(1, cfg.samples(cfg.merge_s, rate))
        need = merge + cfg.samples(cfg.post_end_s, rate)
        pre = cfg.samples(cfg.pre_start_s, rate)
        for _ in range(1 + math.ceil(cfg.max_burst_s / cfg.merge_s)):
            if active.size == 0:
                break
            ra = rows[active]
            seen = n_seen[active]
            # Scan for a first crossing only where no candidate is pending.
            idle = np.nonzero(tab.cand_first[ra] == NONE)[0]
            ri, si = ra[idle], seen[idle]
            lo = np.maximum(tab.scan_from[ri], np.maximum(si - ring, 0))
            span = int(np.max(si - lo)) if idle.size else 0
            if span > 0:
                inside = np.arange(span)[None, :] < (si - lo)[:, None]
                m = tab.mag.reshape(-1)[tab.flat_index(ri, lo, span)]
                hit = inside & (m > cfg.candidate_g)
                found = hit.any(axis=1)
                first = lo + np.argmax(hit, axis=1)
                tab.cand_first[ri[found]] = first[found]
                tab.scan_from[ri[~found]] = si[~found]
            cand = tab.cand_first[ra]
            ready = (cand != NONE) & (seen >= cand + need)
            if not ready.any():
                break
            out.extend(
                self._analyse(
                    batch,
                    sel=sel,
                    idx=active[ready],
                    rows=rows,
                    n_seen=n_seen,
                    rate=rate,
                    now_ms=now_ms,
                    pre=pre,
                )
            )
            rd = ra[ready]
            tab.scan_from[rd] = tab.cand_first[rd] + merge
            tab.cand_first[rd] = NONE
            active = active[ready]

        # 4. Open confirmation windows: recovery cancels, the end of the window confirms.
        out.extend(
            self._check_windows(batch, sel=sel, rows=rows, n_seen=n_seen, rate=rate, now_ms=now_ms)
        )
        return out

    def _analyse(
        self,
        batch: FallBatch,
        *,
        sel: npt.NDArray[np.intp],
        idx: npt.NDArray[np.intp],
        rows: I64,
        n_seen: I64,
        rate: int,
        now_ms: int,
        pre: int,
    ) -> list[Finding]:
        cfg = self.config
        tab = self.store.table(rate)
        r = rows[idx]
        first = tab.cand_first[r]
        merge = max(1, cfg.samples(cfg.merge_s, rate))
        post = cfg.samples(cfg.post_end_s, rate)
        # Everything scanned for each candidate: its magnitudes, and the impact (the largest
        # magnitude in the merge_s after the first crossing).
        seen = n_seen[idx]
        span = pre + merge + post
        span_valid = tab.held(first - pre, span, seen)
        span_mag = np.where(
            span_valid, tab.mag.reshape(-1)[tab.flat_index(r, first - pre, span)], 0
        )
        j = np.argmax(span_mag[:, pre : pre + merge], axis=1)
        if self.candidates is None:
            # Cheapest tests first: peak and intensity need only the magnitudes; the context
            # (orientation, stillness, the model's features) only for what passes.
            half = cfg.samples(0.5, rate)
            near = j[:, None] + np.arange(pre - half, pre + half)
            around = np.take_along_axis(span_mag, near, 1)
            ok = np.take_along_axis(span_valid, near, 1)
            intensity = np.abs(around - 1.0).sum(axis=1, where=ok) / np.maximum(ok.sum(axis=1), 1)
            peak = span_mag[np.arange(j.size), pre + j]
            quick = (peak >= cfg.peak_g) & (intensity >= cfg.intensity_g)
            quick &= tab.susp_deadline_ms[r] == NONE
            if not quick.any():
                return []
            idx, r, first, j, seen = idx[quick], r[quick], first[quick], j[quick], seen[quick]
            span_mag, span_valid = span_mag[quick], span_valid[quick]
        # The signal aligned on each impact, from pre_start_s before it to post_end_s after it.
        impact_abs = first + j
        valid = tab.held(impact_abs - pre, pre + post, seen)
        flat = tab.flat_index(r, impact_abs - pre, pre + post)
        win = np.take(tab.buf.reshape(-1, 3), flat, axis=0)  # 3x faster than buf[flat] here
        mag = tab.mag.reshape(-1)[flat]
        if not valid.all():
            win[~valid] = 0.0
            mag[~valid] = 0.0
        windows = ImpactWindows(
            win=win,
            mag=mag,
            valid=valid,
            impact=pre,
            span_mag=span_mag,
            span_valid=span_valid,
            span_impact=(pre + j).astype(np.int64),
        )
        feats, fire = self._decide(windows, rate=rate)
        if self.candidates is not None:
            self._record([batch.device_ids[sel[i]] for i in idx.tolist()], feats)
        fire &= tab.susp_deadline_ms[r] == NONE
        out: list[Finding] = []
        period = 1000.0 / rate
        for i in np.nonzero(fire)[0].tolist():
            row = int(r[i])
            dev = batch.device_ids[sel[idx[i]]]
            impact_ms = round(float(tab.t0_abs[row]) + int(impact_abs[i]) * period)
            wstart_abs = int(impact_abs[i]) - pre
            window = feats.window[i].copy()
            evidence = FallEvidence(
                peak_g=float(feats.peak_g[i]),
                impact_intensity_g=float(feats.intensity_g[i]),
                orientation_change_deg=float(feats.orientation_deg[i]),
                stillness_g=float(feats.stillness_g[i]),
                free_fall_min_g=float(feats.free_fall_min_g[i]),
                impact_ts_ms=impact_ms,
                window=window,
                window_t0_ms=round(float(tab.t0_abs[row]) + wstart_abs * period),
                rate_hz=rate,
            )
            tab.susp_impact_ms[row] = impact_ms
            tab.susp_deadline_ms[row] = impact_ms + round(cfg.confirm_s * 1000)
            tab.susp_auto[row] = True
            tab.pre_vec[row] = feats.pre_vec[i]
            out.append(
                _finding(
                    FindingKind.FALL_SUSPECTED,
                    severity=Severity.HIGH,
                    device_id=dev,
                    resident_id=batch.resident_ids[sel[idx[i]]],
                    ts_ms=impact_ms,
                    now_ms=now_ms,
                    evidence=evidence,
                )
            )
        return out

    def _decide(self, windows: ImpactWindows, *, rate: int) -> tuple[FallFeatures, B8]:
        """Features of candidates and which of them are suspected falls (the decision stage).

        Args:
            windows: The signal around each candidate's impact.
            rate: Sample rate in Hz.

        Returns:
            The features (evidence of the finding) and the boolean ``(k,)`` mask of falls.
        """
        feats = fall_features(windows, rate=rate, config=self.config)
        return feats, feats.decide(self.config)

    def _record(self, device_ids: list[str], feats: FallFeatures) -> None:
        """Keep the features of analysed candidates (evaluation and training only)."""
        assert self.candidates is not None  # noqa: S101 - called only while recording
        for i, dev in enumerate(device_ids):
            self.candidates.append((dev, take_row(feats, i)))

    def _recovering(self, win: F32, mag: F32, valid: B8, *, std: F32, vec: F32, pre_vec: F32) -> B8:
        """Which open windows show the wearer recovered, from the last ``recover_s`` of signal.

        On the waist: moving (std of ``|a|`` at least ``recover_std_g``) with the gravity
        direction back within ``recover_deg`` of the one before the fall (upright again).

        Args:
            win: float32 ``(k, L, 3)`` last ``recover_s`` of signal in g.
            mag: float32 ``(k, L)`` its magnitude in g.
            valid: bool ``(k, L)``, False where missing.
            std: float32 ``(k,)`` standard deviation of ``mag`` over the valid samples.
            vec: float32 ``(k, 3)`` mean acceleration (gravity direction) over the valid samples.
            pre_vec: float32 ``(k, 3)`` gravity direction before the fall (NaN if unknown).

        Returns:
            Boolean ``(k,)``; NaN directions never count as recovered.
        """
        upright = angle_deg(pre_vec, vec) <= self.config.recover_deg
        out: B8 = upright & (std >= self.config.recover_std_g)
        return out

    def _check_windows(
        self,
        batch: FallBatch,
        *,
        sel: npt.NDArray[np.intp],
        rows: I64,
        n_seen: I64,
        rate: int,
        now_ms: int,
    ) -> list[Finding]:
        cfg = self.config
        tab = self.store.table(rate)
        open_ = np.nonzero(tab.susp_deadline_ms[rows] != NONE)[0]
        if open_.size == 0:
            return []
        period = 1000.0 / rate
        r = rows[open_]
        seen = n_seen[open_]
        length = cfg.samples(cfg.recover_s, rate)
        valid = tab.held(seen - length, length, seen)
        flat = tab.flat_index(r, seen - length, length)
        win = np.take(tab.buf.reshape(-1, 3), flat, axis=0)
        mag = tab.mag.reshape(-1)[flat]
        std = masked_std(mag, valid)
        vec = masked_mean_vec(win, valid)
        t_first = tab.t0_abs[r] + (seen - length) * period
        t_end = tab.t0_abs[r] + seen * period
        impact = tab.susp_impact_ms[r]
        after_fall = valid.all(axis=1) & (t_first >= impact + cfg.samples(cfg.post_end_s, 1000))
        moving = self._recovering(win, mag, valid, std=std, vec=vec, pre_vec=tab.pre_vec[r])
        recovered = after_fall & tab.susp_auto[r] & moving
        deadline = tab.susp_deadline_ms[r]
        ended = ~recovered & (t_end >= deadline)
        out: list[Finding] = []
        for i in np.nonzero(recovered | ended)[0].tolist():
            row = int(r[i])
            dev = batch.device_ids[sel[open_[i]]]
            if recovered[i]:
                outcome = FallOutcome.RECOVERED
            elif std[i] < cfg.still_g:
                outcome = FallOutcome.LYING_STILL
            else:
                outcome = FallOutcome.MOVING_NOT_RECOVERED
            out.append(self._outcome(dev, row, tab, outcome, now_ms))
        return out

    def _outcome(
        self, dev: str, row: int, tab: RateTable, outcome: FallOutcome, now_ms: int
    ) -> Finding:
        impact = int(tab.susp_impact_ms[row])
        tab.susp_impact_ms[row] = NONE
        tab.susp_deadline_ms[row] = NONE
        tab.susp_auto[row] = False
        tab.pre_vec[row] = np.nan
        cancelled = outcome in (FallOutcome.RECOVERED, FallOutcome.CANCELLED_BY_WEARER)
        return _finding(
            FindingKind.FALL_CANCELLED if cancelled else FindingKind.FALL_CONFIRMED,
            severity=Severity.INFO if cancelled else Severity.EMERGENCY,
            device_id=dev,
            resident_id=self._residents.get(dev),
            ts_ms=impact,
            now_ms=now_ms,
            evidence=FallOutcomeEvidence(impact, outcome, self.config.confirm_s),
        )

    def _expire_silent(self, now_ms: int, fed: set[str]) -> list[Finding]:
        grace = round(self.config.no_data_grace_s * 1000)
        out: list[Finding] = []
        for rate, tab in self._tables_items():
            late = np.nonzero(
                (tab.susp_deadline_ms[: tab.used] != NONE)
                & (tab.susp_deadline_ms[: tab.used] + grace <= now_ms)
            )[0]
            if late.size == 0:
                continue
            late_rows = set(late.tolist())
            for dev, row in list(self.store.rows_at(rate).items()):
                if row in late_rows and dev not in fed:
                    out.append(self._outcome(dev, row, tab, FallOutcome.NO_DATA, now_ms))
        return out

    def _tables_items(self) -> list[tuple[int, RateTable]]:
        return list(self.store._tables.items())

    def note_resident(self, device_id: str, resident_id: str | None) -> None:
        """Remember who wears the device (for findings of later calls)."""
        self._residents[device_id] = resident_id

    def open_device_fall(self, device_id: str, ts_ms: int) -> None:
        """Open a confirmation window for a fall the device saw itself, unless one is open.

        The window has no automatic recovery (the posture before is unknown); only the wearer's
        cancel or its end closes it.
        """
        where = self.store.where(device_id)
        if where is None:
            self.store.rows_for([device_id], MIN_RATE_HZ)
            where = self.store.where(device_id)
            assert where is not None  # noqa: S101 - just created
        tab = self.store.table(where[0])
        row = where[1]
        if tab.susp_deadline_ms[row] == NONE:
            tab.susp_impact_ms[row] = ts_ms
            tab.susp_deadline_ms[row] = ts_ms + round(self.config.confirm_s * 1000)
            tab.susp_auto[row] = False

    def cancel_by_wearer(self, device_id: str, now_ms: int) -> Finding | None:
        """Close the device's open confirmation window as cancelled by the wearer.

        Returns:
            The ``FALL_CANCELLED`` finding, or None when no window is open.
        """
        where = self.store.where(device_id)
        if where is None:
            return None
        tab = self.store.table(where[0])
        if tab.susp_deadline_ms[where[1]] == NONE:
            return None
        return self._outcome(device_id, where[1], tab, FallOutcome.CANCELLED_BY_WEARER, now_ms)
