"""A message the decoder accepts and the database refuses costs what it costs, not a stall.

The database here refuses two things by a test-only CHECK constraint (the stand-in for whatever
a future decoder bug lets through): positions in a room called "attic", and events whose detail
says "poison". A stream of 3,000 messages published as fast as one client can, with such messages among
good ones, is split until each refused message
stands alone: it is dead-lettered with its reason, every good message around it is stored, the
SOS behind them arrives, and the detection sinks see only what was stored.
"""

from __future__ import annotations

import threading
import time
import uuid

import orjson
import psycopg
import pytest

from core.settings import load_settings
from devices.registry import ensure_devices
from ingest.pipeline import Batch
from ingest.service import IngestService
from tests.ingest.test_ingest_integration import _publisher
from tests.services import wait_until

pytestmark = pytest.mark.integration

POISONED = 15
GOOD = 3000


class _Recorder:
    """A sink that keeps what it was handed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []
        self.rooms: list[str | None] = []
        self._lock = threading.Lock()

    def __call__(self, batch: Batch, now_ms: int) -> None:
        with self._lock:
            self.events += [(e.device_id, e.seq, e.kind.value) for e in batch.device_events]
            self.rooms += [r.position.indoor for r in batch.readings if r.position is not None]


def test_poisoned_messages_in_a_backlog_are_dead_lettered_alone(
    db_url: str, shared_broker_url: str, topic_prefix: str
) -> None:
    devices = [f"poison-wb-{i:03d}" for i in range(30)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        ensure_devices(conn, devices)
        conn.execute(
            "ALTER TABLE positions ADD CONSTRAINT test_no_attic CHECK (indoor IS DISTINCT FROM 'attic')"
        )
        conn.execute(
            "ALTER TABLE device_events ADD CONSTRAINT test_no_poison "
            "CHECK (detail->>'note' IS DISTINCT FROM 'poison')"
        )
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        db={"url": db_url},
        mqtt={"url": shared_broker_url, "topic_prefix": topic_prefix, "client_id": client_id},
        ingest={"metrics_port": 0, "registry_refresh_s": 1.0},
    )
    recorder = _Recorder()
    service = IngestService(settings, sinks=[recorder])
    thread = threading.Thread(target=service.run, name="test-ingest")
    thread.start()
    wait_until(lambda: service.metrics.connected._value.get() == 1, 20, "the ingester to connect")
    now = int(time.time() * 1000)
    client = _publisher(shared_broker_url, "poison")
    poison_every = GOOD // POISONED
    for i in range(GOOD):
        dev = devices[i % len(devices)]
        room = "attic" if i % poison_every == poison_every // 2 else "kitchen"
        payload = {"v": 1, "ts": now - GOOD + i, "seq": i, "vitals": {"hr": 70}}
        payload["pos"] = {"lat": 31.2, "lon": 121.4, "indoor": room}
        client.publish(f"{topic_prefix}/dev/{dev}/telemetry", orjson.dumps(payload), qos=1)
    bad_sos = {"v": 1, "ts": now, "seq": 1, "type": "sos", "detail": {"note": "poison"}}
    good_sos = {"v": 1, "ts": now, "seq": 2, "type": "sos"}
    for event in (bad_sos, good_sos):
        client.publish(f"{topic_prefix}/dev/{devices[0]}/event", orjson.dumps(event), qos=1)
    while client.pending_out():
        client.pump(0.01)
    client.stop()

    try:

        def landed() -> tuple[int, int, int]:
            with psycopg.connect(db_url) as conn:
                row = conn.execute(
                    """SELECT (SELECT count(*) FROM vitals), (SELECT count(*) FROM device_events),
                              (SELECT count(*) FROM dead_letters)"""
                ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1]), int(row[2])

        wait_until(
            lambda: landed() == (GOOD - POISONED, 1, POISONED + 1), 120, "every message to land"
        )
    finally:
        service.stop()
        thread.join(30)
    with psycopg.connect(db_url) as conn:
        letters = conn.execute("SELECT reason, detail, payload FROM dead_letters").fetchall()
        seqs = conn.execute("SELECT seq FROM device_events").fetchall()
    assert {r[0] for r in letters} == {"storage_rejected"}
    assert sum(b'"attic"' in bytes(r[2]) for r in letters) == POISONED
    assert any("test_no_poison" in r[1] for r in letters)
    # The SOS behind the poison is stored; the refused one is not, and no sink saw it.
    assert seqs == [(2,)]
    assert recorder.events == [(devices[0], 2, "sos")]
    assert "attic" not in recorder.rooms
    assert len(recorder.rooms) == GOOD - POISONED
    # Split, not written one message per transaction: a handful of refusals per bad batch.
    assert service.metrics.db_refusals._value.get() >= 1
