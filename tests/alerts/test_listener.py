"""The DetectionSink listener: stored findings raise alerts, with their finding ids."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from alerts.service import AlertListener, AlertService, PostgresDirectory
from core.settings import AlertsSettings
from detectors.findings import DeviceEventEvidence, Finding, FindingKind, Severity

pytestmark = pytest.mark.integration


def test_listener_raises_alerts_from_stored_findings(db_url: str) -> None:
    ts = 1_764_000_000_000
    f = Finding(
        FindingKind.SOS, Severity.EMERGENCY, "wb-0007", None, ts, ts, DeviceEventEvidence("hotkey")
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        fid = conn.execute(
            """INSERT INTO findings (ts, detected_at, device_id, kind, severity, evidence)
               VALUES (%s, %s, 'wb-0007', 'sos', 'emergency', '{}') RETURNING id""",
            (datetime.fromtimestamp(ts / 1000, UTC),) * 2,
        ).fetchone()[0]  # type: ignore[index]
        settings = AlertsSettings(operator_url="json://localhost/op")
        listener = AlertListener(
            lambda: psycopg.connect(db_url, autocommit=True),
            AlertService(settings, PostgresDirectory()),
        )
        try:
            listener([f])
            listener([f])
        finally:
            listener.close()
        row = conn.execute(
            "SELECT device_id, state, occurrences, finding_ids FROM alerts"
        ).fetchall()
        assert row == [("wb-0007", "open", 2, [fid, fid])]
        kinds = conn.execute("SELECT recipient_kind FROM deliveries ORDER BY id").fetchall()
        # No elder assigned: of tier 0 only the 120 centre is reachable (the rest is a note).
        assert kinds == [("dispatch120",)]
