"""An elder's record as FHIR R4 resources, for a regional health information platform. Pure.

Builders take the registry's values (devices/model/) and stored rows, and return plain JSON
(``dict``): Patient, RelatedPerson (the care circle), CareTeam (the family doctor team of each
contract), Device, Observation (vital signs, the LOINC codes and UCUM units of the FHIR
vital-signs profile), RiskAssessment (NEWS2 with its parameters), Flag (alerts) and Consent,
gathered in a Bundle (``collection``) per elder. docs/interop.md has the code table and an
example. The encrypted emergency profile and the identity card number are not exported.

Resource ids are stable: the registry's uuids where there are, a name-based uuid (uuid5) of
the row's key otherwise, so an export repeated tomorrow updates rather than duplicates.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devices.model import Consent, Contact, Contract, Device, DoctorTeam, Resident

Json = dict[str, Any]

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
VITALS_PROFILE = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
ANXIN = "urn:anxin"
_IDS = uuid.UUID("3f1d9a52-6c1e-4f0e-9f57-1b7d1b0e4a11")  # namespace of the name-based ids


@dataclass(frozen=True, slots=True)
class VitalSign:
    """One parameter of the vital-signs profile: LOINC code, display, UCUM unit."""

    column: str
    loinc: str
    display: str
    unit: str
    ucum: str


#: The vitals table's columns as FHIR vital signs (FHIR R4 vital-signs profile, section 6.2).
VITAL_SIGNS: tuple[VitalSign, ...] = (
    VitalSign("heart_rate", "8867-4", "Heart rate", "beats/minute", "/min"),
    VitalSign("spo2", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%"),
    VitalSign("resp_rate", "9279-1", "Respiratory rate", "breaths/minute", "/min"),
    VitalSign("temperature", "8310-5", "Body temperature", "Cel", "Cel"),
)
BP_PANEL = VitalSign("", "85354-9", "Blood pressure panel with all children optional", "", "")
SYSTOLIC = VitalSign("systolic", "8480-6", "Systolic blood pressure", "mmHg", "mm[Hg]")
DIASTOLIC = VitalSign("diastolic", "8462-4", "Diastolic blood pressure", "mmHg", "mm[Hg]")
#: SpO2 also carries the profile's required code 2708-6 (oxygen saturation in arterial blood).
SPO2_PROFILE_CODE = ("2708-6", "Oxygen saturation in Arterial blood")

_RELATION = {
    "child": ("CHILD", "child"),
    "spouse": ("SPS", "spouse"),
    "relative": ("FAMMEMB", "family member"),
    "guardian": ("GUARD", "guardian"),
    "neighbour": ("NBOR", "neighbor"),
    "volunteer": ("FRND", "unrelated friend"),
}
_GENDER = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
_DEVICE_TYPE = {
    "wristband": "Wristband (wearable sensor)",
    "pendant": "Pendant alarm (wearable sensor)",
    "watch": "Smartwatch (wearable sensor)",
    "bed_sensor": "Under-mattress bed sensor",
    "hub": "Bedside hub (gateway)",
    "sos_button": "Emergency call button",
}


def stable_id(*key: object) -> str:
    """A FHIR id (uuid) from a row's key."""
    return str(uuid.uuid5(_IDS, "|".join(str(k) for k in key)))


def device_ref(device_id: str) -> str:
    return f"Device/{stable_id('device', device_id)}"


def _instant(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _telecom(phones: Iterable[str | None]) -> list[Json]:
    return [{"system": "phone", "value": p} for p in phones if p]


def patient(r: Resident) -> Json:
    a = r.address
    address: Json = {"use": "home", "country": "CN"}
    lines = [x for x in (a.street, a.community, a.text) if x]
    if lines:
        address["line"] = lines
    for key, value in (("city", a.city), ("district", a.district), ("state", a.province)):
        if value:
            address[key] = value
    out: Json = {
        "resourceType": "Patient",
        "id": str(r.id),
        "identifier": [{"system": f"{ANXIN}:resident", "value": str(r.id)}],
        "active": r.status.value == "active",
        "name": [{"text": r.name}],
        "gender": _GENDER[r.sex.value],
        "birthDate": r.birth_date.isoformat(),
        "address": [address],
    }
    telecom = _telecom([r.landline, r.mobile])
    if telecom:
        out["telecom"] = telecom
    if r.status.value == "deceased":
        out["deceasedBoolean"] = True
    return out


def related_person(c: Contact) -> Json:
    code = _RELATION.get(c.role.value)
    relationship: Json = {"text": c.role.value.replace("_", " ")}
    if code is not None:
        relationship["coding"] = [{"system": ROLE_CODE, "code": code[0], "display": code[1]}]
    out: Json = {
        "resourceType": "RelatedPerson",
        "id": str(c.id),
        "active": c.status.value == "active",
        "patient": {"reference": f"Patient/{c.resident_id}"},
        "relationship": [relationship],
        "name": [{"text": c.name}],
    }
    telecom = _telecom(c.phones)
    if telecom:
        out["telecom"] = telecom
    return out


def care_team(contract: Contract, team: DoctorTeam, today: dt.date) -> Json:
    in_force = contract.status == "active" and contract.starts_on <= today <= contract.ends_on
    status = "active" if in_force else ("proposed" if today < contract.starts_on else "inactive")
    out: Json = {
        "resourceType": "CareTeam",
        "id": str(contract.id),
        "status": status,
        "category": [{"text": "family doctor team"}],
        "name": team.name,
        "subject": {"reference": f"Patient/{contract.resident_id}"},
        "period": {"start": contract.starts_on.isoformat(), "end": contract.ends_on.isoformat()},
        "note": [{"text": f"service package: {contract.service_package}"}],
    }
    members = [m for m in team.members if m.status.value == "active"]
    if members:
        out["participant"] = [
            {"role": [{"text": m.role.value}], "member": {"display": m.name}} for m in members
        ]
    if team.institution:
        out["managingOrganization"] = [{"display": team.institution}]
    return out


def device(d: Device) -> Json:
    return {
        "resourceType": "Device",
        "id": stable_id("device", d.device_id),
        "identifier": [{"system": f"{ANXIN}:device", "value": d.device_id}],
        "status": "active" if d.status.value == "active" else "inactive",
        "type": {"text": _DEVICE_TYPE.get(d.kind.value, d.kind.value)},
        **({"patient": {"reference": f"Patient/{d.resident_id}"}} if d.resident_id else {}),
    }


def _quantity(value: float, sign: VitalSign) -> Json:
    return {"value": round(float(value), 2), "unit": sign.unit, "system": UCUM, "code": sign.ucum}


def _vital_code(sign: VitalSign) -> Json:
    coding = [{"system": LOINC, "code": sign.loinc, "display": sign.display}]
    if sign.column == "spo2":
        coding.append({"system": LOINC, "code": SPO2_PROFILE_CODE[0], "display": SPO2_PROFILE_CODE[1]})  # fmt: skip
    return {"coding": coding, "text": sign.display}


def vital_observations(
    resident_id: uuid.UUID, device_id: str, at: dt.datetime, seq: int, row: Mapping[str, Any]
) -> list[Json]:
    """The Observations of one vitals row (one per parameter present; BP as a panel)."""
    base: Json = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {"coding": [{"system": OBS_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}
        ],
        "subject": {"reference": f"Patient/{resident_id}"},
        "effectiveDateTime": _instant(at),
        "device": {"reference": device_ref(device_id)},
    }
    out: list[Json] = []
    for sign in VITAL_SIGNS:
        value = row.get(sign.column)
        if value is None:
            continue
        out.append(
            {
                **base,
                "id": stable_id("obs", device_id, at.isoformat(), seq, sign.loinc),
                "meta": {"profile": [VITALS_PROFILE]},
                "code": _vital_code(sign),
                "valueQuantity": _quantity(value, sign),
            }
        )
    sbp, dbp = row.get("systolic"), row.get("diastolic")
    if sbp is not None or dbp is not None:
        components = [
            {"code": _vital_code(sign), "valueQuantity": _quantity(v, sign)}
            for sign, v in ((SYSTOLIC, sbp), (DIASTOLIC, dbp))
            if v is not None
        ]
        out.append(
            {
                **base,
                "id": stable_id("obs", device_id, at.isoformat(), seq, BP_PANEL.loinc),
                "meta": {"profile": [VITALS_PROFILE]},
                "code": _vital_code(BP_PANEL),
                "component": components,
            }
        )
    return out


_NEWS2_RISK = {"low": "low", "medium": "moderate", "high": "high", "emergency": "high"}


def news2_risk(
    finding_id: int, resident_id: uuid.UUID, *, device_id: str, at: dt.datetime,
    severity: str, evidence: Mapping[str, Any],
) -> Json:  # fmt: skip
    """A NEWS2 finding as a RiskAssessment: the score, the sub-score and value of each
    parameter present, the missing ones, and the RCP's clinical risk."""
    risk = _NEWS2_RISK.get(severity, "low")
    subscores = evidence.get("subscores") or {}
    values = evidence.get("values") or {}
    missing = evidence.get("missing") or []
    parts = [f"{p} {values.get(p)} scores {s}" for p, s in subscores.items()]
    rationale = (
        f"NEWS2 {evidence.get('score')} (coverage {evidence.get('coverage')}, SpO2 scale "
        f"{evidence.get('spo2_scale')}); " + "; ".join(parts)
    )
    if missing:
        rationale += f"; missing: {', '.join(missing)} (a partial score is a lower bound)"
    return {
        "resourceType": "RiskAssessment",
        "id": stable_id("news2", finding_id),
        "status": "final",
        "method": {"text": "NEWS2 (Royal College of Physicians, 2017)"},
        "code": {"text": "National Early Warning Score 2"},
        "subject": {"reference": f"Patient/{resident_id}"},
        "occurrenceDateTime": _instant(at),
        "performer": {"reference": device_ref(device_id)},  # the device whose readings scored
        "prediction": [
            {
                "outcome": {"text": "clinical deterioration"},
                "qualitativeRisk": {
                    "coding": [{"system": RISK_PROBABILITY, "code": risk}],
                    "text": f"NEWS2 {evidence.get('score')}",
                },
                "rationale": rationale,
            }
        ],
    }


_LIVE = {"pending", "open", "acknowledged", "dispatched"}


def alert_flag(
    alert_id: int, resident_id: uuid.UUID, *, kind: str, severity: str, state: str,
    first_at: dt.datetime, closed_at: dt.datetime | None,
) -> Json:  # fmt: skip
    period: Json = {"start": _instant(first_at)}
    if closed_at is not None:
        period["end"] = _instant(closed_at)
    return {
        "resourceType": "Flag",
        "id": stable_id("alert", alert_id),
        "identifier": [{"system": f"{ANXIN}:alert", "value": str(alert_id)}],
        "status": "active" if state in _LIVE else "inactive",
        "category": [
            {"coding": [{"system": FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}]}
        ],
        "code": {"text": f"{kind.replace('_', ' ')} alert ({severity}, {state.replace('_', ' ')})"},
        "subject": {"reference": f"Patient/{resident_id}"},
        "period": period,
    }


def consent(c: Consent) -> Json:
    return {
        "resourceType": "Consent",
        "id": stable_id("consent", c.id),
        "status": "inactive" if c.withdrawn_at else "active",
        "scope": {
            "coding": [
                {"system": CONSENT_SCOPE, "code": "patient-privacy", "display": "Privacy Consent"}
            ]
        },
        "category": [
            {"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}
        ],
        "patient": {"reference": f"Patient/{c.resident_id}"},
        "dateTime": _instant(c.given_at),
        "performer": [{"display": f"{c.given_by} ({c.relation.value})"}],
        "policyRule": {
            "text": "PIPL: separate consent to the processing of sensitive personal information"
        },
        "provision": {
            "type": "deny" if c.withdrawn_at else "permit",
            **({"period": {"end": _instant(c.withdrawn_at)}} if c.withdrawn_at else {}),
            "purpose": [
                {"system": f"{ANXIN}:consent-scope", "code": s.value} for s in sorted(c.scopes)
            ],
            "action": [{"coding": [{"system": CONSENT_ACTION, "code": "access"}]}],
        },
    }


def bundle(resident_id: uuid.UUID, resources: Sequence[Json], at: dt.datetime, base: str) -> Json:
    """A ``collection`` Bundle of one elder's resources. Each entry's ``fullUrl`` is
    ``{base}/{type}/{id}``, so the relative references (``Patient/...``) resolve within it."""
    return {
        "resourceType": "Bundle",
        "id": stable_id("bundle", resident_id, at.isoformat()),
        "type": "collection",
        "timestamp": _instant(at),
        "entry": [
            {"fullUrl": f"{base.rstrip('/')}/{r['resourceType']}/{r['id']}", "resource": r}
            for r in resources
        ],
    }
