"""The alerts API on the real PostgreSQL: scoping by role, transitions, the ack link."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from alerts import ack
from alerts.model import AlertState
from alerts.service import AlertService, PostgresDirectory
from api.app import create_app
from core.settings import load_settings
from detectors.findings import DeviceEventEvidence, Finding, FindingKind, Severity
from devices import access
from devices.access import Role

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class Sent:
    def __init__(self) -> None:
        self.devices: list[str] = []

    def send(self, device_id: str, command: Any) -> None:
        self.devices.append(device_id)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
async def http(db_url: str, sent: Sent) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(db={"url": db_url}, alerts={"operator_url": "json://localhost/op"})
    app = create_app(settings)
    app.state.alert_commands = sent  # no broker needed here
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://anxin.test"
        ) as c,
    ):
        yield c


def _token(db_url: str, role: Role, **scopes: Any) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = access.create_principal(conn, f"Test {role}", role, **scopes)
        return access.issue_token(conn, pid).token


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _sos(db_url: str) -> tuple[int, uuid.UUID, str]:
    """An open SOS of a fictitious elder with one child; the child's delivery key."""
    settings = load_settings(alerts={"operator_url": "json://localhost/op"})
    with psycopg.connect(db_url, autocommit=True) as conn:
        rid = conn.execute(
            """INSERT INTO residents (name, sex, birth_date) VALUES ('Sample Elder', 'male',
               '1938-05-05') RETURNING id"""
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            """INSERT INTO contacts (resident_id, name, role, channel_kind, channel_address)
               VALUES (%s, 'Sample Son', 'child', 'apprise', 'json://localhost/son')""",
            (rid,),
        )
        svc = AlertService(settings.alerts, PostgresDirectory())
        now = datetime.now(UTC)
        f = Finding(
            FindingKind.SOS, Severity.EMERGENCY, "wb-0042", str(rid),
            int(now.timestamp() * 1000), int(now.timestamp() * 1000), DeviceEventEvidence("hotkey"),
        )  # fmt: skip
        change = svc.raise_finding(conn, f, now)
        assert change.alert is not None
        key = conn.execute(
            "SELECT idempotency_key FROM deliveries WHERE recipient_kind = 'child'"
        ).fetchone()[0]  # type: ignore[index]
        return change.alert.id, uuid.UUID(str(rid)), key


async def test_scoped_listing_detail_and_transitions(
    http: httpx.AsyncClient, db_url: str, sent: Sent
) -> None:
    alert_id, rid, _ = _sos(db_url)
    operator = _auth(_token(db_url, Role.OPERATOR))
    relative = _auth(_token(db_url, Role.FAMILY, resident_ids=[rid]))
    stranger = _auth(_token(db_url, Role.FAMILY))
    dispatcher = _auth(_token(db_url, Role.DISPATCHER))

    assert (await http.get("/api/v1/alerts")).status_code == 401
    listed = (await http.get("/api/v1/alerts?state=open&kind=sos", headers=operator)).json()
    assert [a["id"] for a in listed] == [alert_id]
    assert (await http.get("/api/v1/alerts", headers=stranger)).json() == []
    assert (await http.get(f"/api/v1/alerts/{alert_id}", headers=stranger)).status_code == 404
    detail = (await http.get(f"/api/v1/alerts/{alert_id}", headers=relative)).json()
    assert detail["alert"]["state"] == "open"
    assert {d["recipient_kind"] for d in detail["deliveries"]} == {"dispatch120", "child"}
    assert "address" not in detail["deliveries"][0]
    assert detail["timeline"][0]["to_state"] == "open"

    # A family member may not mark an ambulance dispatched; the state machine says 409.
    r = await http.post(f"/api/v1/alerts/{alert_id}/dispatched", headers=relative)
    assert r.status_code == 409 and "family may not move" in r.json()["detail"]
    r = await http.post(
        f"/api/v1/alerts/{alert_id}/acknowledge", headers=relative, json={"note": "calling him"}
    )
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert sent.devices == ["wb-0042"]
    r = await http.post(f"/api/v1/alerts/{alert_id}/dispatched", headers=dispatcher)
    assert r.json()["state"] == AlertState.DISPATCHED.value
    r = await http.post(f"/api/v1/alerts/{alert_id}/resolve", headers=operator)
    assert r.json()["state"] == "resolved"
    timeline = (await http.get(f"/api/v1/alerts/{alert_id}", headers=operator)).json()["timeline"]
    assert [(e["to_state"], e["actor"]) for e in timeline if e["event"] == "transition"] == [
        ("open", "device:wb-0042"),
        ("acknowledged", "family:Test family"),
        ("dispatched", "dispatcher:Test dispatcher"),
        ("resolved", "operator:Test operator"),
    ]
    notes = {e["to_state"]: e["note"] for e in timeline if e["event"] == "transition"}
    assert notes["acknowledged"] == "calling him"
    missing = [e["note"] for e in timeline if e["event"] == "note"]
    assert missing == ["no recipient for: work_unit, doctor, hospital"]


async def test_ack_link_opens_a_page_and_acknowledges_only_by_post(
    http: httpx.AsyncClient, db_url: str, sent: Sent
) -> None:
    alert_id, _, key = _sos(db_url)
    token = ack.token_for(load_settings().alerts.ack_secret.get_secret_value(), key)
    operator = _auth(_token(db_url, Role.OPERATOR))

    # What a link preview does: GET, twice. A page with a button; nothing acknowledged.
    for _ in range(2):
        page = await http.get(f"/api/v1/ack/{token}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<form method="post">' in page.text
        assert page.headers["cache-control"] == "no-store"
    state = (await http.get(f"/api/v1/alerts/{alert_id}", headers=operator)).json()
    assert state["alert"]["state"] == "open"
    assert sent.devices == []

    # The button.
    first = await http.post(f"/api/v1/ack/{token}", headers={"Accept": "application/json"})
    assert first.status_code == 200
    assert first.json()["alert_id"] == alert_id and first.json()["state"] == "acknowledged"
    assert sent.devices == ["wb-0042"]
    # A used link says so, and not who acknowledged.
    second = await http.post(f"/api/v1/ack/{token}")
    assert second.status_code == 410 and "used already" in second.text
    reopened = await http.get(f"/api/v1/ack/{token}")
    assert reopened.status_code == 410 and "<form" not in reopened.text
    for text in (second.text, reopened.text):
        assert "Sample Son" not in text and "child" not in text
    assert (await http.get("/api/v1/ack/not-a-token")).status_code == 404
    assert (await http.post("/api/v1/ack/not-a-token")).status_code == 404
