"""Behaviour settings over HTTP: defaults from the flags, a change stored with who made it and
audited, the family reads their relative's, a doctor may not change them, bad input is 422."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest

from devices.access import Role
from devices.behaviour_settings import watched
from tests.api.client import bearer as _token

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ELDER = {"name": "Test Elder Alone", "sex": "female", "birth_date": "1936-04-02"}


async def test_behaviour_settings_read_changed_audited_and_refused(
    http: httpx.AsyncClient, db_url: str
) -> None:
    admin = _token(db_url, Role.ADMIN)
    created = await http.post(
        "/api/v1/residents", headers=admin, json={**ELDER, "flags": ["living_alone"]}
    )
    rid = created.json()["id"]
    path = f"/api/v1/residents/{rid}/behaviour"

    defaults = (await http.get(path, headers=admin)).json()
    assert defaults["stored"] is False
    assert defaults["lives_alone"] is None and defaults["lives_alone_effective"] is True
    assert (defaults["day_start"], defaults["night_start"], defaults["max_inactive_min"]) == (
        "07:00:00",
        "22:00:00",
        180,
    )

    operator = _token(db_url, Role.OPERATOR)
    body = {"lives_alone": False, "night_start": "21:30", "out_of_bed_min": 20}
    put = await http.put(path, headers=operator, json=body)
    assert put.status_code == 200, put.text
    stored = put.json()
    assert stored["stored"] is True and stored["lives_alone_effective"] is False
    assert (stored["night_start"], stored["out_of_bed_min"]) == ("21:30:00", 20)
    assert stored["updated_by"].startswith("operator: Test operator")
    with psycopg.connect(db_url) as conn:
        mine = next(w for w in watched(conn) if w.resident_id == rid)
    assert (mine.lives_alone, mine.night_start_min, mine.out_of_bed_s) == (
        False,
        21 * 60 + 30,
        1200,
    )

    family = _token(db_url, Role.FAMILY, resident_ids=[uuid.UUID(rid)])
    assert (await http.get(path, headers=family)).json()["out_of_bed_min"] == 20
    doctor = _token(db_url, Role.DOCTOR)
    assert (await http.put(path, headers=doctor, json=body)).status_code == 403
    assert (await http.put(path, headers=family, json=body)).status_code == 403

    for bad in ({"night_start": "25:00"}, {"timezone": "Mars/Olympus"},
                {"max_inactive_min": 5}, {"sleepy": True}):  # fmt: skip
        response = await http.put(path, headers=admin, json=bad)
        assert response.status_code == 422, (bad, response.text)
    other = f"/api/v1/residents/{uuid.uuid4()}/behaviour"
    assert (await http.put(other, headers=admin, json=body)).status_code == 404

    audit = (await http.get("/api/v1/audit", headers=admin, params={"resident_id": rid})).json()
    rows = {(a["role"], a["purpose"], a["granted"]) for a in audit["items"]}
    assert ("operator", "PUT behaviour settings", True) in rows
    assert ("doctor", "PUT behaviour settings", False) in rows
    assert ("family", "PUT behaviour settings", False) in rows
