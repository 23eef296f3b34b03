"""Per-device MQTT credentials and the broker's password and ACL files.

Every device connects with its own identity: username = device id, password = a secret
generated once and shown once (:func:`devices.registry.register_device`, :func:`rotate`).
The database keeps only Mosquitto's ``$7$`` hash of it, so the broker itself checks the
secret: :func:`write_broker_files` renders Mosquitto's ``password_file`` and ``acl_file`` from
the registry and can signal the broker to reload them (SIGHUP).

The renderers are pure (:func:`render_password_file`, :func:`render_acl`); reading the
registry, writing the files and signalling the broker are the thin shell around them.

ACL design (see ``deploy/mosquitto/anxin.acl.example``):

* a device may write ``{prefix}/dev/{its id}/telemetry|event|status`` and read
  ``{prefix}/dev/{its id}/cmd``; nothing else;
* a gateway (any device that others name as their gateway) has the same, plus read on the
  ``cmd`` topics of its bound children, so it can relay commands. It gets **no** write on the
  children's telemetry/event/status topics: the protocol has a hub publish on its own topics
  with ``"dev"`` naming the child, and ingest keeps such a reading only when the child is bound
  to that hub (else ``device_mismatch``). Granting the children's topics would open a second
  path that the binding check does not see;
* the ingest service reads ``{prefix}/dev/+/telemetry|event|status`` and writes
  ``{prefix}/dev/+/cmd`` (commands to devices);
* an optional monitor account reads ``{prefix}/#`` and ``$SYS/#``.

Two listeners, two pairs of files (``deploy/mosquitto/anxin.conf``, ``per_listener_settings
true``): the device listener replaces every client id by the username
(``use_username_as_clientid``) and knows only the devices; the service listener knows only the
service accounts, whose clients keep the client ids they choose (the ingester's persistent
session). So no device can connect as a service, nor take a service's session by its client
id; and a device named like a service account or a service client id is refused here.

A revoked or retired device, or one without a secret, has no line in the password file and
so cannot connect at all; a connected one is dropped when the broker reloads.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import re
import secrets
import signal
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg

from devices.registry import RegistryError, mosquitto_hash, validate_device_id

__all__ = [
    "SERVICE_ITERATIONS",
    "BrokerFiles",
    "BrokerPaths",
    "CredentialsError",
    "DeviceAccount",
    "ServiceAccount",
    "ServiceRole",
    "check_names",
    "load_device_accounts",
    "main_broker_auth",
    "main_credentials",
    "reload_broker",
    "render_acl",
    "render_password_file",
    "render_service_acl",
    "render_service_password_file",
    "revoke",
    "rotate",
    "select_accounts",
    "write_broker_files",
]

# Service passwords may be chosen by people, so their hash is slowed down; device secrets are
# 192 random bits, for which iterations add nothing but broker CPU on every (re)connect.
SERVICE_ITERATIONS = 210_000
FILE_MODE = 0o640
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


# -- pure core -------------------------------------------------------------------------


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


# -- registry ------------------------------------------------------------------------


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


# -- files and the broker ------------------------------------------------------------


def _write_atomically(path: Path, text: str, gid: int | None) -> None:
    """Write next to ``path`` and rename over it, so the broker never reads half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, FILE_MODE)
        if gid is not None:
            os.fchown(fd, -1, gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def reload_broker(pid_file: Path) -> int:
    """Send SIGHUP to the broker whose pid ``pid_file`` holds; Mosquitto 2 then rereads its
    password and ACL files. Returns the pid.

    Raises:
        CredentialsError: the file is missing or malformed, or no such process.
    """
    try:
        text = pid_file.read_text().strip()
        pid = int(text)
    except OSError as exc:
        raise CredentialsError(f"Broker pid file {str(pid_file)!r} cannot be read: {exc}") from exc
    except ValueError as exc:
        raise CredentialsError(
            f"Broker pid file {str(pid_file)!r} has value {text!r}. Expected a pid."
        ) from exc
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise CredentialsError(
            f"Cannot signal the broker (pid {pid} from {str(pid_file)!r}): {exc}"
        ) from exc
    return pid


@dataclass(frozen=True, slots=True)
class BrokerPaths:
    """Where the four files go: the device listener's pair and the service listener's pair."""

    passwords: Path
    acl: Path
    service_passwords: Path
    service_acl: Path


def write_broker_files(
    conn: psycopg.Connection[Any],
    paths: BrokerPaths,
    *,
    prefix: str,
    services: Sequence[ServiceAccount] = (),
    reserved_client_ids: Sequence[str] = (),
    group: str | None = None,
    reload_pid_file: Path | None = None,
) -> BrokerFiles:
    """Render the four files from the registry, write them atomically (mode 0640) and
    optionally signal the broker to reload.

    Args:
        reserved_client_ids: client ids (prefixes) of the service's clients; a device id
            beginning with one is refused.
        group: group to own the files, so a broker running as that group can read them
            (``mosquitto``); the files keep the writer's group when None.

    Raises:
        CredentialsError: a name clash, the group is unknown, or the reload failed.
    """
    rows = load_device_accounts(conn)
    allowed, left_out = select_accounts(rows)
    check_names(allowed, services, reserved_client_ids)
    texts = {
        paths.acl: render_acl(rows, prefix),
        paths.passwords: render_password_file(rows),
        paths.service_acl: render_service_acl(services, prefix),
        paths.service_passwords: render_service_password_file(services),
    }
    if len(texts) != 4:
        raise CredentialsError("The four broker files need four different paths.")
    gid: int | None = None
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError as exc:
            raise CredentialsError(f"Group {group!r} does not exist.") from exc
    for path, text in texts.items():
        _write_atomically(path, text, gid)
    pid = reload_broker(reload_pid_file) if reload_pid_file is not None else None
    return BrokerFiles(len(allowed), tuple(left_out), pid)


# -- command line --------------------------------------------------------------------


def _service_accounts(
    settings: Any, monitor_user: str | None, monitor_password_env: str
) -> list[ServiceAccount]:
    mqtt = settings.mqtt
    if mqtt.username is None or mqtt.password is None:
        raise CredentialsError(
            "Config 'ANXIN_MQTT__USERNAME' and 'ANXIN_MQTT__PASSWORD' must both be set: the broker "
            "refuses anonymous clients, so the ingester needs an account in the password file."
        )
    accounts = [
        ServiceAccount.from_password(
            mqtt.username, mqtt.password.get_secret_value(), ServiceRole.INGEST
        )
    ]
    if monitor_user is not None:
        password = os.environ.get(monitor_password_env)
        if not password:
            raise CredentialsError(
                f"Environment variable {monitor_password_env!r} is not set. Expected the "
                f"password of the monitor account {monitor_user!r}."
            )
        accounts.append(ServiceAccount.from_password(monitor_user, password, ServiceRole.MONITOR))
    return accounts


def _add_file_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--password-file",
        type=Path,
        required=required,
        help="password_file of the device listener to write",
    )
    parser.add_argument(
        "--acl-file", type=Path, required=required, help="acl_file of the device listener"
    )
    parser.add_argument(
        "--service-password-file",
        type=Path,
        required=required,
        help="password_file of the service listener (the ingester's account)",
    )
    parser.add_argument(
        "--service-acl-file", type=Path, required=required, help="acl_file of the service listener"
    )
    parser.add_argument(
        "--reload-pid-file", type=Path, help="send SIGHUP to the pid in this file afterwards"
    )
    parser.add_argument("--group", help="group to own the files (the broker's, e.g. mosquitto)")
    parser.add_argument("--monitor-user", help="also write a read-only monitor account")
    parser.add_argument(
        "--monitor-password-env",
        default="ANXIN_BROKER_MONITOR_PASSWORD",
        help="environment variable holding the monitor account's password",
    )


def _write_from_args(
    conn: psycopg.Connection[Any], settings: Any, args: argparse.Namespace
) -> None:
    services = _service_accounts(settings, args.monitor_user, args.monitor_password_env)
    paths = BrokerPaths(
        args.password_file, args.acl_file, args.service_password_file, args.service_acl_file
    )
    result = write_broker_files(
        conn,
        paths,
        prefix=settings.mqtt.topic_prefix,
        services=services,
        reserved_client_ids=[settings.mqtt.client_id],
        group=args.group,
        reload_pid_file=args.reload_pid_file,
    )
    print(
        f"wrote {args.password_file}, {args.acl_file} ({result.devices} devices), "
        f"{args.service_password_file} and {args.service_acl_file} "
        f"({len(services)} service accounts)"
    )
    for device_id, reason in result.left_out:
        print(f"left out {device_id}: {reason}")
    if result.reloaded_pid is not None:
        print(f"broker (pid {result.reloaded_pid}) signalled to reload")


def main_broker_auth(argv: Sequence[str] | None = None) -> int:
    """``anxin devices broker-auth --password-file P --acl-file A --service-password-file SP
    --service-acl-file SA [--reload-pid-file F]``."""
    from core import db  # noqa: PLC0415 - the command line imports what it uses
    from core.errors import AnxinError  # noqa: PLC0415
    from core.settings import load_settings  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="anxin devices broker-auth", description=main_broker_auth.__doc__
    )
    _add_file_arguments(parser, required=True)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        with db.connect(settings.db.url) as conn:
            _write_from_args(conn, settings, args)
    except (AnxinError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main_credentials(argv: Sequence[str] | None = None) -> int:
    """``anxin devices rotate ID`` and ``anxin devices revoke ID``; with the four file options
    the broker files are rewritten (and reloaded) at once."""
    from core import db  # noqa: PLC0415 - the command line imports what it uses
    from core.errors import AnxinError  # noqa: PLC0415
    from core.settings import load_settings  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="anxin devices", description=main_credentials.__doc__)
    parser.add_argument("action", choices=["rotate", "revoke"])
    parser.add_argument("device_id")
    _add_file_arguments(parser, required=False)
    args = parser.parse_args(argv)
    files = (args.password_file, args.acl_file, args.service_password_file, args.service_acl_file)
    if any(f is None for f in files) and any(f is not None for f in files):
        parser.error(
            "--password-file, --acl-file, --service-password-file and --service-acl-file "
            "go together"
        )
    try:
        settings = load_settings()
        with db.connect(settings.db.url) as conn:
            if args.action == "rotate":
                secret = rotate(conn, args.device_id)
                print(f"rotated {args.device_id}")
                print(f"secret (shown once, store it in the device): {secret}")
            else:
                revoke(conn, args.device_id)
                print(f"revoked {args.device_id}")
            if args.password_file is not None:
                _write_from_args(conn, settings, args)
            else:
                print("run `anxin devices broker-auth` and reload the broker for it to take effect")
    except (AnxinError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
