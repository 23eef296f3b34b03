"""Device secrets in the registry: rotate, revoke, and the accounts the broker files are made of."""

from __future__ import annotations

import secrets
from typing import Any

import psycopg

from devices.credentials.accounts import (
    CredentialsError,
    DeviceAccount,
)
from devices.registry import mosquitto_hash


def _new_secret() -> str:
    return secrets.token_urlsafe(24)


def rotate(conn: psycopg.Connection[Any], device_id: str) -> str:
    """Give a device a new secret and return it (shown once; only its hash is stored).

    The old secret stops working when the broker files are written and reloaded.

    Raises:
        CredentialsError: the device is unknown, revoked or retired.
    """
    secret = _new_secret()
    with conn.transaction():
        row = conn.execute(
            "SELECT status, revoked_at IS NOT NULL FROM devices WHERE device_id = %s FOR UPDATE",
            (device_id,),
        ).fetchone()
        if row is None:
            raise CredentialsError(f"Device {device_id!r} is not registered.")
        if row[1]:
            raise CredentialsError(
                f"Device {device_id!r} is revoked. A revoked device gets no new secret."
            )
        if row[0] == "retired":
            raise CredentialsError(
                f"Device {device_id!r} is retired. A retired device gets no new secret."
            )
        conn.execute(
            "UPDATE devices SET secret_hash = %s, secret_rotated_at = now(), updated_at = now() "
            "WHERE device_id = %s",
            (mosquitto_hash(secret), device_id),
        )
    return secret


def revoke(conn: psycopg.Connection[Any], device_id: str) -> None:
    """Revoke a device's credentials for good (``revoked_at``; a second call keeps the first time).

    It cannot connect once the broker files are written and reloaded; ingest refuses its data
    from its next registry refresh.

    Raises:
        CredentialsError: the device is unknown.
    """
    with conn.transaction():
        cur = conn.execute(
            "UPDATE devices SET revoked_at = COALESCE(revoked_at, now()), updated_at = now() "
            "WHERE device_id = %s",
            (device_id,),
        )
        if cur.rowcount == 0:
            raise CredentialsError(f"Device {device_id!r} is not registered.")


def load_device_accounts(conn: psycopg.Connection[Any]) -> list[DeviceAccount]:
    """Every registered device, with what the broker files need."""
    with conn.transaction():  # no transaction left open on the caller's connection
        rows = conn.execute(
            "SELECT device_id, secret_hash, status, revoked_at IS NOT NULL, gateway_id "
            "FROM devices ORDER BY device_id"
        ).fetchall()
    return [DeviceAccount(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]
