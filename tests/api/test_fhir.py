"""FHIR export through the API: every resource validates with fhir.resources, the vital signs
carry the LOINC codes and UCUM units of docs/interop.md, a round trip keeps the record, reads
are scoped and audited like profile reads, and a community's NDJSON validates line by line."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fhir.resources.R4B import get_fhir_model_class
from psycopg.types.json import Jsonb

from devices.access import Role
from tests.api.client import bearer as _token

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"


def documented_vitals() -> dict[str, tuple[str, str]]:
    """LOINC code -> (UCUM code, unit shown), from the table of docs/interop.md."""
    out: dict[str, tuple[str, str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(
            r"^\| .+? \| ([0-9-]+)(?: and [0-9-]+)? \| .+? \| `([^`]+)` \| (.+?) \|$", line
        )
        if m:
            out[m[1]] = (m[2], m[3])
    return out


async def _seed(http: httpx.AsyncClient, db_url: str, admin: dict[str, str]) -> dict[str, Any]:
    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await http.post(path, headers=admin, json=body)
        assert r.status_code == 201, (path, r.text)
        data: dict[str, Any] = r.json()
        return data

    community = await post("/api/v1/communities", {"name": "幸福里社区"})
    elder = await post(
        "/api/v1/residents",
        {
            "name": "示例老人", "sex": "female", "birth_date": "1938-03-01",
            "landline": "0371-67890000", "community_id": community["id"],
            "address": {"province": "河南省", "city": "郑州市", "district": "金水区", "community": "幸福里"},
            "flags": ["living_alone"],
        },
    )  # fmt: skip
    rid = elder["id"]
    await post(f"/api/v1/residents/{rid}/contacts", {"name": "示例子女", "role": "child", "phones": ["13900139000"]})  # fmt: skip
    await post(f"/api/v1/residents/{rid}/contacts", {"name": "单位", "role": "work_unit"})
    team = await post(
        "/api/v1/doctor-teams",
        {"name": "家庭医生一队", "institution": "社区卫生服务中心",
         "members": [{"name": "示例医生", "role": "doctor"}]},
    )  # fmt: skip
    today = dt.date.today()
    await post(
        f"/api/v1/residents/{rid}/contracts",
        {"team_id": team["id"], "service_package": "慢病管理",
         "starts_on": (today - dt.timedelta(days=30)).isoformat(),
         "ends_on": (today + dt.timedelta(days=300)).isoformat()},
    )  # fmt: skip
    await post(
        f"/api/v1/residents/{rid}/consents",
        {"given_by": "示例老人", "relation": "self", "given_at": "2026-01-05T10:00:00+08:00",
         "scopes": ["registry", "monitoring", "share_with_doctor"]},
    )  # fmt: skip
    await post("/api/v1/devices", {"device_id": "wb-fhir-1", "kind": "wristband"})
    r = await http.put(
        "/api/v1/devices/wb-fhir-1/binding", headers=admin, json={"resident_id": rid}
    )
    assert r.status_code == 200, r.text
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            """INSERT INTO vitals (ts, device_id, seq, received_at, heart_rate, spo2, resp_rate,
                                   temperature, systolic, diastolic)
               VALUES (%s, 'wb-fhir-1', 1, %s, 72, 95, 16, 36.6, 132, 84),
                      (%s, 'wb-fhir-1', 2, %s, 118, 91, NULL, NULL, NULL, NULL)""",
            (now - dt.timedelta(hours=2), now, now - dt.timedelta(minutes=5), now),
        )
        evidence = {
            "score": 6, "coverage": 0.43, "spo2_scale": 1, "window_s": 300.0,
            "subscores": {"respiration_rate": 0, "spo2": 2, "pulse": 2},
            "values": {"respiration_rate": 16.0, "spo2": 91.0, "pulse": 118.0},
            "missing": ["supplemental_o2", "systolic_bp", "consciousness", "temperature"],
        }  # fmt: skip
        conn.execute(
            """INSERT INTO findings (ts, detected_at, device_id, resident_id, kind, severity, evidence)
               VALUES (%s, %s, 'wb-fhir-1', %s, 'news2', 'high', %s)""",
            (now - dt.timedelta(minutes=5), now, rid, Jsonb(evidence)),
        )
        conn.execute(
            """INSERT INTO alerts (resident_id, device_id, kind, severity, state, first_at, last_at)
               VALUES (%s, 'wb-fhir-1', 'news2', 'high', 'open', %s, %s)""",
            (rid, now - dt.timedelta(minutes=5), now),
        )
        conn.commit()
    return {"resident": rid, "team": team, "community": community["id"]}


def _validate(resource: dict[str, Any]) -> Any:
    cls = get_fhir_model_class(resource["resourceType"])
    return cls.model_validate(resource)


async def test_an_elders_bundle_validates_and_round_trips(
    http: httpx.AsyncClient, db_url: str
) -> None:
    admin = _token(db_url, Role.ADMIN)
    seeded = await _seed(http, db_url, admin)
    rid = seeded["resident"]
    member = seeded["team"]["members"][0]["id"]
    doctor = _token(db_url, Role.DOCTOR, member_ids=[uuid.UUID(member)])
    r = await http.get(f"/api/v1/residents/{rid}/fhir", headers=doctor)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    data = r.json()

    model = _validate(data)  # the Bundle, and with it every resource inside
    resources = [e["resource"] for e in data["entry"]]
    for res in resources:
        _validate(res)
    kinds = sorted(res["resourceType"] for res in resources)
    assert kinds == sorted(
        ["Patient", "RelatedPerson", "RelatedPerson", "CareTeam", "Device", "RiskAssessment",
         "Flag", "Consent"] + ["Observation"] * (5 + 2)
    )  # fmt: skip
    ids = {f"{res['resourceType']}/{res['id']}" for res in resources}
    for entry in data["entry"]:
        assert entry["fullUrl"].endswith(f"/api/v1/fhir/{entry['resource']['resourceType']}/{entry['resource']['id']}")  # fmt: skip
    refs = re.findall(r'"reference": "([A-Za-z]+/[0-9a-f-]+)"', json.dumps(data))
    assert refs and set(refs) <= ids  # every reference resolves inside the Bundle

    table = documented_vitals()
    assert set(table) >= {"8867-4", "59408-5", "9279-1", "8310-5", "8480-6", "8462-4"}
    seen: dict[str, list[float]] = {}
    for obs in (res for res in resources if res["resourceType"] == "Observation"):
        assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
        quantities = [(obs["code"], obs.get("valueQuantity"))] + [
            (c["code"], c["valueQuantity"]) for c in obs.get("component", [])
        ]
        for code, q in quantities:
            if q is None:
                continue
            loinc = code["coding"][0]["code"]
            assert code["coding"][0]["system"] == "http://loinc.org"
            assert (q["code"], q["unit"]) == table[loinc], loinc
            assert q["system"] == "http://unitsofmeasure.org"
            seen.setdefault(loinc, []).append(q["value"])
    assert sorted(seen["8867-4"]) == [72.0, 118.0] and seen["8480-6"] == [132.0]
    assert seen["8462-4"] == [84.0] and seen["8310-5"] == [36.6] and sorted(seen["59408-5"]) == [91.0, 95.0]  # fmt: skip

    risk = next(res for res in resources if res["resourceType"] == "RiskAssessment")
    assert risk["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "high"
    assert "pulse 118.0 scores 2" in risk["prediction"][0]["rationale"]
    assert "missing: supplemental_o2" in risk["prediction"][0]["rationale"]
    patient = next(res for res in resources if res["resourceType"] == "Patient")
    assert (patient["gender"], patient["birthDate"]) == ("female", "1938-03-01")

    # Round trip: the validated models written out and read back are the same record.
    again = type(model).model_validate_json(model.model_dump_json())
    assert again == model
    back = json.loads(again.model_dump_json())
    assert [e["resource"]["id"] for e in back["entry"]] == [res["id"] for res in resources]
    assert back["entry"][0]["resource"]["name"] == [{"text": "示例老人"}]

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT role, purpose, granted FROM audit_log WHERE resident_id = %s AND purpose LIKE '%%FHIR%%'",
            (rid,),
        ).fetchall()
    assert rows == [("doctor", "GET FHIR bundle", True)]
    operator = _token(db_url, Role.OPERATOR)
    assert (await http.get(f"/api/v1/residents/{rid}/fhir", headers=operator)).status_code == 403
    other = await http.post(
        "/api/v1/residents", headers=admin,
        json={"name": "别人", "sex": "male", "birth_date": "1940-01-01"},
    )  # fmt: skip
    stranger = _token(db_url, Role.FAMILY, resident_ids=[uuid.UUID(other.json()["id"])])
    assert (await http.get(f"/api/v1/residents/{rid}/fhir", headers=stranger)).status_code == 403


async def test_a_communitys_ndjson_validates_line_by_line(
    http: httpx.AsyncClient, db_url: str
) -> None:
    admin = _token(db_url, Role.ADMIN)
    seeded = await _seed(http, db_url, admin)
    r = await http.get(f"/api/v1/communities/{seeded['community']}/fhir", headers=admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+ndjson")
    lines = r.text.splitlines()
    assert len(lines) == 15
    for line in lines:
        _validate(json.loads(line))
    operator = _token(db_url, Role.OPERATOR)
    assert (await http.get(f"/api/v1/communities/{seeded['community']}/fhir", headers=operator)).status_code == 403  # fmt: skip
