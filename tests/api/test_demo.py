"""``anxin demo`` end to end: as a subprocess against the real services, and with embedded ones."""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from api.demo import run_demo
from core.embedded import free_port, reachable_broker
from core.settings import load_settings

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


@pytest.mark.integration
def test_demo_stores_vitals_and_dead_letters_the_bad_messages(fresh_database: str) -> None:
    _require_mosquitto()
    result = _run_cli(
        _demo_env(ANXIN_DB__URL=fresh_database, ANXIN_MQTT__URL=MOSQUITTO),
        "--devices",
        "3",
        "--embedded",
        "never",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    _console_url(output)
    assert re.search(r"\[\s+5 s\] stored \d+ vitals, \d+ accel bursts \| \d+ msg/s", output), output
    assert "totals after" in output
    with psycopg.connect(fresh_database) as conn:
        per_device: dict[str, int] = dict(
            conn.execute("SELECT device_id, count(*) FROM vitals GROUP BY device_id").fetchall()
        )
        letters = conn.execute(
            "SELECT reason, device_id, topic FROM dead_letters ORDER BY id"
        ).fetchall()
    # Three wristbands, once a second for about 12 s.
    assert set(per_device) == {"demo-wb-00000", "demo-wb-00001", "demo-wb-00002"}
    assert all(n >= 8 for n in per_device.values()), per_device
    reasons = {reason for reason, _, _ in letters}
    assert {"malformed_json", "out_of_range"} <= reasons, letters
    assert all(
        device == "demo-wb-00000" and "/dev/demo-wb-00000/telemetry" in topic
        for _, device, topic in letters
    )


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
    # The throw-away data directory is gone with the server.
    assert _embedded_data_dirs() - before == set()
