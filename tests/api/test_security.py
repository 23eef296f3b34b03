"""What an attacker, a careless relative or a link-preview bot could do, tried against the API
served by uvicorn over real HTTP on the real PostgreSQL: bodies before authentication, the
access log, a doctor's contract dates, notification secrets, input that used to give 500."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from alerts import ack
from alerts.service import AlertService, PostgresDirectory
from api.app import create_app
from core.settings import load_settings
from detectors.findings import DeviceEventEvidence, Finding, FindingKind, Severity
from devices import access
from devices.access import Role
from tests.services import serve_api

pytestmark = [pytest.mark.integration]

SMS = "json://localhost/sms/{phone}"
SECRET_URL = "dingtalk://sample-secret-token-0042/"


@pytest.fixture
def api(db_url: str) -> Iterator[str]:
    settings = load_settings(db={"url": db_url}, alerts={"sms_url": SMS})
    app = create_app(settings)
    app.state.alert_commands = None  # no broker here: "help is coming" is not sent
    with serve_api(app) as url:
        yield url


def _token(db_url: str, role: Role, **scopes: Any) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = access.create_principal(conn, f"Test {role} {uuid.uuid4().hex[:4]}", role, **scopes)
        return access.issue_token(conn, pid).token


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _resident(http: httpx.Client, admin: str, name: str, **extra: Any) -> str:
    body = {"name": name, "sex": "female", "birth_date": "1940-01-01", **extra}
    r = http.post("/api/v1/residents", headers=_h(admin), json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _sos(db_url: str, resident_id: str, device_id: str) -> int:
    settings = load_settings(alerts={"sms_url": SMS})
    now = datetime.now(UTC)
    ms = int(now.timestamp() * 1000)
    finding = Finding(
        FindingKind.SOS, Severity.EMERGENCY, device_id, resident_id, ms, ms,
        DeviceEventEvidence("hotkey"),
    )  # fmt: skip
    with psycopg.connect(db_url, autocommit=True) as conn:
        change = AlertService(settings.alerts, PostgresDirectory(SMS)).raise_finding(
            conn, finding, now
        )
    assert change.alert is not None
    return change.alert.id


def _raw_request(url: str, head: str) -> bytes:
    """Send only the request line and headers (no body) and return the answer's first bytes.

    A server that reads the body first would wait for it: the socket timeout then fails the
    test (it guards against a hang; nothing here measures time)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head.encode("latin-1"))
        return sock.recv(4096)


# --- 7: authenticate before reading a body, and cap its size ------------------------------


def test_a_large_body_is_refused_before_it_is_read(api: str, db_url: str) -> None:
    big = 50 * 1024 * 1024
    head = (
        "POST /api/v1/residents HTTP/1.1\r\nHost: anxin.test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {big}\r\n"
    )
    anonymous = _raw_request(api, head + "\r\n")
    assert anonymous.startswith(b"HTTP/1.1 401"), anonymous[:200]
    assert b"www-authenticate: Bearer" in anonymous
    forged = _raw_request(api, head + "Authorization: Bearer anx_not-a-live-token-at-all\r\n\r\n")
    assert forged.startswith(b"HTTP/1.1 401"), forged[:200]
    admin = _token(db_url, Role.ADMIN)
    too_large = _raw_request(api, head + f"Authorization: Bearer {admin}\r\n\r\n")
    assert too_large.startswith(b"HTTP/1.1 413"), too_large[:200]

    with httpx.Client(base_url=api) as http:
        # A body sent without a length is cut off at the route's limit all the same.
        def chunks() -> Iterator[bytes]:
            for _ in range(64):
                yield b" " * 8192

        streamed = http.post("/api/v1/residents", headers=_h(admin), content=chunks())
        assert streamed.status_code == 413
        # The CSV import takes more than a JSON body: 1 MiB reaches the importer (which
        # refuses the unknown column: nothing is written, and it is quick).
        rows = "name,sex,birth_date,shoe\n" + "Sample Elder,female,1940-01-01,42\n" * 33_000
        assert len(rows) > 1024 * 1024
        imported = http.post(
            "/api/v1/residents/import",
            headers={**_h(admin), "Content-Type": "text/csv"},
            content=rows.encode(),
        )
        assert imported.status_code == 422
        assert imported.json()["errors"][0]["column"] == "shoe"


# --- 9: the access log holds no tokens and no numbers; the hospital's link works -------------


def test_the_access_log_holds_no_ack_token_and_no_caller_number(
    api: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = ack.token_for("x", "some-delivery")
    dispatcher = _token(db_url, Role.DISPATCHER)
    with caplog.at_level(logging.INFO, logger="uvicorn.access"), httpx.Client(base_url=api) as h:
        assert h.get(f"/api/v1/ack/{token}").status_code == 404
        assert h.post(f"/api/v1/ack/{token}").status_code == 404
        lookup = h.get(
            "/api/v1/lookup/caller", params={"number": "13800138000"}, headers=_h(dispatcher)
        )
        assert lookup.status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == 3
    text = "\n".join(lines)
    assert token not in text and "13800138000" not in text
    assert f"/api/v1/ack/{token[:4]}…" in text
    assert "/api/v1/lookup/caller?number=…" in text


def test_the_hospitals_link_confirms_the_green_channel_without_ending_escalation(
    api: str, db_url: str
) -> None:
    admin = _token(db_url, Role.ADMIN)
    with httpx.Client(base_url=api) as http:
        hospital = http.post(
            "/api/v1/hospitals",
            headers=_h(admin),
            json={"name": "Sample Hospital", "green_channel_phone": "0531-8888 0120"},
        )
        assert hospital.status_code == 201, hospital.text
        rid = _resident(http, admin, "Sample Elder", hospital_id=hospital.json()["id"])
        alert_id = _sos(db_url, rid, "wb-sec-1")
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "SELECT idempotency_key FROM deliveries WHERE recipient_kind = 'hospital'"
            ).fetchone()
        assert row is not None
        link = ack.token_for(load_settings().alerts.ack_secret.get_secret_value(), row[0])

        page = http.get(f"/api/v1/ack/{link}")
        assert page.status_code == 200 and "Green channel ready" in page.text
        done = http.post(f"/api/v1/ack/{link}", headers={"Accept": "application/json"})
        assert done.status_code == 200 and done.json()["state"] == "open"
        detail = http.get(f"/api/v1/alerts/{alert_id}", headers=_h(admin)).json()
        assert detail["alert"]["state"] == "open"  # escalation goes on
        notes = [e["note"] for e in detail["timeline"] if e["event"] == "note"]
        assert "green channel ready" in notes


# --- 4: a doctor's scope honours contract dates ----------------------------------------------


def test_a_doctors_scope_is_the_contracts_in_force_on_both_edges(api: str, db_url: str) -> None:
    admin = _token(db_url, Role.ADMIN)
    today = dt.date.today()
    with httpx.Client(base_url=api) as http:
        team = http.post(
            "/api/v1/doctor-teams",
            headers=_h(admin),
            json={"name": "Sample Team", "members": [{"name": "Sample Doctor", "role": "doctor"}]},
        ).json()
        spans = {
            "Ended yesterday": (today - dt.timedelta(days=400), today - dt.timedelta(days=1)),
            "Starts in ten days": (today + dt.timedelta(days=10), today + dt.timedelta(days=400)),
            "Starts today": (today, today + dt.timedelta(days=400)),
            "Ends today": (today - dt.timedelta(days=400), today),
        }
        ids: dict[str, str] = {}
        with psycopg.connect(db_url, autocommit=True) as conn:
            for name, (start, end) in spans.items():
                ids[name] = _resident(http, admin, name, mobile="13800138000")
                conn.execute(
                    """INSERT INTO doctor_contracts (resident_id, team_id, service_package,
                                                     starts_on, ends_on)
                       VALUES (%s, %s, 'basic', %s, %s)""",
                    (ids[name], team["id"], start, end),
                )
        alerts = {name: _sos(db_url, rid, f"wb-{i}") for i, (name, rid) in enumerate(ids.items())}
        doctor = _h(_token(db_url, Role.DOCTOR, member_ids=[team["members"][0]["id"]]))

        listed = http.get("/api/v1/residents", headers=doctor).json()
        assert sorted(r["name"] for r in listed["items"]) == ["Ends today", "Starts today"]
        assert listed["total"] == 2
        seen = http.get("/api/v1/alerts", headers=doctor).json()
        assert sorted(a["id"] for a in seen) == sorted(
            [alerts["Ends today"], alerts["Starts today"]]
        )
        for name in ("Ended yesterday", "Starts in ten days"):
            assert http.get(f"/api/v1/residents/{ids[name]}", headers=doctor).status_code == 403
            alert = alerts[name]
            assert http.get(f"/api/v1/alerts/{alert}", headers=doctor).status_code == 404
            moved = http.post(f"/api/v1/alerts/{alert}/acknowledge", headers=doctor)
            assert moved.status_code == 404
        for name in ("Starts today", "Ends today"):
            assert http.get(f"/api/v1/residents/{ids[name]}", headers=doctor).status_code == 200
            assert http.get(f"/api/v1/alerts/{alerts[name]}", headers=doctor).status_code == 200


# --- 5: notification secrets are shown to admins only ----------------------------------------


def test_channel_urls_are_masked_for_everyone_but_admins(api: str, db_url: str) -> None:
    admin = _token(db_url, Role.ADMIN)
    with httpx.Client(base_url=api) as http:
        rid = _resident(http, admin, "Sample Elder", mobile="13800138001")
        contact = http.post(
            f"/api/v1/residents/{rid}/contacts",
            headers=_h(admin),
            json={
                "name": "Sample Son",
                "role": "child",
                "phones": ["13900139001"],
                "channel": {"url": SECRET_URL},
            },
        )
        assert contact.status_code == 201 and contact.json()["channel"]["url"] == SECRET_URL
        team = http.post(
            "/api/v1/doctor-teams",
            headers=_h(admin),
            json={
                "name": "Sample Team",
                "members": [{"name": "Dr", "role": "doctor", "channel": {"url": SECRET_URL}}],
            },
        )
        assert team.status_code == 201
        family = _h(_token(db_url, Role.FAMILY, resident_ids=[rid]))
        dispatcher = _h(_token(db_url, Role.DISPATCHER))
        operator = _h(_token(db_url, Role.OPERATOR))
        answers = [
            http.get(f"/api/v1/residents/{rid}/contacts", headers=family),
            http.get(f"/api/v1/residents/{rid}/contacts", headers=operator),
            http.get("/api/v1/doctor-teams", headers=dispatcher),
            http.get(f"/api/v1/doctor-teams/{team.json()['id']}", headers=operator),
            http.get("/api/v1/lookup/caller", params={"number": "13900139001"}, headers=dispatcher),
            http.get("/api/v1/residents/export", headers=operator),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert "sample-secret-token" not in answer.text
            assert "dingtalk://…" in answer.text
        mine = http.get(f"/api/v1/residents/{rid}/contacts", headers=_h(admin))
        assert mine.json()[0]["channel"]["url"] == SECRET_URL


# --- 8: bad input is a 4xx with a message, never a 500 ---------------------------------------


def test_inputs_that_gave_500_get_a_clear_4xx(api: str, db_url: str) -> None:
    admin = _h(_token(db_url, Role.ADMIN))
    json_type = {**admin, "Content-Type": "application/json"}
    with httpx.Client(base_url=api) as http:
        rid = _resident(http, admin["Authorization"][7:], "Sample Elder")
        contact = http.post(
            f"/api/v1/residents/{rid}/contacts",
            headers=admin,
            json={"name": "Sample Son", "role": "child", "phones": ["13900139002"]},
        ).json()
        base = '{"name": "X", "sex": "male", "birth_date": "1940-01-01"'
        answers = {
            "NUL in a query": http.get("/api/v1/residents", params={"name": "a\0b"}, headers=admin),
            "NUL in a body": http.post(
                "/api/v1/residents", headers=json_type, content=base[:-1] + '\\u0000"}'
            ),
            "NaN": http.post(
                "/api/v1/residents",
                headers=json_type,
                content=base + ', "address": {"lat": NaN}}',
            ),
            "1e400": http.post(
                "/api/v1/residents",
                headers=json_type,
                content=base + ', "address": {"lat": 1e400}}',
            ),
            "lone surrogate": http.post(
                "/api/v1/residents", headers=json_type, content=base[:-1] + '\\ud800"}'
            ),
            "lone surrogate refused by a model": http.post(
                "/api/v1/residents",
                headers=json_type,
                content=base + ', "sex": "\\ud800"}',
            ),
            "offset 2**63": http.get("/api/v1/alerts", params={"offset": 2**63}, headers=admin),
            "PATCH null name": http.patch(
                f"/api/v1/residents/{rid}", headers=admin, json={"name": None}
            ),
            "PATCH null role": http.patch(
                f"/api/v1/contacts/{contact['id']}", headers=admin, json={"role": None}
            ),
            "CSV with NUL": http.post(
                "/api/v1/residents/import",
                headers={**admin, "Content-Type": "text/csv"},
                content=b"name,sex,birth_date\nA\0B,female,1940-01-01\n",
            ),
            "CSV with a 200 kB field": http.post(
                "/api/v1/residents/import",
                headers={**admin, "Content-Type": "text/csv"},
                content=b'name,sex,birth_date\n"' + b"x" * 200_000 + b'",female,1940-01-01\n',
            ),
        }
        for what, answer in answers.items():
            assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text)
            said = answer.json()
            assert said.get("detail") or said.get("errors"), what  # the CSV report: "errors"

        # A carriage return and a formula stored in the registry: the export still works,
        # and a spreadsheet opening it runs no formula.
        _resident(http, admin["Authorization"][7:], "Line\rbreak")
        _resident(http, admin["Authorization"][7:], '=HYPERLINK("http://x.test","click")')
        _resident(http, admin["Authorization"][7:], "@SUM(A1)", mobile="+86 138 0013 8003")
        exported = http.get("/api/v1/residents/export", headers=admin)
        assert exported.status_code == 200
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        names = sorted(r["name"] for r in rows)
        assert names == sorted(
            ['\'=HYPERLINK("http://x.test","click")', "'@SUM(A1)", "Line\nbreak", "Sample Elder"]
        )
        assert all(not r[c].startswith(("=", "+", "-", "@")) for r in rows for c in r if r[c])
        # The export is the import's format: the neutralised cells read back as they were.
        again = http.post(
            "/api/v1/residents/import",
            headers={**admin, "Content-Type": "text/csv"},
            content=exported.text.encode(),
        )
        assert again.status_code == 200, again.text
        names_now = http.get("/api/v1/residents", headers=admin, params={"name": "hyperlink"})
        assert {r["name"] for r in names_now.json()["items"]} == {
            '=HYPERLINK("http://x.test","click")'
        }
        assert json.loads(answers["NaN"].text)["detail"][0]["input"] == "nan"
