"""``anxin demo`` end to end: as a subprocess against the real services, and with embedded ones."""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apprise
import httpx
import orjson
import psycopg
import pytest

from alerts.channels import with_idempotency_header
from alerts.dispatch120 import sign_request
from core.settings import load_settings
from demo.embedded import free_port, reachable_broker
from demo.receiver import DemoReceiver
from demo.run import run_demo

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = os.environ.get("ANXIN_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def _require_mosquitto() -> None:
    settings = load_settings(mqtt={"url": MOSQUITTO})
    if not reachable_broker(settings.mqtt.host, settings.mqtt.port, timeout=3):
        message = f"no MQTT broker at {MOSQUITTO} (set ANXIN_TEST_MQTT_URL)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _demo_env(**extra: str) -> dict[str, str]:
    tag = secrets.token_hex(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANXIN_")}
    env.update(
        ANXIN_DEMO_SECONDS="12",
        ANXIN_API__PORT="0",
        ANXIN_INGEST__METRICS_PORT="0",
        ANXIN_MQTT__TOPIC_PREFIX=f"anxin-test-{tag}/v1",
        ANXIN_MQTT__CLIENT_ID=f"anxin-test-{tag}",
    )
    env.update(extra)
    return env


def _run_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _console_url(output: str) -> str:
    match = re.search(r"Anxin live console: (http://127\.0\.0\.1:\d+/)", output)
    assert match, output
    return match.group(1)


_ALERT_TOTALS = re.compile(
    r"and then: alerts (\d+) live of (\d+) \| deliveries (\d+) of (\d+) delivered \| received: "
    r"120 pushes (\d+) \(signature ok\), family/doctor messages (\d+)"
)


@pytest.mark.integration
def test_demo_stores_vitals_dead_letters_bad_messages_and_alerts_reach_the_receiver(
    fresh_database: str,
) -> None:
    _require_mosquitto()
    result = _run_cli(
        _demo_env(ANXIN_DB__URL=fresh_database, ANXIN_MQTT__URL=MOSQUITTO, ANXIN_DEMO_SECONDS="20"),
        "--devices",
        "3",
        "--embedded",
        "never",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    _console_url(output)
    # Each role's screen, with a sample token that signs in.
    for path in ("/app/dispatch", "/app/doctor", "/app/operator", "/app/family"):
        assert re.search(rf"http://127\.0\.0\.1:\d+{path}#token=anx_\S+", output), path
    assert re.search(r"\[\s+5 s\] stored \d+ vitals, \d+ accel bursts \| \d+ msg/s", output), output
    assert "totals after" in output
    with psycopg.connect(fresh_database) as conn:
        per_device: dict[str, int] = dict(
            conn.execute("SELECT device_id, count(*) FROM vitals GROUP BY device_id").fetchall()
        )
        letters = conn.execute(
            "SELECT reason, device_id, topic FROM dead_letters ORDER BY id"
        ).fetchall()
    # Three wristbands, once a second for about 20 s.
    assert set(per_device) == {"demo-wb-00000", "demo-wb-00001", "demo-wb-00002"}
    assert all(n >= 8 for n in per_device.values()), per_device
    reasons = {reason for reason, _, _ in letters}
    assert {"malformed_json", "out_of_range"} <= reasons, letters
    assert all(
        device == "demo-wb-00000" and "/dev/demo-wb-00000/telemetry" in topic
        for _, device, topic in letters
    )
    _assert_the_sos_alert_reached_everyone(output, fresh_database)


def _assert_the_sos_alert_reached_everyone(output: str, url: str) -> None:
    """The SOS at 5 s opened an alert; the signed 120 push with the profile, the child's, the
    work unit's and the doctor's messages reached the demo's receiver."""
    totals = _ALERT_TOTALS.search(output)
    assert totals, output
    live, total, delivered, deliveries, pushes, family = map(int, totals.groups())
    assert (total, pushes) == (1, 1), output
    assert live in (0, 1), output  # the demo operator resolves it 8 s after the child acknowledged
    assert family == 3, output
    assert delivered == deliveries >= 5, output  # 120, child, work unit, doctor, hospital
    assert "the 120 centre got alert 1 (sos), signed, with:" in output
    assert re.search(r"elder: +演示老人 Demo elder \(sample\)", output), output
    assert re.search(r"address: +示例省示例市演示区样例路 8 号", output), output
    assert re.search(
        r"profile: .*hypertension.* \| allergies: .*penicillin.* \| blood type A\+", output
    )
    assert "the child's phone got:" in output
    assert re.search(r"\| .*按下了紧急呼叫\(SOS\)", output), output
    assert re.search(r"\| .*http://127\.0\.0\.1:\d+/api/v1/ack/[A-Za-z0-9_-]{24}", output), output
    with psycopg.connect(url) as conn:
        alerts = conn.execute(
            "SELECT a.kind, a.severity, a.device_id, r.name, a.state, a.acknowledged_by "
            "FROM alerts a "
            "JOIN residents r ON r.id = a.resident_id"
        ).fetchall()
        sent: dict[str, str] = dict(
            conn.execute(
                "SELECT recipient_kind, status FROM deliveries WHERE tier = 0 ORDER BY id"
            ).fetchall()
        )
        attempts = conn.execute(
            "SELECT d.recipient_kind, t.status_code FROM delivery_attempts t "
            "JOIN deliveries d ON d.id = t.delivery_id WHERE d.channel = 'dispatch120'"
        ).fetchall()
    assert [a[:4] for a in alerts] == [
        ("sos", "emergency", "demo-wb-00000", "演示老人 Demo elder (sample)")
    ]
    # The child tapped the acknowledge link of the message (GET /api/v1/ack/<token>).
    assert "the child tapped the acknowledge link: Thank you" in output
    state, acknowledged_by = alerts[0][4:]
    assert state in ("acknowledged", "resolved"), alerts
    assert acknowledged_by.startswith("contact:child:"), alerts
    for kind in ("dispatch120", "child", "work_unit", "doctor", "hospital"):
        assert sent.get(kind) == "delivered", sent
    assert attempts == [("dispatch120", 200)], attempts


def test_demo_without_services_and_without_embedded_ones_says_so() -> None:
    settings = load_settings(
        db={"url": f"postgresql://postgres@127.0.0.1:{free_port()}/anxin", "connect_timeout_s": 1},
        mqtt={"url": f"mqtt://127.0.0.1:{free_port()}"},
    )
    out = io.StringIO()
    assert run_demo(2, "never", seconds=1, settings=settings, out=out) == 2
    assert "No PostgreSQL answers at postgresql://postgres@127.0.0.1:" in out.getvalue()
    assert "--embedded auto" in out.getvalue()


def _embedded_data_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("anxin-pg-*")}


@pytest.mark.slow
def test_demo_falls_back_to_an_embedded_postgres_and_broker() -> None:
    """Nothing answers at the configured addresses: the demo starts its own, even as root."""
    before = _embedded_data_dirs()
    env = _demo_env(
        ANXIN_DEMO_SECONDS="10",
        ANXIN_DB__URL=f"postgresql://postgres@127.0.0.1:{free_port()}/anxin",
        ANXIN_DB__CONNECT_TIMEOUT_S="1",
        ANXIN_MQTT__URL=f"mqtt://127.0.0.1:{free_port()}",
    )
    result = _run_cli(env, "--devices", "2", "--embedded", "auto", timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "database:  embedded PostgreSQL at postgresql://postgres@127.0.0.1:" in output
    assert "broker:    embedded amqtt broker at mqtt://127.0.0.1:" in output
    if os.geteuid() == 0:
        assert "since we are root" in output
    _console_url(output)
    match = re.search(
        r"in the database: (\d+) vitals, (\d+) accel bursts; dead letters: (.*)", output
    )
    assert match, output
    assert int(match.group(1)) >= 2 * 6
    assert "malformed_json 1" in match.group(3)
    assert "out_of_range 1" in match.group(3)
    # The SOS at 5 s reached the receiver through the embedded services too.
    totals = _ALERT_TOTALS.search(output)
    assert totals, output
    assert int(totals.group(5)) == 1, output
    assert int(totals.group(6)) == 3, output
    # The throw-away data directory is gone with the server.
    assert _embedded_data_dirs() - before == set()


# -- the demo's receiver (the 120 centre and the phones) ----------------------------------------


def _record(alert_id: int) -> bytes:
    return orjson.dumps(
        {
            "version": 1,
            "alert": {"id": alert_id, "kind": "sos"},
            "resident": {"name": "Sample elder", "address": {"city": "示例市", "text": "Room 1"}},
            "profile": {"conditions": ["hypertension"], "allergies": [], "blood_type": "O+"},
        }
    )


def _signed(secret: str, body: bytes, key: str, *, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {
        "Content-Type": "application/json",
        "X-Anxin-Timestamp": timestamp,
        "X-Anxin-Signature": sign_request(
            secret.encode(),
            timestamp=timestamp,
            idempotency_key=key,
            content_type="application/json",
            body=body,
        ),
        "Idempotency-Key": key,
    }


def test_receiver_takes_a_signed_push_once_and_refuses_a_bad_or_stale_signature() -> None:
    with DemoReceiver("s3cret") as receiver, httpx.Client() as http:
        url = receiver.dispatch120_url
        body = _record(7)
        first = http.post(url, content=body, headers=_signed("s3cret", body, "k-1"))
        again = http.post(url, content=body, headers=_signed("s3cret", body, "k-1"))
        wrong = http.post(url, content=body, headers=_signed("other", body, "k-2"))
        stale = http.post(
            url, content=body, headers=_signed("s3cret", body, "k-3", at=time.time() - 3600)
        )
        tampered = http.post(url, content=_record(8), headers=_signed("s3cret", body, "k-4"))
        totals = receiver.totals()
        pushes = receiver.pushes()
    assert (first.status_code, again.status_code) == (200, 200)
    assert (wrong.status_code, stale.status_code, tampered.status_code) == (401, 401, 401)
    assert (totals.pushes, totals.duplicates, totals.bad_signatures) == (1, 1, 3)
    assert [(p.alert_id, p.elder_name, p.address, p.conditions, p.blood_type) for p in pushes] == [
        (7, "Sample elder", "示例市 Room 1", ("hypertension",), "O+")
    ]


def test_receiver_counts_apprise_json_messages_per_phone_once_per_key() -> None:
    with DemoReceiver("s3cret") as receiver:
        for _ in range(2):  # a retry with the same key is dropped
            notifier = apprise.Apprise()
            assert notifier.add(
                with_idempotency_header(receiver.phone_url("child"), "alert-1-open0-t0-child-x")
            )
            assert notifier.notify(title="SOS", body="Sample elder pressed SOS.\nPlease call.")
        with httpx.Client() as http:
            unknown = http.post(f"http://{receiver.host}:{receiver.port}/elsewhere", json={})
        totals = receiver.totals()
        messages = receiver.messages()
    assert unknown.status_code == 404
    assert totals.messages == {"child": 1}
    assert totals.duplicates == 1
    assert [(m.recipient, m.title, m.body) for m in messages] == [
        ("child", "SOS", "Sample elder pressed SOS.\nPlease call.")
    ]
