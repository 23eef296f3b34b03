"""Writing the broker's password and ACL files atomically and signalling it to reload them."""

from __future__ import annotations

import contextlib
import grp
import os
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from devices.credentials.accounts import (
    BrokerFiles,
    CredentialsError,
    ServiceAccount,
    check_names,
    render_acl,
    render_password_file,
    render_service_acl,
    render_service_password_file,
    select_accounts,
)
from devices.credentials.store import (
    load_device_accounts,
)

FILE_MODE = 0o640


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
