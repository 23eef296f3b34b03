"""A delivery worker killed with SIGKILL mid-delivery, then restarted, delivers each message
once per recipient, with the same idempotency key on every arrival."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from demo.receiver import DemoReceiver
from tests.seed import insert_alert, make_keyring, seed_registry
from tests.services import ROOT, SECRET, serve_receiver, wait_until


@pytest.fixture
def slow_receiver() -> Iterator[DemoReceiver]:
    # The first request is held for 4 s: long enough to kill the worker while it waits.
    yield from serve_receiver(pause_on=frozenset({1}), pause_s=4.0)


def _start_worker(db_url: str, log: Path) -> subprocess.Popen[bytes]:
    key = base64.b64encode(b"k" * 32).decode()  # make_keyring()'s key
    env = {
        **os.environ,
        "ANXIN_ENVIRONMENT": "test",
        "ANXIN_DB__URL": db_url,
        "ANXIN_ALERTS__DISPATCH120_SECRET": SECRET,
        "ANXIN_ALERTS__DELIVERY_LEASE_S": "2",
        "ANXIN_ALERTS__DELIVERY_BACKOFF_BASE_S": "0.2",
        "ANXIN_REGISTRY__FIELD_KEYS": f'{{"t1": "{key}"}}',
        "ANXIN_REGISTRY__CURRENT_KEY_ID": "t1",
    }
    code = "import sys; from alerts.delivery import main_worker; sys.exit(main_worker())"
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_sigkill_mid_delivery_then_restart_delivers_once_per_recipient(
    db_url: str, slow_receiver: DemoReceiver, tmp_path: Path
) -> None:
    make_keyring()
    seeded = seed_registry(db_url, make_keyring())
    recipients = [
        ("dispatch120", "120", "dispatch120", slow_receiver.url + f"?r={i}", "zh") for i in range(3)
    ]
    _alert, ids = insert_alert(db_url, seeded, recipients)
    with psycopg.connect(db_url) as conn:
        keys: dict[int, str] = dict(
            conn.execute("SELECT id, idempotency_key FROM deliveries").fetchall()
        )
    log = tmp_path / "worker.log"

    first = _start_worker(db_url, log)
    try:
        wait_until(lambda: len(slow_receiver.arrivals) >= 1, 30, "the first push")
        first.send_signal(signal.SIGKILL)  # while the receiver still holds the first request
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    killed_key = slow_receiver.arrivals[0].key

    second = _start_worker(db_url, log)
    try:

        def all_delivered() -> bool:
            with psycopg.connect(db_url) as conn:
                rows = conn.execute("SELECT status FROM deliveries").fetchall()
            return all(r == ("delivered",) for r in rows)

        wait_until(all_delivered, 60, "every delivery delivered")
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(20)
        except subprocess.TimeoutExpired:
            second.kill()
    assert second.returncode == 0, log.read_text()

    arrivals = slow_receiver.arrivals
    # Each recipient's message was accepted exactly once ...
    assert sorted(slow_receiver.accepted) == sorted(keys.values())
    assert all(count == 1 for count in slow_receiver.accepted.values())
    # ... every arrival carried one of the keys, with a valid signature ...
    assert {a.key for a in arrivals} == set(keys.values())
    assert all(a.signature_ok for a in arrivals)
    # ... and the message the kill interrupted came again with the same key, as a duplicate.
    repeats = [a for a in arrivals if a.key == killed_key]
    assert len(repeats) == 2 and [a.duplicate for a in repeats] == [False, True]
    # The killed worker may also have sent the others without recording it before it died
    # (how far it got is a matter of timing): those come again too, each repeat marked a
    # duplicate by its key, so the receiver acts on every message once.
    for key in keys.values():
        seen = [a.duplicate for a in arrivals if a.key == key]
        assert seen[0] is False and all(seen[1:]) and len(seen) <= 2, (key, seen)
    with psycopg.connect(db_url) as conn:
        lost = {
            row[0]
            for row in conn.execute(
                """SELECT d.idempotency_key FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
                   WHERE a.error LIKE 'lease expired%'"""
            ).fetchall()
        }
    # Every repeat is explained by a lease that ran out, the interrupted one included.
    assert killed_key in lost
    assert {a.key for a in arrivals if a.duplicate} <= lost <= set(keys.values())
    assert sorted(ids) == sorted(keys)
