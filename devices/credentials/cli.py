"""The ``anxin broker-auth`` and ``anxin credentials`` command lines."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from devices.credentials.accounts import (
    CredentialsError,
    ServiceAccount,
    ServiceRole,
)
from devices.credentials.broker import (
    BrokerPaths,
    write_broker_files,
)
from devices.credentials.store import (
    revoke,
    rotate,
)
from devices.registry import RegistryError


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
