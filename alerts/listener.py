"""The finding listener of the ingester: raises alerts from stored findings, pushes to 120.

The ingester calls it from two threads (telemetry, and the urgent lane of events and statuses);
each thread gets a connection of its own (opened on first use, reopened when broken), so an SOS
is raised while a telemetry batch's findings are. Each finding is raised once, by its id: the
alert's transaction marks the ``findings`` row alerted, and :meth:`AlertListener.sweep` takes up
the findings a crash (or a failure) left without an alert.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg

from alerts.decision import AlertChange, AlertInput
from alerts.service import AlertService
from detectors.findings import StoredFinding

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]


class ClaimedPusher(Protocol):
    """Sends 120 deliveries that an alert's transaction leased to this process."""

    def submit(self, conn: Conn, delivery_ids: Sequence[int]) -> None:
        """Push the deliveries of ``delivery_ids``, read on ``conn`` (the listener's, right
        after the alert's commit)."""


class AlertListener:
    """The :data:`ingest.detection.FindingListener` that raises alerts from stored findings.

    Args:
        connect: Opens a database connection (switched to autocommit here).
        service: The alert service (with ``claim_120_s`` set when ``pusher`` is given).
        now: The server clock.
        pusher: Gets the 120 deliveries each alert leased to this process, after the commit.
    """

    def __init__(
        self,
        connect: Callable[[], Conn],
        service: AlertService,
        now: Callable[[], datetime] | None = None,
        *,
        pusher: ClaimedPusher | None = None,
    ) -> None:
        self._connect = connect
        self._service = service
        self._now = now or (lambda: datetime.now(UTC))
        self._pusher = pusher
        self._local = threading.local()
        self._conns: list[Conn] = []
        self._conns_lock = threading.Lock()

    def __call__(self, stored: list[StoredFinding]) -> None:
        inputs = [AlertInput.of(s.finding, s.id) for s in stored]
        self._run(lambda conn: self._service.raise_findings(conn, inputs, self._now()))

    def sweep(self, finding_ids: Sequence[int]) -> int:
        """Raise the stored findings of ``finding_ids`` that still have no alert; how many."""
        if not finding_ids:
            return 0
        changes = self._run(lambda conn: self._service.raise_stored(conn, finding_ids, self._now()))
        return sum(1 for c in changes if c is not None)

    def _run(self, action: Callable[[Conn], list[AlertChange | None]]) -> list[AlertChange | None]:
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
            # The service opens its own transactions; on a connection outside autocommit they
            # would be savepoints of a transaction nobody commits.
            conn.autocommit = True
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        try:
            changes = action(conn)
        except BaseException:
            if conn.broken or conn.closed:
                conn.close()
                self._local.conn = None
                with self._conns_lock:
                    if conn in self._conns:
                        self._conns.remove(conn)
            raise
        claimed = [i for c in changes if c is not None for i in c.claimed_120]
        if claimed and self._pusher is not None:
            self._pusher.submit(conn, claimed)
        return changes

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
