"""The family doctor's per-elder NEWS2 settings: changed through the API by the signed doctor
(audited, refused for another doctor's elder, bad charts refused by the field), and scored
with by the ingester, through the real broker and ``anxin ingest`` as a process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api.app import create_app
from core.mqtt import MqttClient
from core.settings import load_settings
from devices.access import Role
from devices.crypto import Keyring
from devices.protocol import Channel, ReadingWire, Vitals, encode_telemetry, topic
from tests.api.client import bearer
from tests.seed import Seeded, doctor_member_of, seed_registry
from tests.services import IngestProcess, ingest_env, serve_api, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLOT_MS = 15_000  # the ingester keeps one vitals reading per 15 s slot (600 s / 40)
#: The RCP pulse chart moved down for an elder whose resting pulse is 45 on a beta-blocker.
SLOW_PULSE = {"starts": [36, 41, 91, 111, 131], "scores": [3, 1, 0, 1, 2, 3]}


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[httpx.Client, Seeded, Seeded, dict[str, str]]]:
    """Two elders, each signed with a team of their own; the API; the first elder's doctor."""
    settings = load_settings(db={"url": db_url})
    keyring = Keyring.from_settings(settings.registry)
    mine = seed_registry(db_url, keyring, device_id="wb-n2-mine")
    other = seed_registry(db_url, keyring, device_id="wb-n2-other")
    doctor = bearer(db_url, Role.DOCTOR, member_ids=[doctor_member_of(db_url, mine.resident_id)])
    with (
        serve_api(create_app(settings), access_log=False) as url,
        httpx.Client(base_url=url) as http,
    ):
        yield http, mine, other, doctor


def _audit(db_url: str, resident_id: uuid.UUID) -> list[tuple[str, bool, str]]:
    with psycopg.connect(db_url) as conn:
        return [
            (r[0], r[1], r[2])
            for r in conn.execute(
                """SELECT action, granted, purpose FROM audit_log WHERE resident_id = %s
                    ORDER BY id""",
                (resident_id,),
            )
        ]


def test_the_signed_doctor_changes_the_settings_and_another_doctors_elder_is_refused(
    db_url: str, world: tuple[httpx.Client, Seeded, Seeded, dict[str, str]]
) -> None:
    http, mine, other, doctor = world
    path = f"/api/v1/residents/{mine.resident_id}/news2/settings"
    before = http.get(path, headers=doctor)
    assert before.status_code == 200
    assert before.json()["stored"] is False and before.json()["changed"] == []
    assert before.json()["pulse"] == {
        "starts": [41, 51, 91, 111, 131],
        "scores": [3, 1, 0, 1, 2, 3],
    }

    put = http.put(
        path, headers=doctor, json={"pulse": SLOW_PULSE, "spo2_scale": 2, "note": "β 受体阻滞剂"}
    )
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["changed"] == ["pulse"] and body["spo2_scale"] == 2
    assert body["pulse"] == SLOW_PULSE and body["updated_by"].startswith("doctor: ")
    assert http.get(path, headers=doctor).json()["pulse"] == SLOW_PULSE
    assert ("news2.write", True, "PUT news2 settings") in _audit(db_url, mine.resident_id)

    # Another team's elder: refused, and the refusal is in the audit log.
    theirs = f"/api/v1/residents/{other.resident_id}/news2/settings"
    assert http.put(theirs, headers=doctor, json={"pulse": SLOW_PULSE}).status_code == 403
    assert http.get(theirs, headers=doctor).status_code == 403
    refused = _audit(db_url, other.resident_id)
    assert ("news2.write", False, "PUT news2 settings") in refused
    assert ("profile.read", False, "GET news2 settings") in refused
    # Nor may the community's operator change them.
    operator = bearer(db_url, Role.OPERATOR)
    assert http.put(path, headers=operator, json={"pulse": SLOW_PULSE}).status_code == 403


def test_bad_charts_are_refused_naming_the_chart_and_field(
    world: tuple[httpx.Client, Seeded, Seeded, dict[str, str]],
) -> None:
    http, mine, _other, doctor = world
    path = f"/api/v1/residents/{mine.resident_id}/news2/settings"
    cases = [
        ({"pulse": {"starts": [41, 51], "scores": [3, 1, 0, 4]}}, ["body", "pulse", "scores", 3]),
        ({"pulse": {"starts": [51, 41], "scores": [3, 1, 0]}}, ["body", "pulse"]),
        ({"pulse": {"starts": [41, 51], "scores": [3, 1]}}, ["body", "pulse"]),
        (
            {"temperature": {"starts": ["warm"], "scores": [1, 0]}},
            ["body", "temperature", "starts", 0],
        ),
        ({"spo2_scale": 3}, ["body", "spo2_scale"]),
        ({"heart": {"starts": [1], "scores": [0, 1]}}, ["body", "heart"]),
    ]
    for payload, loc in cases:
        r = http.put(path, headers=doctor, json=payload)
        assert r.status_code == 422, (payload, r.text)
        assert loc in [d["loc"] for d in r.json()["detail"]], (payload, r.json())
    r = http.put(path, headers=doctor, json={"pulse": {"starts": [51, 41], "scores": [3, 1, 0]}})
    assert "not strictly ascending" in r.text
    assert http.get(path, headers=doctor).json()["stored"] is False  # nothing was stored


def _publisher(broker_url: str) -> MqttClient:
    host, port = broker_url.split("://", 1)[1].rsplit(":", 1)
    client = MqttClient(host=host, port=int(port), client_id=f"dev-{uuid.uuid4().hex[:6]}")
    client.connect_inline()
    return client


def _publish(client: MqttClient, prefix: str, device_id: str, ts_ms: int, seq: int) -> None:
    """A wristband's vitals: pulse 45 (score 1 on the RCP chart), respiration 22 (score 2)."""
    reading = ReadingWire(ts=ts_ms, seq=seq, vitals=Vitals(heart_rate=45, resp_rate=22))
    client.publish(topic(prefix, device_id, Channel.TELEMETRY), encode_telemetry([reading]), qos=1)
    while client.pending_out():
        client.pump(0.01)


def _news2(db_url: str, device_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT evidence FROM findings WHERE device_id = %s AND kind = 'news2' ORDER BY id",
                (device_id,),
            )
        ]


def test_a_change_through_the_api_changes_what_the_ingester_scores(
    db_url: str,
    shared_broker_url: str,
    topic_prefix: str,
    tmp_path: Path,
    world: tuple[httpx.Client, Seeded, Seeded, dict[str, str]],
) -> None:
    http, mine, _other, doctor = world
    ingester = IngestProcess(
        ingest_env(db_url, shared_broker_url, topic_prefix),
        tmp_path / "ingest.log",
    )
    with psycopg.connect(db_url) as conn:  # worn since yesterday: the readings below are later
        conn.execute(
            "UPDATE devices SET registered_at = now() - interval '1 day' WHERE device_id = %s",
            (mine.device_id,),
        )
    ingester.start()
    client = _publisher(shared_broker_url)
    try:
        # Ten minutes of readings ahead of us, one per slot of the ingester's vitals ring.
        ts = int(time.time() * 1000) - 590_000
        seq = 0
        for _ in range(3):  # three readings: a sustained value (min_readings)
            seq += 1
            _publish(client, topic_prefix, mine.device_id, ts, seq)
            ts += SLOT_MS
        try:
            wait_until(lambda: _news2(db_url, mine.device_id), 60, "a NEWS2 on the RCP chart")
        except AssertionError as exc:
            with psycopg.connect(db_url) as conn:
                dead = conn.execute("SELECT reason, detail FROM dead_letters").fetchall()
            raise AssertionError(f"{exc}; dead letters {dead}; log:\n{ingester.log()}") from exc
        first = _news2(db_url, mine.device_id)[-1]
        assert first["score"] == 3 and first["subscores"]["pulse"] == 1

        put = http.put(
            f"/api/v1/residents/{mine.resident_id}/news2/settings",
            headers=doctor,
            json={"pulse": SLOW_PULSE},
        )
        assert put.status_code == 200, put.text

        def rescored() -> bool:
            nonlocal ts, seq
            seq += 1
            _publish(client, topic_prefix, mine.device_id, ts, seq)
            ts = min(ts + SLOT_MS, int(time.time() * 1000))
            return any(e["score"] == 2 for e in _news2(db_url, mine.device_id))

        # The ingester takes the doctor's chart up within seconds; each new slot is rescored.
        wait_until(rescored, 90, "the NEWS2 of the doctor's chart", interval=1.0)
        latest = _news2(db_url, mine.device_id)[-1]
        assert latest["score"] == 2
        assert latest["subscores"] == {"pulse": 0, "respiration_rate": 2}
    finally:
        client.stop()
        ingester.stop()
    assert "NEWS2 settings of 1 elders in force" in ingester.log()
