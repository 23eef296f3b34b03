"""CSV bulk import and export of residents with their emergency profile and up to three contacts.

Columns (header row required, order free, unknown columns refused; UTF-8, a BOM is accepted):

- resident: ``name, sex, birth_date, id_number, health_card, landline, mobile, province, city,
  district, street, community, address, lat, lon, flags``
- profile: ``blood_type, conditions, medications, allergies, past_treatments, door_code,
  mobility, language, hearing, responder_notes``
- contacts, N = 1..3: ``contactN_name, contactN_role, contactN_priority, contactN_phones,
  contactN_channel`` (an apprise URL)

Lists (``flags``, ``conditions``, ``medications``, ``allergies``, ``past_treatments``,
``contactN_phones``) are separated by ``;``. Empty cells are absent values. A row with any
profile column gets a profile (version 1).

Import validates every row first and writes nothing if any row is bad; the report lists every
problem as (row number as in a spreadsheet, header = row 1; column; message). Valid files are
written in one transaction.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from uuid import UUID

import psycopg
from pydantic import BaseModel, ValidationError

from devices import repository as repo
from devices.crypto import Keyring
from devices.model import (
    Channel,
    ContactIn,
    NotFoundError,
    ProfileIn,
    ResidentIn,
    ResidentSearch,
)

RESIDENT_COLUMNS: Final = (
    "name",
    "sex",
    "birth_date",
    "id_number",
    "health_card",
    "landline",
    "mobile",
    "province",
    "city",
    "district",
    "street",
    "community",
    "address",
    "lat",
    "lon",
    "flags",
)
PROFILE_COLUMNS: Final = (
    "blood_type",
    "conditions",
    "medications",
    "allergies",
    "past_treatments",
    "door_code",
    "mobility",
    "language",
    "hearing",
    "responder_notes",
)
MAX_CONTACTS: Final = 3
CONTACT_FIELDS: Final = ("name", "role", "priority", "phones", "channel")
CONTACT_COLUMNS: Final = tuple(
    f"contact{n}_{f}" for n in range(1, MAX_CONTACTS + 1) for f in CONTACT_FIELDS
)
COLUMNS: Final = RESIDENT_COLUMNS + PROFILE_COLUMNS + CONTACT_COLUMNS
MAX_ROWS: Final = 50_000
M = TypeVar("M", bound=BaseModel)
_ADDRESS = {
    "province": "province",
    "city": "city",
    "district": "district",
    "street": "street",
    "community": "community",
    "text": "address",
    "lat": "lat",
    "lon": "lon",
}
_NOTES = {
    "door_code": "door_code",
    "mobility": "mobility",
    "language": "language",
    "hearing": "hearing",
    "other": "responder_notes",
}


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str
    message: str


@dataclass(frozen=True, slots=True)
class ParsedRow:
    row: int
    resident: ResidentIn
    profile: ProfileIn | None
    contacts: tuple[ContactIn, ...]


@dataclass(slots=True)
class ImportReport:
    imported: int = 0
    errors: list[RowError] = field(default_factory=list)
    resident_ids: list[UUID] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# Spreadsheets run a cell that begins with one of these as a formula (CSV injection); the
# export puts an apostrophe before such a cell (unless it is a number), the import removes it.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _guard(value: object) -> object:
    """An exported cell: line breaks as LF (a CR would break the file), formulas neutralised."""
    if not isinstance(value, str):
        return value
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _unguard(cell: str) -> str:
    """The imported cell: the export's apostrophe before a formula-like cell removed."""
    if cell.startswith("'") and cell[1:].startswith(_FORMULA_START):
        return cell[1:]
    return cell


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _channel_cell(channel: Channel | None, mask: bool) -> str | None:
    if channel is None:
        return None
    return (channel.masked() if mask else channel).url


def _split(cell: str) -> list[str]:
    return [p.strip() for p in cell.split(";") if p.strip()]


def _errors(row: int, exc: ValidationError, column_of: Any) -> list[RowError]:
    out = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        out.append(RowError(row, column_of(loc), err["msg"].removeprefix("Value error, ")))
    return out


def parse_rows(text: str) -> tuple[list[ParsedRow], list[RowError]]:
    """Validate every row of a CSV document. Pure: no database."""
    errors: list[RowError] = []
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in COLUMNS]
    if "name" not in header:
        errors.append(RowError(1, "name", "the header has no 'name' column"))
    for c in unknown:
        errors.append(RowError(1, c, f"unknown column. Expected some of: {', '.join(COLUMNS)}"))
    if errors:
        return [], errors
    parsed: list[ParsedRow] = []
    try:
        _read_rows(reader, parsed, errors)
    except csv.Error as exc:
        # A NUL byte, a field over the csv module's limit, a stray quote: the file is not
        # CSV we can read; say where, import nothing.
        errors.append(RowError(reader.line_num, "", f"not readable as CSV: {exc}"))
    return parsed, errors


def _read_rows(
    reader: csv.DictReader[str], parsed: list[ParsedRow], errors: list[RowError]
) -> None:
    for index, raw in enumerate(reader, start=2):
        if index - 1 > MAX_ROWS:
            errors.append(RowError(index, "", f"more than {MAX_ROWS} rows; split the file"))
            break
        if None in raw:
            errors.append(RowError(index, "", "more cells than header columns"))
            continue
        cells = {k: _unguard((v or "").strip()) for k, v in raw.items() if k is not None}
        if not any(cells.values()):
            continue
        get = {k: v for k, v in cells.items() if v}
        row_errors: list[RowError] = []
        resident = _model(ResidentIn, _resident_dict(get), index, row_errors, _resident_column)
        profile = None
        if any(c in get for c in PROFILE_COLUMNS):
            profile = _model(ProfileIn, _profile_dict(get), index, row_errors, _profile_column)
        contacts: list[ContactIn] = []
        for n in range(1, MAX_CONTACTS + 1):
            prefix = f"contact{n}_"
            part = {k.removeprefix(prefix): v for k, v in get.items() if k.startswith(prefix)}
            if not part:
                continue
            data: dict[str, Any] = {"name": part.get("name"), "role": part.get("role")}
            if "priority" in part:
                data["priority"] = part["priority"]
            data["phones"] = _split(part.get("phones", ""))
            if "channel" in part:
                data["channel"] = {"url": part["channel"]}
            contact = _model(
                ContactIn, data, index, row_errors, lambda loc, p=prefix: _contact_column(p, loc)
            )
            if contact is not None:
                contacts.append(contact)
        errors += row_errors
        if not row_errors and resident is not None:
            parsed.append(ParsedRow(index, resident, profile, tuple(contacts)))


def _model(
    cls: type[M], data: dict[str, Any], row: int, errors: list[RowError], column_of: Any
) -> M | None:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors.extend(_errors(row, exc, column_of))
        return None


def _resident_dict(get: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        k: get[k]
        for k in ("name", "sex", "birth_date", "id_number", "health_card", "landline", "mobile")
        if k in get
    }
    data["name"] = get.get("name")
    data["address"] = {field: get[col] for field, col in _ADDRESS.items() if col in get}
    data["flags"] = _split(get.get("flags", ""))
    return data


def _resident_column(loc: tuple[str, ...]) -> str:
    if loc and loc[0] == "address":
        return _ADDRESS.get(loc[1], "address") if len(loc) > 1 else "lat"
    if loc and loc[0] in RESIDENT_COLUMNS:
        return loc[0]
    return "birth_date" if not loc else loc[0]


def _profile_dict(get: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        k: _split(get.get(k, ""))
        for k in ("conditions", "medications", "allergies", "past_treatments")
    }
    if "blood_type" in get:
        data["blood_type"] = get["blood_type"]
    data["responder_notes"] = {field: get[col] for field, col in _NOTES.items() if col in get}
    return data


def _profile_column(loc: tuple[str, ...]) -> str:
    if loc and loc[0] == "responder_notes" and len(loc) > 1:
        return _NOTES.get(loc[1], "responder_notes")
    return loc[0] if loc else "blood_type"


def _contact_column(prefix: str, loc: tuple[str, ...]) -> str:
    head = loc[0] if loc else "name"
    return prefix + (head if head in CONTACT_FIELDS else "channel")


def import_residents(
    conn: psycopg.Connection[Any], text: str, *, keyring: Keyring, by: str
) -> ImportReport:
    """Validate the whole file, then import it in one transaction, or import nothing.

    Problems found by the database (a community that does not exist, an extension field now
    required) also roll everything back and are reported against their row.
    """
    parsed, errors = parse_rows(text)
    report = ImportReport(errors=errors)
    if errors:
        return report
    try:
        with conn.transaction():
            for row in parsed:
                try:
                    resident = repo.create_resident(conn, row.resident, keyring=keyring)
                    if row.profile is not None:
                        repo.put_profile(conn, resident.id, row.profile, by=by, keyring=keyring)
                    for contact in row.contacts:
                        repo.add_contact(conn, resident.id, contact, keyring=keyring)
                except ValueError as exc:  # RegistryError and its kinds are ValueErrors
                    report.errors.append(RowError(row.row, "", str(exc)))
                    raise _Abort from exc
                report.resident_ids.append(resident.id)
    except _Abort:
        report.resident_ids.clear()
        return report
    report.imported = len(report.resident_ids)
    return report


class _Abort(Exception):
    """Rolls the import's transaction back after a row failed in the database."""


def export_residents(
    conn: psycopg.Connection[Any],
    *,
    keyring: Keyring,
    search: ResidentSearch | None = None,
    mask_channels: bool = False,
) -> str:
    """The matching residents in the import format (decrypted: the caller checks who may read
    it); with ``mask_channels`` the contacts' apprise URLs show their scheme only."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    offset = 0
    while True:
        page = repo.list_residents(
            conn, search, keyring=keyring, limit=repo.MAX_PAGE, offset=offset
        )
        for r in page.items:
            a = r.address
            row: dict[str, Any] = {
                "name": r.name,
                "sex": r.sex.value,
                "birth_date": r.birth_date.isoformat(),
                "id_number": r.id_number,
                "health_card": r.health_card,
                "landline": r.landline,
                "mobile": r.mobile,
                "province": a.province,
                "city": a.city,
                "district": a.district,
                "street": a.street,
                "community": a.community,
                "address": a.text,
                "lat": a.lat,
                "lon": a.lon,
                "flags": ";".join(sorted(r.flags)),
            }
            try:
                p = repo.get_profile(conn, r.id, keyring=keyring)
            except NotFoundError:
                p = None
            if p is not None:
                row.update(
                    {
                        "blood_type": p.blood_type.value,
                        "conditions": ";".join(p.conditions),
                        "medications": ";".join(p.medications),
                        "allergies": ";".join(p.allergies),
                        "past_treatments": ";".join(p.past_treatments),
                        **{col: getattr(p.responder_notes, f) for f, col in _NOTES.items()},
                    }
                )
            for n, c in enumerate(
                repo.list_contacts(conn, r.id, keyring=keyring)[:MAX_CONTACTS], start=1
            ):
                row.update(
                    {
                        f"contact{n}_name": c.name,
                        f"contact{n}_role": c.role.value,
                        f"contact{n}_priority": c.priority,
                        f"contact{n}_phones": ";".join(c.phones),
                        f"contact{n}_channel": _channel_cell(c.channel, mask_channels),
                    }
                )
            writer.writerow({k: _guard(v) for k, v in row.items()})
        offset += len(page.items)
        if offset >= page.total or not page.items:
            break
    return out.getvalue()
