"""Who may end an emergency, and what ending it does to the 120 hand-off: over the API on the
real PostgreSQL, with the delivery worker pushing to a real HTTP receiver."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from apprise.decorators import notify

from alerts.delivery import DeliveryConfig
from alerts.service import AlertService, PostgresDirectory
from api.app import create_app
from core.settings import Settings, load_settings
from demo.receiver import DemoReceiver
from detectors.findings import DeviceEventEvidence, Finding, FindingKind, Severity
from devices import access
from devices import repository as registry
from devices.access import Role
from devices.model import ChannelIn, ContactPatch
from devices.repository import channel_opener
from tests.alerts.test_dispatch120 import run_worker_until
from tests.seed import Seeded, make_keyring, seed_registry
from tests.services import SECRET, load_apprise_plugins, serve_receiver

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

told: list[str] = []
CHILD_URL = "anxinclosing://child/?token=sample-secret-0042"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def receiver() -> Iterator[DemoReceiver]:
    yield from serve_receiver()


@pytest.fixture
def child_inbox() -> list[str]:
    """Messages to the child, on an apprise scheme of this module's own (registered once)."""
    global _registered  # noqa: PLW0603 - apprise's registry of schemes is process-wide
    if not _registered:
        load_apprise_plugins()

        @notify(on="anxinclosing")  # type: ignore[untyped-decorator, no-untyped-call]
        def _child(body: str, title: str, notify_type: str, *args: object, **kw: object) -> bool:
            told.append(title)
            return True

        _registered = True
    told.clear()
    return told


_registered = False


def _settings(db_url: str, receiver: DemoReceiver) -> Settings:
    return load_settings(db={"url": db_url}, alerts={"dispatch120_url": receiver.url})


@pytest.fixture
async def http(db_url: str, receiver: DemoReceiver) -> AsyncIterator[httpx.AsyncClient]:
    settings = _settings(db_url, receiver)
    app = create_app(settings)
    app.state.alert_commands = None
    app.state.alert_service = AlertService(
        settings.alerts, PostgresDirectory(opener=channel_opener(make_keyring()))
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://anxin.test"
        ) as c,
    ):
        yield c


def _sos(db_url: str, receiver: DemoReceiver) -> tuple[int, Seeded]:
    keyring = make_keyring()
    seeded = seed_registry(db_url, keyring)
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM contacts WHERE name = %s", (seeded.child_name,))
        (contact_id,) = row.fetchone() or (None,)
        channel = ChannelIn(url=CHILD_URL)
        registry.update_contact(conn, contact_id, ContactPatch(channel=channel), keyring=keyring)
    settings = _settings(db_url, receiver)
    svc = AlertService(settings.alerts, PostgresDirectory(opener=channel_opener(keyring)))
    now = datetime.now(UTC)
    ms = int(now.timestamp() * 1000)
    finding = Finding(
        FindingKind.SOS, Severity.EMERGENCY, seeded.device_id, str(seeded.resident_id), ms, ms,
        DeviceEventEvidence("hotkey"),
    )  # fmt: skip
    with psycopg.connect(db_url, autocommit=True) as conn:
        change = svc.raise_finding(conn, finding, now)
    assert change.alert is not None
    return change.alert.id, seeded


def _auth(db_url: str, role: Role, **scopes: Any) -> dict[str, str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = access.create_principal(conn, f"Test {role}", role, **scopes)
        return {"Authorization": f"Bearer {access.issue_token(conn, pid).token}"}


def _deliveries(db_url: str, alert_id: int) -> list[tuple[str, str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT recipient_kind, status FROM deliveries WHERE alert_id = %s ORDER BY id",
            (alert_id,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _config() -> DeliveryConfig:
    return DeliveryConfig(dispatch120_secret=SECRET, poll_s=0.05)


async def test_a_relative_or_a_doctor_cannot_end_an_sos_and_the_120_push_still_goes(
    http: httpx.AsyncClient, db_url: str, receiver: DemoReceiver, child_inbox: list[str]
) -> None:
    alert_id, seeded = _sos(db_url, receiver)
    with psycopg.connect(db_url) as conn:
        member = conn.execute("SELECT id FROM doctor_team_members").fetchone()
    assert member is not None
    family = _auth(db_url, Role.FAMILY, resident_ids=[seeded.resident_id])
    doctor = _auth(db_url, Role.DOCTOR, member_ids=[member[0]])
    dispatcher = _auth(db_url, Role.DISPATCHER)
    # The 120 centre is down: its push waits in the outbox.
    assert ("dispatch120", "pending") in _deliveries(db_url, alert_id)

    for who in (family, doctor):
        for action in ("false-alarm", "resolve"):
            r = await http.post(f"/api/v1/alerts/{alert_id}/{action}", headers=who)
            assert r.status_code == 409, r.text
            assert "may not" in r.json()["detail"]
    r = await http.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=family)
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert ("dispatch120", "pending") in _deliveries(db_url, alert_id)

    # The dispatcher calls it a false alarm: the people not told yet need not be, but the
    # 120 push is not dropped; it goes out carrying the closed state.
    r = await http.post(f"/api/v1/alerts/{alert_id}/false-alarm", headers=dispatcher)
    assert r.status_code == 200 and r.json()["state"] == "false_alarm"
    assert dict(_deliveries(db_url, alert_id)) == {"dispatch120": "pending", "child": "cancelled"}
    run_worker_until(db_url, _config(), receiver.first_accepted)
    (arrival,) = receiver.first_accepted()
    record = json.loads(arrival.body)
    assert (record["alert"]["id"], record["alert"]["state"]) == (alert_id, "false_alarm")
    assert child_inbox == []


async def test_ending_an_emergency_after_the_push_tells_the_120_centre(
    http: httpx.AsyncClient, db_url: str, receiver: DemoReceiver, child_inbox: list[str]
) -> None:
    alert_id, _ = _sos(db_url, receiver)
    run_worker_until(db_url, _config(), lambda: len(receiver.first_accepted()) == 1)
    first = receiver.first_accepted()[0]

    r = await http.post(
        f"/api/v1/alerts/{alert_id}/resolve", headers=_auth(db_url, Role.DISPATCHER)
    )
    assert r.status_code == 200
    run_worker_until(db_url, _config(), lambda: len(receiver.first_accepted()) == 2)
    second = receiver.first_accepted()[1]
    record = json.loads(second.body)
    assert record["type"] == "update" and record["references"] == [first.key]
    assert record["alert"]["state"] == "resolved"
    assert second.key == f"alert-{alert_id}-closed-resolved-dispatch120"
    assert uuid.UUID(record["resident"]["id"])


async def test_the_outbox_keeps_no_channel_secret_and_the_child_is_still_told(
    db_url: str, receiver: DemoReceiver, child_inbox: list[str]
) -> None:
    alert_id, _ = _sos(db_url, receiver)
    run_worker_until(db_url, _config(), lambda: child_inbox and receiver.first_accepted())
    assert len(child_inbox) == 1
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT recipient_kind, address, status FROM deliveries WHERE alert_id = %s",
            (alert_id,),
        ).fetchall()
        stored = conn.execute("SELECT d::text FROM deliveries d").fetchall()
    assert ("child", "delivered") in {(r[0], r[2]) for r in rows}
    assert next(r[1] for r in rows if r[0] == "child").startswith("anxin:contacts/")
    assert not any("sample-secret" in r[0] for r in stored)
