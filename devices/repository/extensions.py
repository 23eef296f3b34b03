"""The extension fields of the emergency profile (a region's own fields)."""

from __future__ import annotations

import psycopg

from devices.model import ConflictError, ExtensionField, ExtensionFieldIn, ExtensionType
from devices.repository._sql import Conn, _all


def register_extension_field(conn: Conn, field: ExtensionFieldIn) -> ExtensionField:
    """Add a region's profile field. Names are permanent (old versions may use them)."""
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO profile_extension_fields (name, type, description, required) VALUES (%s, %s, %s, %s)",
                (field.name, field.type, field.description, field.required),
            )
    except psycopg.errors.UniqueViolation as exc:
        raise ConflictError(f"Extension field {field.name!r} is already registered.") from exc
    return ExtensionField(
        name=field.name, type=field.type, description=field.description, required=field.required
    )


def list_extension_fields(conn: Conn) -> list[ExtensionField]:
    return [
        ExtensionField(
            name=r["name"],
            type=ExtensionType(r["type"]),
            description=r["description"],
            required=r["required"],
        )
        for r in _all(
            conn,
            "SELECT name, type, description, required FROM profile_extension_fields ORDER BY name",
        )
    ]
