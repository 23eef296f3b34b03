"""Device and service accounts and the broker files rendered from them. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from devices.registry import RegistryError, mosquitto_hash, validate_device_id

# Service passwords may be chosen by people, so their hash is slowed down; device secrets are
# 192 random bits, for which iterations add nothing but broker CPU on every (re)connect.
SERVICE_ITERATIONS = 210_000
DEVICE_CHANNELS = ("telemetry", "event", "status")
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HASH = re.compile(r"^\$[67]\$[0-9]{1,9}\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")


class CredentialsError(RegistryError):
    """A credentials request that cannot be carried out (unknown device, revoked, bad file)."""


class ServiceRole(StrEnum):
    INGEST = "ingest"
    MONITOR = "monitor"


@dataclass(frozen=True, slots=True)
class DeviceAccount:
    """A device as the broker files need it: one row of ``devices``."""

    device_id: str
    secret_hash: str | None
    status: str = "active"
    revoked: bool = False
    gateway_id: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """One of the service's own broker accounts."""

    username: str
    password_hash: str
    role: ServiceRole

    @classmethod
    def from_password(
        cls,
        username: str,
        password: str,
        role: ServiceRole,
        *,
        iterations: int = SERVICE_ITERATIONS,
    ) -> ServiceAccount:
        """Hash ``password`` for the password file.

        Raises:
            CredentialsError: the username is not valid or the password is empty.
        """
        if not _USERNAME.match(username):
            raise CredentialsError(
                f"Broker username {username!r} is not valid. Expected 1 to 64 characters of "
                "A-Z, a-z, 0-9, '_', '.', '@' or '-'."
            )
        if not password:
            raise CredentialsError(f"Broker account {username!r} has an empty password.")
        return cls(username, mosquitto_hash(password, iterations=iterations), role)


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What :func:`write_broker_files` wrote."""

    devices: int
    left_out: tuple[tuple[str, str], ...]
    reloaded_pid: int | None


def select_accounts(
    rows: Iterable[DeviceAccount],
) -> tuple[list[DeviceAccount], list[tuple[str, str]]]:
    """Split registry rows into devices that may connect and ``(device id, reason)`` left out.

    Left out: revoked, retired, without a secret, or with a stored hash that is not
    Mosquitto's format (it could not be checked, and a stray newline must not reach the file).
    """
    allowed: list[DeviceAccount] = []
    left_out: list[tuple[str, str]] = []
    for row in rows:
        if row.revoked:
            left_out.append((row.device_id, "revoked"))
        elif row.status == "retired":
            left_out.append((row.device_id, "retired"))
        elif row.secret_hash is None:
            left_out.append((row.device_id, "no secret"))
        elif not _HASH.match(row.secret_hash):
            left_out.append((row.device_id, "stored hash is not in Mosquitto's format"))
        else:
            allowed.append(row)
    return allowed, left_out


def check_names(
    devices: Iterable[DeviceAccount],
    services: Sequence[ServiceAccount],
    reserved_client_ids: Sequence[str] = (),
) -> None:
    """Refuse a name used twice, and a device whose id is a service's client id or begins
    with one (on the device listener the device id is the client id, and client ids are one
    namespace across listeners: such a device would take over the service's session).

    Raises:
        CredentialsError: naming the clash.
    """
    devices = list(devices)
    seen: set[str] = set()
    for name in [d.device_id for d in devices] + [s.username for s in services]:
        if name in seen:
            raise CredentialsError(
                f"Broker username {name!r} appears twice. A service account must not share a "
                "name with a device or another account."
            )
        seen.add(name)
    for device in devices:
        validate_device_id(device.device_id)
        for reserved in reserved_client_ids:
            if reserved and device.device_id.startswith(reserved):
                raise CredentialsError(
                    f"Device id {device.device_id!r} begins with the service client id "
                    f"{reserved!r} (ANXIN_MQTT__CLIENT_ID). Expected a device id that no "
                    "service client uses: rename the device or the client id."
                )


def render_password_file(devices: Iterable[DeviceAccount]) -> str:
    """The device listener's password file: ``username:hash`` per device that may connect."""
    allowed, _ = select_accounts(devices)
    check_names(allowed, ())
    lines = [f"{d.device_id}:{d.secret_hash}" for d in sorted(allowed, key=lambda d: d.device_id)]
    return "".join(line + "\n" for line in lines)


def render_service_password_file(services: Sequence[ServiceAccount]) -> str:
    """The service listener's password file: ``username:hash`` per service account."""
    check_names((), services)
    return "".join(f"{s.username}:{s.password_hash}\n" for s in services)


def render_service_acl(services: Sequence[ServiceAccount], prefix: str) -> str:
    """The service listener's ACL file: one ``user`` block per service account."""
    check_names((), services)
    out = ["# Generated by `anxin devices broker-auth`; edits are overwritten.", ""]
    for service in services:
        out.append(f"user {service.username}")
        if service.role is ServiceRole.INGEST:
            out += [f"topic read {prefix}/dev/+/{channel}" for channel in DEVICE_CHANNELS]
            out.append(f"topic write {prefix}/dev/+/cmd")
        else:
            out += [f"topic read {prefix}/#", "topic read $SYS/#"]
        out.append("")
    return "\n".join(out)


def render_acl(devices: Iterable[DeviceAccount], prefix: str) -> str:
    """The device listener's ACL file: one ``user`` block per device (no ``pattern`` lines)."""
    rows = list(devices)
    allowed, _ = select_accounts(rows)
    check_names(allowed, ())
    children: dict[str, list[str]] = {}
    for row in rows:
        # A child needs no identity of its own, but a revoked or retired one gets no commands.
        if row.gateway_id is not None and not row.revoked and row.status != "retired":
            children.setdefault(row.gateway_id, []).append(row.device_id)
    out = ["# Generated by `anxin devices broker-auth`; edits are overwritten.", ""]
    for device in sorted(allowed, key=lambda d: d.device_id):
        base = f"{prefix}/dev/{device.device_id}"
        out.append(f"user {device.device_id}")
        out += [f"topic write {base}/{channel}" for channel in DEVICE_CHANNELS]
        out.append(f"topic read {base}/cmd")
        out += [
            f"topic read {prefix}/dev/{child}/cmd"
            for child in sorted(children.get(device.device_id, ()))
        ]
        out.append("")
    return "\n".join(out)
