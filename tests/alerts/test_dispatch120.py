"""The 120 hand-off: signature, and the emergency record pushed to a real HTTP receiver."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from alerts.channels import Dispatch120Channel, OutboundMessage
from alerts.delivery import DeliveryConfig, DeliveryWorker
from alerts.dispatch120 import sign_request, verify_signature
from demo.receiver import DemoReceiver
from tests.seed import insert_alert, make_keyring, seed_registry
from tests.services import SECRET, load_apprise_plugins, serve_receiver


def test_signature_round_trip_and_refusals() -> None:
    body = b'{"alert": 1}'
    key, ctype = "alert-1-open0-t0-dispatch120-x", "application/json"

    def sign(timestamp: str = "1764000000", k: str = key, c: str = ctype) -> str:
        return sign_request(
            b"s3cret", timestamp=timestamp, idempotency_key=k, content_type=c, body=body
        )

    def ok(secret: str, timestamp: str, b: bytes, sig: str, now: float, **kw: str) -> bool:
        args = {"idempotency_key": key, "content_type": ctype, **kw}
        return verify_signature(secret, timestamp, b, sig, now=now, tolerance=300, **args)

    signature = sign()
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert ok("s3cret", "1764000000", body, signature, 1764000100)
    assert not ok("other", "1764000000", body, signature, 1764000100)
    assert not ok("s3cret", "1764000000", body + b" ", signature, 1764000100)
    assert not ok("s3cret", "1764000001", body, signature, 1764000100)
    # A replay outside the tolerance is refused even with a valid MAC.
    assert not ok("s3cret", "1764000000", body, signature, 1764000400)
    # Within it, a new Idempotency-Key or another Content-Type breaks the signature.
    assert not ok("s3cret", "1764000000", body, signature, 1764000100, idempotency_key="new")
    assert not ok("s3cret", "1764000000", body, signature, 1764000100, content_type="text/xml")
    assert not ok("s3cret", "yesterday", body, signature, 1764000100)
    assert not ok("s3cret", "1764000000", body, signature[7:], 1764000100)
    with pytest.raises(ValueError, match="one line"):
        sign(k="a\nb")


@pytest.mark.integration
def test_a_captured_push_replayed_with_a_new_key_is_refused_by_the_receiver(
    receiver: DemoReceiver,
) -> None:
    async def push() -> None:
        channel = Dispatch120Channel(SECRET)
        message = OutboundMessage(
            1, "alert-7-open0-t0-dispatch120-x", receiver.url, "t", '{"alert": 7}',
            "application/json",
        )  # fmt: skip
        result = await channel.send(message)
        await channel.aclose()
        assert result.ok

    asyncio.run(push())
    captured = receiver.arrivals[0]
    assert (captured.status, captured.signature_ok) == (200, True)
    signed = ("content-type", "x-anxin-timestamp", "x-anxin-signature")
    replay = {k: v for k, v in captured.headers.items() if k.lower() in signed}
    with httpx.Client() as http:
        fresh = http.post(
            receiver.url, content=captured.body, headers={**replay, "Idempotency-Key": "new-1"}
        )
        again = http.post(
            receiver.url,
            content=captured.body,
            headers={**replay, "Idempotency-Key": captured.key or ""},
        )
    assert fresh.status_code == 401  # the key is signed: a new key is a forgery
    assert again.status_code == 200  # the same key: a retry, dropped as a duplicate
    assert receiver.accepted == {"alert-7-open0-t0-dispatch120-x": 1}


@pytest.fixture
def receiver() -> Iterator[DemoReceiver]:
    yield from serve_receiver()


def run_worker_until(
    url: str, config: DeliveryConfig, done: Callable[[], object], timeout: float = 20.0
) -> DeliveryWorker:
    """Run a worker in a thread until ``done()`` is true (or time runs out)."""
    worker = DeliveryWorker(url, config, keyring=make_keyring())
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(worker.run(stop)), name="worker")
    thread.start()
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        while not done() and dt.datetime.now() < deadline:
            threading.Event().wait(0.05)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    return worker


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["json", "cap"])
def test_sos_reaches_the_receiver_with_the_full_profile_and_a_valid_signature(
    db_url: str, receiver: DemoReceiver, fmt: str
) -> None:
    keyring = make_keyring()
    seeded = seed_registry(db_url, keyring)
    alert_id, (delivery_id,) = insert_alert(
        db_url, seeded, [("dispatch120", "120", "dispatch120", receiver.url, "zh")]
    )
    config = DeliveryConfig(dispatch120_secret=SECRET, dispatch120_format=fmt, poll_s=0.05)
    run_worker_until(db_url, config, receiver.first_accepted)

    (arrival,) = receiver.arrivals
    assert arrival.signature_ok and arrival.status == 200
    assert arrival.headers["idempotency-key"].startswith(f"alert-{alert_id}-dispatch120")
    if fmt == "cap":
        assert arrival.headers["content-type"].startswith("application/cap+xml")
        text = arrival.body.decode()
        for expected in (
            "示例老人",
            "青霉素",
            "高血压",
            "二甲双胍 500 mg",
            "A+",
            "2021 年心脏支架手术",
            "34.780310,113.665220 0.012",
            "<msgType>Alert</msgType>",
            "示例子女",
        ):
            assert expected in text
    else:
        assert arrival.headers["content-type"] == "application/json"
        record = json.loads(arrival.body)
        assert record["alert"]["id"] == alert_id and record["alert"]["kind"] == "sos"
        assert record["resident"]["name"] == "示例老人"
        assert record["resident"]["landline"] and record["resident"]["mobile"]
        assert record["resident"]["address"]["text"] == "3 号楼 2 单元 401"
        profile = record["profile"]
        assert profile["version"] == seeded.profile_version
        assert profile["conditions"] == ["高血压", "2 型糖尿病"]
        assert profile["medications"] == ["氨氯地平 5 mg", "二甲双胍 500 mg"]
        assert profile["allergies"] == ["青霉素"]
        assert profile["blood_type"] == "A+"
        assert profile["past_treatments"] == ["2021 年心脏支架手术"]
        assert profile["responder_notes"]["door_code"] == "门禁 4012#"
        assert record["position"]["source"] == "device" and record["position"]["lat"] == 34.78031
        assert record["vitals"]["values"] == {"heart_rate": 118, "spo2": 91, "resp_rate": 24}
        assert record["evidence"] == {"button": "sos", "press_ms": 1200}
        circle = record["care_circle"]
        assert [c["name"] for c in circle["contacts"]] == [seeded.child_name, seeded.work_unit_name]
        assert all("channel" not in c for c in circle["contacts"])  # tokens stay home
        assert circle["doctor_team"]["members"][0]["name"] == "示例医生"
        assert circle["service_package"] == "慢病管理"
        assert circle["hospital"]["name"] == "市第一人民医院"
        assert circle["community"]["name"] == "幸福里社区"
        assert record["type"] == "alert" and record["references"] == []

    with psycopg.connect(db_url) as conn:
        status, attempts = conn.execute(
            "SELECT status, attempts FROM deliveries WHERE id = %s", (delivery_id,)
        ).fetchone()  # type: ignore[misc]
        assert (status, attempts) == ("delivered", 1)
        audited = conn.execute(
            "SELECT action, purpose, profile_version FROM audit_log WHERE resident_id = %s",
            (seeded.resident_id,),
        ).fetchall()
        assert ("profile.read", "120 emergency hand-off", seeded.profile_version) in audited


@pytest.mark.integration
def test_a_refusal_gives_up_with_the_reason_and_tells_the_operator(
    db_url: str,
) -> None:
    """422 is final: no retry, gave_up with the receiver's reason, a give_up to the operator."""
    from apprise.decorators import notify

    load_apprise_plugins()
    seen: list[str] = []

    @notify(on="anxinops")  # type: ignore[untyped-decorator, no-untyped-call]
    def _ops(body: str, title: str, notify_type: str, *args: object, **kwargs: object) -> bool:
        seen.append(title + "\n" + body)
        return True

    keyring = make_keyring()
    seeded = seed_registry(db_url, keyring)
    gen = serve_receiver(default=422)
    receiver = next(gen)
    try:
        alert_id, (delivery_id,) = insert_alert(
            db_url, seeded, [("dispatch120", "120", "dispatch120", receiver.url, "zh")]
        )
        config = DeliveryConfig(
            dispatch120_secret=SECRET, poll_s=0.05, operator_url="anxinops://desk"
        )
        run_worker_until(db_url, config, lambda: bool(seen))
    finally:
        gen.close()
    assert len(receiver.arrivals) == 1
    with psycopg.connect(db_url) as conn:
        status, error = conn.execute(
            "SELECT status, last_error FROM deliveries WHERE id = %s", (delivery_id,)
        ).fetchone()  # type: ignore[misc]
        assert status == "gave_up" and "HTTP 422" in error
        notes = conn.execute(
            "SELECT note FROM alert_events WHERE alert_id = %s AND event = 'delivery'", (alert_id,)
        ).fetchall()
        assert len(notes) == 1 and "HTTP 422" in notes[0][0]
    assert len(seen) == 1
    assert f"告警 #{alert_id}" in seen[0] and "120 (dispatch120, dispatch120)" in seen[0]
    assert "HTTP 422" in seen[0] and "示例老人" in seen[0]
