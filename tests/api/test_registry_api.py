"""The registry API against the real PostgreSQL: CRUD with clear 4xx, scopes of doctors,
families and dispatchers, the caller lookup, and the audit of every profile read."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from devices.access import Role
from tests.api.client import bearer as _token

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ELDER = {
    "name": "Test Elder One",
    "sex": "female",
    "birth_date": "1938-03-01",
    "landline": "0531-8888 0001",
    "address": {"city": "Testcity", "community": "Sample Garden"},
    "flags": ["living_alone", "very_old"],
}
PROFILE = {
    "conditions": ["hypertension"],
    "medications": ["sample-pril 5 mg"],
    "allergies": ["penicillin"],
    "blood_type": "A+",
    "responder_notes": {"door_code": "0000", "hearing": "hard of hearing"},
}


async def _resident(http: httpx.AsyncClient, admin: dict[str, str], **over: Any) -> str:
    response = await http.post("/api/v1/residents", headers=admin, json={**ELDER, **over})
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    put = await http.put(f"/api/v1/residents/{rid}/profile", headers=admin, json=PROFILE)
    assert put.status_code == 200, put.text
    return rid


async def _audit(http: httpx.AsyncClient, admin: dict[str, str], rid: str) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/audit", headers=admin, params={"resident_id": rid})
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_crud_with_clear_errors(http: httpx.AsyncClient, db_url: str) -> None:
    admin = _token(db_url, Role.ADMIN)
    assert (await http.post("/api/v1/residents", json=ELDER)).status_code == 401
    bad = await http.post("/api/v1/residents", headers=admin, json={**ELDER, "sex": "x"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "sex"]
    extra = await http.post("/api/v1/residents", headers=admin, json={**ELDER, "shoe": 42})
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["loc"] == ["body", "shoe"]
    rid = await _resident(http, admin)
    missing = await http.get(f"/api/v1/residents/{uuid.uuid4()}", headers=admin)
    assert missing.status_code == 404
    patched = await http.patch(
        f"/api/v1/residents/{rid}", headers=admin, json={"mobile": "+86 138 0013 8000"}
    )
    assert patched.status_code == 200
    assert patched.json()["mobile"] == "+86 138 0013 8000"
    # Profile history: two versions after an update.
    second = await http.put(
        f"/api/v1/residents/{rid}/profile", headers=admin, json={**PROFILE, "allergies": []}
    )
    assert second.json()["version"] == 2
    history = await http.get(f"/api/v1/residents/{rid}/profile/history", headers=admin)
    assert [v["version"] for v in history.json()] == [1, 2]
    # Search by name, phone, community and flag, with the total.
    await _resident(
        http, admin, name="Test Elder Two", landline=None, flags=[], address={"city": "Elsewhere"}
    )
    page = (await http.get("/api/v1/residents", headers=admin, params={"limit": 1})).json()
    assert page["total"] == 2
    assert len(page["items"]) == 1
    for params in (
        {"name": "one"},
        {"phone": "053188880001"},
        {"community": "sample"},
        {"flag": "living_alone"},
    ):
        found = (await http.get("/api/v1/residents", headers=admin, params=params)).json()
        assert [r["name"] for r in found["items"]] == ["Test Elder One"], params
    # Devices: bind, lifecycle, 409 for a move the lifecycle does not allow.
    dev = await http.post(
        "/api/v1/devices", headers=admin, json={"device_id": "test-wb-1", "kind": "wristband"}
    )
    assert dev.status_code == 201
    assert (
        await http.post(
            "/api/v1/devices", headers=admin, json={"device_id": "test-wb-1", "kind": "wristband"}
        )
    ).status_code == 409
    bound = await http.put(
        "/api/v1/devices/test-wb-1/binding", headers=admin, json={"resident_id": rid}
    )
    assert bound.json()["resident_id"] == rid
    for state, code in (("active", 200), ("retired", 200), ("active", 409)):
        moved = await http.put(
            "/api/v1/devices/test-wb-1/status", headers=admin, json={"status": state}
        )
        assert moved.status_code == code, moved.text
    # Retire, never delete.
    retired = await http.delete(f"/api/v1/residents/{rid}", headers=admin)
    assert retired.json()["status"] == "retired"
    assert (await http.get(f"/api/v1/residents/{rid}", headers=admin)).status_code == 200


async def test_doctor_sees_only_residents_signed_with_the_team(
    http: httpx.AsyncClient, db_url: str
) -> None:
    admin = _token(db_url, Role.ADMIN)
    team = await http.post(
        "/api/v1/doctor-teams",
        headers=admin,
        json={"name": "Test Team A", "members": [{"name": "Test Doctor A", "role": "doctor"}]},
    )
    assert team.status_code == 201, team.text
    team_id, member_id = team.json()["id"], team.json()["members"][0]["id"]
    signed = await _resident(http, admin)
    other = await _resident(http, admin, name="Test Elder Unsigned")
    contract = await http.post(
        f"/api/v1/residents/{signed}/contracts",
        headers=admin,
        json={
            "team_id": team_id,
            "service_package": "basic",
            "starts_on": "2020-01-01",
            "ends_on": "2099-12-31",
        },
    )
    assert contract.status_code == 201, contract.text
    doctor = _token(db_url, Role.DOCTOR, member_ids=[uuid.UUID(member_id)])
    ok = await http.get(f"/api/v1/residents/{signed}/profile", headers=doctor)
    assert ok.status_code == 200
    assert ok.json()["allergies"] == ["penicillin"]
    refused = await http.get(f"/api/v1/residents/{other}/profile", headers=doctor)
    assert refused.status_code == 403
    assert "not signed" in refused.json()["detail"]
    listed = (await http.get("/api/v1/residents", headers=doctor)).json()
    assert [r["id"] for r in listed["items"]] == [signed]
    assert (await http.post("/api/v1/residents", headers=doctor, json=ELDER)).status_code == 403
    # Both the read and the refusal are in the audit log.
    (granted,) = await _audit(http, admin, signed)
    assert granted["granted"] is True
    assert granted["role"] == "doctor"
    assert granted["reason"] == f"signed with team {team_id}"
    assert granted["profile_version"] == 1
    (refusal,) = await _audit(http, admin, other)
    assert refusal["granted"] is False
    assert refusal["reason"] == "resident not signed with the doctor's team"


async def test_family_sees_only_their_relative(http: httpx.AsyncClient, db_url: str) -> None:
    admin = _token(db_url, Role.ADMIN)
    mine = await _resident(http, admin)
    theirs = await _resident(http, admin, name="Test Elder Stranger")
    family = _token(db_url, Role.FAMILY, resident_ids=[uuid.UUID(mine)])
    assert (await http.get(f"/api/v1/residents/{mine}/profile", headers=family)).status_code == 200
    assert (await http.get(f"/api/v1/residents/{mine}", headers=family)).status_code == 200
    for path in (f"/api/v1/residents/{theirs}", f"/api/v1/residents/{theirs}/profile"):
        assert (await http.get(path, headers=family)).status_code == 403, path
    # An id that does not exist looks the same as one out of scope.
    assert (await http.get(f"/api/v1/residents/{uuid.uuid4()}", headers=family)).status_code == 403
    listed = (await http.get("/api/v1/residents", headers=family)).json()
    assert [r["id"] for r in listed["items"]] == [mine]
    assert listed["total"] == 1
    assert (
        await http.put(f"/api/v1/residents/{mine}/profile", headers=family, json=PROFILE)
    ).status_code == 403


async def test_dispatcher_reads_a_profile_only_after_a_caller_lookup(
    http: httpx.AsyncClient, db_url: str
) -> None:
    admin = _token(db_url, Role.ADMIN)
    rid = await _resident(http, admin)
    dispatcher = _token(db_url, Role.DISPATCHER)
    refused = await http.get(f"/api/v1/residents/{rid}/profile", headers=dispatcher)
    assert refused.status_code == 403
    assert "no caller lookup" in refused.json()["detail"]
    assert (await http.get("/api/v1/residents", headers=dispatcher)).status_code == 403

    looked = await http.get(
        "/api/v1/lookup/caller", headers=dispatcher, params={"number": "+86 531 8888 0001"}
    )
    assert looked.status_code == 200, looked.text
    body = looked.json()
    assert body["national"] == "053188880001"
    (match,) = body["matches"]
    assert match["match"]["resident"]["id"] == rid
    assert match["profile"]["blood_type"] == "A+"

    allowed = await http.get(f"/api/v1/residents/{rid}/profile", headers=dispatcher)
    assert allowed.status_code == 200
    assert allowed.json()["responder_notes"]["hearing"] == "hard of hearing"
    # Another dispatcher has no grant of their own.
    other = _token(db_url, Role.DISPATCHER)
    assert (await http.get(f"/api/v1/residents/{rid}/profile", headers=other)).status_code == 403

    rows = await _audit(http, admin, rid)
    dispatcher_rows = [r for r in rows if r["role"] == "dispatcher"]
    assert [(r["granted"], r["purpose"]) for r in reversed(dispatcher_rows)] == [
        (False, "GET profile"),
        (True, "caller lookup 05318888…"),
        (True, "GET profile"),
        (False, "GET profile"),
    ]
    assert dispatcher_rows[1]["reason"] == "caller lookup 05318888…"
    # A number that is not a phone number is a 422 naming it.
    bad = await http.get("/api/v1/lookup/caller", headers=dispatcher, params={"number": "abc"})
    assert bad.status_code == 422


async def test_operator_manages_the_registry_without_health_fields(
    http: httpx.AsyncClient, db_url: str
) -> None:
    admin = _token(db_url, Role.ADMIN)
    operator = _token(db_url, Role.OPERATOR)
    rid = await _resident(http, admin)
    assert (await http.get(f"/api/v1/residents/{rid}", headers=operator)).status_code == 200
    meta = await http.get(f"/api/v1/residents/{rid}/profile/meta", headers=operator)
    assert meta.status_code == 200
    assert "allergies" not in meta.json()
    refused = await http.get(f"/api/v1/residents/{rid}/profile", headers=operator)
    assert refused.status_code == 403
    assert (await _audit(http, admin, rid))[0]["granted"] is False
    assert (await http.get("/api/v1/audit", headers=operator)).status_code == 403
    unverified = await http.get("/api/v1/profiles/unverified", headers=operator)
    assert [r["resident_id"] for r in unverified.json()] == [rid]


CSV_GOOD = (
    "name,sex,birth_date,landline,community,flags,blood_type,allergies,contact1_name,"
    "contact1_role,contact1_phones\n"
    "Test Csv One,male,1940-01-01,0531-8888 0101,Sample Garden,living_alone,O+,penicillin,"
    "Test Child One,child,13800138001\n"
    "Test Csv Two,female,1941-02-02,0531-8888 0102,Sample Garden,,,,,,\n"
)


async def test_csv_with_one_bad_row_imports_nothing(http: httpx.AsyncClient, db_url: str) -> None:
    admin = _token(db_url, Role.ADMIN)
    csv_headers = {**admin, "Content-Type": "text/csv"}
    bad = CSV_GOOD + "Test Csv Three,dragon,1942-03-03,,,,,,,,\n"
    response = await http.post("/api/v1/residents/import", headers=csv_headers, content=bad)
    assert response.status_code == 422
    report = response.json()
    assert report["imported"] == 0
    assert [(e["row"], e["column"]) for e in report["errors"]] == [(4, "sex")]
    assert (await http.get("/api/v1/residents", headers=admin)).json()["total"] == 0

    good = await http.post("/api/v1/residents/import", headers=csv_headers, content=CSV_GOOD)
    assert good.status_code == 200, good.text
    assert good.json()["imported"] == 2
    assert (await http.get("/api/v1/residents", headers=admin)).json()["total"] == 2

    operator = _token(db_url, Role.OPERATOR)
    exported = await http.get("/api/v1/residents/export", headers=operator)
    assert exported.status_code == 200
    header = exported.text.splitlines()[0].split(",")
    assert "name" in header
    assert "allergies" not in header  # no health fields for operators
    assert "Test Csv One" in exported.text
    refused = await http.get(
        "/api/v1/residents/export", headers=operator, params={"include_profiles": "true"}
    )
    assert refused.status_code == 403
    full = await http.get(
        "/api/v1/residents/export", headers=admin, params={"include_profiles": "true"}
    )
    assert "penicillin" in full.text
    family = _token(db_url, Role.FAMILY)
    assert (
        await http.post(
            "/api/v1/residents/import",
            headers={**family, "Content-Type": "text/csv"},
            content=CSV_GOOD,
        )
    ).status_code == 403
