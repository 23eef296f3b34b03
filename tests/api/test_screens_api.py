"""What the screens stand on, over real HTTP: the session cookie made from a token, the live
alert stream and its scope, the emergency record, and the shipped assets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from api.app import create_app
from api.routes.web import asset_names
from core.settings import load_settings
from devices import access
from devices.access import Role
from devices.crypto import Keyring
from tests.seed import Seeded, insert_alert, seed_registry
from tests.services import serve_api

pytestmark = [pytest.mark.integration]


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[str, Seeded, Seeded]]:
    settings = load_settings(db={"url": db_url})
    keyring = Keyring.from_settings(settings.registry)
    mine = seed_registry(db_url, keyring, device_id="wb-mine-1")
    other = seed_registry(db_url, keyring, device_id="wb-other-1")
    with serve_api(create_app(settings), access_log=False) as url:
        yield url, mine, other


def _token(db_url: str, role: Role, **scopes: Any) -> tuple[str, Any]:
    with psycopg.connect(db_url) as conn:
        pid = access.create_principal(conn, f"screens {role}", role, **scopes)
        issued = access.issue_token(conn, pid, days=1)
    return issued.token, issued.token_id


def _first_queue(client: httpx.Client, **kwargs: Any) -> list[dict[str, Any]]:
    with client.stream("GET", "/api/v1/alerts/live/stream", **kwargs) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "queue":
                return list(json.loads(line[6:]))
    raise AssertionError("the stream ended without a queue")


def test_a_token_becomes_a_session_cookie_that_ends_with_the_token(
    db_url: str, world: tuple[str, Seeded, Seeded]
) -> None:
    url, mine, _ = world
    alert_id, _ = insert_alert(db_url, mine, [])
    token, token_id = _token(db_url, Role.DISPATCHER)
    with httpx.Client(base_url=url) as http:
        signed = http.post("/api/v1/session", headers={"Authorization": f"Bearer {token}"})
        assert signed.status_code == 201
        assert signed.json()["role"] == "dispatcher"
        assert signed.json()["screens"] == ["/app/dispatch"]
        cookie = signed.headers["set-cookie"]
        assert "anxin_session=ses_" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert token not in cookie
        # The cookie alone now signs in (the client keeps it).
        assert http.get("/api/v1/session").json()["name"] == "screens dispatcher"
        # A change with the cookie needs the screens' header: a form of another site has none.
        bare = http.post(f"/api/v1/alerts/{alert_id}/acknowledge")
        assert bare.status_code == 403 and "x-anxin-client" in bare.json()["detail"]
        with_body = http.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "x"})
        assert with_body.status_code == 401  # the guard: no token, and no screens' header
        done = http.post(
            f"/api/v1/alerts/{alert_id}/acknowledge",
            json={"note": "on it"},
            headers={"X-Anxin-Client": "screens"},
        )
        assert done.status_code == 200 and done.json()["state"] == "acknowledged"
        # Revoking the token ends the session at once.
        with psycopg.connect(db_url) as conn:
            assert access.revoke_token(conn, token_id)
        assert http.get("/api/v1/session").status_code == 401
        # A dead or made-up token opens no session.
        assert (
            http.post("/api/v1/session", headers={"Authorization": f"Bearer {token}"}).status_code
            == 401
        )
        assert http.post("/api/v1/session").status_code == 401


def test_signing_out_ends_the_session(db_url: str, world: tuple[str, Seeded, Seeded]) -> None:
    url, _, _ = world
    token, _ = _token(db_url, Role.OPERATOR)
    with httpx.Client(base_url=url) as http:
        assert (
            http.post("/api/v1/session", headers={"Authorization": f"Bearer {token}"}).status_code
            == 201
        )
        value = http.cookies["anxin_session"]
        assert http.delete("/api/v1/session", headers={"X-Anxin-Client": "s"}).status_code == 204
    with httpx.Client(base_url=url, cookies={"anxin_session": value}) as again:
        assert again.get("/api/v1/session").status_code == 401
    # The token itself still works.
    with httpx.Client(base_url=url) as http:
        assert (
            http.get("/api/v1/session", headers={"Authorization": f"Bearer {token}"}).status_code
            == 200
        )


def test_the_stream_sends_each_principal_only_their_scope(
    db_url: str, world: tuple[str, Seeded, Seeded]
) -> None:
    url, mine, other = world
    own_alert, _ = insert_alert(db_url, mine, [])
    other_alert, _ = insert_alert(db_url, other, [])
    low_alert, _ = insert_alert(db_url, other, [], kind="battery_low", severity="low")
    family, _ = _token(db_url, Role.FAMILY, resident_ids=[mine.resident_id])
    dispatcher, _ = _token(db_url, Role.DISPATCHER)
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/api/v1/alerts/live/stream").status_code == 401
        queue = _first_queue(http, headers={"Authorization": f"Bearer {family}"})
        assert [q["alert"]["id"] for q in queue] == [own_alert]
        assert queue[0]["resident_name"] == "示例老人"
        assert "3 号楼 2 单元 401" in queue[0]["address"]
        assert queue[0]["time_zone"] == "Asia/Shanghai"
        # A dispatcher sees the emergencies of every elder, not the low battery.
        queue = _first_queue(http, headers={"Authorization": f"Bearer {dispatcher}"})
        assert sorted(q["alert"]["id"] for q in queue) == sorted([own_alert, other_alert])
        assert low_alert not in [q["alert"]["id"] for q in queue]


def test_the_record_of_an_alert_is_the_120_record_and_audited_as_the_reader(
    db_url: str, world: tuple[str, Seeded, Seeded]
) -> None:
    url, mine, _ = world
    alert_id, _ = insert_alert(db_url, mine, [])
    dispatcher, _ = _token(db_url, Role.DISPATCHER)
    operator, _ = _token(db_url, Role.OPERATOR)
    with httpx.Client(base_url=url) as http:
        r = http.get(
            f"/api/v1/alerts/{alert_id}/record", headers={"Authorization": f"Bearer {dispatcher}"}
        )
        assert r.status_code == 200
        record = r.json()
        assert record["resident"]["name"] == "示例老人"
        assert record["profile"]["allergies"] == ["青霉素"]
        assert record["care_circle"]["contacts"][0]["name"] == mine.child_name
        assert all("channel" not in c for c in record["care_circle"]["contacts"])
        assert record["time_zone"] == "Asia/Shanghai"
        # Operators run the registry but never read health fields.
        refused = http.get(
            f"/api/v1/alerts/{alert_id}/record", headers={"Authorization": f"Bearer {operator}"}
        )
        assert refused.status_code == 403
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """SELECT role, purpose, granted FROM audit_log
                WHERE resident_id = %s AND action = 'profile.read' ORDER BY id""",
            (mine.resident_id,),
        ).fetchall()
    assert ("dispatcher", f"emergency record of alert {alert_id}", True) in rows
    assert ("operator", "GET alert record", False) in rows


def test_the_screens_ship_in_the_package_and_load_nothing_from_outside(
    world: tuple[str, Seeded, Seeded],
) -> None:
    url, _, _ = world
    names = asset_names()
    assert {"app.html", "app.js", "app.css", "dispatch.js"} <= set(names)
    with httpx.Client(base_url=url) as http:
        page = http.get("/app/dispatch")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for name in names:
            r = http.get(f"/app/static/{name}")
            assert r.status_code == 200, name
            # No CDN, no outside fonts: every address in the code is our own.
            assert "https://" not in r.text and "http://" not in r.text.replace(
                "http://www.w3.org/2000/svg", ""
            ), name
        assert http.get("/app/nothing").status_code == 404
        assert http.get("/app/static/secret.py").status_code == 404
        assert http.get("/app/static/..%2Fapp.py").status_code == 404
        assert http.get("/app", follow_redirects=False).headers["location"] == "/app/login"
