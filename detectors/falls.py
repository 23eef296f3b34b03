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
   (:meth:`FallDetector.device_events`), or the detector cancels when the wearer clearly
   recovered (moving again with the gravity direction back within ``recover_deg`` of the one
   before the fall). Otherwise, when the window ends, ``FALL_CONFIRMED`` (EMERGENCY), with the
   outcome ``LYING_STILL``, ``MOVING_NOT_RECOVERED`` or ``NO_DATA`` (the device went silent).

Only one Python loop runs per call: over the distinct sample rates in the batch (and a couple of
catch-up passes when one burst holds two candidates). Everything else is array work with masks.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

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

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
B8 = npt.NDArray[np.bool_]

MIN_RATE_HZ = 25
MAX_RATE_HZ = 100
_NONE = -1
_MAGIC = b"AXF1"
_HEADER = struct.Struct("<4sHI q d q q q q q 3f")


@dataclass(frozen=True)
class FallConfig:
    """Thresholds and windows of the fall detector.

    The defaults were chosen by subject-wise cross-validation on SisFall (see
    ``docs/detection.md``); ``intensity_g`` is the main threshold (the trade-off curve sweeps it).

    Attributes:
        candidate_g: Magnitude in g that opens a candidate impact.
        peak_g: Smallest peak magnitude in g for a fall.
        intensity_g: Smallest mean ``| |a| - 1 |`` over 1 s around the impact, in g.
        orientation_deg: Smallest change of the gravity direction, before vs after, in degrees.
        stillness_g: Largest standard deviation of ``|a|`` after the impact, in g.
        merge_s: Seconds after the first crossing searched for the impact peak.
        pre_start_s: Start of the "before" window, seconds before the impact.
        pre_end_s: End of the "before" window, seconds before the impact.
        post_start_s: Start of the "after" window, seconds after the impact.
        post_end_s: End of the "after" window, seconds after the impact; the suspected finding
            comes this long after the impact (plus up to one burst).
        confirm_s: Length of the confirmation window after the impact, in seconds.
        recover_s: Seconds of signal used to recognise recovery.
        recover_deg: Gravity direction within this angle of the one before the fall counts as
            back on one's feet.
        recover_std_g: Standard deviation of ``|a|`` above this counts as moving (walking).
        still_g: Standard deviation of ``|a|`` below this at the end of the window counts as
            lying still.
        no_data_grace_s: After the window ends, a silent device is confirmed after this delay.
        max_burst_s: Longest burst accepted in one call, in seconds (sizes the ring buffer).
        max_gap_ms: A burst whose start differs from the expected one by more than this
            restarts the device's buffer (a gap or a clock jump).
    """

    candidate_g: float = 1.5
    peak_g: float = 1.5
    intensity_g: float = 0.25
    orientation_deg: float = 40.0
    stillness_g: float = 0.5
    merge_s: float = 1.0
    pre_start_s: float = 3.5
    pre_end_s: float = 1.5
    post_start_s: float = 1.0
    post_end_s: float = 2.5
    confirm_s: float = 30.0
    recover_s: float = 2.0
    recover_deg: float = 30.0
    recover_std_g: float = 0.1
    still_g: float = 0.05
    no_data_grace_s: float = 5.0
    max_burst_s: float = 5.0
    max_gap_ms: float = 500.0

    def __post_init__(self) -> None:
        if not 0 < self.pre_end_s < self.pre_start_s:
            raise ValueError(
                f"FallConfig pre window ({self.pre_start_s}, {self.pre_end_s}) s is invalid; "
                "expected 0 < pre_end_s < pre_start_s."
            )
        if not 0 <= self.post_start_s < self.post_end_s:
            raise ValueError(
                f"FallConfig post window ({self.post_start_s}, {self.post_end_s}) s is invalid; "
                "expected 0 <= post_start_s < post_end_s."
            )
        if self.candidate_g > self.peak_g:
            raise ValueError(
                f"FallConfig candidate_g={self.candidate_g} is above peak_g={self.peak_g}; "
                "expected candidate_g <= peak_g, or falls with smaller peaks are never seen."
            )

    def samples(self, seconds: float, rate_hz: int) -> int:
        """Number of samples in ``seconds`` at ``rate_hz`` (rounded)."""
        return round(seconds * rate_hz)

    def ring_len(self, rate_hz: int) -> int:
        """Ring buffer length in samples: the analysis window plus the longest burst."""
        return self.samples(
            self.pre_start_s + self.merge_s + self.post_end_s + self.max_burst_s, rate_hz
        )


def _as_rate_array(rate_hz: int | npt.ArrayLike, n: int) -> I32:
    rate = np.asarray(rate_hz)
    if rate.ndim == 0:
        rate = np.full(n, rate)
    if rate.shape != (n,):
        raise DetectorInputError(
            f"FallBatch rate_hz has shape {rate.shape}; expected a scalar or shape ({n},)."
        )
    if rate.dtype.kind == "f":
        if not np.all(np.isfinite(rate)) or np.any(rate != np.round(rate)):
            raise DetectorInputError(
                f"FallBatch rate_hz has values {np.unique(rate)[:5].tolist()}; "
                "expected whole numbers of Hz."
            )
    elif rate.dtype.kind not in "iu":
        raise DetectorInputError(f"FallBatch rate_hz has dtype {rate.dtype}; expected integers.")
    bad = (rate < MIN_RATE_HZ) | (rate > MAX_RATE_HZ)
    if np.any(bad):
        raise DetectorInputError(
            f"FallBatch rate_hz has {np.unique(rate[bad])[:5].tolist()} Hz; expected "
            f"{MIN_RATE_HZ}..{MAX_RATE_HZ} Hz."
        )
    return rate.astype(np.int32)


@dataclass(frozen=True, eq=False)
class FallBatch:
    """The accelerometer bursts of one tick, for many devices, validated once.

    Attributes:
        device_ids: One id per row, unique within the batch.
        resident_ids: Resident wearing each device (None if unassigned), same length.
        t0_ms: int64 ``(n,)``, epoch milliseconds of each burst's first sample.
        rate_hz: Sample rate per row, 25..100 Hz; a scalar is broadcast. Rows of different rates
            are processed in groups, one group per rate.
        samples: float32 ``(n, max_n, 3)``, acceleration in g (x, y, z); row ``i`` holds
            ``lengths[i]`` samples, the rest is padding (ignored, may be anything finite or not).
        lengths: int32 ``(n,)``, number of valid samples per row, ``0 <= lengths <= max_n``.

    Raises:
        DetectorInputError: On a wrong shape, dtype, rate, duplicate device id or a NaN/inf
            among the valid samples; the message names the value and what was expected.
    """

    device_ids: Sequence[str]
    resident_ids: Sequence[str | None]
    t0_ms: I64
    rate_hz: I32 | int
    samples: F32
    lengths: I32

    def __post_init__(self) -> None:
        n = len(self.device_ids)
        if len(self.resident_ids) != n:
            raise DetectorInputError(
                f"FallBatch has {len(self.resident_ids)} resident_ids for {n} device_ids; "
                "expected one per device."
            )
        if len(set(self.device_ids)) != n:
            raise DetectorInputError(
                "FallBatch device_ids has duplicates; expected each device once per call "
                "(concatenate its bursts)."
            )
        samples = np.asarray(self.samples)
        if samples.ndim != 3 or samples.shape[0] != n or samples.shape[2] != 3:
            raise DetectorInputError(
                f"FallBatch samples has shape {samples.shape}; expected ({n}, max_n, 3)."
            )
        if samples.dtype != np.float32:
            raise DetectorInputError(
                f"FallBatch samples has dtype {samples.dtype}; expected float32 (g)."
            )
        t0 = np.asarray(self.t0_ms)
        if t0.shape != (n,) or t0.dtype != np.int64:
            raise DetectorInputError(
                f"FallBatch t0_ms has shape {t0.shape} and dtype {t0.dtype}; "
                f"expected int64 of shape ({n},)."
            )
        lengths = np.asarray(self.lengths)
        if lengths.shape != (n,) or lengths.dtype.kind not in "iu":
            raise DetectorInputError(
                f"FallBatch lengths has shape {lengths.shape} and dtype {lengths.dtype}; "
                f"expected integers of shape ({n},)."
            )
        max_n = samples.shape[1]
        if np.any((lengths < 0) | (lengths > max_n)):
            raise DetectorInputError(
                f"FallBatch lengths has values outside 0..{max_n}: "
                f"{lengths[(lengths < 0) | (lengths > max_n)][:5].tolist()}."
            )
        rate = _as_rate_array(self.rate_hz, n)
        valid = np.arange(max_n)[None, :] < lengths[:, None]
        finite = np.isfinite(samples).all(axis=2)
        bad_rows = np.nonzero((valid & ~finite).any(axis=1))[0]
        if bad_rows.size:
            names = [self.device_ids[i] for i in bad_rows[:5]]
            raise DetectorInputError(
                f"FallBatch samples of devices {names} contain NaN or inf; expected finite g."
            )
        object.__setattr__(self, "rate_hz", rate)
        object.__setattr__(self, "lengths", lengths.astype(np.int32))

    @property
    def rates(self) -> I32:
        """Sample rate per row (validated, always an array)."""
        rate = self.rate_hz
        assert not isinstance(rate, int)  # noqa: S101 - __post_init__ made it an array
        return rate

    @classmethod
    def from_bursts(
        cls,
        bursts: Iterable[tuple[str, str | None, int, int, npt.ArrayLike]],
    ) -> FallBatch:
        """Pad ragged bursts into a batch.

        Args:
            bursts: ``(device_id, resident_id, t0_ms, rate_hz, samples (n, 3) in g)`` per device.

        Returns:
            The validated batch.
        """
        items = list(bursts)
        arrays = [np.asarray(b[4], dtype=np.float32).reshape(-1, 3) for b in items]
        lengths = np.array([a.shape[0] for a in arrays], dtype=np.int32)
        max_n = int(lengths.max()) if items else 0
        samples = np.zeros((len(items), max_n, 3), dtype=np.float32)
        for i, a in enumerate(arrays):
            samples[i, : a.shape[0]] = a
        return cls(
            device_ids=[b[0] for b in items],
            resident_ids=[b[1] for b in items],
            t0_ms=np.array([b[2] for b in items], dtype=np.int64),
            rate_hz=np.array([b[3] for b in items], dtype=np.int32),
            samples=samples,
            lengths=lengths,
        )


@dataclass
class _RateTable:
    """State rows of all devices sending at one rate (structure of arrays)."""

    rate: int
    ring: int
    buf: F32 = field(init=False)
    mag: F32 = field(init=False)
    n_seen: I64 = field(init=False)
    t0_abs: F64 = field(init=False)
    scan_from: I64 = field(init=False)
    cand_first: I64 = field(init=False)
    susp_impact_ms: I64 = field(init=False)
    susp_deadline_ms: I64 = field(init=False)
    susp_auto: B8 = field(init=False)
    pre_vec: F32 = field(init=False)
    used: int = 0

    def __post_init__(self) -> None:
        self._alloc(16)

    def _alloc(self, cap: int) -> None:
        self.buf = np.zeros((cap, self.ring, 3), np.float32)
        self.mag = np.zeros((cap, self.ring), np.float32)
        self.n_seen = np.zeros(cap, np.int64)
        self.t0_abs = np.zeros(cap, np.float64)
        self.scan_from = np.zeros(cap, np.int64)
        self.cand_first = np.full(cap, _NONE, np.int64)
        self.susp_impact_ms = np.full(cap, _NONE, np.int64)
        self.susp_deadline_ms = np.full(cap, _NONE, np.int64)
        self.susp_auto = np.zeros(cap, np.bool_)
        self.pre_vec = np.full((cap, 3), np.nan, np.float32)

    _FIELDS = (
        "buf",
        "mag",
        "n_seen",
        "t0_abs",
        "scan_from",
        "cand_first",
        "susp_impact_ms",
        "susp_deadline_ms",
        "susp_auto",
        "pre_vec",
    )

    def add_rows(self, k: int) -> I64:
        cap = self.n_seen.shape[0]
        if self.used + k > cap:
            new_cap = max(2 * cap, self.used + k)
            old = {name: getattr(self, name) for name in self._FIELDS}
            self._alloc(new_cap)
            for name, arr in old.items():
                getattr(self, name)[:cap] = arr
        rows = np.arange(self.used, self.used + k, dtype=np.int64)
        self.used += k
        return rows

    def reset_rows(self, rows: I64) -> None:
        self.buf[rows] = 0
        self.mag[rows] = 0
        self.n_seen[rows] = 0
        self.t0_abs[rows] = 0
        self.scan_from[rows] = 0
        self.cand_first[rows] = _NONE
        self.susp_impact_ms[rows] = _NONE
        self.susp_deadline_ms[rows] = _NONE
        self.susp_auto[rows] = False
        self.pre_vec[rows] = np.nan


class FallStateStore:
    """Per-device state of the fall detector, kept as arrays grouped by sample rate.

    Per device: a ring buffer of the last ``FallConfig.ring_len`` samples (12 s, 7.2 kB at 50 Hz),
    the sample counter and clock, a pending candidate and a pending confirmation window. A device
    that changes rate starts a fresh buffer (its confirmation window is kept).

    Persist with :meth:`to_bytes` / :meth:`from_bytes` (all devices) or
    :meth:`export_device` / :meth:`import_device` (one device). The bytes hold no machine paths
    and no pickles.
    """

    def __init__(self, config: FallConfig | None = None) -> None:
        self.config = config or FallConfig()
        self._tables: dict[int, _RateTable] = {}
        self._where: dict[str, tuple[int, int]] = {}
        self._free: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._where

    def table(self, rate: int) -> _RateTable:
        tab = self._tables.get(rate)
        if tab is None:
            tab = _RateTable(rate, self.config.ring_len(rate))
            self._tables[rate] = tab
        return tab

    def rows_for(self, device_ids: Sequence[str], rate: int) -> I64:
        """Row of each device in the table of ``rate``, creating (or moving) rows as needed."""
        tab = self.table(rate)
        rows = np.empty(len(device_ids), np.int64)
        new: list[int] = []
        for i, dev in enumerate(device_ids):
            where = self._where.get(dev)
            if where is not None and where[0] == rate:
                rows[i] = where[1]
            else:
                new.append(i)
        if new:
            free = self._free.setdefault(rate, [])
            take = min(len(free), len(new))
            reused = [free.pop() for _ in range(take)]
            fresh = tab.add_rows(len(new) - take)
            targets = np.concatenate([np.array(reused, np.int64), fresh])
            tab.reset_rows(targets)
            for i, row in zip(new, targets.tolist(), strict=True):
                dev = device_ids[i]
                old = self._where.get(dev)
                if old is not None:
                    self._move_confirmation(old, tab, row)
                self._where[dev] = (rate, row)
                rows[i] = row
        return rows

    def _move_confirmation(self, old: tuple[int, int], tab: _RateTable, row: int) -> None:
        src = self._tables[old[0]]
        tab.susp_impact_ms[row] = src.susp_impact_ms[old[1]]
        tab.susp_deadline_ms[row] = src.susp_deadline_ms[old[1]]
        tab.susp_auto[row] = src.susp_auto[old[1]]
        tab.pre_vec[row] = src.pre_vec[old[1]]
        src.reset_rows(np.array([old[1]], np.int64))
        self._free.setdefault(old[0], []).append(old[1])

    def where(self, device_id: str) -> tuple[int, int] | None:
        """``(rate, row)`` of a device, None if unknown."""
        return self._where.get(device_id)

    def devices(self) -> list[str]:
        """Ids of all devices with state."""
        return list(self._where)

    def forget(self, device_id: str) -> None:
        """Drop a device's state (device removed from the system)."""
        where = self._where.pop(device_id, None)
        if where is not None:
            self._tables[where[0]].reset_rows(np.array([where[1]], np.int64))
            self._free.setdefault(where[0], []).append(where[1])

    def pending_confirmations(self) -> list[tuple[str, int, int]]:
        """``(device_id, impact_ts_ms, deadline_ms)`` of every open confirmation window."""
        out = []
        for dev, (rate, row) in self._where.items():
            tab = self._tables[rate]
            if tab.susp_deadline_ms[row] != _NONE:
                out.append((dev, int(tab.susp_impact_ms[row]), int(tab.susp_deadline_ms[row])))
        return out

    def export_device(self, device_id: str) -> bytes:
        """Serialise one device's state (about 7 kB at 50 Hz).

        Raises:
            KeyError: If the device has no state.
        """
        rate, row = self._where[device_id]
        tab = self._tables[rate]
        n = int(tab.n_seen[row])
        ring = tab.ring
        order = (np.arange(n - ring, n) % ring).astype(np.int64)
        header = _HEADER.pack(
            _MAGIC,
            rate,
            ring,
            n,
            float(tab.t0_abs[row]),
            int(tab.scan_from[row]),
            int(tab.cand_first[row]),
            int(tab.susp_impact_ms[row]),
            int(tab.susp_deadline_ms[row]),
            int(tab.susp_auto[row]),
            *(float(v) for v in tab.pre_vec[row]),
        )
        body: bytes = tab.buf[row][order].astype("<f4").tobytes()
        return header + body

    def import_device(self, device_id: str, data: bytes) -> None:
        """Restore one device's state from :meth:`export_device` bytes.

        Raises:
            DetectorInputError: If the bytes are not a fall state of this configuration.
        """
        if len(data) < _HEADER.size or data[:4] != _MAGIC:
            raise DetectorInputError(
                f"Fall state of device {device_id!r} has {len(data)} bytes without the "
                f"{_MAGIC!r} header; expected bytes from FallStateStore.export_device."
            )
        fields = _HEADER.unpack_from(data)
        rate, ring = int(fields[1]), int(fields[2])
        if rate < MIN_RATE_HZ or rate > MAX_RATE_HZ or ring != self.config.ring_len(rate):
            raise DetectorInputError(
                f"Fall state of device {device_id!r} has rate {rate} Hz and ring {ring}; "
                f"expected {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz and ring "
                f"{self.config.ring_len(rate) if MIN_RATE_HZ <= rate <= MAX_RATE_HZ else '?'}."
            )
        expected = _HEADER.size + ring * 12
        if len(data) != expected:
            raise DetectorInputError(
                f"Fall state of device {device_id!r} has {len(data)} bytes; expected {expected}."
            )
        self.forget(device_id)
        row = int(self.rows_for([device_id], rate)[0])
        tab = self._tables[rate]
        n = int(fields[3])
        order = (np.arange(n - ring, n) % ring).astype(np.int64)
        sig = np.frombuffer(data, dtype="<f4", offset=_HEADER.size).reshape(ring, 3)
        tab.buf[row][order] = sig
        tab.mag[row] = np.sqrt(np.einsum("ij,ij->i", tab.buf[row], tab.buf[row]))
        tab.n_seen[row] = n
        tab.t0_abs[row] = fields[4]
        tab.scan_from[row] = fields[5]
        tab.cand_first[row] = fields[6]
        tab.susp_impact_ms[row] = fields[7]
        tab.susp_deadline_ms[row] = fields[8]
        tab.susp_auto[row] = bool(fields[9])
        tab.pre_vec[row] = fields[10:13]

    def to_bytes(self) -> bytes:
        """Serialise all devices: a count, then ``(id length, id, state length, state)``."""
        parts = [struct.pack("<I", len(self._where))]
        for dev in self._where:
            name = dev.encode()
            state = self.export_device(dev)
            parts.append(struct.pack("<I", len(name)) + name + struct.pack("<I", len(state)))
            parts.append(state)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, config: FallConfig | None = None) -> FallStateStore:
        """Restore a store written by :meth:`to_bytes`.

        Raises:
            DetectorInputError: If the bytes are truncated or not a fall state store.
        """
        store = cls(config)
        try:
            (count,) = struct.unpack_from("<I", data, 0)
            pos = 4
            for _ in range(count):
                (ln,) = struct.unpack_from("<I", data, pos)
                dev = data[pos + 4 : pos + 4 + ln].decode()
                pos += 4 + ln
                (sl,) = struct.unpack_from("<I", data, pos)
                store.import_device(dev, data[pos + 4 : pos + 4 + sl])
                pos += 4 + sl
        except (struct.error, UnicodeDecodeError) as exc:
            raise DetectorInputError(
                f"Fall state store of {len(data)} bytes is truncated or corrupt; expected "
                "bytes from FallStateStore.to_bytes."
            ) from exc
        return store


def _angle_deg(u: F32, v: F32) -> F32:
    """Angle between row vectors, degrees; NaN where either is zero or NaN."""
    dot = np.einsum("ij,ij->i", u, v)
    nu = np.linalg.norm(u, axis=1)
    nv = np.linalg.norm(v, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (nu * nv)
    out: F32 = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).astype(np.float32)
    return out


def _masked_mean_vec(x: F32, mask: B8) -> F32:
    cnt = mask.sum(axis=1)
    tot = np.einsum("ijk,ij->ik", x, mask.astype(np.float32))
    with np.errstate(invalid="ignore", divide="ignore"):
        out: F32 = (tot / cnt[:, None]).astype(np.float32)
    return out


def _masked_std(x: F32, mask: B8) -> F32:
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
    pre_vec = _masked_mean_vec(win, pre)
    post_vec = _masked_mean_vec(win, post)
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
        orientation_deg=_angle_deg(pre_vec, post_vec),
        stillness_g=_masked_std(mag, post),
        free_fall_min_g=ff.astype(np.float32),
        impact_index=j,
        pre_vec=pre_vec,
        window=window.astype(np.float32),
        window_start=start.astype(np.int64),
    )


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


class DeviceEventKind:
    """Event names a device codec reports (strings, so codecs need not import this module)."""

    FALL = "fall"
    CANCEL = "cancel"
    SOS = "sos"


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
            tab.cand_first[r] = _NONE
            n_seen = tab.n_seen[rows]

        # 2. Append the new samples to the ring buffers (only the new samples are touched).
        max_n = samples.shape[1]
        valid_new = np.arange(max_n)[None, :] < lengths[:, None]
        mag_new = np.sqrt(np.einsum("ijk,ijk->ij", samples, samples))
        pos = (n_seen % ring)[:, None] + np.arange(max_n)[None, :]
        pos[pos >= ring] -= ring  # max_n <= ring, so one wrap at most
        rr = rows[:, None]
        # Flat indices into the ring buffers are much cheaper than 2-D fancy indexing.
        flat = rr * ring + pos
        if np.all(lengths == max_n):
            # The usual tick (every burst full length): no compress needed.
            tab.buf.reshape(-1, 3)[flat.ravel()] = samples.reshape(-1, 3)
            tab.mag.reshape(-1)[flat.ravel()] = mag_new.ravel()
        else:
            tab.buf.reshape(-1, 3)[flat[valid_new]] = samples[valid_new]
            tab.mag.reshape(-1)[flat[valid_new]] = mag_new[valid_new]
        old_seen = n_seen
        n_seen = n_seen + lengths
        tab.n_seen[rows] = n_seen

        out: list[Finding] = []
        # 3. Candidates and their analysis. Cheapest test first: most devices have no sample
        # above candidate_g and nothing left to scan, and are skipped entirely.
        hot_new = (np.where(valid_new, mag_new, 0) > cfg.candidate_g).any(axis=1)
        busy = hot_new | (tab.scan_from[rows] < old_seen) | (tab.cand_first[rows] != _NONE)
        active = np.nonzero(busy)[0]
        merge = max(1, cfg.samples(cfg.merge_s, rate))
        need = merge + cfg.samples(cfg.post_end_s, rate)
        pre = cfg.samples(cfg.pre_start_s, rate)
        for _ in range(1 + math.ceil(cfg.max_burst_s / cfg.merge_s)):
            if active.size == 0:
                break
            ra = rows[active]
            seen = n_seen[active]
            lo = np.maximum(tab.scan_from[ra], np.maximum(seen - ring, 0))
            idle = tab.cand_first[ra] == _NONE
            span = int(np.max(np.where(idle, seen - lo, 0))) if idle.any() else 0
            if span > 0:
                abs_idx = lo[:, None] + np.arange(span)[None, :]
                inside = (abs_idx < seen[:, None]) & idle[:, None]
                m = tab.mag[ra[:, None], abs_idx % ring]
                hit = inside & (m > cfg.candidate_g)
                found = hit.any(axis=1)
                first = abs_idx[np.arange(active.size), np.argmax(hit, axis=1)]
                tab.cand_first[ra[found]] = first[found]
                tab.scan_from[ra[idle & ~found]] = seen[idle & ~found]
            cand = tab.cand_first[ra]
            ready = (cand != _NONE) & (seen >= cand + need)
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
            tab.cand_first[rd] = _NONE
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
        ring = tab.ring
        r = rows[idx]
        first = tab.cand_first[r]
        after = max(1, cfg.samples(cfg.merge_s, rate)) + cfg.samples(cfg.post_end_s, rate)
        abs_idx = first[:, None] + np.arange(-pre, after)[None, :]
        seen = n_seen[idx]
        valid = (abs_idx >= 0) & (abs_idx >= seen[:, None] - ring) & (abs_idx < seen[:, None])
        if self.candidates is None:
            # Cheapest tests first: peak and intensity need only the magnitudes; the full
            # context (orientation, stillness, the evidence window) only for what passes.
            mwin = np.where(valid, tab.mag[r[:, None], abs_idx % ring], 0.0)
            merge = max(1, cfg.samples(cfg.merge_s, rate))
            j = pre + np.argmax(mwin[:, pre : pre + merge], axis=1)
            rel = np.arange(abs_idx.shape[1])[None, :] - j[:, None]
            half = cfg.samples(0.5, rate)
            around = valid & (rel >= -half) & (rel < half)
            dev = np.where(around, np.abs(mwin - 1.0), 0.0).sum(axis=1)
            intensity = dev / np.maximum(around.sum(axis=1), 1)
            peak = mwin[np.arange(j.size), j]
            quick = (peak >= cfg.peak_g) & (intensity >= cfg.intensity_g)
            quick &= tab.susp_deadline_ms[r] == _NONE
            if not quick.any():
                return []
            idx, r, first, valid, abs_idx = (
                idx[quick],
                r[quick],
                first[quick],
                valid[quick],
                abs_idx[quick],
            )
        win = tab.buf[r[:, None], abs_idx % ring]
        win[~valid] = 0.0
        feats = fall_features(win, valid, first=pre, rate=rate, config=cfg)
        if self.candidates is not None:
            for i in range(len(idx)):
                self.candidates.append((batch.device_ids[sel[idx[i]]], _take(feats, i)))
        fire = feats.decide(cfg) & (tab.susp_deadline_ms[r] == _NONE)
        out: list[Finding] = []
        period = 1000.0 / rate
        for i in np.nonzero(fire)[0].tolist():
            row = int(r[i])
            dev = batch.device_ids[sel[idx[i]]]
            impact_abs = int(first[i]) - pre + int(feats.impact_index[i])
            impact_ms = round(float(tab.t0_abs[row]) + impact_abs * period)
            wstart_abs = int(first[i]) - pre + int(feats.window_start[i])
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
        open_ = np.nonzero(tab.susp_deadline_ms[rows] != _NONE)[0]
        if open_.size == 0:
            return []
        ring = tab.ring
        period = 1000.0 / rate
        r = rows[open_]
        seen = n_seen[open_]
        length = cfg.samples(cfg.recover_s, rate)
        abs_idx = seen[:, None] - length + np.arange(length)[None, :]
        valid = (abs_idx >= 0) & (abs_idx >= seen[:, None] - ring)
        win = tab.buf[r[:, None], abs_idx % ring]
        mag = tab.mag[r[:, None], abs_idx % ring]
        std = _masked_std(mag, valid)
        vec = _masked_mean_vec(win, valid)
        t_first = tab.t0_abs[r] + (seen - length) * period
        t_end = tab.t0_abs[r] + seen * period
        impact = tab.susp_impact_ms[r]
        after_fall = valid.all(axis=1) & (t_first >= impact + cfg.samples(cfg.post_end_s, 1000))
        upright = _angle_deg(tab.pre_vec[r], vec) <= cfg.recover_deg
        recovered = after_fall & tab.susp_auto[r] & upright & (std >= cfg.recover_std_g)
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
        self, dev: str, row: int, tab: _RateTable, outcome: FallOutcome, now_ms: int
    ) -> Finding:
        impact = int(tab.susp_impact_ms[row])
        tab.susp_impact_ms[row] = _NONE
        tab.susp_deadline_ms[row] = _NONE
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
                (tab.susp_deadline_ms[: tab.used] != _NONE)
                & (tab.susp_deadline_ms[: tab.used] + grace <= now_ms)
            )[0]
            if late.size == 0:
                continue
            for dev, (drate, row) in list(self.store._where.items()):
                if drate == rate and row in set(late.tolist()) and dev not in fed:
                    out.append(self._outcome(dev, row, tab, FallOutcome.NO_DATA, now_ms))
        return out

    def _tables_items(self) -> list[tuple[int, _RateTable]]:
        return list(self.store._tables.items())

    def device_events(
        self,
        *,
        device_ids: Sequence[str],
        resident_ids: Sequence[str | None],
        kinds: Sequence[str],
        ts_ms: npt.ArrayLike,
        now_ms: int,
        source: str = "device",
    ) -> list[Finding]:
        """Events reported by the devices themselves: ``"sos"``, ``"fall"`` and ``"cancel"``.

        * ``sos``: an ``SOS`` finding of severity EMERGENCY at once. Nothing cancels it: a
          ``cancel`` from the device only ever closes a fall confirmation window.
        * ``fall``: a ``DEVICE_FALL`` finding (HIGH) that opens a confirmation window like a
          suspected fall (no automatic recovery, as the posture before is unknown).
        * ``cancel``: closes an open fall confirmation window with ``FALL_CANCELLED``; ignored
          when none is open.

        Args:
            device_ids: Device per event.
            resident_ids: Resident per event (None if unassigned).
            kinds: ``"sos"``, ``"fall"`` or ``"cancel"`` per event.
            ts_ms: Epoch milliseconds of each event (int64-compatible).
            now_ms: Epoch milliseconds of the call.
            source: Text stored in the evidence (e.g. the codec's name).

        Returns:
            The findings, in event order.

        Raises:
            DetectorInputError: On an unknown kind or mismatched lengths.
        """
        ts = np.asarray(ts_ms)
        n = len(device_ids)
        if len(resident_ids) != n or len(kinds) != n or ts.shape != (n,):
            raise DetectorInputError(
                f"device_events got {n} device_ids, {len(resident_ids)} resident_ids, "
                f"{len(kinds)} kinds and ts_ms of shape {ts.shape}; expected {n} of each."
            )
        allowed = {DeviceEventKind.SOS, DeviceEventKind.FALL, DeviceEventKind.CANCEL}
        bad = sorted({k for k in kinds if k not in allowed})
        if bad:
            raise DetectorInputError(
                f"device_events kinds {bad} unknown; expected one of {sorted(allowed)}."
            )
        out: list[Finding] = []
        for dev, res, kind, t in zip(device_ids, resident_ids, kinds, ts.tolist(), strict=True):
            t_ms = int(t)
            self._residents[dev] = res
            if kind == DeviceEventKind.SOS:
                out.append(sos_finding(dev, res, ts_ms=t_ms, now_ms=now_ms, source=source))
                continue
            where = self.store.where(dev)
            if kind == DeviceEventKind.FALL:
                if where is None:
                    self.store.rows_for([dev], MIN_RATE_HZ)
                    where = self.store.where(dev)
                    assert where is not None  # noqa: S101 - just created
                tab = self.store.table(where[0])
                row = where[1]
                if tab.susp_deadline_ms[row] == _NONE:
                    tab.susp_impact_ms[row] = t_ms
                    tab.susp_deadline_ms[row] = t_ms + round(self.config.confirm_s * 1000)
                    tab.susp_auto[row] = False
                out.append(
                    _finding(
                        FindingKind.DEVICE_FALL,
                        severity=Severity.HIGH,
                        device_id=dev,
                        resident_id=res,
                        ts_ms=t_ms,
                        now_ms=now_ms,
                        evidence=DeviceEventEvidence(source),
                    )
                )
            elif where is not None:
                tab = self.store.table(where[0])
                if tab.susp_deadline_ms[where[1]] != _NONE:
                    out.append(
                        self._outcome(dev, where[1], tab, FallOutcome.CANCELLED_BY_WEARER, now_ms)
                    )
        return out


def sos_finding(
    device_id: str, resident_id: str | None, *, ts_ms: int, now_ms: int, source: str = "hotkey"
) -> Finding:
    """The SOS hotkey: an EMERGENCY finding at once, never cancellable by the device."""
    return Finding(
        FindingKind.SOS,
        Severity.EMERGENCY,
        device_id,
        resident_id,
        ts_ms,
        now_ms,
        DeviceEventEvidence(source),
    )


def _take(f: FallFeatures, i: int) -> FallFeatures:
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
