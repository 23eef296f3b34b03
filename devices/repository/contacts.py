"""Contacts: a resident's care circle."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from devices.crypto import Keyring
from devices.model import (
    ConflictError,
    Contact,
    ContactIn,
    ContactPatch,
    ContactRole,
    QuietHours,
    RecordStatus,
    ResidentStatus,
)
from devices.phones import normalise_phone
from devices.repository._sql import Conn, Row, _all, _ctx, _one, _retire, _update
from devices.repository.channels import _channel, _channel_cols
from devices.repository.residents import _lock_resident


def _contact(row: Row, keyring: Keyring) -> Contact:
    quiet = None
    if row["quiet_start"] is not None:
        quiet = QuietHours(start=row["quiet_start"], end=row["quiet_end"], timezone=row["quiet_tz"])
    return Contact(
        id=row["id"],
        resident_id=row["resident_id"],
        name=row["name"],
        role=ContactRole(row["role"]),
        priority=row["priority"],
        phones=tuple(row["phones"]),
        channel=_channel(row, keyring, _ctx("contacts", "channel_url", row["id"])),
        quiet_hours=quiet,
        status=RecordStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _quiet_cols(q: QuietHours | None) -> tuple[Any, Any, Any]:
    return (None, None, None) if q is None else (q.start, q.end, q.timezone)


def add_contact(conn: Conn, resident_id: UUID, contact: ContactIn, *, keyring: Keyring) -> Contact:
    cid = uuid.uuid4()
    with conn.transaction():
        if _lock_resident(conn, resident_id) is ResidentStatus.RETIRED:
            raise ConflictError(f"Resident {resident_id} is retired.")
        conn.execute(
            """INSERT INTO contacts (id, resident_id, name, role, priority, phones, phones_norm,
                   channel_kind, channel_address, channel_url_enc, quiet_start, quiet_end, quiet_tz)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                cid,
                resident_id,
                contact.name,
                contact.role,
                contact.priority,
                contact.phones,
                [normalise_phone(p).national for p in contact.phones],
                *_channel_cols(contact.channel, keyring, _ctx("contacts", "channel_url", cid)),
                *_quiet_cols(contact.quiet_hours),
            ),
        )
        return get_contact(conn, cid, keyring=keyring)


def get_contact(conn: Conn, contact_id: UUID, *, keyring: Keyring) -> Contact:
    return _contact(
        _one(conn, "SELECT * FROM contacts WHERE id = %s", (contact_id,), f"Contact {contact_id}"),
        keyring,
    )


def update_contact(
    conn: Conn, contact_id: UUID, patch: ContactPatch, *, keyring: Keyring
) -> Contact:
    given = patch.model_fields_set
    with conn.transaction():
        current = get_contact(conn, contact_id, keyring=keyring)
        if current.status is RecordStatus.RETIRED:
            raise ConflictError(f"Contact {contact_id} is retired.")
        sets: list[tuple[str, Any]] = []
        for field in ("name", "role", "priority"):
            if field in given:
                if getattr(patch, field) is None:
                    raise ValueError(f"Field {field!r} cannot be cleared.")
                sets.append((field, getattr(patch, field)))
        if "phones" in given:
            phones = patch.phones or []
            sets += [
                ("phones", phones),
                ("phones_norm", [normalise_phone(p).national for p in phones]),
            ]
        if "channel" in given:
            cols = _channel_cols(
                patch.channel, keyring, _ctx("contacts", "channel_url", contact_id)
            )
            sets += list(
                zip(("channel_kind", "channel_address", "channel_url_enc"), cols, strict=True)
            )
        if "quiet_hours" in given:
            sets += list(
                zip(
                    ("quiet_start", "quiet_end", "quiet_tz"),
                    _quiet_cols(patch.quiet_hours),
                    strict=True,
                )
            )
        if sets:
            _update(conn, "contacts", contact_id, sets)
        return get_contact(conn, contact_id, keyring=keyring)


def retire_contact(conn: Conn, contact_id: UUID, *, keyring: Keyring) -> Contact:
    with conn.transaction():
        _retire(conn, "contacts", contact_id, "Contact")
        return get_contact(conn, contact_id, keyring=keyring)


def list_contacts(
    conn: Conn, resident_id: UUID, *, keyring: Keyring, include_retired: bool = False
) -> list[Contact]:
    """The resident's care circle, in calling order (priority, then name)."""
    rows = _all(
        conn,
        "SELECT * FROM contacts WHERE resident_id = %s AND (%s OR status = 'active') ORDER BY priority, name, id",
        (resident_id, include_retired),
    )
    return [_contact(r, keyring) for r in rows]
