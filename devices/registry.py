"""Device registration: the part of the registry ingest depends on.

Device secrets are generated once, shown once and stored only as a salted hash: Mosquitto's
own ``$7$`` PBKDF2-SHA512 format, so that the broker checks the secret itself from the password
file ``anxin devices broker-auth`` writes (devices/credentials/). No server-side pepper is
mixed in: Mosquitto could not verify a peppered hash. The secrets are 192 random bits, so the
salted hash alone leaves nothing to guess.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from core.errors import AnxinError
from devices.protocol import DEVICE_ID_MAX

DEVICE_KINDS = ("wristband", "pendant", "watch", "belt_clip", "bed_sensor", "hub", "sos_button")
PBKDF2_ITERATIONS = 101


class RegistryError(AnxinError, ValueError):
    """A registry request that cannot be carried out (bad id, unknown gateway, ...)."""


@dataclass(frozen=True, slots=True)
class NewDevice:
    device_id: str
    kind: str
    secret: str | None


def validate_device_id(device_id: str) -> None:
    ok = 3 <= len(device_id) <= DEVICE_ID_MAX and all(
        c.isascii() and (c.isalnum() or c in "-_") for c in device_id
    )
    if not ok:
        raise RegistryError(
            f"Device id {device_id!r} is not valid. Expected 3 to {DEVICE_ID_MAX} characters of A-Z, a-z, 0-9, '-' or '_'."
        )


def mosquitto_hash(
    secret: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None
) -> str:
    """``$7$`` PBKDF2-SHA512 hash, the format of ``mosquitto_passwd`` (Mosquitto 2.0).

    ``$7$<iterations>$<base64 salt>$<base64 digest>``, a 12-byte salt and the 64-byte digest;
    ``tests/devices/test_credentials.py`` checks it against ``mosquitto_passwd`` itself. The
    default of 101 iterations is ``mosquitto_passwd``'s: device secrets are random, and the
    broker pays the iterations again on every device (re)connect.
    """
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def register_device(
    conn: psycopg.Connection[Any],
    device_id: str,
    kind: str,
    *,
    gateway_id: str | None = None,
    resident_id: str | None = None,
    registered_at_ms: int | None = None,
    with_secret: bool = True,
    expected_interval_s: int = 60,
) -> NewDevice:
    """Insert a device (active). Returns its secret once; only the hash is stored.

    Raises:
        RegistryError: the id or kind is not valid, the id exists, or the gateway is unknown.
    """
    validate_device_id(device_id)
    if kind not in DEVICE_KINDS:
        raise RegistryError(
            f"Device kind {kind!r} is not valid. Expected one of {', '.join(DEVICE_KINDS)}."
        )
    secret = secrets.token_urlsafe(24) if with_secret else None
    try:
        with conn.transaction():
            conn.execute(
                """INSERT INTO devices (device_id, kind, gateway_id, resident_id, registered_at, secret_hash,
                                        expected_interval_s)
                   VALUES (%s, %s, %s, %s, COALESCE(to_timestamp(%s / 1000.0), now()), %s, %s)""",
                (
                    device_id,
                    kind,
                    gateway_id,
                    resident_id,
                    registered_at_ms,
                    mosquitto_hash(secret) if secret else None,
                    expected_interval_s,
                ),
            )
    except psycopg.errors.UniqueViolation as exc:
        raise RegistryError(f"Device {device_id!r} is already registered.") from exc
    except psycopg.errors.ForeignKeyViolation as exc:
        raise RegistryError(f"Gateway {gateway_id!r} is not a registered device.") from exc
    return NewDevice(device_id, kind, secret)


def ensure_devices(
    conn: psycopg.Connection[Any], device_ids: list[str], kind: str = "wristband"
) -> int:
    """Register simulated devices that are not registered yet (no secret). Returns how many were new."""
    for device_id in device_ids:
        validate_device_id(device_id)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO devices (device_id, kind, registered_at) VALUES (%s, %s, now() - interval '1 day') "
            "ON CONFLICT (device_id) DO NOTHING",
            [(d, kind) for d in device_ids],
        )
        return max(cur.rowcount, 0)


def set_status(conn: psycopg.Connection[Any], device_id: str, status: str) -> None:
    with conn.transaction():
        cur = conn.execute(
            "UPDATE devices SET status = %s, updated_at = now() WHERE device_id = %s",
            (status, device_id),
        )
        if cur.rowcount == 0:
            raise RegistryError(f"Device {device_id!r} is not registered.")
