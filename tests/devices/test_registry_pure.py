"""Pure parts of the registry: phone normalisation, lifecycle rules, extension schema, crypto, CSV parsing."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from pydantic import ValidationError

from devices import csv_io
from devices.crypto import CryptoError, Keyring
from devices.model import (
    ChannelIn,
    ConflictError,
    DeviceState,
    ExtensionError,
    ExtensionField,
    ExtensionType,
    QuietHours,
    ResidentIn,
    ResidentStatus,
    check_device_transition,
    check_resident_transition,
    validate_extension,
)
from devices.phones import PhoneError, PhoneKind, normalise_phone


@pytest.mark.parametrize(
    ("raw", "national", "kind"),
    [
        ("13800138000", "13800138000", PhoneKind.MOBILE),
        ("+86 138-0013-8000", "13800138000", PhoneKind.MOBILE),
        ("0086 138 0013 8000", "13800138000", PhoneKind.MOBILE),
        ("8613800138000", "13800138000", PhoneKind.MOBILE),
        ("013800138000", "13800138000", PhoneKind.MOBILE),
        ("(010) 6123-4567", "01061234567", PhoneKind.LANDLINE),
        ("010-61234567", "01061234567", PhoneKind.LANDLINE),
        ("+86 10 6123 4567", "01061234567", PhoneKind.LANDLINE),
        ("+86 (0)10 6123 4567", "01061234567", PhoneKind.LANDLINE),
        ("10 61234567", "01061234567", PhoneKind.LANDLINE),
        ("0571-8765-4321", "057187654321", PhoneKind.LANDLINE),
        ("571 87654321", "057187654321", PhoneKind.LANDLINE),
        # Full-width digits and dash, as a Chinese IME types them.
        ("０５３１－８６１２３４５６", "053186123456", PhoneKind.LANDLINE),  # noqa: RUF001
    ],
)
def test_phone_forms_normalise_to_one(raw: str, national: str, kind: PhoneKind) -> None:
    phone = normalise_phone(raw)
    assert (phone.national, phone.kind) == (national, kind)


def test_local_number_needs_an_area_code() -> None:
    with pytest.raises(PhoneError, match="no area code"):
        normalise_phone("87654321")
    assert normalise_phone("87654321", default_area_code="0571").national == "057187654321"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("12345", "not valid"),
        ("+1 415 555 0100", "not a Chinese number"),
        ("138-0013-800a", "characters other than digits"),
        ("12012345678", "not valid"),
        ("010-1234567890", "not valid"),
        ("  ", "empty"),
    ],
)
def test_bad_phones_are_refused(raw: str, match: str) -> None:
    with pytest.raises(PhoneError, match=match):
        normalise_phone(raw)


def test_bad_phone_in_a_model_names_the_field() -> None:
    with pytest.raises(ValidationError, match="mobile"):
        ResidentIn(name="Test Elder", sex="female", birth_date=dt.date(1940, 1, 1), mobile="12345")


def test_device_transitions() -> None:
    check_device_transition("d1", DeviceState.PROVISIONED, DeviceState.ACTIVE)
    check_device_transition("d1", DeviceState.ACTIVE, DeviceState.RETIRED)
    with pytest.raises(ConflictError, match="cannot go from 'retired' to 'active'"):
        check_device_transition("d1", DeviceState.RETIRED, DeviceState.ACTIVE)
    with pytest.raises(ConflictError, match="'active' to 'provisioned'"):
        check_device_transition("d1", DeviceState.ACTIVE, DeviceState.PROVISIONED)


def test_resident_transitions() -> None:
    rid = uuid.uuid4()
    check_resident_transition(rid, ResidentStatus.MOVED, ResidentStatus.ACTIVE)
    with pytest.raises(ConflictError, match="'deceased' to 'active'"):
        check_resident_transition(rid, ResidentStatus.DECEASED, ResidentStatus.ACTIVE)


FIELDS = [
    ExtensionField(
        name="dnr_order",
        type=ExtensionType.BOOLEAN,
        description="do not resuscitate",
        required=False,
    ),
    ExtensionField(
        name="pacemaker_model", type=ExtensionType.TEXT, description="model", required=False
    ),
    ExtensionField(
        name="insurance_level", type=ExtensionType.INTEGER, description="level", required=True
    ),
    ExtensionField(
        name="last_checkup", type=ExtensionType.DATE, description="date", required=False
    ),
]


def test_extension_is_checked_against_the_fields() -> None:
    ok = validate_extension(
        FIELDS, {"dnr_order": False, "insurance_level": 2, "last_checkup": "2024-03-01"}
    )
    assert ok == {"dnr_order": False, "insurance_level": 2, "last_checkup": "2024-03-01"}
    with pytest.raises(ExtensionError) as info:
        validate_extension(FIELDS, {"dnr_order": "yes", "shoe_size": 42, "last_checkup": "March"})
    names = sorted(name for name, _ in info.value.problems)
    assert names == ["dnr_order", "insurance_level", "last_checkup", "shoe_size"]


def test_channel_is_a_url_or_kind_and_address() -> None:
    ChannelIn(url="json://localhost/")
    ChannelIn(kind="sms", address="13800138000")
    with pytest.raises(ValidationError, match="either url or kind and address"):
        ChannelIn(url="json://localhost/", kind="sms", address="13800138000")
    with pytest.raises(ValidationError, match="go together"):
        ChannelIn(kind="sms")


def test_quiet_hours_span_midnight_in_their_zone() -> None:
    q = QuietHours(start=dt.time(22), end=dt.time(7), timezone="Asia/Shanghai")
    utc = dt.UTC
    assert q.contains(dt.datetime(2025, 1, 1, 15, 0, tzinfo=utc))  # 23:00 in Shanghai
    assert not q.contains(dt.datetime(2025, 1, 1, 4, 0, tzinfo=utc))  # 12:00 in Shanghai
    with pytest.raises(ValidationError, match="Time zone 'Mars/Base'"):
        QuietHours(start=dt.time(22), end=dt.time(7), timezone="Mars/Base")


def test_keyring_round_trip_context_and_rotation() -> None:
    old = Keyring({"k1": b"\x01" * 32}, "k1")
    sealed = old.seal(b"hypertension", "t.c:1")
    assert b"hypertension" not in sealed
    assert old.open(sealed, "t.c:1") == b"hypertension"
    with pytest.raises(CryptoError, match="does not decrypt"):
        old.open(sealed, "t.c:2")
    new = Keyring({"k1": b"\x01" * 32, "k2": b"\x02" * 32}, "k2")
    assert new.needs_rotation(sealed)
    assert new.open(sealed, "t.c:1") == b"hypertension"
    only_new = Keyring({"k2": b"\x02" * 32}, "k2")
    with pytest.raises(CryptoError, match="key 'k1', which is not in the keyring"):
        only_new.open(sealed, "t.c:1")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(CryptoError):
        old.open(tampered, "t.c:1")


def test_csv_parse_reports_each_bad_cell() -> None:
    text = (
        "name,sex,birth_date,mobile,flags,contact1_name,contact1_role,contact1_phones\n"
        "Test Elder A,female,1941-02-03,13800138000,empty_nest;living_alone,Test Child A,child,13900139000\n"
        "Test Elder B,male,not-a-date,12345,flying,Test Child B,cousin,139\n"
    )
    rows, errors = csv_io.parse_rows(text)
    assert [r.row for r in rows] == [2]
    assert {(e.row, e.column) for e in errors} == {
        (3, "birth_date"),
        (3, "mobile"),
        (3, "flags"),
        (3, "contact1_role"),
        (3, "contact1_phones"),
    }


def test_csv_unknown_column_is_refused() -> None:
    rows, errors = csv_io.parse_rows("name,shoe_size\nTest Elder,42\n")
    assert rows == []
    assert [(e.row, e.column) for e in errors] == [(1, "shoe_size")]
