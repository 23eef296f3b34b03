"""The DetectionSink listener: stored findings raise alerts, each once, by their finding ids."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg
import pytest

from alerts.decision import AlertInput
from alerts.listener import AlertListener
from alerts.service import AlertService, PostgresDirectory
from core.settings import AlertsSettings
from detectors.findings import DeviceEventEvidence, Finding, FindingKind, Severity, StoredFinding

pytestmark = pytest.mark.integration

TS = 1_764_000_000_000


def _sos(device: str, ts: int = TS, resident: str | None = None) -> Finding:
    return Finding(
        FindingKind.SOS, Severity.EMERGENCY, device, resident, ts, ts, DeviceEventEvidence("hotkey")
    )


def _store(conn: psycopg.Connection[object], f: Finding) -> int:
    row = conn.execute(
        """INSERT INTO findings (ts, detected_at, device_id, kind, severity, evidence)
           VALUES (%s, %s, %s, 'sos', 'emergency', '{"source": "hotkey"}') RETURNING id""",
        (datetime.fromtimestamp(f.ts_ms / 1000, UTC),) * 2 + (f.device_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


class _Pusher:
    def __init__(self) -> None:
        self.ids: list[int] = []

    def submit(self, conn: object, delivery_ids: Sequence[int]) -> None:
        self.ids.extend(delivery_ids)


def _listener(db_url: str, **kw: object) -> AlertListener:
    settings = AlertsSettings(operator_url="json://localhost/op")
    service = AlertService(settings, PostgresDirectory(), claim_120_s=kw.pop("claim", None))  # type: ignore[arg-type]
    return AlertListener(lambda: psycopg.connect(db_url, autocommit=True), service, **kw)  # type: ignore[arg-type]


def test_a_stored_finding_raises_one_alert_however_often_it_is_handed_on(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        f = _sos("wb-0007")
        fid = _store(conn, f)
        listener = _listener(db_url)
        try:
            listener([StoredFinding(fid, f)])
            listener([StoredFinding(fid, f)])  # a replay after a crash
            assert listener.sweep([fid]) == 0  # the sweep finds it alerted: nothing to do
        finally:
            listener.close()
        rows = conn.execute("SELECT device_id, state, occurrences, finding_ids FROM alerts")
        assert rows.fetchall() == [("wb-0007", "open", 1, [fid])]
        alerted = conn.execute("SELECT alerted_at IS NOT NULL FROM findings").fetchall()
        assert alerted == [(True,)]
        kinds = conn.execute("SELECT recipient_kind FROM deliveries ORDER BY id").fetchall()
        # No elder assigned: of tier 0 only the 120 centre is reachable (the rest is a note).
        assert kinds == [("dispatch120",)]


def test_the_sweep_raises_what_a_crash_left_unalerted_once(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = [_store(conn, _sos(f"wb-{i:04d}", TS + i)) for i in range(3)]
        listener = _listener(db_url)
        try:
            assert listener.sweep(ids) == 3
            assert listener.sweep(ids) == 0
        finally:
            listener.close()
        n = conn.execute("SELECT count(*), sum(occurrences) FROM alerts").fetchone()
        assert n == (3, 3)
        left = conn.execute("SELECT count(*) FROM findings WHERE alerted_at IS NULL").fetchone()
        assert left == (0,)


@pytest.mark.allow_logged_errors
def test_one_bad_finding_does_not_drop_the_others(db_url: str) -> None:
    """raise_findings isolates each finding: the bad one stays unalerted for the sweep."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        bad = _sos("wb-0001", TS, resident="not-a-uuid")
        good = _sos("wb-0002", TS + 1)
        bad_id, good_id = _store(conn, bad), _store(conn, good)
        service = AlertService(AlertsSettings(), PostgresDirectory())
        changes = service.raise_findings(
            conn, [AlertInput.of(bad, bad_id), AlertInput.of(good, good_id)], datetime.now(UTC)
        )
        assert changes[0] is None
        assert changes[1] is not None and changes[1].alert is not None
        assert changes[1].alert.device_id == "wb-0002"
        left = conn.execute("SELECT id FROM findings WHERE alerted_at IS NULL").fetchall()
        assert left == [(bad_id,)]


def test_a_new_alert_leases_its_120_push_to_the_ingester(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        f = _sos("wb-0009")
        fid = _store(conn, f)
        pusher = _Pusher()
        listener = _listener(db_url, claim=5.0, pusher=pusher)
        try:
            listener([StoredFinding(fid, f)])
        finally:
            listener.close()
        rows = conn.execute(
            """SELECT id, status, attempts, next_attempt_at > now() + interval '3 s'
                 FROM deliveries WHERE recipient_kind = 'dispatch120'"""
        ).fetchall()
        assert len(rows) == 1
        did, status, attempts, leased_ahead = rows[0]
        # Leased to this process: the worker leaves it alone until the lease runs out.
        assert (status, attempts, leased_ahead) == ("sending", 1, True)
        assert pusher.ids == [did]
