"""The delivery worker: back-off, retries on 5xx, stop on 2xx, apprise messages in zh and en."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from alerts.channels import SendResult, with_idempotency_header
from alerts.delivery import Delivery, DeliveryConfig, DeliveryWorker, Status, backoff_s, decide
from demo.receiver import DemoReceiver
from tests.alerts.test_dispatch120 import run_worker_until
from tests.seed import insert_alert, make_keyring, seed_registry
from tests.services import SECRET, load_apprise_plugins, serve_receiver

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _delivery(attempts: int, created_at: dt.datetime = T0) -> Delivery:
    return Delivery(1, 1, 0, "child", None, "示例子女", "apprise", "x://", "zh", "emergency", "k",
                    attempts, created_at)  # fmt: skip


def test_backoff_doubles_with_equal_jitter_and_is_capped() -> None:
    assert backoff_s(1, 1.0, 300.0, 0.0) == 0.5
    assert backoff_s(1, 1.0, 300.0, 1.0) == 1.0
    assert backoff_s(4, 1.0, 300.0, 0.0) == 4.0
    assert backoff_s(4, 1.0, 300.0, 1.0) == 8.0
    assert backoff_s(30, 1.0, 300.0, 1.0) == 300.0
    assert backoff_s(30, 1.0, 300.0, 0.0) == 150.0


def test_decide_retries_gives_up_and_delivers() -> None:
    config = DeliveryConfig(dispatch120_secret="s", max_attempts=3, max_age_s=3600)
    now = T0 + dt.timedelta(seconds=10)
    retry = decide(_delivery(1), SendResult(ok=False, status_code=503, error="HTTP 503"),
                   now=now, config=config, rand=1.0)  # fmt: skip
    assert retry.status is Status.PENDING and retry.next_attempt_at == now + dt.timedelta(seconds=1)
    assert decide(_delivery(1), SendResult(ok=True), now=now, config=config, rand=0.5).status is (
        Status.DELIVERED
    )
    final = decide(_delivery(1), SendResult(ok=False, retryable=False, error="HTTP 422"),
                   now=now, config=config, rand=0.5)  # fmt: skip
    assert final.status is Status.GAVE_UP and final.reason == "refused: HTTP 422"
    spent = decide(_delivery(3), SendResult(ok=False, error="HTTP 500"), now=now, config=config,
                   rand=0.5)  # fmt: skip
    assert spent.status is Status.GAVE_UP and spent.reason == "3 attempts: HTTP 500"
    old = decide(_delivery(1, T0 - dt.timedelta(hours=2)), SendResult(ok=False, error="timeout"),
                 now=now, config=config, rand=0.5)  # fmt: skip
    assert old.status is Status.GAVE_UP and old.reason is not None and "older than" in old.reason
    later = decide(_delivery(1), SendResult(ok=False, status_code=429, retry_after_s=30.0),
                   now=now, config=config, rand=0.0)  # fmt: skip
    assert later.next_attempt_at == now + dt.timedelta(seconds=30)


def test_webhook_urls_carry_the_idempotency_key_as_a_header() -> None:
    assert with_idempotency_header("json://h/p", "a:1") == "json://h/p?%2BIdempotency-Key=a%3A1"
    assert with_idempotency_header("jsons://h/p?x=1", "k") == "jsons://h/p?x=1&%2BIdempotency-Key=k"
    assert with_idempotency_header("dingtalk://token/", "k") == "dingtalk://token/"


@pytest.fixture
def flaky_receiver() -> Iterator[DemoReceiver]:
    yield from serve_receiver(script=[503, 503])


@pytest.mark.integration
def test_retries_on_5xx_and_stops_on_2xx(db_url: str, flaky_receiver: DemoReceiver) -> None:
    seeded = seed_registry(db_url, make_keyring())
    _alert, (delivery_id,) = insert_alert(
        db_url, seeded, [("dispatch120", "120", "dispatch120", flaky_receiver.url, "zh")]
    )
    config = DeliveryConfig(dispatch120_secret=SECRET, poll_s=0.05, backoff_base_s=0.1)

    def statuses() -> list[int]:
        return [a.status for a in flaky_receiver.arrivals]

    # Runs on past the 200 for a while: a worker that went on sending would show it.
    run_worker_until(db_url, config, lambda: 200 in statuses() and len(statuses()) > 5, timeout=3.0)

    assert statuses() == [503, 503, 200]
    keys = {a.key for a in flaky_receiver.arrivals}
    assert len(keys) == 1 and all(a.signature_ok for a in flaky_receiver.arrivals)
    gaps = [
        b.at - a.at
        for a, b in zip(flaky_receiver.arrivals, flaky_receiver.arrivals[1:], strict=False)
    ]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # back-off: base/2 then base, at least
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT status, attempts, last_error, delivered_at IS NOT NULL FROM deliveries WHERE id = %s",
            (delivery_id,),
        ).fetchone()
        assert row == ("delivered", 3, None, True)
        attempts = conn.execute(
            "SELECT ok, status_code FROM delivery_attempts WHERE delivery_id = %s ORDER BY id",
            (delivery_id,),
        ).fetchall()
        assert attempts == [(False, 503), (False, 503), (True, 200)]


@pytest.mark.integration
def test_apprise_messages_carry_the_right_text_in_zh_and_en(db_url: str) -> None:
    from apprise.decorators import notify

    load_apprise_plugins()
    captured: dict[str, tuple[str, str]] = {}

    @notify(on="anxintest")  # type: ignore[untyped-decorator, no-untyped-call]
    def _capture(
        body: str, title: str, notify_type: str, meta: dict[str, object], **_: object
    ) -> bool:
        captured[str(meta["host"])] = (title, body)
        return True

    seeded = seed_registry(db_url, make_keyring())
    alert_id, ids = insert_alert(
        db_url,
        seeded,
        [
            ("child", "示例子女", "apprise", "anxintest://child", "zh"),
            ("work_unit", "Textile Works", "apprise", "anxintest://unit", "en"),
        ],
    )

    def ack_link(_conn: psycopg.Connection[Any], delivery: Delivery) -> str:
        return f"https://anxin.example/ack/{delivery.id}-{uuid.uuid5(uuid.NAMESPACE_URL, delivery.idempotency_key).hex[:8]}"

    worker = DeliveryWorker(
        db_url,
        DeliveryConfig(dispatch120_secret=SECRET, poll_s=0.05),
        keyring=make_keyring(),
        ack_link=ack_link,
    )
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(worker.run(stop)))
    thread.start()
    try:
        for _ in range(200):
            if len(captured) == 2:
                break
            threading.Event().wait(0.05)
    finally:
        stop.set()
        thread.join(30)

    zh_title, zh_body = captured["child"]
    assert zh_title == "【安心紧急告警】示例老人按下了紧急呼叫(SOS)"
    assert zh_body.startswith("示例子女您好:\n示例老人按下了紧急呼叫(SOS)。")
    assert (
        "地点:河南省郑州市金水区文化路 88 号幸福里 3 号楼 2 单元 401 (34.78031,113.66522)"
        in zh_body
    )
    assert "120 急救中心已同步收到" in zh_body
    assert f"请点击确认:https://anxin.example/ack/{ids[0]}-" in zh_body
    en_title, en_body = captured["unit"]
    assert en_title == "[Anxin EMERGENCY] 示例老人 pressed the SOS emergency button"
    assert en_body.startswith("Dear Textile Works,\n示例老人 pressed the SOS emergency button.")
    assert "Where: 河南省郑州市金水区文化路 88 号幸福里 3 号楼 2 单元 401" in en_body
    assert f"acknowledge here: https://anxin.example/ack/{ids[1]}-" in en_body
    with psycopg.connect(db_url) as conn:
        statuses = conn.execute(
            "SELECT status FROM deliveries WHERE alert_id = %s ORDER BY id", (alert_id,)
        ).fetchall()
    assert statuses == [("delivered",), ("delivered",)]


@pytest.mark.integration
def test_apprise_webhook_gets_the_idempotency_key_header(db_url: str) -> None:
    load_apprise_plugins()
    gen = serve_receiver()
    receiver = next(gen)
    try:
        seeded = seed_registry(db_url, make_keyring())
        url = receiver.phone_url("child")
        _alert, (delivery_id,) = insert_alert(
            db_url, seeded, [("child", "示例子女", "apprise", url, "zh")]
        )
        config = DeliveryConfig(dispatch120_secret=SECRET, poll_s=0.05, backoff_base_s=10)
        run_worker_until(db_url, config, lambda: bool(receiver.arrivals), timeout=10)
    finally:
        gen.close()
    arrival = receiver.arrivals[0]
    with psycopg.connect(db_url) as conn:
        (key,) = conn.execute(
            "SELECT idempotency_key FROM deliveries WHERE id = %s", (delivery_id,)
        ).fetchone()  # type: ignore[misc]
    assert arrival.key == key
    assert "示例老人" in json.loads(arrival.body)["title"]
