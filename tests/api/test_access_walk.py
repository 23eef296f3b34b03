"""Every endpoint of the OpenAPI schema, with every role and scope, against docs/registry.md.

The expectation is the table "Every endpoint" of docs/registry.md, read from the file: an
endpoint the schema has and the table lacks (or the reverse) fails the test, and so does any
answer that differs from the table. Principals: admin, operator, a dispatcher without and with
a caller-lookup grant, one doctor whose team's contracts are in force, ended yesterday and
start in ten days (one resident each), a family member of the resident and one of another,
a revoked and an expired admin token, and no token. Every profile read that succeeds must
leave a granted audit row of that principal and resident.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from api.app import create_app
from core.settings import load_settings
from devices import access
from devices.access import Role
from tests.services import serve_api

pytestmark = [pytest.mark.integration]

DOC = Path(__file__).resolve().parents[2] / "docs" / "registry.md"
ROLES = ("admin", "operator", "dispatcher", "doctor", "family")

# Each kind of principal: (its role column in the table, the scope it is in).
KINDS: dict[str, str] = {
    "admin": "admin",
    "operator": "operator",
    "dispatcher": "dispatcher",
    "dispatcher_lookup": "dispatcher",
    "doctor_in_force": "doctor",
    "doctor_ended": "doctor",
    "doctor_future": "doctor",
    "family_own": "family",
    "family_other": "family",
    "revoked": "admin",
    "expired": "admin",
    "anonymous": "admin",
}
IN_SCOPE = {"dispatcher_lookup", "doctor_in_force", "family_own"}
NO_TOKEN = {"revoked", "expired", "anonymous"}


def documented() -> dict[tuple[str, str], dict[str, str]]:
    """(method, path) -> role -> cell, from the "Every endpoint" table of docs/registry.md."""
    text = DOC.read_text()
    section = text.split("### Every endpoint", 1)[1].split("\n### ", 1)[0]
    table: dict[tuple[str, str], dict[str, str]] = {}
    for line in section.splitlines():
        m = re.match(r"^\| `(GET|POST|PUT|PATCH|DELETE) (\S+)` \|(.+)\|$", line)
        if m:
            cells = [c.strip() for c in m.group(3).split("|")]
            assert len(cells) == len(ROLES), line
            table[m.group(1), m.group(2)] = dict(zip(ROLES, cells, strict=True))
    return table


def expected(cell: str, kind: str) -> bool:
    """Whether a principal of ``kind`` is let through by a cell of the table."""
    if cell == "public":
        return True
    if kind in NO_TOKEN:
        return False
    if cell in {"all", "any"}:
        return True
    if cell == "no":
        return False
    if cell in {"signed", "own", "emergency", "severe"}:
        return kind in IN_SCOPE
    raise AssertionError(f"unknown cell {cell!r} in docs/registry.md")


@dataclass
class World:
    """The ids the walk needs; ``throw`` holds objects that writes may change or retire."""

    resident: dict[str, str] = field(default_factory=dict)  # kind -> the resident it targets
    alert: dict[str, int] = field(default_factory=dict)  # kind -> the alert it targets
    ids: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    principals: dict[str, str] = field(default_factory=dict)


def _create(http: httpx.Client, admin: dict[str, str], path: str, body: dict[str, Any]) -> str:
    r = http.post(path, headers=admin, json=body)
    assert r.status_code == 201, (path, r.text)
    return str(r.json()["id"])


def _elder(http: httpx.Client, admin: dict[str, str], name: str, **extra: Any) -> str:
    body = {"name": name, "sex": "female", "birth_date": "1940-01-01", **extra}
    rid = _create(http, admin, "/api/v1/residents", body)
    r = http.put(f"/api/v1/residents/{rid}/profile", headers=admin, json={"allergies": ["x"]})
    assert r.status_code == 200, r.text
    return rid


def build_world(db_url: str, http: httpx.Client) -> World:
    w = World()
    with psycopg.connect(db_url, autocommit=True) as conn:
        boot = access.issue_token(conn, access.create_principal(conn, "Walk boot", Role.ADMIN))
    admin = {"Authorization": f"Bearer {boot.token}"}
    today = dt.date.today()
    team = http.post(
        "/api/v1/doctor-teams",
        headers=admin,
        json={"name": "Walk team", "members": [{"name": "Walk doctor", "role": "doctor"}]},
    ).json()
    subject = _elder(http, admin, "Walk subject", mobile="13800138100")
    ended = _elder(http, admin, "Walk ended")
    future = _elder(http, admin, "Walk future")
    other = _elder(http, admin, "Walk other")
    severe = _elder(http, admin, "Walk severe")
    spans = {
        subject: (today - dt.timedelta(days=30), today + dt.timedelta(days=30)),
        ended: (today - dt.timedelta(days=400), today - dt.timedelta(days=1)),
        future: (today + dt.timedelta(days=10), today + dt.timedelta(days=400)),
    }
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for rid, (start, end) in spans.items():
            conn.execute(
                """INSERT INTO doctor_contracts (resident_id, team_id, service_package, starts_on,
                   ends_on) VALUES (%s, %s, 'basic', %s, %s)""",
                (rid, team["id"], start, end),
            )
        alerts: dict[str, int] = {}
        for rid, severity in (
            (subject, "medium"),
            (ended, "medium"),
            (future, "medium"),
            (other, "medium"),
            (severe, "emergency"),
        ):
            row = conn.execute(
                """INSERT INTO alerts (resident_id, kind, severity, state, first_at, last_at,
                   opened_at) VALUES (%s, 'news2', %s, 'open', %s, %s, %s) RETURNING id""",
                (rid, severity, now, now, now),
            ).fetchone()
            assert row is not None
            alerts[rid] = int(row[0])

        def token(name: str, role: Role, **scopes: Any) -> str:
            pid = access.create_principal(conn, f"Walk {name}", role, **scopes)
            w.principals[name] = str(pid)
            return access.issue_token(conn, pid).token

        member = team["members"][0]["id"]
        doctor = token("doctor", Role.DOCTOR, member_ids=[member])
        w.tokens = {
            "admin": token("admin", Role.ADMIN),
            "operator": token("operator", Role.OPERATOR),
            "dispatcher": token("dispatcher", Role.DISPATCHER),
            "dispatcher_lookup": token("dispatcher_lookup", Role.DISPATCHER),
            "doctor_in_force": doctor,
            "doctor_ended": doctor,
            "doctor_future": doctor,
            "family_own": token("family_own", Role.FAMILY, resident_ids=[subject]),
            "family_other": token("family_other", Role.FAMILY, resident_ids=[other]),
            "revoked": token("revoked", Role.ADMIN),
            "expired": token("expired", Role.ADMIN),
        }
        for name in ("revoked", "expired"):
            pid = w.principals[name]
            conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE principal_id = %s"
                         if name == "revoked" else
                         "UPDATE api_tokens SET created_at = now() - interval '2 days', "
                         "expires_at = now() - interval '1 second' "
                         "WHERE principal_id = %s", (pid,))  # fmt: skip
        grantee = access.Principal(
            uuid.UUID(w.principals["dispatcher_lookup"]), "Walk lookup", Role.DISPATCHER
        )
        access.grant_lookup(conn, grantee, uuid.UUID(subject), "13800138100")
        throw_principal = access.create_principal(conn, "Walk throwaway", Role.OPERATOR)
        throw_token = access.issue_token(conn, throw_principal)
    w.resident = dict.fromkeys(KINDS, subject)
    w.resident |= {"doctor_ended": ended, "doctor_future": future}
    w.alert = dict.fromkeys(KINDS, alerts[subject])
    w.alert |= {
        "doctor_ended": alerts[ended],
        "doctor_future": alerts[future],
        "dispatcher_lookup": alerts[severe],
    }
    contract_of = _elder(http, admin, "Walk contract")
    contract = http.post(
        f"/api/v1/residents/{contract_of}/contracts",
        headers=admin,
        json={
            "team_id": team["id"],
            "service_package": "basic",
            "starts_on": str(today),
            "ends_on": str(today + dt.timedelta(days=30)),
        },
    ).json()
    throw_team = http.post(
        "/api/v1/doctor-teams",
        headers=admin,
        json={"name": "Walk throwaway team", "members": [{"name": "M", "role": "nurse"}]},
    ).json()
    w.ids = {
        "subject": subject,
        "other": other,
        "team": team["id"],
        "throw_team": throw_team["id"],
        "throw_member": throw_team["members"][0]["id"],
        "patch": _elder(http, admin, "Walk patch"),
        "retire": _elder(http, admin, "Walk retire"),
        "write": _elder(http, admin, "Walk write"),
        "contact": _create(
            http,
            admin,
            f"/api/v1/residents/{subject}/contacts",
            {"name": "Walk son", "role": "child", "phones": ["13900139100"]},
        ),
        "throw_contact": _create(
            http,
            admin,
            f"/api/v1/residents/{other}/contacts",
            {"name": "Walk neighbour", "role": "neighbour", "phones": ["13900139101"]},
        ),
        "contract": contract["id"],
        "hospital": _create(http, admin, "/api/v1/hospitals", {"name": "Walk hospital"}),
        "throw_hospital": _create(http, admin, "/api/v1/hospitals", {"name": "Walk h2"}),
        "community": _create(http, admin, "/api/v1/communities", {"name": "Walk community"}),
        "throw_community": _create(http, admin, "/api/v1/communities", {"name": "Walk c2"}),
        "throw_principal": str(throw_principal),
        "throw_token": str(throw_token.token_id),
    }
    device = http.post(
        "/api/v1/devices", headers=admin, json={"device_id": "walk-wb-1", "kind": "wristband"}
    )
    assert device.status_code == 201
    return w


Request = tuple[str, dict[str, Any]]  # path, keyword arguments of httpx's request
CSV = "name,sex,birth_date\nWalk import,female,1940-01-01\n"


def requests_for(w: World) -> dict[tuple[str, str], Callable[[str], Request]]:
    """Per operation: a valid request for a principal of a kind (the ids it targets)."""
    ids = w.ids

    def rid(kind: str) -> str:
        return w.resident[kind]

    def aid(kind: str) -> int:
        return w.alert[kind]

    resident_body = {"name": "Walk new", "sex": "male", "birth_date": "1941-02-02"}
    consent = {
        "given_by": "Walk son",
        "relation": "child",
        "given_at": "2026-01-01T00:00:00+00:00",
        "scopes": ["registry"],
    }
    contract = {
        "team_id": ids["team"],
        "service_package": "basic",
        "starts_on": "2026-01-01",
        "ends_on": "2026-12-31",
    }
    return {
        ("GET", "/health"): lambda k: ("/health", {}),
        ("GET", "/api/v1/me"): lambda k: ("/api/v1/me", {}),
        ("POST", "/api/v1/session"): lambda k: ("/api/v1/session", {}),
        ("GET", "/api/v1/session"): lambda k: ("/api/v1/session", {}),
        ("DELETE", "/api/v1/session"): lambda k: ("/api/v1/session", {}),
        ("POST", "/api/v1/principals"): lambda k: (
            "/api/v1/principals",
            {"json": {"name": f"Walk {k}", "role": "operator"}},
        ),
        ("POST", "/api/v1/principals/{principal_id}/tokens"): lambda k: (
            f"/api/v1/principals/{ids['throw_principal']}/tokens",
            {"json": {"days": 1}},
        ),
        ("GET", "/api/v1/tokens"): lambda k: ("/api/v1/tokens", {}),
        ("DELETE", "/api/v1/tokens/{token_id}"): lambda k: (
            f"/api/v1/tokens/{ids['throw_token']}",
            {},
        ),
        ("GET", "/api/v1/audit"): lambda k: ("/api/v1/audit", {}),
        ("POST", "/api/v1/residents/import"): lambda k: (
            "/api/v1/residents/import",
            {"content": CSV.encode(), "headers": {"Content-Type": "text/csv"}},
        ),
        ("GET", "/api/v1/residents/export"): lambda k: ("/api/v1/residents/export", {}),
        ("POST", "/api/v1/residents"): lambda k: ("/api/v1/residents", {"json": resident_body}),
        ("GET", "/api/v1/residents"): lambda k: ("/api/v1/residents", {}),
        ("GET", "/api/v1/residents/{resident_id}"): lambda k: (f"/api/v1/residents/{rid(k)}", {}),
        ("PATCH", "/api/v1/residents/{resident_id}"): lambda k: (
            f"/api/v1/residents/{ids['patch']}",
            {"json": {"mobile": "13800138199"}},
        ),
        ("DELETE", "/api/v1/residents/{resident_id}"): lambda k: (
            f"/api/v1/residents/{ids['retire']}",
            {},
        ),
        ("GET", "/api/v1/residents/{resident_id}/consents"): lambda k: (
            f"/api/v1/residents/{rid(k)}/consents",
            {},
        ),
        ("POST", "/api/v1/residents/{resident_id}/consents"): lambda k: (
            f"/api/v1/residents/{ids['write']}/consents",
            {"json": consent},
        ),
        ("GET", "/api/v1/residents/{resident_id}/profile"): lambda k: (
            f"/api/v1/residents/{rid(k)}/profile",
            {},
        ),
        ("PUT", "/api/v1/residents/{resident_id}/profile"): lambda k: (
            f"/api/v1/residents/{rid(k)}/profile",
            {"json": {"allergies": ["x"]}},
        ),
        ("GET", "/api/v1/residents/{resident_id}/profile/history"): lambda k: (
            f"/api/v1/residents/{rid(k)}/profile/history",
            {},
        ),
        ("GET", "/api/v1/residents/{resident_id}/profile/meta"): lambda k: (
            f"/api/v1/residents/{rid(k)}/profile/meta",
            {},
        ),
        ("POST", "/api/v1/residents/{resident_id}/profile/verify"): lambda k: (
            f"/api/v1/residents/{rid(k)}/profile/verify",
            {},
        ),
        ("GET", "/api/v1/profiles/unverified"): lambda k: ("/api/v1/profiles/unverified", {}),
        ("GET", "/api/v1/residents/{resident_id}/contacts"): lambda k: (
            f"/api/v1/residents/{rid(k)}/contacts",
            {},
        ),
        ("POST", "/api/v1/residents/{resident_id}/contacts"): lambda k: (
            f"/api/v1/residents/{ids['write']}/contacts",
            {"json": {"name": "Walk", "role": "relative", "phones": ["13900139102"]}},
        ),
        ("PATCH", "/api/v1/contacts/{contact_id}"): lambda k: (
            f"/api/v1/contacts/{ids['contact']}",
            {"json": {"priority": 2}},
        ),
        ("DELETE", "/api/v1/contacts/{contact_id}"): lambda k: (
            f"/api/v1/contacts/{ids['throw_contact']}",
            {},
        ),
        ("GET", "/api/v1/residents/{resident_id}/contracts"): lambda k: (
            f"/api/v1/residents/{rid(k)}/contracts",
            {},
        ),
        ("POST", "/api/v1/residents/{resident_id}/contracts"): lambda k: (
            f"/api/v1/residents/{ids['write']}/contracts",
            {"json": contract},
        ),
        ("DELETE", "/api/v1/contracts/{contract_id}"): lambda k: (
            f"/api/v1/contracts/{ids['contract']}",
            {},
        ),
        ("POST", "/api/v1/doctor-teams"): lambda k: (
            "/api/v1/doctor-teams",
            {"json": {"name": f"Walk team {k}"}},
        ),
        ("GET", "/api/v1/doctor-teams"): lambda k: ("/api/v1/doctor-teams", {}),
        ("GET", "/api/v1/doctor-teams/{team_id}"): lambda k: (
            f"/api/v1/doctor-teams/{ids['team']}",
            {},
        ),
        ("DELETE", "/api/v1/doctor-teams/{team_id}"): lambda k: (
            f"/api/v1/doctor-teams/{ids['throw_team']}",
            {},
        ),
        ("POST", "/api/v1/doctor-teams/{team_id}/members"): lambda k: (
            f"/api/v1/doctor-teams/{ids['throw_team']}/members",
            {"json": {"name": f"Walk {k}", "role": "nurse"}},
        ),
        ("DELETE", "/api/v1/doctor-team-members/{member_id}"): lambda k: (
            f"/api/v1/doctor-team-members/{ids['throw_member']}",
            {},
        ),
        ("POST", "/api/v1/hospitals"): lambda k: ("/api/v1/hospitals", {"json": {"name": "H"}}),
        ("GET", "/api/v1/hospitals"): lambda k: ("/api/v1/hospitals", {}),
        ("GET", "/api/v1/hospitals/{hospital_id}"): lambda k: (
            f"/api/v1/hospitals/{ids['hospital']}",
            {},
        ),
        ("PUT", "/api/v1/hospitals/{hospital_id}"): lambda k: (
            f"/api/v1/hospitals/{ids['throw_hospital']}",
            {"json": {"name": "Walk h3"}},
        ),
        ("DELETE", "/api/v1/hospitals/{hospital_id}"): lambda k: (
            f"/api/v1/hospitals/{ids['throw_hospital']}",
            {},
        ),
        ("POST", "/api/v1/communities"): lambda k: (
            "/api/v1/communities",
            {"json": {"name": "C"}},
        ),
        ("GET", "/api/v1/communities"): lambda k: ("/api/v1/communities", {}),
        ("GET", "/api/v1/communities/{community_id}"): lambda k: (
            f"/api/v1/communities/{ids['community']}",
            {},
        ),
        ("PUT", "/api/v1/communities/{community_id}"): lambda k: (
            f"/api/v1/communities/{ids['throw_community']}",
            {"json": {"name": "Walk c3"}},
        ),
        ("DELETE", "/api/v1/communities/{community_id}"): lambda k: (
            f"/api/v1/communities/{ids['throw_community']}",
            {},
        ),
        ("POST", "/api/v1/devices"): lambda k: (
            "/api/v1/devices",
            {"json": {"device_id": f"walk-{k}"[:64].replace("_", "-"), "kind": "pendant"}},
        ),
        ("GET", "/api/v1/devices"): lambda k: ("/api/v1/devices", {}),
        ("GET", "/api/v1/residents/{resident_id}/devices"): lambda k: (
            f"/api/v1/residents/{rid(k)}/devices",
            {},
        ),
        ("GET", "/api/v1/devices/{device_id}"): lambda k: ("/api/v1/devices/walk-wb-1", {}),
        ("PUT", "/api/v1/devices/{device_id}/binding"): lambda k: (
            "/api/v1/devices/walk-wb-1/binding",
            {"json": {"resident_id": ids["write"]}},
        ),
        ("PUT", "/api/v1/devices/{device_id}/status"): lambda k: (
            "/api/v1/devices/walk-wb-1/status",
            {"json": {"status": "active"}},
        ),
        ("GET", "/api/v1/residents/{resident_id}/behaviour"): lambda k: (
            f"/api/v1/residents/{rid(k)}/behaviour",
            {},
        ),
        ("PUT", "/api/v1/residents/{resident_id}/behaviour"): lambda k: (
            f"/api/v1/residents/{rid(k)}/behaviour",
            {"json": {"lives_alone": True, "max_inactive_min": 150}},
        ),
        ("GET", "/api/v1/residents/{resident_id}/news2/settings"): lambda k: (
            f"/api/v1/residents/{rid(k)}/news2/settings",
            {},
        ),
        ("PUT", "/api/v1/residents/{resident_id}/news2/settings"): lambda k: (
            f"/api/v1/residents/{rid(k)}/news2/settings",
            {"json": {"spo2_scale": 2}},
        ),
        ("GET", "/api/v1/residents/{resident_id}/fhir"): lambda k: (
            f"/api/v1/residents/{rid(k)}/fhir",
            {},
        ),
        ("GET", "/api/v1/communities/{community_id}/fhir"): lambda k: (
            f"/api/v1/communities/{ids['community']}/fhir",
            {},
        ),
        ("POST", "/api/v1/residents/{resident_id}/visits"): lambda k: (
            f"/api/v1/residents/{rid(k)}/visits",
            {
                "json": {
                    "visited_at": "2026-11-20T10:00:00+08:00",
                    "visitor": "Walk worker",
                    "visitor_role": "community_worker",
                }
            },
        ),
        ("GET", "/api/v1/residents/{resident_id}/visits"): lambda k: (
            f"/api/v1/residents/{rid(k)}/visits",
            {},
        ),
        ("GET", "/api/v1/visits/due"): lambda k: ("/api/v1/visits/due", {}),
        ("GET", "/api/v1/visit-rules"): lambda k: ("/api/v1/visit-rules", {}),
        ("PUT", "/api/v1/visit-rules"): lambda k: (
            "/api/v1/visit-rules",
            {"json": {"flag": "very_old", "every_months": 2}},
        ),
        ("GET", "/api/v1/reports/monthly"): lambda k: (
            "/api/v1/reports/monthly",
            {"params": {"district": "Walk district", "month": "2026-10"}},
        ),
        **{
            ("GET", f"/api/v1/residents/{{resident_id}}/{what}"): (
                lambda k, what=what: (f"/api/v1/residents/{rid(k)}/{what}", {})
            )
            for what in ("vitals", "news2", "findings")
        },
        ("GET", "/api/v1/risk/residents"): lambda k: ("/api/v1/risk/residents", {}),
        ("GET", "/api/v1/operations/devices"): lambda k: ("/api/v1/operations/devices", {}),
        ("GET", "/api/v1/lookup/caller"): lambda k: (
            "/api/v1/lookup/caller",
            {"params": {"number": "13800138100"}},
        ),
        ("GET", "/api/v1/alerts"): lambda k: ("/api/v1/alerts", {}),
        ("GET", "/api/v1/alerts/live"): lambda k: ("/api/v1/alerts/live", {}),
        ("GET", "/api/v1/alerts/{alert_id}/record"): lambda k: (
            f"/api/v1/alerts/{aid(k)}/record",
            {},
        ),
        ("GET", "/api/v1/alerts/{alert_id}"): lambda k: (f"/api/v1/alerts/{aid(k)}", {}),
        **{
            ("POST", f"/api/v1/alerts/{{alert_id}}/{move}"): (
                lambda k, move=move: (f"/api/v1/alerts/{aid(k)}/{move}", {})
            )
            for move in ("acknowledge", "dispatched", "resolve", "false-alarm")
        },
        ("GET", "/api/v1/ack/{token}"): lambda k: ("/api/v1/ack/AAAAAAAAAAAAAAAAAAAAAAAA", {}),
        ("POST", "/api/v1/ack/{token}"): lambda k: ("/api/v1/ack/AAAAAAAAAAAAAAAAAAAAAAAA", {}),
        ("GET", "/api/v1/telemetry/latest"): lambda k: ("/api/v1/telemetry/latest", {}),
        ("GET", "/api/v1/dead-letters"): lambda k: ("/api/v1/dead-letters", {}),
        ("GET", "/api/v1/stats"): lambda k: ("/api/v1/stats", {}),
    }


def refused(method: str, path: str, response: httpx.Response) -> bool:
    """401 and 403 refuse; for alerts, out of scope is 404 (like one that does not exist)."""
    if response.status_code in {401, 403}:
        return True
    return response.status_code == 404 and path.startswith("/api/v1/alerts/")


LISTS = {
    ("GET", "/api/v1/residents"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/alerts/live"),
    ("GET", "/api/v1/risk/residents"),
}
PROFILE_READS = {
    ("GET", "/api/v1/residents/{resident_id}/profile"),
    ("GET", "/api/v1/residents/{resident_id}/profile/history"),
    ("GET", "/api/v1/lookup/caller"),
}


def _audited(db_url: str, principal_id: str | None, resident: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            """SELECT count(*) FROM audit_log WHERE principal_id = %s AND resident_id = %s
                  AND action = 'profile.read' AND granted""",
            (principal_id, resident),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def client(db_url: str) -> Iterator[httpx.Client]:
    app = create_app(load_settings(db={"url": db_url}))
    app.state.alert_commands = None  # no broker here: "help is coming" is not sent
    with serve_api(app, access_log=False) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def test_every_endpoint_with_every_role_and_scope_is_as_documented(
    client: httpx.Client, db_url: str
) -> None:
    table = documented()
    schema = client.get("/openapi.json").json()
    operations = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    assert operations == set(table), (
        f"in the API, not in docs/registry.md: {sorted(operations - set(table))}; "
        f"in the doc, not in the API: {sorted(set(table) - operations)}"
    )
    world = build_world(db_url, client)
    specs = requests_for(world)
    assert set(specs) == operations
    differences: list[str] = []
    walked = audited_reads = 0
    # The caller lookup last: it opens a lookup grant, which would widen a dispatcher's scope.
    order = sorted(table.items(), key=lambda kv: (kv[0][1] == "/api/v1/lookup/caller", kv[0]))
    for (method, template), cells in order:
        for kind, role in KINDS.items():
            path, kwargs = specs[method, template](kind)
            headers = dict(kwargs.pop("headers", {}))
            if kind != "anonymous":
                headers["Authorization"] = f"Bearer {world.tokens[kind]}"
            principal = world.principals.get(kind.removesuffix("_in_force").split("_")[0])
            principal = world.principals.get(kind, principal)
            target = world.resident[kind]
            before = (
                _audited(db_url, principal, target) if (method, template) in PROFILE_READS else 0
            )
            response = client.request(method, path, headers=headers, **kwargs)
            walked += 1
            assert response.status_code < 500, (method, path, kind, response.text)
            want = expected(cells[role], kind)
            if (method, template) in LISTS and cells[role] != "no" and kind not in NO_TOKEN:
                want = True  # a list answers with what is in scope (checked below)
            got = not refused(method, template, response)
            if want != got:
                differences.append(
                    f"{method} {template} as {kind}: documented {cells[role]!r} "
                    f"({'allowed' if want else 'refused'}), got {response.status_code} "
                    f"{response.text[:120]}"
                )
                continue
            if got and (method, template) in PROFILE_READS and response.status_code == 200:
                after = _audited(db_url, principal, target)
                audited_reads += 1
                if after <= before:
                    differences.append(f"{method} {template} as {kind}: read without audit row")
            if got and (method, template) == ("GET", "/api/v1/residents"):
                names = {r["id"] for r in response.json()["items"]}
                allowed = {
                    "doctor_in_force": {world.ids["subject"]},
                    "doctor_ended": {world.ids["subject"]},
                    "doctor_future": {world.ids["subject"]},
                    "family_own": {world.ids["subject"]},
                    "family_other": {world.ids["other"]},
                }.get(kind)
                if allowed is not None and names != allowed:
                    differences.append(f"GET residents as {kind}: listed {sorted(names)}")
            if got and (method, template) == ("GET", "/api/v1/risk/residents"):
                listed = {r["resident_id"] for r in response.json()}
                mine = {"family_own": {world.ids["subject"]}, "family_other": {world.ids["other"]}}
                if kind in mine and listed != mine[kind]:
                    differences.append(f"GET risk/residents as {kind}: listed {sorted(listed)}")
            if got and (method, template) == ("GET", "/api/v1/alerts"):
                residents = {a["resident_id"] for a in response.json()}
                scope = {
                    "doctor_in_force": {world.ids["subject"]},
                    "doctor_ended": {world.ids["subject"]},
                    "doctor_future": {world.ids["subject"]},
                    "family_own": {world.ids["subject"]},
                    "family_other": {world.ids["other"]},
                }.get(kind)
                if scope is not None and not residents <= scope:
                    differences.append(f"GET alerts as {kind}: listed {sorted(residents)}")
                if kind.startswith("dispatcher") and any(
                    a["severity"] != "emergency" for a in response.json()
                ):
                    differences.append(f"GET alerts as {kind}: a non-emergency alert")
    assert walked == len(table) * len(KINDS)
    # Profile reads by admin, the dispatcher with a grant, the doctor and the family member,
    # and the lookups of admin and dispatchers: each matched by its audit row.
    assert audited_reads == 2 * 4 + 3
    assert not differences, "\n".join(differences)
