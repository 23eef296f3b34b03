"""Per-device state of the fall detectors: ring buffers grouped by sample rate, and their bytes.

Nothing here decides anything: :class:`FallStateStore` keeps, per device, the last samples, the
sample counter and clock, a pending candidate and a pending confirmation window, and serialises
them without pickles (a fixed header and the samples as little-endian float32).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from detectors.fall_config import FallConfig
from detectors.fall_input import MAX_RATE_HZ, MIN_RATE_HZ
from detectors.findings import DetectorInputError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
B8 = npt.NDArray[np.bool_]

SAMPLE = np.dtype((np.void, 12))
"""One (x, y, z) float32 sample as a single item: scattering whole samples into the ring
buffers (``RateTable.samples``) is about twice as fast as scattering ``(n, 3)`` rows."""

NONE = -1
"""Marker of "no candidate" and "no open window" in the int64 state arrays."""
_MAGIC = b"AXF1"
_HEADER = struct.Struct("<4sHI q d q q q q q 3f")


@dataclass
class RateTable:
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
        self.cand_first = np.full(cap, NONE, np.int64)
        self.susp_impact_ms = np.full(cap, NONE, np.int64)
        self.susp_deadline_ms = np.full(cap, NONE, np.int64)
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

    @property
    def samples(self) -> npt.NDArray[np.void]:
        """``buf`` as a writable 1-D view of :data:`SAMPLE` items, indexed ``row * ring + i``."""
        return self.buf.reshape(-1, 3).view(SAMPLE).reshape(-1)

    def flat_index(self, rows: I64, start: I64, width: int) -> I64:
        """Positions ``row * ring + (start + i) % ring`` for ``i < width``, one row per device.

        Indices into ``buf.reshape(-1, 3)``, ``mag.reshape(-1)`` and :attr:`samples`: 1-D
        gathers and scatters are much cheaper than 2-D fancy indexing, and one wrap test is
        cheaper than an integer modulo of every index.
        """
        ring = self.ring
        pos = (start % ring)[:, None] + np.arange(width)[None, :]
        if width <= ring:
            pos[pos >= ring] -= ring  # one wrap at most
        else:
            pos %= ring
        pos += (rows * ring)[:, None]
        return pos

    def held(self, start: I64, width: int, seen: I64) -> B8:
        """Whether samples ``start + i`` (``i < width``) of each device are in its ring buffer.

        A sample is held when it has been received (``< seen``) and is neither before the
        stream began nor overwritten (``>= seen - ring``).
        """
        idx = start[:, None] + np.arange(width)[None, :]
        out: B8 = (idx >= np.maximum(seen - self.ring, 0)[:, None]) & (idx < seen[:, None])
        return out

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
        self.cand_first[rows] = NONE
        self.susp_impact_ms[rows] = NONE
        self.susp_deadline_ms[rows] = NONE
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
        self._tables: dict[int, RateTable] = {}
        # Each fact once: a device's rate, and its row in that rate's table (the per-tick lookup).
        self._rate: dict[str, int] = {}
        self._rows: dict[int, dict[str, int]] = {}
        self._free: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._rate)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._rate

    def table(self, rate: int) -> RateTable:
        tab = self._tables.get(rate)
        if tab is None:
            tab = RateTable(rate, self.config.ring_len(rate))
            self._tables[rate] = tab
        return tab

    def rows_for(self, device_ids: Sequence[str], rate: int) -> I64:
        """Row of each device in the table of ``rate``, creating (or moving) rows as needed."""
        tab = self.table(rate)
        rowmap = self._rows.setdefault(rate, {})
        try:
            # Every device already known at this rate (nearly every tick): one C-level pass.
            return np.fromiter(map(rowmap.__getitem__, device_ids), np.int64, len(device_ids))
        except KeyError:
            pass
        rows = np.empty(len(device_ids), np.int64)
        new: list[int] = []
        for i, dev in enumerate(device_ids):
            if self._rate.get(dev) == rate:
                rows[i] = rowmap[dev]
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
                old = self.where(dev)
                if old is not None:
                    self._move_confirmation(old, tab, row)
                    del self._rows[old[0]][dev]
                self._rate[dev] = rate
                rowmap[dev] = row
                rows[i] = row
        return rows

    def _move_confirmation(self, old: tuple[int, int], tab: RateTable, row: int) -> None:
        src = self._tables[old[0]]
        tab.susp_impact_ms[row] = src.susp_impact_ms[old[1]]
        tab.susp_deadline_ms[row] = src.susp_deadline_ms[old[1]]
        tab.susp_auto[row] = src.susp_auto[old[1]]
        tab.pre_vec[row] = src.pre_vec[old[1]]
        src.reset_rows(np.array([old[1]], np.int64))
        self._free.setdefault(old[0], []).append(old[1])

    def where(self, device_id: str) -> tuple[int, int] | None:
        """``(rate, row)`` of a device, None if unknown."""
        rate = self._rate.get(device_id)
        return None if rate is None else (rate, self._rows[rate][device_id])

    def devices(self) -> list[str]:
        """Ids of all devices with state."""
        return list(self._rate)

    def rows_at(self, rate: int) -> Mapping[str, int]:
        """Read-only ``device -> row`` of the devices in the table of ``rate``."""
        return MappingProxyType(self._rows.get(rate, {}))

    def forget(self, device_id: str) -> None:
        """Drop a device's state (device removed from the system)."""
        rate = self._rate.pop(device_id, None)
        if rate is not None:
            row = self._rows[rate].pop(device_id)
            self._tables[rate].reset_rows(np.array([row], np.int64))
            self._free.setdefault(rate, []).append(row)

    def pending_confirmations(self) -> list[tuple[str, int, int]]:
        """``(device_id, impact_ts_ms, deadline_ms)`` of every open confirmation window."""
        out = []
        for dev, rate in self._rate.items():
            tab, row = self._tables[rate], self._rows[rate][dev]
            if tab.susp_deadline_ms[row] != NONE:
                out.append((dev, int(tab.susp_impact_ms[row]), int(tab.susp_deadline_ms[row])))
        return out

    def export_device(self, device_id: str) -> bytes:
        """Serialise one device's state (about 7 kB at 50 Hz).

        Raises:
            KeyError: If the device has no state.
        """
        where = self.where(device_id)
        if where is None:
            raise KeyError(device_id)
        rate, row = where
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

        Bytes saved with other windows (a ring of another length, as from an earlier version
        of the detector) keep the device's confirmation window, if one is open, and nothing of
        its signal: the next burst starts its stream afresh, and the window still ends in one
        outcome.

        Raises:
            DetectorInputError: If the bytes are not a fall state.
        """
        if len(data) < _HEADER.size or data[:4] != _MAGIC:
            raise DetectorInputError(
                f"Fall state of device {device_id!r} has {len(data)} bytes without the "
                f"{_MAGIC!r} header; expected bytes from FallStateStore.export_device."
            )
        fields = _HEADER.unpack_from(data)
        rate, ring = int(fields[1]), int(fields[2])
        if rate < MIN_RATE_HZ or rate > MAX_RATE_HZ or ring <= 0:
            raise DetectorInputError(
                f"Fall state of device {device_id!r} has rate {rate} Hz and ring {ring}; "
                f"expected {MIN_RATE_HZ}..{MAX_RATE_HZ} Hz and a ring of samples."
            )
        expected = _HEADER.size + ring * 12
        if len(data) != expected:
            raise DetectorInputError(
                f"Fall state of device {device_id!r} has {len(data)} bytes; expected {expected}."
            )
        self.forget(device_id)
        row = int(self.rows_for([device_id], rate)[0])
        tab = self._tables[rate]
        if ring != tab.ring:
            if fields[8] != NONE:  # an open confirmation window
                tab.susp_impact_ms[row] = fields[7]
                tab.susp_deadline_ms[row] = fields[8]
                tab.susp_auto[row] = bool(fields[9])
                tab.pre_vec[row] = fields[10:13]
            return
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
        parts = [struct.pack("<I", len(self._rate))]
        for dev in self._rate:
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
