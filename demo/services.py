"""Finding the database and the broker ``anxin demo`` uses, or starting embedded ones
(:mod:`demo.embedded`) when the configured ones are unreachable and ``--embedded`` allows it.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Literal, TextIO
from urllib.parse import urlsplit, urlunsplit

from core import db
from core.errors import AnxinError
from core.settings import Settings
from demo.embedded import PostgresProbe, probe_postgres, reachable_broker
from demo.embedded_broker import EmbeddedBroker
from demo.embedded_postgres import EmbeddedPostgres
from demo.report import say

Embedded = Literal["auto", "always", "never"]


class DemoError(AnxinError):
    """The demo cannot start: a service is unreachable and no embedded one may be used."""


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _admin_url(url: str) -> tuple[str, str]:
    """The same server's ``postgres`` maintenance database, and the database name of ``url``."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or (parts.username or "postgres")
    return urlunsplit(parts._replace(path="/postgres")), name


# -- finding or starting the services -------------------------------------------------------


def find_database(
    settings: Settings, embedded: Embedded, stack: contextlib.ExitStack, out: TextIO
) -> str:
    url = settings.db.url
    shown = db.redact_url(url)
    if embedded != "always":
        state, message = probe_postgres(url, timeout=min(3.0, settings.db.connect_timeout_s))
        if state is PostgresProbe.READY:
            say(out, f"database:  {shown}")
            return url
        if state is PostgresProbe.NO_DATABASE:
            admin, name = _admin_url(url)
            db.create_database(admin, name)
            say(out, f"database:  {shown} (created database {name!r})")
            return url
        if state is PostgresProbe.REFUSED:
            raise DemoError(f"The PostgreSQL at {shown} refused the connection: {message}")
        if embedded == "never":
            raise DemoError(
                f"No PostgreSQL answers at {shown} ({message or 'unreachable'}). Start one, set "
                "ANXIN_DB__URL, or run with --embedded auto."
            )
        say(out, f"database:  nothing answers at {shown}; starting an embedded PostgreSQL ...")
    else:
        say(out, "database:  starting an embedded PostgreSQL (--embedded always) ...")
    server = stack.enter_context(EmbeddedPostgres())
    who = f", running as user {server.run_as!r} since we are root" if server.run_as else ""
    say(out, f"database:  embedded PostgreSQL at {server.url} (thrown away on exit{who})")
    return server.url


def find_broker(
    settings: Settings, embedded: Embedded, stack: contextlib.ExitStack, out: TextIO
) -> str:
    mqtt = settings.mqtt
    if embedded != "always":
        if reachable_broker(mqtt.host, mqtt.port, timeout=3.0, tls=mqtt.tls):
            say(out, f"broker:    {mqtt.url}")
            return mqtt.url
        if embedded == "never":
            raise DemoError(
                f"No MQTT broker answers at {mqtt.url}. Start one (Mosquitto), set "
                "ANXIN_MQTT__URL, or run with --embedded auto."
            )
        say(out, f"broker:    nothing answers at {mqtt.url}; starting an embedded broker ...")
    else:
        say(out, "broker:    starting an embedded broker (--embedded always) ...")
    broker = stack.enter_context(EmbeddedBroker())
    say(out, f"broker:    embedded amqtt broker at {broker.url} (in this process, MQTT 3.1.1)")
    return broker.url
