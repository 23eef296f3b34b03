"""Leases of deliveries being sent: renewed while a slow 120 centre answers, free again soon
after the process that held them died, and the ingester's own first push."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
import pytest

from alerts.delivery import DeliveryConfig, FirstPush
from core.settings import Settings, load_settings
from demo.receiver import DemoReceiver
from tests.alerts.test_dispatch120 import run_worker_until
from tests.seed import insert_alert, make_keyring, seed_registry
from tests.services import SECRET, serve_receiver, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_receiver() -> Iterator[DemoReceiver]:
    # The first push is answered after 3 s: twice the lease the worker holds it by.
    yield from serve_receiver(pause_on=frozenset({1}), pause_s=3.0)


@pytest.fixture
def receiver() -> Iterator[DemoReceiver]:
    yield from serve_receiver()


def test_a_push_slower_than_the_lease_is_sent_once(
    db_url: str, slow_receiver: DemoReceiver
) -> None:
    """Without renewal the worker itself would take the row back after 1.5 s and push again."""
    seeded = seed_registry(db_url, make_keyring())
    _alert, (delivery_id,) = insert_alert(
        db_url, seeded, [("dispatch120", "120", "dispatch120", slow_receiver.url, "zh")]
    )
    config = DeliveryConfig(dispatch120_secret=SECRET, poll_s=0.05, lease_s=1.5)

    def delivered() -> bool:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT status FROM deliveries WHERE id = %s", (delivery_id,))
            return row.fetchone() == ("delivered",)

    run_worker_until(db_url, config, delivered, timeout=10.0)
    assert delivered()
    assert len(slow_receiver.arrivals) == 1


def _settings(db_url: str, url: str) -> Settings:
    import base64

    key = base64.b64encode(b"k" * 32).decode()
    return load_settings(
        db={"url": db_url},
        environment="test",
        alerts={"dispatch120_url": url, "dispatch120_secret": SECRET, "delivery_lease_s": 1.0},
        registry={"field_keys": {"t1": key}, "current_key_id": "t1"},
    )


def _lease_to_ingester(db_url: str, delivery_id: int, seconds: float) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            """UPDATE deliveries SET status = 'sending', attempts = 1,
                      next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s""",
            (seconds, delivery_id),
        )


def test_the_ingester_pushes_a_leased_delivery_itself(db_url: str, receiver: DemoReceiver) -> None:
    seeded = seed_registry(db_url, make_keyring())
    _alert, (delivery_id,) = insert_alert(
        db_url, seeded, [("dispatch120", "120", "dispatch120", receiver.url, "zh")]
    )
    _lease_to_ingester(db_url, delivery_id, 5.0)
    pusher = FirstPush(_settings(db_url, receiver.url)).start()
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:  # the listener's, in the ingester
            pusher.submit(conn, [delivery_id])
        wait_until(lambda: len(receiver.arrivals) == 1, 10, "the push")
    finally:
        pusher.close()
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT status, attempts FROM deliveries WHERE id = %s", (delivery_id,)
        ).fetchone()
    assert row == ("delivered", 1)
    assert receiver.arrivals[0].signature_ok


def test_a_lease_of_a_dead_ingester_is_taken_over_within_seconds(
    db_url: str, receiver: DemoReceiver
) -> None:
    """The ingester leased the push and died before sending it: the worker sends it once the
    lease runs out (seconds, not a minute), with the key the ingester would have used."""
    seeded = seed_registry(db_url, make_keyring())
    _alert, (delivery_id,) = insert_alert(
        db_url, seeded, [("dispatch120", "120", "dispatch120", receiver.url, "zh")]
    )
    _lease_to_ingester(db_url, delivery_id, 1.0)
    leased_at = dt.datetime.now(dt.UTC)
    config = DeliveryConfig(dispatch120_secret=SECRET, poll_s=0.05)
    run_worker_until(db_url, config, lambda: len(receiver.arrivals) >= 1, timeout=10.0)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            """SELECT d.status, d.attempts, d.idempotency_key,
                      (SELECT min(at) FROM delivery_attempts WHERE delivery_id = d.id AND ok)
                 FROM deliveries d WHERE d.id = %s""",
            (delivery_id,),
        ).fetchone()
    assert row is not None
    status, attempts, key, sent_at = row
    assert (status, attempts) == ("delivered", 2)
    assert receiver.arrivals[0].key == key
    assert (sent_at - leased_at).total_seconds() < 5.0
