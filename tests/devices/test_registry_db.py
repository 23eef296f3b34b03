"""The registry against the real PostgreSQL: every point of issue 3's storage side, refusals included."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from devices import csv_io
from devices import repository as repo
from devices.crypto import Keyring
from devices.model import (
    Address,
    CommunityIn,
    ConflictError,
    ConsentIn,
    ContactIn,
    ContractIn,
    DeviceIn,
    DeviceState,
    DoctorTeamIn,
    ExtensionError,
    ExtensionFieldIn,
    HospitalIn,
    MatchVia,
    NotFoundError,
    ProfileIn,
    ResidentIn,
    ResidentPatch,
    ResidentSearch,
    ResidentStatus,
    ResponderNotes,
    SpecialFlag,
)
from devices.phones import PhoneError
from devices.registry import register_device

pytestmark = pytest.mark.integration

KEYS = Keyring({"k1": b"\x11" * 32}, "k1")
NOW = dt.datetime(2025, 6, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def _elder(name: str = "Test Elder Yankee", **kw: Any) -> ResidentIn:
    data: dict[str, Any] = {
        "name": name,
        "sex": "female",
        "birth_date": dt.date(1938, 5, 4),
        "landline": "0531-86123456",
        "mobile": "13800138000",
        "id_number": "37010219380504002X",
        "address": Address(
            province="Shandong",
            city="Jinan",
            district="Lixia",
            street="Example Road 1",
            community="Sample Garden",
            text="Building 3, unit 2, room 101",
        ),
        "flags": {"empty_nest", "living_alone"},
    }
    data.update(kw)
    return ResidentIn.model_validate(data)


PROFILE = ProfileIn(
    conditions=["hypertension", "type 2 diabetes"],
    medications=["metformin 500 mg bid"],
    allergies=["penicillin"],
    blood_type="A+",
    past_treatments=["PCI 2019, City Hospital (fictitious)"],
    responder_notes=ResponderNotes(
        door_code="4711#",
        mobility="walks with a frame",
        language="Jinan dialect",
        hearing="hard of hearing, left ear",
    ),
)


def test_resident_create_read_update_search_and_status(conn: psycopg.Connection[Any]) -> None:
    community = repo.create_community(conn, CommunityIn(name="Sample Street Community"))
    a = repo.create_resident(conn, _elder(community_id=community.id), keyring=KEYS)
    repo.create_resident(
        conn,
        _elder(
            "Test Elder Kilo",
            landline=None,
            mobile="139 0013 9000",
            flags={"dementia"},
            address=Address(),
            id_number=None,
        ),
        keyring=KEYS,
    )
    assert repo.get_resident(conn, a.id, keyring=KEYS) == a
    assert a.id_number == "37010219380504002X"
    assert a.flags == {"empty_nest", "living_alone"}

    b = repo.update_resident(
        conn, a.id, ResidentPatch(mobile="+86 137 0013 7000", flags={"very_old"}), keyring=KEYS
    )
    assert (b.mobile, set(b.flags), b.landline) == (
        "+86 137 0013 7000",
        {SpecialFlag.VERY_OLD},
        "0531-86123456",
    )

    def names(**kw: Any) -> list[str]:
        return [r.name for r in repo.list_residents(conn, ResidentSearch(**kw), keyring=KEYS).items]

    assert names(name="elder") == ["Test Elder Kilo", "Test Elder Yankee"]
    assert names(phone="13700137000") == ["Test Elder Yankee"]
    assert names(phone="(0531) 8612-3456") == ["Test Elder Yankee"]
    assert names(flags={"dementia"}) == ["Test Elder Kilo"]
    assert names(community_id=community.id) == ["Test Elder Yankee"]
    assert names(community_name="sample gar") == ["Test Elder Yankee"]
    page = repo.list_residents(conn, keyring=KEYS, limit=1, offset=1)
    assert (page.total, [r.name for r in page.items]) == (2, ["Test Elder Yankee"])

    moved = repo.set_resident_status(conn, a.id, ResidentStatus.MOVED, keyring=KEYS)
    assert moved.status is ResidentStatus.MOVED
    repo.retire_resident(conn, a.id, keyring=KEYS)
    with pytest.raises(ConflictError, match="'retired' to 'active'"):
        repo.set_resident_status(conn, a.id, ResidentStatus.ACTIVE, keyring=KEYS)
    with pytest.raises(ConflictError, match="retired"):
        repo.update_resident(conn, a.id, ResidentPatch(name="Other"), keyring=KEYS)
    with pytest.raises(NotFoundError):
        repo.get_resident(conn, uuid.uuid4(), keyring=KEYS)
    with pytest.raises(NotFoundError, match="Community"):
        repo.create_resident(conn, _elder(community_id=uuid.uuid4()), keyring=KEYS)


def test_consent_is_recorded_and_withdrawn(conn: psycopg.Connection[Any]) -> None:
    r = repo.create_resident(conn, _elder(), keyring=KEYS)
    c = repo.record_consent(
        conn,
        r.id,
        ConsentIn(
            given_by="Test Child Yankee",
            relation="child",
            given_at=NOW,
            scopes={"emergency_profile", "share_with_120"},
        ),
    )
    assert repo.consented_scopes(conn, r.id) == {"emergency_profile", "share_with_120"}
    repo.withdraw_consent(conn, c.id, at=NOW)
    assert repo.consented_scopes(conn, r.id) == frozenset()
    assert len(repo.list_consents(conn, r.id)) == 1
    with pytest.raises(ValidationError):
        ConsentIn(given_by="x", relation="child", given_at=NOW, scopes=set())


def test_profile_versions_history_extension_and_verification_report(
    conn: psycopg.Connection[Any],
) -> None:
    r = repo.create_resident(conn, _elder(), keyring=KEYS)
    other = repo.create_resident(conn, _elder("Test Elder Whiskey"), keyring=KEYS)
    with pytest.raises(NotFoundError):
        repo.get_profile(conn, r.id, keyring=KEYS)
    v1 = repo.put_profile(
        conn, r.id, PROFILE, by="operator-1", keyring=KEYS, verified_at=NOW - dt.timedelta(days=400)
    )
    assert (v1.version, v1.conditions, v1.last_verified_by) == (
        1,
        ("hypertension", "type 2 diabetes"),
        "operator-1",
    )

    repo.register_extension_field(
        conn, ExtensionFieldIn(name="dnr_order", type="boolean", description="DNR")
    )
    with pytest.raises(ConflictError):
        repo.register_extension_field(
            conn, ExtensionFieldIn(name="dnr_order", type="text", description="again")
        )
    with pytest.raises(ExtensionError, match="shoe_size"):
        repo.put_profile(
            conn,
            r.id,
            PROFILE.model_copy(update={"extension": {"shoe_size": 40}}),
            by="op",
            keyring=KEYS,
        )
    v2 = repo.put_profile(
        conn,
        r.id,
        PROFILE.model_copy(
            update={"allergies": ["penicillin", "latex"], "extension": {"dnr_order": False}}
        ),
        by="doctor-1",
        keyring=KEYS,
    )
    assert (v2.version, v2.allergies, v2.extension, v2.changed_by) == (
        2,
        ("penicillin", "latex"),
        {"dnr_order": False},
        "doctor-1",
    )
    assert v2.last_verified_at == v1.last_verified_at  # carried over, not re-verified
    assert repo.get_profile(conn, r.id, keyring=KEYS) == v2
    assert repo.get_profile(conn, r.id, keyring=KEYS, version=1).allergies == ("penicillin",)
    assert [p.version for p in repo.profile_history(conn, r.id, keyring=KEYS)] == [1, 2]

    report = repo.unverified_profiles(conn, months=12, now=NOW)
    assert [(u.name, u.version) for u in report] == [
        ("Test Elder Whiskey", None),
        ("Test Elder Yankee", 2),
    ]
    v3 = repo.verify_profile(conn, r.id, by="community-worker-1", at=NOW, keyring=KEYS)
    assert (v3.version, v3.change_kind, v3.allergies) == (3, "verify", ("penicillin", "latex"))
    assert [u.resident_id for u in repo.unverified_profiles(conn, months=12, now=NOW)] == [other.id]


def test_health_fields_are_not_stored_in_plaintext(conn: psycopg.Connection[Any]) -> None:
    r = repo.create_resident(conn, _elder(), keyring=KEYS)
    repo.put_profile(conn, r.id, PROFILE, by="op", keyring=KEYS)
    repo.add_contact(
        conn,
        r.id,
        ContactIn(
            name="Test Child",
            role="child",
            phones=["13900139000"],
            channel={"url": "dingtalk://secret-token-abc/"},
        ),
        keyring=KEYS,
    )
    dump = conn.execute(
        "SELECT (SELECT string_agg(encode(body_enc, 'escape'), '') FROM emergency_profiles) || "
        "(SELECT string_agg(encode(id_number_enc, 'escape'), '') FROM residents) || "
        "(SELECT string_agg(encode(channel_url_enc, 'escape'), '') FROM contacts)"
    ).fetchone()
    assert dump is not None
    for secret in ("hypertension", "penicillin", "4711#", "37010219380504002X", "secret-token-abc"):
        assert secret not in dump[0]
    assert repo.get_profile(conn, r.id, keyring=KEYS).responder_notes.door_code == "4711#"


def test_rotation_moves_every_value_to_the_new_key(conn: psycopg.Connection[Any]) -> None:
    r = repo.create_resident(conn, _elder(), keyring=KEYS)
    repo.put_profile(conn, r.id, PROFILE, by="op", keyring=KEYS)
    repo.verify_profile(conn, r.id, by="op", at=NOW, keyring=KEYS)
    repo.add_contact(
        conn,
        r.id,
        ContactIn(name="Test Child", role="child", channel={"url": "json://localhost/"}),
        keyring=KEYS,
    )
    both = Keyring({"k1": b"\x11" * 32, "k2": b"\x22" * 32}, "k2")
    done = repo.rotate_keys(conn, keyring=both, batch_size=1)
    assert done == {
        "residents.id_number_enc": 1,
        "residents.health_card_enc": 0,
        "contacts.channel_url_enc": 1,
        "doctor_team_members.channel_url_enc": 0,
        "emergency_profiles.body_enc": 2,
    }
    assert repo.rotate_keys(conn, keyring=both)["emergency_profiles.body_enc"] == 0  # idempotent
    only_new = Keyring({"k2": b"\x22" * 32}, "k2")
    assert repo.get_resident(conn, r.id, keyring=only_new).id_number == "37010219380504002X"
    assert repo.get_profile(conn, r.id, keyring=only_new, version=1).conditions == tuple(
        PROFILE.conditions
    )
    assert repo.list_contacts(conn, r.id, keyring=only_new)[0].channel.url == "json://localhost/"  # type: ignore[union-attr]


def test_care_circle_team_contract_hospital(conn: psycopg.Connection[Any]) -> None:
    hospital = repo.create_hospital(
        conn, HospitalIn(name="Example People's Hospital", green_channel_phone="0531-86000120")
    )
    r = repo.create_resident(conn, _elder(hospital_id=hospital.id), keyring=KEYS)
    c2 = repo.add_contact(
        conn,
        r.id,
        ContactIn(
            name="Test Work Unit",
            role="work_unit",
            priority=2,
            phones=["0531-86999999"],
            channel={"kind": "sms", "address": "13600136000"},
        ),
        keyring=KEYS,
    )
    c1 = repo.add_contact(
        conn,
        r.id,
        ContactIn(
            name="Test Daughter",
            role="child",
            priority=1,
            phones=["13900139000"],
            quiet_hours={"start": "22:00", "end": "07:00"},
        ),
        keyring=KEYS,
    )
    assert [c.id for c in repo.list_contacts(conn, r.id, keyring=KEYS)] == [c1.id, c2.id]
    assert c1.quiet_hours is not None and c1.quiet_hours.timezone == "Asia/Shanghai"
    repo.retire_contact(conn, c2.id, keyring=KEYS)
    assert [c.id for c in repo.list_contacts(conn, r.id, keyring=KEYS)] == [c1.id]

    team = repo.create_team(
        conn,
        DoctorTeamIn(
            name="Test Family Doctor Team 1",
            institution="Example Health Centre",
            members=[
                {
                    "name": "Test Doctor",
                    "role": "doctor",
                    "phone": "13500135000",
                    "channel": {"url": "json://localhost/doc"},
                }
            ],
        ),
        keyring=KEYS,
    )
    assert (
        team.members[0].channel is not None
        and team.members[0].channel.url == "json://localhost/doc"
    )
    contract = repo.sign_contract(
        conn,
        r.id,
        ContractIn(
            team_id=team.id,
            service_package="chronic disease",
            starts_on=dt.date.today() - dt.timedelta(days=150),
            ends_on=dt.date.today() + dt.timedelta(days=200),
        ),
    )
    # The team's list holds the residents whose contract is in force today.
    assert repo.active_contract(conn, r.id, on=dt.date.today()) == contract
    assert [
        x.id for x in repo.list_residents(conn, ResidentSearch(team_id=team.id), keyring=KEYS).items
    ] == [r.id]
    with pytest.raises(ConflictError, match="active contract"):
        repo.retire_team(conn, team.id, keyring=KEYS)
    with pytest.raises(ValidationError, match="before starts_on"):
        ContractIn(
            team_id=team.id,
            service_package="x",
            starts_on=dt.date(2025, 2, 1),
            ends_on=dt.date(2025, 1, 1),
        )


def test_device_binding_and_lifecycle(conn: psycopg.Connection[Any]) -> None:
    r = repo.create_resident(conn, _elder(), keyring=KEYS)
    other = repo.create_resident(conn, _elder("Test Elder Whiskey"), keyring=KEYS)
    hub = repo.create_device(
        conn, DeviceIn(device_id="hub-001", kind="hub", resident_id=r.id), by="op"
    )
    band = repo.create_device(
        conn,
        DeviceIn(device_id="band-001", kind="wristband", resident_id=r.id, gateway_id="hub-001"),
        by="op",
    )
    assert (hub.status, band.gateway_id, band.resident_id) == (
        DeviceState.PROVISIONED,
        "hub-001",
        r.id,
    )
    with pytest.raises(ConflictError, match="already registered"):
        repo.create_device(conn, DeviceIn(device_id="hub-001", kind="hub"), by="op")
    with pytest.raises(ConflictError, match="not a hub"):
        repo.create_device(
            conn, DeviceIn(device_id="band-002", kind="wristband", gateway_id="band-001"), by="op"
        )
    with pytest.raises(ConflictError, match="serves resident"):
        repo.bind_device(conn, "band-001", resident_id=other.id, gateway_id="hub-001", by="op")
    with pytest.raises(ConflictError, match="still serves band-001"):
        repo.retire_device(conn, "hub-001")

    assert repo.activate_device(conn, "band-001").activated_at is not None
    with pytest.raises(ConflictError, match="'active' to 'provisioned'"):
        repo.set_device_state(conn, "band-001", DeviceState.PROVISIONED)
    repo.bind_device(conn, "band-001", resident_id=other.id, gateway_id=None, by="op")
    assert [b.resident_id for b in repo.binding_history(conn, "band-001")] == [r.id, other.id]
    assert repo.retire_device(conn, "hub-001").status is DeviceState.RETIRED
    with pytest.raises(ConflictError, match="'retired' to 'active'"):
        repo.activate_device(conn, "hub-001")
    with pytest.raises(ConflictError, match="retired"):
        repo.bind_device(conn, "hub-001", resident_id=r.id, gateway_id=None, by="op")
    assert [d.device_id for d in repo.list_devices(conn, resident_id=other.id).items] == [
        "band-001"
    ]

    # devices.registry keeps working beside the repository, as ingest relies on it.
    legacy = register_device(conn, "legacy-001", "pendant", resident_id=str(r.id))
    assert legacy.secret and repo.get_device(conn, "legacy-001").has_secret


def test_caller_lookup_by_resident_and_contact_numbers(conn: psycopg.Connection[Any]) -> None:
    r = repo.create_resident(conn, _elder(), keyring=KEYS)
    neighbour_of = repo.create_resident(
        conn, _elder("Test Elder Whiskey", landline=None, mobile="13700137000"), keyring=KEYS
    )
    repo.add_contact(
        conn,
        neighbour_of.id,
        ContactIn(name="Test Neighbour", role="neighbour", phones=["0531 8612 3456"]),
        keyring=KEYS,
    )
    found = repo.lookup_caller(conn, "+86 531 8612-3456", keyring=KEYS)
    assert found.national == "053186123456"
    assert [(m.resident.id, m.via) for m in found.matches] == [
        (r.id, MatchVia.RESIDENT_LANDLINE),
        (neighbour_of.id, MatchVia.CONTACT),
    ]
    assert (
        found.matches[1].contact is not None and found.matches[1].contact.name == "Test Neighbour"
    )
    assert found.matches[0].open_alerts == ()
    assert [
        m.via for m in repo.lookup_caller(conn, "0086-138-0013-8000", keyring=KEYS).matches
    ] == [MatchVia.RESIDENT_MOBILE]
    assert repo.lookup_caller(conn, "13300133000", keyring=KEYS).matches == ()
    with pytest.raises(PhoneError):
        repo.lookup_caller(conn, "120", keyring=KEYS)
    repo.retire_resident(conn, r.id, keyring=KEYS)
    assert [m.via for m in repo.lookup_caller(conn, "053186123456", keyring=KEYS).matches] == [
        MatchVia.CONTACT
    ]


CSV_HEADER = (
    "name,sex,birth_date,mobile,landline,community,flags,blood_type,conditions,allergies,door_code,"
    "contact1_name,contact1_role,contact1_phones,contact1_channel\n"
)


def test_csv_import_all_or_nothing_and_export(conn: psycopg.Connection[Any]) -> None:
    good = (
        "Test Elder A,female,1940-01-02,13800138000,,Sample Garden,empty_nest;very_old,B+,asthma;COPD,aspirin,"
        "1234,Test Son A,child,13900139000,json://localhost/a\n"
        "Test Elder B,male,1942-03-04,,0531-86123456,Sample Garden,,,,,,,,,\n"
    )
    bad = "Test Elder C,male,1939-13-40,123,,,,Z+,,,,Test Son C,child,,\n"
    report = csv_io.import_residents(conn, CSV_HEADER + good + bad, keyring=KEYS, by="operator-1")
    assert not report.ok and report.imported == 0
    assert {(e.row, e.column) for e in report.errors} == {
        (4, "birth_date"),
        (4, "mobile"),
        (4, "blood_type"),
    }
    assert repo.list_residents(conn, keyring=KEYS).total == 0  # nothing half-imported

    report = csv_io.import_residents(conn, CSV_HEADER + good, keyring=KEYS, by="operator-1")
    assert (report.ok, report.imported) == (True, 2)
    a = repo.list_residents(conn, ResidentSearch(name="Elder A"), keyring=KEYS).items[0]
    assert repo.get_profile(conn, a.id, keyring=KEYS).conditions == ("asthma", "COPD")
    assert repo.list_contacts(conn, a.id, keyring=KEYS)[0].phones == ("13900139000",)

    exported = csv_io.export_residents(conn, keyring=KEYS)
    assert exported.splitlines()[0].split(",") == list(csv_io.COLUMNS)
    with psycopg.connect(
        conn.info.dsn.replace(conn.info.dbname, conn.info.dbname), autocommit=True
    ) as again:
        again.execute("DELETE FROM contacts; DELETE FROM emergency_profiles; DELETE FROM residents")
    round_trip = csv_io.import_residents(conn, exported, keyring=KEYS, by="operator-1")
    assert (round_trip.ok, round_trip.imported) == (True, 2)
    assert csv_io.export_residents(conn, keyring=KEYS) == exported


def test_csv_database_refusal_rolls_back_every_row(conn: psycopg.Connection[Any]) -> None:
    repo.register_extension_field(
        conn, ExtensionFieldIn(name="ward", type="text", description="w", required=True)
    )
    text = CSV_HEADER + "Test Elder A,female,1940-01-02,13800138000,,,,B+,,,,,,,\n"
    report = csv_io.import_residents(conn, text, keyring=KEYS, by="op")
    assert [(e.row, "ward" in e.message) for e in report.errors] == [(2, True)]
    assert repo.list_residents(conn, keyring=KEYS).total == 0


def test_placement_comes_from_the_kind_unless_the_device_says_otherwise(
    conn: psycopg.Connection[Any],
) -> None:
    band = repo.create_device(conn, DeviceIn(device_id="band-p01", kind="wristband"), by="op")
    pendant = repo.create_device(conn, DeviceIn(device_id="pend-p01", kind="pendant"), by="op")
    clip = repo.create_device(conn, DeviceIn(device_id="clip-p01", kind="belt_clip"), by="op")
    ankle = repo.create_device(
        conn, DeviceIn(device_id="band-p02", kind="wristband", placement="waist"), by="op"
    )
    assert [(d.placement.value, d.placement_explicit) for d in (band, pendant, clip, ankle)] == [
        ("wrist", False),
        ("chest", False),
        ("waist", False),
        ("waist", True),
    ]
    with pytest.raises(ValidationError, match="placement"):
        DeviceIn(device_id="band-p03", kind="wristband", placement="ankle")  # type: ignore[arg-type]
