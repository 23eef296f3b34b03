"""Access control: the pure rule table, tokens (expiry, revocation, last use), the append-only
audit log, and 401/403 over HTTP, against the real PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from devices import access
from devices.access import Action, Decision, Principal, ResidentScope, Role, Scope

TEAM_A = uuid.UUID(int=1)
TEAM_B = uuid.UUID(int=2)
ELDER = uuid.UUID(int=10)
OTHER = uuid.UUID(int=11)


def _p(role: Role, **kw: Any) -> Principal:
    return Principal(id=uuid.uuid4(), name=f"test {role}", role=role, **kw)


# --- the pure rules -------------------------------------------------------------------------


def test_every_action_has_a_rule_for_every_role() -> None:
    assert set(access.RULES) == set(Action)
    for rules in access.RULES.values():
        assert set(rules) == set(Role)
    # Only admins read the audit log and manage tokens.
    for action in (Action.AUDIT_READ, Action.TOKENS_MANAGE):
        assert [r for r in Role if access.scope_of(r, action) is not Scope.NONE] == [Role.ADMIN]


def test_doctor_sees_only_residents_signed_with_their_team() -> None:
    doctor = _p(Role.DOCTOR, team_ids=frozenset({TEAM_A}))
    signed = ResidentScope(ELDER, team_ids=frozenset({TEAM_A}))
    elsewhere = ResidentScope(OTHER, team_ids=frozenset({TEAM_B}))
    assert access.decide(doctor, Action.PROFILE_READ, signed).granted
    refused = access.decide(doctor, Action.PROFILE_READ, elsewhere)
    assert refused == Decision(False, "resident not signed with the doctor's team")
    assert not access.decide(doctor, Action.REGISTRY_WRITE).granted


def test_family_sees_only_their_relative() -> None:
    family = _p(Role.FAMILY, resident_ids=frozenset({ELDER}))
    assert access.decide(family, Action.PROFILE_READ, ResidentScope(ELDER)).granted
    assert not access.decide(family, Action.PROFILE_READ, ResidentScope(OTHER)).granted
    assert not access.decide(family, Action.PROFILE_WRITE, ResidentScope(ELDER)).granted


def test_dispatcher_needs_a_lookup_or_an_open_alert() -> None:
    dispatcher = _p(Role.DISPATCHER)
    bare = access.decide(dispatcher, Action.PROFILE_READ, ResidentScope(ELDER))
    assert bare == Decision(False, "no caller lookup or open emergency alert for this resident")
    looked_up = access.decide(
        dispatcher, Action.PROFILE_READ, ResidentScope(ELDER, lookup_grant="053188880000")
    )
    assert looked_up == Decision(True, "caller lookup 05318888…")
    alert = access.decide(dispatcher, Action.PROFILE_READ, ResidentScope(ELDER, open_alert_id=123))
    assert alert == Decision(True, "open alert 123")
    assert not access.decide(dispatcher, Action.RESIDENT_LIST).granted


def test_operator_manages_the_registry_but_not_health_fields() -> None:
    operator = _p(Role.OPERATOR)
    assert access.decide(operator, Action.REGISTRY_WRITE).granted
    assert access.decide(operator, Action.PROFILE_META, ResidentScope(ELDER)).granted
    assert access.decide(operator, Action.PROFILE_READ, ResidentScope(ELDER)) == Decision(
        False, "role operator may not profile.read"
    )


def test_tokens_are_random_prefixed_and_hashed() -> None:
    a, b = access.new_token(), access.new_token()
    assert a != b
    assert a.startswith("anx_")
    assert len(access.hash_token(a)) == 32
    assert access.looks_like_token(a)
    assert not access.looks_like_token("Bearer nonsense")


# --- storage on the real PostgreSQL ---------------------------------------------------------


@pytest.fixture
def conn(db_url: str) -> Any:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.mark.integration
def test_token_expires_and_is_revoked(conn: psycopg.Connection[Any]) -> None:
    pid = access.create_principal(conn, "Test operator desk", Role.OPERATOR)
    issued = access.issue_token(conn, pid, days=1)
    principal = access.authenticate(conn, issued.token)
    assert principal is not None
    assert principal.role is Role.OPERATOR
    # last_used_at is set by the first use.
    (last_used,) = conn.execute(
        "SELECT last_used_at FROM api_tokens WHERE id = %s", (issued.token_id,)
    ).fetchone() or (None,)
    assert last_used is not None
    # Stored hashed: the token itself is nowhere in the table.
    row = conn.execute("SELECT token_hash FROM api_tokens WHERE id = %s", (issued.token_id,))
    assert row.fetchone() == (access.hash_token(issued.token),)

    conn.execute(
        "UPDATE api_tokens SET created_at = now() - interval '2 days',"
        " expires_at = now() - interval '1 second' WHERE id = %s",
        (issued.token_id,),
    )
    assert access.authenticate(conn, issued.token) is None

    second = access.issue_token(conn, pid, days=30)
    assert access.authenticate(conn, second.token) is not None
    assert access.revoke_token(conn, second.token_id)
    assert not access.revoke_token(conn, second.token_id)  # already revoked
    assert access.authenticate(conn, second.token) is None
    assert access.authenticate(conn, access.new_token()) is None  # never issued


@pytest.mark.integration
def test_token_lifetime_and_scopes_are_checked(conn: psycopg.Connection[Any]) -> None:
    pid = access.create_principal(conn, "Test admin", Role.ADMIN)
    with pytest.raises(access.AccessError, match="Token lifetime 0 days is not valid"):
        access.issue_token(conn, pid, days=0)
    with pytest.raises(access.AccessError, match="Only a family member has relatives"):
        access.create_principal(conn, "Test doctor", Role.DOCTOR, resident_ids=[ELDER])
    with pytest.raises(access.AccessError, match="does not exist"):
        access.create_principal(conn, "Test family", Role.FAMILY, resident_ids=[ELDER])


@pytest.mark.integration
def test_audit_rows_cannot_be_updated_or_deleted(conn: psycopg.Connection[Any]) -> None:
    admin = access.authenticate(
        conn,
        access.issue_token(conn, access.create_principal(conn, "Test admin", Role.ADMIN)).token,
    )
    assert admin is not None
    access.audit(
        conn,
        admin,
        Action.PROFILE_READ,
        Decision(True, "role admin"),
        purpose="test",
        resident_id=ELDER,
    )
    for statement in (
        "UPDATE audit_log SET granted = false",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="audit_log is append-only"):
            conn.execute(statement)
    rows, total = access.read_audit(conn, limit=10, offset=0)
    assert total == 1
    assert rows[0].granted is True
    assert rows[0].resident_id == ELDER


@pytest.mark.integration
def test_only_a_live_emergency_alert_opens_the_profile_to_a_dispatcher(
    conn: psycopg.Connection[Any],
) -> None:
    assert access.has_open_emergency(conn, ELDER) is False
    rows = [
        ("resolved", "emergency", "sos"),
        ("open", "low", "battery_low"),
        ("open", "emergency", "fall"),
    ]
    ids = []
    for state, severity, kind in rows:
        row = conn.execute(
            "INSERT INTO alerts (resident_id, kind, severity, state, first_at, last_at)"
            " VALUES (%s, %s, %s, %s, now(), now()) RETURNING id",
            (ELDER, kind, severity, state),
        ).fetchone()
        assert row is not None
        ids.append(int(row[0]))
    assert access.open_emergency_alert(conn, ELDER) == ids[2]
    assert access.has_open_emergency(conn, OTHER) is False


@pytest.mark.integration
def test_cli_creates_lists_and_revokes(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ANXIN_DB__URL", db_url)
    assert access.main_tokens(["create", "--role", "admin", "--name", "Test bootstrap"]) == 0
    out = capsys.readouterr().out
    token = next(line.split()[1] for line in out.splitlines() if line.startswith("token  "))
    token_id = uuid.UUID(
        next(ln.split()[2] for ln in out.splitlines() if ln.startswith("token id")).rstrip(",")
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert access.authenticate(conn, token) is not None
    assert access.main_tokens(["list"]) == 0
    assert "live" in capsys.readouterr().out
    assert access.main_tokens(["revoke", str(token_id)]) == 0
    assert access.main_tokens(["revoke", str(token_id)]) == 1
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert access.authenticate(conn, token) is None


# --- over HTTP ------------------------------------------------------------------------------


def _token(db_url: str, role: Role, **scopes: Any) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        pid = access.create_principal(conn, f"Test {role}", role, **scopes)
        return access.issue_token(conn, pid).token


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.integration
@pytest.mark.anyio
async def test_no_token_or_a_bad_one_is_401_and_a_wrong_role_403(
    http: httpx.AsyncClient, db_url: str
) -> None:
    response = await http.get("/api/v1/audit")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    bad = await http.get("/api/v1/audit", headers=_auth(access.new_token()))
    assert bad.status_code == 401
    assert "not valid" in bad.json()["detail"]
    for role in (Role.OPERATOR, Role.DISPATCHER, Role.DOCTOR, Role.FAMILY):
        refused = await http.get("/api/v1/audit", headers=_auth(_token(db_url, role)))
        assert refused.status_code == 403, role
        assert refused.json()["detail"] == f"Forbidden: role {role} may not audit.read."
    admin = await http.get("/api/v1/audit", headers=_auth(_token(db_url, Role.ADMIN)))
    assert admin.status_code == 200
    assert admin.json()["total"] == 0


@pytest.mark.integration
@pytest.mark.anyio
async def test_admin_issues_lists_and_revokes_tokens_over_http(
    http: httpx.AsyncClient, db_url: str
) -> None:
    admin = _auth(_token(db_url, Role.ADMIN))
    created = await http.post(
        "/api/v1/principals",
        headers=admin,
        json={"name": "Test dispatcher desk", "role": "dispatcher"},
    )
    assert created.status_code == 201
    body = created.json()
    me = await http.get("/api/v1/me", headers=_auth(body["token"]))
    assert me.json()["role"] == "dispatcher"
    listed = (await http.get("/api/v1/tokens", headers=admin)).json()
    mine = next(t for t in listed if t["id"] == body["token_id"])
    assert mine["last_used_at"] is not None
    assert "token" not in mine
    assert (
        await http.delete(f"/api/v1/tokens/{body['token_id']}", headers=admin)
    ).status_code == 204
    assert (await http.get("/api/v1/me", headers=_auth(body["token"]))).status_code == 401
    assert (
        await http.delete(f"/api/v1/tokens/{body['token_id']}", headers=admin)
    ).status_code == 404
    bad_role = await http.post(
        "/api/v1/principals", headers=admin, json={"name": "x", "role": "king"}
    )
    assert bad_role.status_code == 422
    assert bad_role.json()["detail"][0]["loc"] == ["body", "role"]
