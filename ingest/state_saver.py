"""Saving and loading the detection sink's per-device detector state (``detector_state``).

:class:`StateSaver` remembers which devices' state changed, per detector, oldest change first
(a dict used as an ordered set), and saves them in slices: the states are exported on the
caller's thread (copies of small arrays) and written by a background thread with a connection
of its own, in one COPY and one upsert. Writing thousands of devices' state on the ingest
writer thread stalled the stream for a second or more (p99 publish-to-commit of 1.8 s at 5,000
devices in bench/ingest.py). A save that fails marks its devices changed again, for the next.

Not thread-safe by itself: the sink calls it under its detectors' lock.
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter

from detectors.findings import DetectorError
from ingest.detection_store import DetectionStore, StateRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StateCodec:
    """How one detector's per-device state is exported and imported.

    Attributes:
        export: Device id -> its state, None when the detector holds nothing for it.
        import_: Restores a device's state; raises :class:`DetectorError`, ``ValueError`` or
            ``struct.error`` for a state it cannot take (another configuration, say).
    """

    export: Callable[[str], bytes | None]
    import_: Callable[[str, bytes], None]


class StateSaver:
    """Changed devices per detector, saved in the background; see the module docstring.

    Args:
        store: The sink's database store.
        codecs: Detector name (``detector_state.detector``) -> its :class:`StateCodec`.
        errors: The sink's error counter (a failed save counts as stage ``persist``).
    """

    def __init__(
        self, store: DetectionStore, codecs: Mapping[str, StateCodec], errors: Counter
    ) -> None:
        self._store = store
        self._codecs = dict(codecs)
        self._errors = errors
        self._changed: dict[str, dict[str, None]] = {name: {} for name in self._codecs}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector-state")
        self._future: Future[None] | None = None
        self._failed: list[tuple[str, str]] = []
        self._failed_lock = threading.Lock()

    def mark(self, detector: str, devices: Iterable[str]) -> None:
        """The ``devices``' state of ``detector`` changed: save it at a coming :meth:`save`."""
        self._changed[detector].update(dict.fromkeys(devices))

    def waiting(self) -> int:
        """The most devices waiting to be saved for one detector."""
        return max((len(d) for d in self._changed.values()), default=0)

    def busy(self) -> bool:
        """Whether the previous write is still running."""
        return self._future is not None and not self._future.done()

    def save(self, now_ms: int, *, wait: bool = False, limit: int | None = None) -> int:
        """Export the changed devices' state and write it; returns the rows handed to the writer.

        ``limit`` caps the devices per detector taken (the oldest changes first). When the
        previous write is still running, this one is skipped (unless ``wait``) and the devices
        stay marked as changed.
        """
        if self.busy():
            if not wait:
                return 0
            assert self._future is not None  # noqa: S101 - busy() means a write is running
            self._future.result()
        with self._failed_lock:
            failed, self._failed = self._failed, []
        for dev, detector in failed:
            self._changed[detector][dev] = None
        rows: list[StateRow] = []
        at = datetime.fromtimestamp(now_ms / 1000, UTC)
        for detector, devices in self._changed.items():
            take = list(devices) if limit is None else list(itertools.islice(devices, limit))
            export = self._codecs[detector].export
            for dev in take:
                del devices[dev]
                state = export(dev)
                if state is not None:
                    rows.append((dev, detector, state, at))
        if rows:
            self._future = self._writer.submit(self._write, rows)
            if wait:
                self._future.result()
        return len(rows)

    def _write(self, rows: list[StateRow]) -> None:
        try:
            self._store.save_state(rows)
        except Exception:
            self._errors.labels("persist").inc()
            log.exception(
                "saving the state of %d detector rows failed; retried at the next save", len(rows)
            )
            with self._failed_lock:
                self._failed.extend((dev, detector) for dev, detector, _s, _a in rows)

    def load(self, only: Callable[[str], bool] | None = None) -> set[str]:
        """Import the saved state (of the devices ``only`` accepts); the devices loaded.

        A state its detector cannot take is left out with a warning: that device starts afresh.
        """
        saved = self._store.load_state()
        loaded: set[str] = set()
        for dev, detector, state in saved:
            codec = self._codecs.get(detector)
            if codec is None or (only is not None and not only(dev)):
                continue
            try:
                codec.import_(dev, state)
            except (DetectorError, ValueError, struct.error) as exc:
                log.warning("saved %s state of device %s not loaded: %s", detector, dev, exc)
                continue
            loaded.add(dev)
        return loaded

    def close(self) -> None:
        """Wait for the last write and stop the writer thread."""
        self._writer.shutdown(wait=True)
