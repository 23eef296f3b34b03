"""A seeded registry for the tests: one elder with the full emergency profile, a care circle,
a signed family doctor team, a bound wristband with vitals and a position; and an open alert
with its deliveries written as the alert service writes them."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from devices import repository as registry
from devices.crypto import Keyring
from devices.model import (
    Address,
    BloodType,
    ChannelIn,
    CommunityIn,
    ContactIn,
    ContactRole,
    ContractIn,
    DoctorTeamIn,
    HospitalIn,
    ProfileIn,
    ResidentIn,
    ResponderNotes,
    Sex,
    TeamMemberIn,
    TeamRole,
)


@dataclass(frozen=True)
class Seeded:
    resident_id: uuid.UUID
    device_id: str
    profile_version: int
    child_name: str
    work_unit_name: str


def make_keyring() -> Keyring:
    return Keyring({"t1": b"k" * 32}, "t1")


def home_address() -> Address:
    """The seeded elder's home (a fresh copy each time: the model is mutable)."""
    return Address(
        province="河南省",
        city="郑州市",
        district="金水区",
        street="文化路 88 号",
        community="幸福里",
        text="3 号楼 2 单元 401",
        lat=34.7802,
        lon=113.6651,
    )


def seed_registry(url: str, keyring: Keyring, *, device_id: str = "wb-seed-001") -> Seeded:
    """One elder with the full profile, care circle, a bound wristband, vitals and a position."""
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(url) as conn:
        hospital = registry.create_hospital(
            conn,
            HospitalIn(
                name="市第一人民医院", address="人民路 1 号", green_channel_phone="0371-66660120"
            ),
        )
        community = registry.create_community(
            conn, CommunityIn(name="幸福里社区", phone="0371-66661234")
        )
        resident = registry.create_resident(
            conn,
            ResidentIn(
                name="示例老人",
                sex=Sex.FEMALE,
                birth_date=dt.date(1941, 3, 8),
                landline="0371-65551234",
                mobile="13800138000",
                address=home_address(),
                hospital_id=hospital.id,
                community_id=community.id,
            ),
            keyring=keyring,
        )
        profile = registry.put_profile(
            conn,
            resident.id,
            ProfileIn(
                conditions=["高血压", "2 型糖尿病"],
                medications=["氨氯地平 5 mg", "二甲双胍 500 mg"],
                allergies=["青霉素"],
                blood_type=BloodType.A_POS,
                past_treatments=["2021 年心脏支架手术"],
                responder_notes=ResponderNotes(door_code="门禁 4012#", mobility="需要轮椅"),
            ),
            by="test",
            keyring=keyring,
        )
        child = registry.add_contact(
            conn,
            resident.id,
            ContactIn(
                name="示例子女",
                role=ContactRole.CHILD,
                priority=1,
                phones=["13900139000"],
                channel=ChannelIn(url="anxintest://child"),
            ),
            keyring=keyring,
        )
        unit = registry.add_contact(
            conn,
            resident.id,
            ContactIn(
                name="郑州纺织厂退休办",
                role=ContactRole.WORK_UNIT,
                priority=2,
                phones=["0371-67890000"],
            ),
            keyring=keyring,
        )
        team = registry.create_team(
            conn,
            DoctorTeamIn(
                name="金水区家庭医生一队",
                institution="文化路社区卫生服务中心",
                members=[TeamMemberIn(name="示例医生", role=TeamRole.DOCTOR, phone="13700137000")],
            ),
            keyring=keyring,
        )
        registry.sign_contract(
            conn,
            resident.id,
            ContractIn(
                team_id=team.id,
                service_package="慢病管理",
                starts_on=dt.date(2025, 1, 1),
                ends_on=dt.date(2030, 12, 31),
            ),
        )
        conn.execute(
            "INSERT INTO devices (device_id, kind, resident_id, status) VALUES (%s, 'wristband', %s, 'active')",
            (device_id, resident.id),
        )
        conn.execute(
            """INSERT INTO vitals (ts, device_id, seq, received_at, heart_rate, spo2, resp_rate)
               VALUES (%s, %s, 1, %s, 118, 91, 24), (%s, %s, 2, %s, NULL, NULL, NULL)""",
            (
                now - dt.timedelta(minutes=2),
                device_id,
                now,
                now - dt.timedelta(minutes=1),
                device_id,
                now,
            ),
        )
        conn.execute(
            """INSERT INTO positions (ts, device_id, seq, received_at, lat, lon, accuracy_m, indoor)
               VALUES (%s, %s, 1, %s, 34.78031, 113.66522, 12, 'home')""",
            (now - dt.timedelta(minutes=1), device_id, now),
        )
    return Seeded(resident.id, device_id, profile.version, child.name, unit.name)


def insert_alert(
    url: str,
    seeded: Seeded,
    recipients: Sequence[tuple[str, str, str, str, str]],
    *,
    kind: str = "sos",
    severity: str = "emergency",
) -> tuple[int, list[int]]:
    """An open alert and its deliveries in one transaction, as the alert service writes them.

    ``recipients``: (recipient_kind, name, channel, address, language) per delivery; templates
    are ``emergency``.
    """
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(url) as conn:
        alert_id = conn.execute(
            """INSERT INTO alerts (resident_id, device_id, kind, severity, state, first_at, last_at,
                                   evidence, opened_at)
               VALUES (%s, %s, %s, %s, 'open', %s, %s, %s, %s) RETURNING id""",
            (
                seeded.resident_id,
                seeded.device_id,
                kind,
                severity,
                now,
                now,
                Jsonb({"button": "sos", "press_ms": 1200}),
                now,
            ),
        ).fetchone()[0]  # type: ignore[index]
        ids = []
        for i, (rkind, name, channel, address, language) in enumerate(recipients):
            ids.append(
                conn.execute(
                    """INSERT INTO deliveries (alert_id, recipient_kind, recipient_name, channel,
                                               address, language, template, idempotency_key)
                       VALUES (%s, %s, %s, %s, %s, %s, 'emergency', %s) RETURNING id""",
                    (
                        alert_id,
                        rkind,
                        name,
                        channel,
                        address,
                        language,
                        f"alert-{alert_id}-{rkind}-{i}-{uuid.uuid4().hex[:8]}",
                    ),
                ).fetchone()[0]  # type: ignore[index]
            )
    return alert_id, ids


def doctor_member_of(db_url: str, resident_id: uuid.UUID) -> uuid.UUID:
    """The doctor team member signed with the elder (for a doctor's token)."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            """SELECT m.id FROM doctor_contracts c JOIN doctor_team_members m
                   ON m.team_id = c.team_id WHERE c.resident_id = %s""",
            (resident_id,),
        ).fetchone()
    assert row is not None
    member: uuid.UUID = row[0]
    return member
