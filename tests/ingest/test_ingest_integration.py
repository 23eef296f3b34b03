"""The ingester end to end: real Mosquitto, real PostgreSQL, a real publisher.

Nothing lost, nothing doubled: the ingester killed with SIGKILL mid-stream, the broker
restarted, the database restarted, and every published reading is found exactly once.
Bad input of every kind lands in the dead-letter table with its reason while the good
messages around it are all stored.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from core import db
from core.mqtt import MqttClient
from core.settings import load_settings
from devices.registry import ensure_devices, register_device
from ingest.service import IngestService
from simulators.wearable import WearableFleet, publish_fleet
from tests.services import (
    IngestProcess,
    PrivateBroker,
    PrivatePostgres,
    ingest_env,
    ingest_settings,
    wait_until,
    with_database,
)

pytestmark = pytest.mark.integration


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[1]
    host, port = rest.rsplit(":", 1)
    return host, int(port)


def _publisher(broker_url: str, name: str) -> MqttClient:
    host, port = _host_port(broker_url)
    # A persistent session, as a device with an offline backlog keeps: what the broker has
    # not acknowledged is sent again after a reconnect.
    client = MqttClient(
        host=host,
        port=port,
        client_id=f"{name}-{uuid.uuid4().hex[:6]}",
        persistent=True,
        protocol_v5=False,
    )
    client.connect_inline()
    return client


def _stored(url: str) -> tuple[int, int, set[tuple[str, int]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT device_id, seq FROM vitals").fetchall()
    keys = {(r[0], int(r[1])) for r in rows}
    return len(rows), len(keys), keys


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


class _Stream:
    """A fleet publishing in a background thread at full speed, counting what it sent."""

    def __init__(self, broker_url: str, prefix: str, devices: list[str], seconds: int) -> None:
        self.fleet = WearableFleet(devices, seed=7).with_prefix(prefix)
        self.seconds = seconds
        self.sent = 0
        self.report: object = None
        self.error: BaseException | None = None
        self._client = _publisher(broker_url, "stream")
        self._thread = threading.Thread(target=self._run, name="test-stream")

    def _on_sent(self, _i: int, _seq: int, _ts: int) -> None:
        self.sent += 1

    def _run(self) -> None:
        try:
            self.report = publish_fleet(
                self._client, self.fleet, seconds=self.seconds, on_sent=self._on_sent
            )
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(180)
        assert not self._thread.is_alive(), "the publisher did not finish"
        if self.error is not None:
            raise self.error
        assert self._client.pending_out() == 0, "the broker did not acknowledge every publish"
        self._client.stop()

    @property
    def expected(self) -> set[tuple[str, int]]:
        return {(d, s) for d in self.fleet.device_ids for s in range(self.seconds)}


def _assert_exactly_once(url: str, expected: set[tuple[str, int]], timeout: float = 90) -> None:
    wait_until(
        lambda: _stored(url)[0] >= len(expected), timeout, f"{len(expected)} readings to be stored"
    )
    time.sleep(1.0)  # anything doubled would arrive now
    rows, distinct, keys = _stored(url)
    assert keys == expected, (
        f"missing: {sorted(expected - keys)[:5]}, unexpected: {sorted(keys - expected)[:5]}"
    )
    assert rows == distinct == len(expected), f"{rows} rows for {len(expected)} readings"
    assert _count(url, "accel_bursts") == len(expected)


def test_sigkill_of_the_ingester_loses_and_doubles_nothing(
    db_url: str, private_broker: PrivateBroker, topic_prefix: str, tmp_path: Path
) -> None:
    devices = [f"kill-wb-{i:03d}" for i in range(200)]
    with psycopg.connect(db_url) as conn:
        ensure_devices(conn, devices)
    ingester = IngestProcess(
        ingest_env(db_url, private_broker.url, topic_prefix), tmp_path / "ingest.log"
    )
    ingester.start()
    stream = _Stream(private_broker.url, topic_prefix, devices, seconds=60)
    try:
        stream.start()
        wait_until(lambda: _stored(db_url)[0] >= 2000, 60, "the first rows")
        ingester.kill()  # SIGKILL: no flush, no goodbye; some batches committed and not acknowledged
        killed_at = _stored(db_url)[0]
        ingester.start()
        stream.join()
        _assert_exactly_once(db_url, stream.expected)
        assert killed_at < len(stream.expected), "the kill came after everything was stored"
    finally:
        ingester.stop()
    print(ingester.log()[-2000:])


def test_broker_restart_loses_and_doubles_nothing(
    db_url: str, private_broker: PrivateBroker, topic_prefix: str, tmp_path: Path
) -> None:
    devices = [f"brk-wb-{i:03d}" for i in range(100)]
    with psycopg.connect(db_url) as conn:
        ensure_devices(conn, devices)
    ingester = IngestProcess(
        ingest_env(db_url, private_broker.url, topic_prefix), tmp_path / "ingest.log"
    )
    ingester.start()
    try:
        first = _Stream(private_broker.url, topic_prefix, devices, seconds=30)
        first.start()
        first.join()
        private_broker.restart(down_s=2.0)
        # Devices publish again after the restart; the ingester reconnects by itself.
        second = _Stream(private_broker.url, topic_prefix, devices, seconds=60)
        second.fleet = WearableFleet(devices, seed=8).with_prefix(topic_prefix)
        second.start()
        second.join()
        expected = first.expected | second.expected
        # Seconds 0-29 were sent twice with different timestamps (two rows each); seqs 0-59 per
        # device in all. Wait for every row, not only every key: the second stream's repeats
        # of seqs 0-29 may still be on their way when its seqs 30-59 are all stored.
        sent = len(first.expected) + len(second.expected)
        wait_until(lambda: _stored(db_url)[0] >= sent, 90, "all readings after the broker restart")
        rows, _distinct, keys = _stored(db_url)
        assert keys == expected
        assert rows == sent
        assert "disconnected from the broker" in ingester.log()
    finally:
        ingester.stop()


def test_database_restart_loses_and_doubles_nothing(
    private_postgres: PrivatePostgres,
    private_broker: PrivateBroker,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    db.create_database(private_postgres.url, "anxin")
    url = with_database(private_postgres.url, "anxin")
    db.upgrade(url)
    devices = [f"dbr-wb-{i:03d}" for i in range(100)]
    with psycopg.connect(url) as conn:
        ensure_devices(conn, devices)
    ingester = IngestProcess(
        ingest_env(url, private_broker.url, topic_prefix), tmp_path / "ingest.log"
    )
    ingester.start()
    try:
        stream = _Stream(private_broker.url, topic_prefix, devices, seconds=80)
        stream.start()
        wait_until(lambda: _stored(url)[0] >= 1000, 60, "the first rows")
        private_postgres.stop()
        time.sleep(3.0)  # the stream goes on; the broker holds what the ingester cannot commit
        private_postgres.start()
        stream.join()
        _assert_exactly_once(url, stream.expected)
        assert "database unavailable" in ingester.log()
    finally:
        ingester.stop()


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def running_ingester(
    db_url: str, shared_broker_url: str, topic_prefix: str
) -> Iterator[IngestService]:
    settings = ingest_settings(db_url, shared_broker_url, topic_prefix)
    service = IngestService(settings)
    thread = threading.Thread(target=service.run, name="test-ingest")
    thread.start()
    wait_until(lambda: service.metrics.connected._value.get() == 1, 20, "the ingester to connect")
    try:
        yield service
    finally:
        service.stop()
        thread.join(30)


def _good(seq: int, now_ms: int) -> bytes:
    return orjson.dumps({"v": 1, "ts": now_ms, "seq": seq, "vitals": {"hr": 70, "spo2": 97}})


def test_bad_input_is_dead_lettered_with_its_reason_and_good_input_around_it_is_stored(
    db_url: str, shared_broker_url: str, topic_prefix: str, running_ingester: IngestService
) -> None:
    with psycopg.connect(db_url) as conn:
        ensure_devices(conn, ["bad-wb-001", "other-wb-002"])
        register_device(conn, "new-wb-003", "wristband", with_secret=False)  # registered just now
    now = int(time.time() * 1000)
    telemetry = f"{topic_prefix}/dev/bad-wb-001/telemetry"
    bad: dict[str, tuple[str, bytes]] = {
        "unknown_device": (f"{topic_prefix}/dev/ghost-wb-999/telemetry", _good(1, now)),
        "device_mismatch": (
            telemetry,
            orjson.dumps(
                {"v": 1, "ts": now, "seq": 900, "dev": "other-wb-002", "vitals": {"hr": 70}}
            ),
        ),
        "malformed_json": (telemetry, b'{"v": 1, "ts": 17'),
        "schema": (
            telemetry,
            orjson.dumps({"v": 1, "ts": now, "seq": 901, "vitals": {"hr": "seventy"}}),
        ),
        "non_finite": (
            telemetry,
            f'{{"v": 1, "ts": {now}, "seq": 902, "vitals": {{"hr": NaN}}}}'.encode(),
        ),
        "out_of_range": (
            telemetry,
            orjson.dumps({"v": 1, "ts": now, "seq": 903, "vitals": {"hr": 900}}),
        ),
        "future_timestamp": (
            telemetry,
            orjson.dumps({"v": 1, "ts": now + 86_400_000, "seq": 904, "vitals": {"hr": 70}}),
        ),
        "before_registration": (
            f"{topic_prefix}/dev/new-wb-003/telemetry",
            orjson.dumps({"v": 1, "ts": now - 2 * 86_400_000, "seq": 905, "vitals": {"hr": 70}}),
        ),
        "oversized": (
            telemetry,
            orjson.dumps(
                {"v": 1, "ts": now, "seq": 906, "vitals": {"hr": 70}, "pad": "x" * 70_000}
            ),
        ),
        "unsupported_version": (
            telemetry,
            orjson.dumps({"v": 2, "ts": now, "seq": 907, "heart": 70}),
        ),
    }
    spo2 = (telemetry, orjson.dumps({"v": 1, "ts": now, "seq": 908, "vitals": {"spo2": 140}}))
    client = _publisher(shared_broker_url, "bad-input")
    seq = 0
    for topic, payload in [*bad.values(), spo2]:
        for _ in range(3):  # good messages before and after each bad one
            client.publish(telemetry, _good(seq, now), qos=1)
            seq += 1
        client.publish(topic, payload, qos=1)
    client.publish(telemetry, _good(seq, now), qos=1)
    seq += 1
    while client.pending_out():
        client.pump(0.01)
    client.stop()

    def letters() -> list[tuple[str, str, bytes]]:
        with psycopg.connect(db_url) as conn:
            return [
                (r[0], r[1], bytes(r[2]))
                for r in conn.execute("SELECT reason, detail, payload FROM dead_letters")
            ]

    wait_until(
        lambda: len(letters()) >= len(bad) + 1 and _stored(db_url)[0] >= seq,
        30,
        "every message to land",
    )
    found = letters()
    by_reason: dict[str, list[tuple[str, bytes]]] = {}
    for reason, detail, payload in found:
        by_reason.setdefault(reason, []).append((detail, payload))
    for reason, (_topic, payload) in bad.items():
        assert reason in by_reason, f"no dead letter with reason {reason}; got {sorted(by_reason)}"
        assert any(p == payload for _d, p in by_reason[reason]), f"{reason}: raw bytes not kept"
    details = " | ".join(d for d, _p in by_reason["out_of_range"])
    assert "hr" in details and "spo2" in details and "300" in details and "100" in details
    assert "ghost-wb-999" in by_reason["unknown_device"][0][0]
    rows, distinct, keys = _stored(db_url)
    assert keys == {("bad-wb-001", s) for s in range(seq)}, (
        "a good message was lost around a bad one"
    )
    assert rows == distinct == seq
    counted = {
        s.labels["reason"]: s.value
        for m in running_ingester.metrics.dead_lettered.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert counted["out_of_range"] == 2
    assert all(counted.get(r, 0) >= 1 for r in bad)


def test_a_redelivered_message_is_stored_once(
    db_url: str, shared_broker_url: str, topic_prefix: str, running_ingester: IngestService
) -> None:
    with psycopg.connect(db_url) as conn:
        ensure_devices(conn, ["dup-wb-001"])
    now = int(time.time() * 1000)
    client = _publisher(shared_broker_url, "dup")
    topic = f"{topic_prefix}/dev/dup-wb-001/telemetry"

    def duplicates() -> float:
        return sum(
            s.value
            for m in running_ingester.metrics.duplicates.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )

    for _round in range(2):
        for seq in range(20):
            client.publish(topic, _good(seq, now + seq), qos=1)
        while client.pending_out():
            client.pump(0.01)
        # The first round is committed before the second is sent: the second comes in later
        # batches, and only the database can tell that it was stored already.
        wait_until(lambda: _stored(db_url)[0] >= 20, 20, "the first round")
    client.stop()
    # Every message of the second round processed: counted as a duplicate or stored again.
    wait_until(lambda: duplicates() + _stored(db_url)[0] >= 40, 20, "the second round")
    rows, distinct, _keys = _stored(db_url)
    assert rows == distinct == 20
    assert duplicates() == 20


# --------------------------------------------------------------------------- writers


def test_parallel_writers_hand_each_devices_readings_to_the_sinks_in_order(
    db_url: str, private_broker: PrivateBroker, topic_prefix: str
) -> None:
    """Three writers commit small batches side by side; detection must still see every
    device's readings once and in order (the fall detector drops bursts older than the last)."""
    devices = [f"order-wb-{i:02d}" for i in range(20)]
    with psycopg.connect(db_url) as conn:
        ensure_devices(conn, devices)
    settings = load_settings(
        db={"url": db_url},
        mqtt={
            "url": private_broker.url,
            "topic_prefix": topic_prefix,
            "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
        },
        ingest={"metrics_port": 0, "writers": 3, "batch_size": 40},
    )
    seen: dict[str, list[int]] = {d: [] for d in devices}
    lock = threading.Lock()

    def sink(batch: object, _now_ms: int) -> None:
        with lock:
            for r in batch.readings:  # type: ignore[attr-defined]
                seen[r.device_id].append(r.seq)

    service = IngestService(settings, sinks=[sink])
    thread = threading.Thread(target=service.run, name="test-ingest")
    thread.start()
    try:
        wait_until(lambda: service.metrics.connected._value.get() == 1, 20, "the ingester")
        stream = _Stream(private_broker.url, topic_prefix, devices, seconds=60)
        stream.start()
        stream.join()
        wait_until(lambda: _count(db_url, "vitals") >= 1200, 60, "every reading stored")
        wait_until(lambda: sum(map(len, seen.values())) >= 1200, 20, "every batch handed on")
    finally:
        service.stop()
        thread.join(30)
    # At most 40 messages a batch: at least 30 batches, with three writers committing side by side.
    assert service.totals()["batches"] >= 30
    for device, seqs in seen.items():
        assert seqs == list(range(60)), device
    rows, keys, _ = _stored(db_url)
    assert rows == keys == 1200
