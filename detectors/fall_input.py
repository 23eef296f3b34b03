"""Validated input of the fall detectors: the accelerometer bursts of one tick (:class:`FallBatch`).

Validation happens once, here; the detectors then work on whole arrays with masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from detectors.findings import DetectorInputError

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

MIN_RATE_HZ = 25
MAX_RATE_HZ = 100


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
