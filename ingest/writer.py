"""Writing a processed batch: retried while the database is away, bisected when it refuses.

:class:`BatchWriter` is the part of the ingester between a processed batch and its commit. A
database that does not answer is retried with back-off and jitter (nothing is acknowledged
meanwhile: the broker keeps the rest). A batch the database refuses for its content (a value a
decoder let through) is halved until each refused message stands alone; that message is
dead-lettered with the database's reason and everything else is stored, so one bad message
costs a few transactions, not a stall.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from devices.protocol import Reason
from ingest.metrics import IngestMetrics
from ingest.pipeline import Batch, DeadLetter
from ingest.store import TelemetryStore, WriteResult

log = logging.getLogger(__name__)
T = TypeVar("T")

# An inbox entry: (message, received at in unix ms, connection generation, receive order). A
# tuple, not an object: it is built once per message on the network thread.
Pending = tuple[Any, int, int, int]


class Stopping(Exception):
    """Raised inside a write when a stop is asked during a database outage: the batch stays
    unacknowledged and the broker keeps it for the next run."""


class BatchWriter:
    """Retry and bisection around :meth:`TelemetryStore.write`.

    Args:
        process: Decodes and validates a part of a batch again (bisection works on the
            received messages, so each half is processed like a batch of its own).
        metrics: Counts retries and refusals.
        stop: Set when the ingester stops: a retry loop gives up (:class:`Stopping`).
        retry_max_s: The longest wait between two tries.
    """

    def __init__(
        self,
        process: Callable[[list[Pending]], Batch],
        metrics: IngestMetrics,
        stop: threading.Event,
        retry_max_s: float,
    ) -> None:
        self._process = process
        self._metrics = metrics
        self._stop = stop
        self._retry_max_s = retry_max_s

    def with_retry(self, action: Callable[[], T]) -> T:
        """Run ``action`` until the database answers; back off with jitter meanwhile."""
        delay = 0.2
        while True:
            try:
                return action()
            except psycopg.OperationalError as exc:
                self._metrics.db_retries.inc()
                log.warning(
                    "database unavailable (%s); retrying in %.1f s", str(exc).strip()[:200], delay
                )
                if self._stop.wait(delay):
                    raise Stopping from exc
                jitter = 0.8 + 0.4 * random.random()  # noqa: S311 - jitter, not a secret
                delay = min(self._retry_max_s, delay * 2) * jitter

    def write(
        self, store: TelemetryStore, pending: list[Pending], batch: Batch
    ) -> tuple[WriteResult, Batch]:
        """Write the batch, retrying while the database is away. A batch the database refuses
        for its content is halved until each refused message stands alone: it is
        dead-lettered and the rest stored. Returns the result and what was stored (the sinks
        see nothing the database refused)."""
        try:
            return self.with_retry(lambda: store.write(batch)), batch
        except (psycopg.OperationalError, Stopping):
            raise
        except Exception as exc:
            self._metrics.db_refusals.inc()
            log.warning(
                "database refused a batch of %d messages (%s); splitting it",
                len(pending),
                str(exc).strip()[:200],
            )
            return self._split(store, pending)

    def _split(self, store: TelemetryStore, pending: list[Pending]) -> tuple[WriteResult, Batch]:
        """Bisect a refused batch: about 2 k log2(n / k) transactions for k bad messages among
        n, instead of n (one poisoned message among 4,000 took the ingester to 420 messages/s
        when each was written on its own)."""
        stored = dup = dead = 0
        kept = Batch()
        parts = [pending]
        while parts:
            part = parts.pop()
            batch = self._process(part)
            try:
                res = self.with_retry(lambda b=batch: store.write(b))  # type: ignore[misc]
            except (psycopg.OperationalError, Stopping):
                raise
            except Exception as exc:
                if len(part) > 1:
                    mid = len(part) // 2
                    parts += [part[mid:], part[:mid]]  # the first half next: order is kept
                    continue
                msg, received_ms, _gen, _order = part[0]
                reason, detail = Reason.STORAGE_REJECTED, str(exc).strip()[:500]
                log.warning("message on %s refused by the database: %s", msg.topic, detail)
                letter = DeadLetter(received_ms, msg.topic, None, reason, detail, msg.payload)
                refused = Batch(dead_letters=[letter], messages=1)
                self.with_retry(lambda b=refused: store.write(b))  # type: ignore[misc]
                extend(kept, refused)
                dead += 1
                continue
            stored += res.stored
            dup += res.duplicates
            dead += res.dead_letters
            extend(kept, batch)
        return WriteResult(stored, dup, dead, True), kept


def extend(into: Batch, part: Batch) -> None:
    """Append what ``part`` holds to ``into`` (the stored parts of a split batch, in order)."""
    for f in dataclasses.fields(Batch):
        value = getattr(part, f.name)
        if isinstance(value, list):
            getattr(into, f.name).extend(value)
    into.duplicates_in_batch += part.duplicates_in_batch
    into.messages += part.messages
