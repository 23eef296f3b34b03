"""The behaviour stage's per-elder state: pure arrays, updated a tick at a time, and its bytes.

Behaviour belongs to the elder, not to one device: the wristband's movement and the bed
sensor's presence and movement of the same home make one row, keyed by the resident id. Rows
grow by doubling; :meth:`BehaviourTable.export` and :meth:`BehaviourTable.import_` turn one row
into ``detector_state`` bytes (``device_id`` holds the resident id there, ``detector`` is
``behaviour``). No I/O, no clock.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

_STATE = struct.Struct("<4sqqbqqqqq")
_MAGIC = b"AXB1"


class BehaviourTable:
    """Per elder: last movement, bed presence since when, how far the stream has come, and what
    was already reported (so one episode is one finding).

    Attributes:
        last_motion: Epoch ms of the latest movement seen in the home, -1 never.
        in_bed: 1 in bed, 0 out of bed, -1 no bed sensor seen.
        bed_since: Epoch ms when ``in_bed`` last changed, -1 unknown.
        bed_seen: Epoch ms of the latest bed reading taken (older ones are late: skipped).
        stream: Epoch ms the elder's stream has reached (the latest reading of any device).
        inactivity_reported: ``last_motion`` of the inactivity episode already reported.
        bed_reported: ``bed_since`` of the night episode already reported.
        motion_device: Device that saw the latest movement (findings name it).
        bed_device: The bed sensor.
    """

    last_motion: I64
    in_bed: I8
    bed_since: I64
    bed_seen: I64
    stream: I64
    inactivity_reported: I64
    bed_reported: I64

    _ARRAYS = (
        ("last_motion", np.int64, -1),
        ("in_bed", np.int8, -1),
        ("bed_since", np.int64, -1),
        ("bed_seen", np.int64, -1),
        ("stream", np.int64, -1),
        ("inactivity_reported", np.int64, -1),
        ("bed_reported", np.int64, -1),
    )

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.ids: list[str] = []
        self.motion_device: list[str] = []
        self.bed_device: list[str] = []
        self._alloc(64)

    def _alloc(self, cap: int) -> None:
        used = len(self.ids)
        for name, dtype, fill in self._ARRAYS:
            arr = np.full(cap, fill, dtype)
            if used:
                arr[:used] = getattr(self, name)[:used]
            setattr(self, name, arr)

    def row(self, resident_id: str) -> int:
        r = self.rows.get(resident_id)
        if r is None:
            r = len(self.ids)
            if r >= self.last_motion.shape[0]:
                self._alloc(2 * self.last_motion.shape[0])
            self.rows[resident_id] = r
            self.ids.append(resident_id)
            self.motion_device.append("")
            self.bed_device.append("")
        return r

    def __contains__(self, resident_id: str) -> bool:
        return resident_id in self.rows

    # -- updates (one tick's readings, any order) -------------------------------------------
    def seen(self, rows: I64, ts: I64) -> None:
        """Any reading of the elder's devices: how far the stream has come."""
        np.maximum.at(self.stream, rows, ts)

    def motion(self, rows: I64, ts: I64, devices: list[str]) -> None:
        """Movement at ``ts`` (one entry per burst or bed reading that showed some)."""
        if rows.size == 0:
            return
        order = np.lexsort((ts, rows))
        r = rows[order]
        last = np.ones(r.size, np.bool_)
        last[:-1] = r[1:] != r[:-1]
        pick = order[last]
        newer = ts[pick] > self.last_motion[rows[pick]]
        for i in pick[newer].tolist():
            self.motion_device[int(rows[i])] = devices[i]
        self.last_motion[rows[pick[newer]]] = ts[pick[newer]]

    def bed(
        self, rows: I64, ts: I64, presence: I8, devices: list[str]
    ) -> tuple[I64, I64, list[str]]:
        """Bed readings with a presence value: a change of presence starts a new ``bed_since``.

        Readings older than the latest one taken for the elder are late and skipped (a
        redelivery cannot move presence backwards). Returns the rows, times and devices of the
        latest change of each elder whose presence changed from a known one (a movement).
        """
        keep = ts > self.bed_seen[rows]
        rows, ts, presence = rows[keep], ts[keep], presence[keep]
        devs = [d for d, k in zip(devices, keep.tolist(), strict=True) if k]
        if rows.size == 0:
            return rows, ts, []
        order = np.lexsort((ts, rows))
        r, t, p = rows[order], ts[order], presence[order]
        first = np.ones(r.size, np.bool_)
        first[1:] = r[1:] != r[:-1]
        prev = np.empty_like(p)
        prev[1:] = p[:-1]
        prev[first] = self.in_bed[r[first]]
        changed = p != prev
        # The first reading ever (from "no bed sensor seen") sets presence but is no movement.
        moved = changed & (prev >= 0)
        last = np.ones(r.size, np.bool_)
        last[:-1] = r[1:] != r[:-1]
        # The latest change of each elder sets bed_since; the last reading sets in_bed.
        ch_idx = np.nonzero(changed)[0]
        sel = ch_idx
        if ch_idx.size:
            ch_last = np.ones(ch_idx.size, np.bool_)
            ch_last[:-1] = r[ch_idx[1:]] != r[ch_idx[:-1]]
            sel = ch_idx[ch_last]
            self.bed_since[r[sel]] = t[sel]
        self.in_bed[r[last]] = p[last]
        self.bed_seen[r[last]] = t[last]
        for i in order[last].tolist():
            self.bed_device[int(rows[i])] = devs[i]
        sel = sel[moved[sel]]
        return r[sel], t[sel], [devs[i] for i in order[sel].tolist()]

    # -- bytes ----------------------------------------------------------------------------
    def export(self, resident_id: str) -> bytes:
        r = self.rows[resident_id]
        head = _STATE.pack(
            _MAGIC,
            int(self.last_motion[r]),
            int(self.bed_since[r]),
            int(self.in_bed[r]),
            int(self.bed_seen[r]),
            int(self.stream[r]),
            int(self.inactivity_reported[r]),
            int(self.bed_reported[r]),
            0,
        )
        names = (self.motion_device[r] + "\n" + self.bed_device[r]).encode()
        return head + names

    def import_(self, resident_id: str, data: bytes) -> None:
        if len(data) < _STATE.size or data[:4] != _MAGIC:
            raise ValueError(f"behaviour state of {len(data)} bytes is not {_MAGIC!r} state")
        _, motion, since, in_bed, bed_seen, stream, inact, bed_rep, _ = _STATE.unpack_from(data)
        motion_dev, _sep, bed_dev = data[_STATE.size :].decode().partition("\n")
        r = self.row(resident_id)
        self.last_motion[r], self.bed_since[r], self.in_bed[r] = motion, since, in_bed
        self.bed_seen[r], self.stream[r] = bed_seen, stream
        self.inactivity_reported[r], self.bed_reported[r] = inact, bed_rep
        self.motion_device[r], self.bed_device[r] = motion_dev, bed_dev
