"""No SOS or fall is lost or doubled, whenever the ingester or the delivery worker dies.

1,000 simulated wristbands stream in real time through a private Mosquitto; 200 of them
belong to registered elders who each press SOS once at a random moment; 20 belt clips (SisFall
is recorded at the waist) of 20 other elders stream real SisFall recordings (falls of every
type) as one-second accelerometer bursts. Meanwhile the ingester (``anxin ingest``, a child process as an operator
runs it) is killed with SIGKILL at random moments, and once it exits by itself at the test-only
crash point right after acknowledging an SOS and before detecting it; the delivery worker
(``anxin alerts worker``) is killed three times. Each is restarted at once.

At the end, what a dispatch centre and a family rely on:

* SOS published = SOS stored = SOS alerts = distinct 120 pushes accepted, one per elder;
* every recording that the fall detector flags when nothing dies (the same recordings through
  the same detector in-process, on a database of its own) opens a fall alert with the kills;
* nothing doubled: one alert per elder and kind, each 120 key accepted once by the receiver
  (a repeat after a kill arrives with the same key and is recognised as a repeat).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest

from core.mqtt import MqttClient
from devices import repository as registry
from devices.model import ResidentIn, Sex
from devices.protocol import (
    Channel,
    Event,
    EventKind,
    ReadingWire,
    accel_i16,
    encode_event,
    encode_telemetry,
    topic,
)
from devices.registry import ensure_devices
from ingest.detection import DetectionSink
from ingest.pipeline import Batch, DeviceInfo, DeviceState
from simulators.wearable import WearableFleet, publish_fleet
from tests.ingest.test_detection_integration import SCALE_G
from tests.recordings import sisfall_trial
from tests.seed import make_keyring
from tests.services import (
    ROOT,
    SECRET,
    IngestProcess,
    PrivateBroker,
    fresh_database,
    serve_receiver,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLEET = 1000
SOS = 200
FALLS = 20
SECONDS = 60
RATE = 50
SEED = 20261201


def _fall_trials() -> list[tuple[str, str]]:
    """20 fall trials: every fall type F01-F15, of ten different young subjects."""
    return [
        (f"SA{1 + i % 10:02d}", f"F{1 + i % 15:02d}_SA{1 + i % 10:02d}_R0{1 + i // 15}")
        for i in range(FALLS)
    ]


def _key_env() -> dict[str, str]:
    import base64

    key = base64.b64encode(b"k" * 32).decode()  # make_keyring()'s key
    return {
        "ANXIN_REGISTRY__FIELD_KEYS": f'{{"t1": "{key}"}}',
        "ANXIN_REGISTRY__CURRENT_KEY_ID": "t1",
    }


def services_env(
    db_url: str, broker_url: str, receiver_url: str, name: str, **settings: str
) -> dict[str, str]:
    """The environment of ``anxin ingest`` and ``anxin alerts worker`` in these tests: this
    test's database, broker, topic prefix and 120 receiver, plus ``settings``
    (``ANXIN_`` variables)."""
    return {
        **os.environ,
        **_key_env(),
        "ANXIN_ENVIRONMENT": "test",
        "ANXIN_DB__URL": db_url,
        "ANXIN_MQTT__URL": broker_url,
        "ANXIN_MQTT__TOPIC_PREFIX": f"{name}-{uuid.uuid4().hex[:6]}/v1",
        "ANXIN_MQTT__CLIENT_ID": f"{name}-ingest-{uuid.uuid4().hex[:6]}",
        "ANXIN_INGEST__METRICS_PORT": "0",
        "ANXIN_ALERTS__DISPATCH120_URL": receiver_url,
        "ANXIN_ALERTS__DISPATCH120_SECRET": SECRET,
        **settings,
    }


def _register(url: str, devices: list[str], kind: str = "wristband") -> None:
    """One elder per device, the device bound to them."""
    keyring = make_keyring()
    with psycopg.connect(url) as conn:
        ensure_devices(conn, devices, kind)
        for i, device in enumerate(devices):
            resident = registry.create_resident(
                conn,
                ResidentIn(name=f"长者{i:03d}", sex=Sex.FEMALE, birth_date=dt.date(1940, 1, 1)),
                keyring=keyring,
            )
            conn.execute(
                "UPDATE devices SET resident_id = %s WHERE device_id = %s", (resident.id, device)
            )
        conn.commit()


def _bursts(device: str, acc: np.ndarray, t0_ms: int) -> list[bytes]:
    n = len(acc) // RATE
    return [
        encode_telemetry(
            [
                ReadingWire(
                    ts=t0_ms + k * 1000,
                    seq=k,
                    accel=accel_i16(acc[k * RATE : (k + 1) * RATE], RATE, SCALE_G),
                )
            ]
        )
        for k in range(n)
    ]


def _flagged_without_kills(recordings: dict[str, np.ndarray], t0_ms: int) -> set[str]:
    """The devices whose recording the detector flags when nothing dies: the same bursts
    through the same sink, in-process, on a database of its own."""
    with fresh_database() as url:
        ensure_devices_url(url, list(recordings), kind="belt_clip")
        infos = {
            d: DeviceInfo(d, "belt_clip", DeviceState.ACTIVE, 0, None, None) for d in recordings
        }
        sink = DetectionSink(url, infos.get)
        from devices.protocol import AccelBurst, Reading

        for k in range(max(len(a) for a in recordings.values()) // RATE):
            readings = []
            for device, acc in recordings.items():
                if (k + 1) * RATE <= len(acc):
                    counts = np.clip(
                        np.round(acc[k * RATE : (k + 1) * RATE] / SCALE_G), -32768, 32767
                    )
                    readings.append(
                        Reading(
                            t0_ms + k * 1000,
                            k,
                            device,
                            accel=AccelBurst(RATE, SCALE_G, counts.astype("<i2").tobytes()),
                        )
                    )
            sink(Batch(readings=readings), t0_ms + (k + 1) * 1000 + 50)
        sink.close()
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT DISTINCT device_id FROM findings WHERE kind = 'fall_suspected'"
            ).fetchall()
    return {r[0] for r in rows}


def ensure_devices_url(url: str, devices: list[str], kind: str = "wristband") -> None:
    with psycopg.connect(url) as conn:
        ensure_devices(conn, devices, kind)


class _Worker:
    """``anxin alerts worker`` as a child process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "alerts", "worker"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def test_no_sos_or_fall_is_lost_or_doubled_through_crashes(
    db_url: str, private_broker: PrivateBroker, tmp_path: Path
) -> None:
    broker = private_broker
    rng = random.Random(SEED)
    fleet = [f"fi-wb-{i:04d}" for i in range(FLEET)]
    sos_devices = fleet[:SOS]
    fall_devices = [f"fi-fall-{i:02d}" for i in range(FALLS)]
    recordings = {
        d: sisfall_trial(s, k) for d, (s, k) in zip(fall_devices, _fall_trials(), strict=True)
    }
    expected_falls = _flagged_without_kills(recordings, 1_764_000_000_000)
    assert len(expected_falls) >= FALLS * 3 // 4, (
        f"the detector flags only {sorted(expected_falls)}"
    )

    ensure_devices_url(db_url, fleet)
    _register(db_url, sos_devices)
    _register(db_url, fall_devices, kind="belt_clip")  # SisFall is worn at the waist
    receiver_gen = serve_receiver()
    receiver = next(receiver_gen)
    env = services_env(
        db_url,
        broker.url,
        receiver.url,
        "fi",
        ANXIN_INGEST__LOG_EVERY_S="5",
        ANXIN_INGEST__SWEEP_EVERY_S="2",
        ANXIN_INGEST__SWEEP_GRACE_S="5",
        ANXIN_ALERTS__DELIVERY_LEASE_S="3",
        ANXIN_ALERTS__DELIVERY_BACKOFF_BASE_S="0.2",
        ANXIN_ALERTS__FALL_CANCEL_WINDOW_S="5",
    )
    prefix = env["ANXIN_MQTT__TOPIC_PREFIX"]
    ingest_log = tmp_path / "ingest.log"
    ingester = IngestProcess(env, ingest_log)
    worker = _Worker(env, tmp_path / "worker.log")
    ingester.start()
    worker.start()

    errors: list[BaseException] = []
    sent_sos: list[str] = []

    def run(name: str, target: object) -> threading.Thread:
        def body() -> None:
            try:
                target()  # type: ignore[operator]
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=body, name=name)
        t.start()
        return t

    def client(name: str) -> MqttClient:
        c = MqttClient(
            host="127.0.0.1", port=broker.port, client_id=f"{name}-{uuid.uuid4().hex[:6]}",
            persistent=True, protocol_v5=False,
        )  # fmt: skip
        c.connect_inline()
        return c

    start_ms = int(time.time() * 1000)

    def stream_fleet() -> None:
        c = client("fleet")
        publish_fleet(
            c, WearableFleet(fleet, seed=7).with_prefix(prefix), seconds=SECONDS, paced=True
        )
        while c.pending_out():
            c.pump(0.01)
        c.stop()

    def stream_falls() -> None:
        c = client("falls")
        offsets = {d: rng.uniform(0, SECONDS - 25) for d in fall_devices}
        bursts = {
            d: _bursts(d, acc, start_ms + int(offsets[d] * 1000)) for d, acc in recordings.items()
        }
        t0 = time.monotonic()
        plan = sorted(
            (offsets[d] + k, d, payload) for d, ps in bursts.items() for k, payload in enumerate(ps)
        )
        for due, device, payload in plan:
            while (wait := t0 + due - time.monotonic()) > 0:
                c.pump(min(0.02, wait))
            c.publish(topic(prefix, device, Channel.TELEMETRY), payload, qos=1)
            c.pump(0)
        while c.pending_out():
            c.pump(0.01)
        c.stop()

    def press_sos() -> None:
        c = client("sos")
        times = sorted(rng.uniform(2, SECONDS - 5) for _ in sos_devices)
        t0 = time.monotonic()
        for due, device in zip(times, sos_devices, strict=True):
            while (wait := t0 + due - time.monotonic()) > 0:
                c.pump(min(0.02, wait))
            payload = encode_event(Event(int(time.time() * 1000), 1, device, EventKind.SOS))
            c.publish(topic(prefix, device, Channel.EVENT), payload, qos=1)
            sent_sos.append(device)
            c.pump(0)
        while c.pending_out():
            c.pump(0.01)
        c.stop()

    threads = [run("fleet", stream_fleet), run("falls", stream_falls), run("sos", press_sos)]
    kills = {"ingester": 0, "crash point": 0, "worker": 0}
    try:
        began = time.monotonic()
        schedule = sorted(
            [(rng.uniform(4, SECONDS - 4), "ingester") for _ in range(5)]
            + [(rng.uniform(4, SECONDS - 4), "worker") for _ in range(3)]
            + [(rng.uniform(10, SECONDS - 10), "crash point")]
        )
        for at, what in schedule:
            while time.monotonic() - began < at:
                time.sleep(0.05)
            if what == "worker":
                worker.kill()
                worker.start()
            elif what == "ingester":
                ingester.kill()
                ingester.start()
            else:  # a run that exits by itself right after acknowledging its first SOS
                ingester.kill()
                ingester.env = {**env, "ANXIN_TEST_EXIT_AFTER_EVENT_ACKS": "1"}
                ingester.start()
                assert ingester.proc is not None
                ingester.proc.wait(60)
                assert ingester.proc.returncode == 70, ingester.log()[-2000:]
                ingester.env = env
                ingester.start()
            kills[what] += 1
        for t in threads:
            t.join(SECONDS + 120)
        assert not errors, errors

        def counts() -> tuple[int, int, int]:
            with psycopg.connect(db_url) as conn:
                row = conn.execute(
                    """SELECT (SELECT count(*) FROM device_events WHERE kind = 'sos'),
                              (SELECT count(*) FROM alerts WHERE kind = 'sos'),
                              (SELECT count(DISTINCT device_id) FROM alerts WHERE kind = 'fall')"""
                ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1]), int(row[2])

        def sos_pushes() -> set[str]:
            return {a.key for a in receiver.first_accepted() if a.key and "sos" in _kind_of(a.body)}

        wait_until(
            lambda: counts()[:2] == (SOS, SOS) and len(sos_pushes()) == SOS,
            120,
            "every SOS stored, alerted and pushed",
            interval=0.5,
        )
        wait_until(lambda: counts()[2] >= len(expected_falls), 60, "the fall alerts")
    finally:
        ingester.stop()
        worker.stop()
        receiver_gen.close()

    assert kills == {"ingester": 5, "crash point": 1, "worker": 3}
    assert "test crash point: exiting after acknowledging events" in ingester.log()
    assert "recovery at start" in ingester.log()
    with psycopg.connect(db_url) as conn:
        per_elder = conn.execute(
            """SELECT kind, count(*), count(DISTINCT resident_id), sum(occurrences)
                 FROM alerts GROUP BY kind ORDER BY kind"""
        ).fetchall()
        fall_devices_alerted = {
            r[0] for r in conn.execute("SELECT DISTINCT device_id FROM alerts WHERE kind = 'fall'")
        }
        sos_devices_alerted = sorted(
            r[0] for r in conn.execute("SELECT device_id FROM alerts WHERE kind = 'sos'")
        )
        unalerted = conn.execute(
            "SELECT count(*) FROM findings WHERE alerted_at IS NULL"
        ).fetchone()
        unhandled = conn.execute(
            "SELECT count(*) FROM device_events WHERE handled_at IS NULL AND kind = 'sos'"
        ).fetchone()
    by_kind = {r[0]: r[1:] for r in per_elder}
    # SOS: one alert per elder, one occurrence each (no press counted twice).
    assert sorted(sent_sos) == sorted(sos_devices)
    assert sos_devices_alerted == sorted(sos_devices)
    assert by_kind["sos"] == (SOS, SOS, SOS)
    # Falls: every recording flagged without kills is flagged with them; one alert per elder.
    assert expected_falls <= fall_devices_alerted
    assert by_kind["fall"][0] == by_kind["fall"][1]
    assert unalerted == (0,) and unhandled == (0,)
    # 120: one accepted push per SOS alert; every repeat carried a key accepted before.
    accepted = [a for a in receiver.arrivals if 200 <= a.status < 300]
    assert all(a.signature_ok for a in receiver.arrivals)
    assert len({a.key for a in accepted if not a.duplicate}) == len(
        [a for a in accepted if not a.duplicate]
    )
    assert len(sos_pushes()) == SOS


def _kind_of(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body)["alert"]["kind"])
    except (ValueError, KeyError, TypeError):
        return ""
