"""The CAP 1.2 rendering validates against the OASIS schema.

tests/alerts/data/CAP-v1.2.xsd is the OASIS CAP 1.2 schema ("Copyright OASIS Open 2010 All
Rights Reserved", the notice kept), as published at
docs.oasis-open.org/emergency/cap/v1.2/CAP-v1.2.xsd; the copy is the one that Google's public
cap-library repository ships as schema/cap12.xsd (same elements, types and patterns; that copy's
indentation). Validation uses the xmlschema package (pure Python).
"""

from __future__ import annotations

import datetime as dt
import uuid
import xml.etree.ElementTree as ET  # our own output, not untrusted input
from pathlib import Path

import pytest
import xmlschema

from alerts.cap import CAP_NS, cap_time, render_cap
from alerts.dispatch120 import (
    AlertSummary,
    CareCircle,
    EmergencyRecord,
    Position,
    VitalSigns,
)
from devices.model import (
    BloodType,
    Contact,
    ContactRole,
    EmergencyProfile,
    ProfileChange,
    RecordStatus,
    Resident,
    ResidentStatus,
    ResponderNotes,
    Sex,
)
from tests.seed import home_address

XSD = Path(__file__).parent / "data" / "CAP-v1.2.xsd"
NS = {"cap": CAP_NS}
T0 = dt.datetime(2026, 3, 8, 6, 30, 15, 123456, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(XSD)


def _record(
    *,
    kind: str = "sos",
    severity: str = "emergency",
    references: tuple[str, ...] = (),
    with_registry: bool = True,
    position: bool = True,
) -> EmergencyRecord:
    rid = uuid.uuid4()
    resident = Resident(
        id=rid,
        name="示例老人",
        sex=Sex.FEMALE,
        birth_date=dt.date(1941, 3, 8),
        id_number=None,
        health_card=None,
        landline="037165551234",
        mobile="13800138000",
        address=home_address(),
        flags=frozenset(),
        status=ResidentStatus.ACTIVE,
        community_id=None,
        hospital_id=None,
        created_at=T0,
        updated_at=T0,
    )
    profile = EmergencyProfile(
        resident_id=rid,
        version=3,
        conditions=("高血压",),
        medications=("氨氯地平 5 mg",),
        allergies=("青霉素",),
        blood_type=BloodType.A_POS,
        past_treatments=("心脏支架",),
        responder_notes=ResponderNotes(door_code="4012#"),
        extension={},
        last_verified_at=None,
        last_verified_by=None,
        changed_by="t",
        change_kind=ProfileChange.CREATE,
        changed_at=T0,
    )
    contact = Contact(
        id=uuid.uuid4(),
        resident_id=rid,
        name="示例子女",
        role=ContactRole.CHILD,
        priority=1,
        phones=("13900139000",),
        channel=None,
        quiet_hours=None,
        status=RecordStatus.ACTIVE,
        created_at=T0,
        updated_at=T0,
    )
    return EmergencyRecord(
        alert=AlertSummary(7, kind, severity, "open", 1, T0, T0, "wb-1", rid),
        issued_at=T0,
        resident=resident if with_registry else None,
        profile=profile if with_registry else None,
        position=Position(34.78031, 113.66522, 12.0, "home", T0, "wb-1", "device")
        if position
        else None,
        vitals=VitalSigns({"heart_rate": 118.0, "spo2": 91.0}, {"heart_rate": T0, "spo2": T0}),
        evidence={"button": "sos"},
        care_circle=CareCircle(contacts=(contact,) if with_registry else ()),
        consent_share_with_120=True,
        references=references,
    )


@pytest.mark.parametrize(
    ("kind", "severity", "references", "with_registry", "position"),
    [
        ("sos", "emergency", (), True, True),
        ("fall", "high", ("alert-7-dispatch120-0",), True, True),
        ("news2", "emergency", (), False, True),
        ("sos", "emergency", (), False, False),
    ],
)
def test_cap_validates_against_the_oasis_schema(  # noqa: PLR0917 - parametrized
    schema: xmlschema.XMLSchema,
    kind: str,
    severity: str,
    references: tuple[str, ...],
    with_registry: bool,
    position: bool,
) -> None:
    document = render_cap(
        _record(
            kind=kind,
            severity=severity,
            references=references,
            with_registry=with_registry,
            position=position,
        ),
        identifier="alert-7-dispatch120-0",
        sender="anxin@zz.example",
        ack_url="https://a.example/ack/x",
    )
    schema.validate(document.decode())


def test_cap_fields_say_what_the_dispatcher_needs(schema: xmlschema.XMLSchema) -> None:
    root = ET.fromstring(render_cap(_record(), identifier="k1", sender="anxin@zz.example"))  # noqa: S314
    assert root.findtext("cap:status", namespaces=NS) == "Actual"
    assert root.findtext("cap:msgType", namespaces=NS) == "Alert"
    assert root.findtext("cap:scope", namespaces=NS) == "Restricted"
    assert root.findtext("cap:sent", namespaces=NS) == "2026-03-08T14:30:15+08:00"
    infos = root.findall("cap:info", NS)
    assert [i.findtext("cap:language", namespaces=NS) for i in infos] == ["zh-CN", "en-US"]
    zh = infos[0]
    assert [c.text for c in zh.findall("cap:category", NS)] == ["Health", "Rescue"]
    assert zh.findtext("cap:urgency", namespaces=NS) == "Immediate"
    assert zh.findtext("cap:severity", namespaces=NS) == "Extreme"
    assert zh.findtext("cap:certainty", namespaces=NS) == "Observed"
    description = zh.findtext("cap:description", namespaces=NS) or ""
    assert "青霉素" in description and "高血压" in description and "A+" in description
    area = zh.find("cap:area", NS)
    assert area is not None
    assert (
        area.findtext("cap:areaDesc", namespaces=NS)
        == "河南省郑州市金水区文化路 88 号幸福里3 号楼 2 单元 401"
    )
    assert area.findtext("cap:circle", namespaces=NS) == "34.780310,113.665220 0.012"


def test_an_update_references_the_earlier_push(schema: xmlschema.XMLSchema) -> None:
    document = render_cap(
        _record(severity="high", references=("k0",)), identifier="k1", sender="s@x"
    )
    root = ET.fromstring(document)  # noqa: S314 - our own output
    assert root.findtext("cap:msgType", namespaces=NS) == "Update"
    assert root.findtext("cap:references", namespaces=NS) == "s@x,k0,2026-03-08T14:30:15+08:00"
    assert root.findtext("cap:info/cap:severity", namespaces=NS) == "Severe"


def test_the_schema_rejects_what_cap_forbids(schema: xmlschema.XMLSchema) -> None:
    """The check can fail: a 'Z' time and an unknown category are refused by the XSD."""
    good = render_cap(_record(), identifier="k1", sender="s@x").decode()
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate(good.replace("2026-03-08T14:30:15+08:00", "2026-03-08T06:30:15Z", 1))
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate(
            good.replace("<category>Rescue</category>", "<category>Ambulance</category>", 1)
        )


def test_utc_is_written_minus_zero() -> None:
    assert cap_time(T0, "UTC") == "2026-03-08T06:30:15-00:00"
