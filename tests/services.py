"""Real services for integration tests: databases, brokers, the ingester as a process.

Shared services (the PostgreSQL and Mosquitto already running) are used with a database and a
topic prefix of each test's own. Tests that restart a service start a private instance on a
free port (Mosquitto with the project's configuration, a PostgreSQL cluster of their own).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core import db
from core.mqtt import IncomingMessage, MqttClient
from core.settings import Settings, load_settings
from demo.receiver import DemoReceiver

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get(
    "ANXIN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SHARED_BROKER = os.environ.get("ANXIN_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class HandedOn:
    """A batch sink that counts the accelerometer bursts the ingester handed to its sinks.

    The ingester calls its sinks one after another for each batch, in the order they were
    added. Added after the detection sink, a count of N says the detection sink (and the
    listeners it calls) has finished with the first N bursts: a test that then finds no
    finding for a device knows there will be none from what it sent, without a sleep.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bursts = 0

    def __call__(self, batch: Any, now_ms: int) -> None:
        with self._lock:
            self.bursts += len(batch.accel)


def mqtt_subscriber(
    host: str, port: int, pattern: str, *, v5: bool = True
) -> tuple[MqttClient, list[IncomingMessage]]:
    """A client subscribed to ``pattern`` at QoS 1 (its network loop in paho's thread), and the
    list its messages arrive in."""
    got: list[IncomingMessage] = []
    lock = threading.Lock()
    subscribed = threading.Event()
    mids: list[int | None] = []

    def on_message(msg: IncomingMessage) -> None:
        with lock:
            got.append(msg)

    client = MqttClient(
        host=host, port=port, client_id=f"t-sub-{uuid.uuid4().hex[:8]}", protocol_v5=v5
    )
    client.on_message(on_message)

    def on_connect(_present: bool) -> None:
        mids.append(client.subscribe([pattern], qos=1))
        subscribed.set()

    client.on_connect(on_connect)
    client.connect()
    assert subscribed.wait(30)
    assert client.wait_subscribed(mids[0], 30), f"the broker did not grant {pattern!r}"
    return client, got


def ingest_settings(db_url: str, broker_url: str, topic_prefix: str) -> Settings:
    """Settings of an in-process ingester on this test's database, broker and topic prefix
    (a session of its own, no metrics port, the registry reread every second)."""
    return load_settings(
        db={"url": db_url},
        mqtt={
            "url": broker_url,
            "topic_prefix": topic_prefix,
            "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
        },
        ingest={"metrics_port": 0, "registry_refresh_s": 1.0},
    )


def ingest_env(db_url: str, broker_url: str, prefix: str) -> dict[str, str]:
    """The environment of an ``anxin ingest`` process (:class:`IngestProcess`) on this test's
    database, broker and topic prefix: a session of its own, no metrics port."""
    return {
        "ANXIN_DB__URL": db_url,
        "ANXIN_MQTT__URL": broker_url,
        "ANXIN_MQTT__TOPIC_PREFIX": prefix,
        "ANXIN_MQTT__CLIENT_ID": f"ingest-{uuid.uuid4().hex[:8]}",
        "ANXIN_INGEST__METRICS_PORT": "0",
        "ANXIN_INGEST__LOG_EVERY_S": "1",
        "ANXIN_INGEST__REGISTRY_REFRESH_S": "1",
    }


def with_database(admin_url: str, name: str) -> str:
    """The same server URL with another database name."""
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextlib.contextmanager
def fresh_database(admin_url: str = ADMIN_URL, *, migrate: bool = True) -> Iterator[str]:
    """A new database for one test, migrated, dropped afterwards."""
    name = f"anxin_t_{uuid.uuid4().hex[:12]}"
    db.create_database(admin_url, name)
    url = with_database(admin_url, name)
    try:
        if migrate:
            db.upgrade(url)
        yield url
    finally:
        db.drop_database(admin_url, name)


def render_broker_config(
    port: int,
    data_dir: Path,
    *,
    anonymous: bool = True,
    extra: str = "",
    password_file: Path | None = None,
    acl_file: Path | None = None,
    service_port: int | None = None,
    service_password_file: Path | None = None,
    service_acl_file: Path | None = None,
) -> Path:
    """The project's Mosquitto configuration with this test's ports and folders (and, when
    given, this test's password and ACL files for the device and the service listener).

    Anonymous (the default): both listeners let anyone in, and the device listener keeps the
    client ids clients choose (``use_username_as_clientid`` needs a username)."""
    text = (ROOT / "deploy" / "mosquitto" / "anxin.conf").read_text()
    lines = []
    listeners = 0
    for raw in text.splitlines():
        line = raw
        service = listeners > 1
        if raw.startswith("listener "):
            listeners += 1
            chosen = port if listeners == 1 else (service_port or free_port())
            line = f"listener {chosen} 127.0.0.1"
        elif raw.startswith("persistence_location"):
            line = f"persistence_location {data_dir}/"
        elif raw.startswith("allow_anonymous") and anonymous:
            line = "allow_anonymous true"
        elif anonymous and raw.startswith(("password_file", "acl_file", "use_username_as")):
            continue
        elif raw.startswith(("password_file", "acl_file")):
            key = raw.split()[0]
            given = {
                ("password_file", False): password_file,
                ("acl_file", False): acl_file,
                ("password_file", True): service_password_file,
                ("acl_file", True): service_acl_file,
            }[key, service]
            if given is None:
                # A listener without files of the test's own lets nobody in.
                given = data_dir / f"empty-{key}-{listeners}"
                given.write_text("")
                given.chmod(0o644)
            line = f"{key} {given}"
        lines.append(line)
    for raw in extra.splitlines():
        # An addition such as the TLS listener follows the same rules (its own port stays).
        if anonymous and raw.startswith(("password_file", "acl_file", "use_username_as")):
            continue
        lines.append("allow_anonymous true" if anonymous and raw.startswith("allow_anon") else raw)
    path = data_dir / "mosquitto.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


class PrivateBroker:
    """A Mosquitto of the test's own, with the project's configuration, that can restart.

    ``port``/``url`` are the device listener, ``service_port``/``service_url`` the listener of
    the service's own accounts (the ingester's).
    """

    def __init__(
        self,
        *,
        anonymous: bool = True,
        extra: str = "",
        password_file: Path | None = None,
        acl_file: Path | None = None,
        service_password_file: Path | None = None,
        service_acl_file: Path | None = None,
    ) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("the mosquitto binary is not installed")
        self.port = free_port()
        self.service_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="anxin-mq-"))
        if os.geteuid() == 0:
            # Mosquitto drops root privileges to user 'mosquitto' and must own its folder.
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam("mosquitto")
                os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.config = render_broker_config(
            self.port,
            self.dir,
            anonymous=anonymous,
            extra=extra,
            password_file=password_file,
            acl_file=acl_file,
            service_port=self.service_port,
            service_password_file=service_password_file,
            service_acl_file=service_acl_file,
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.service_url = f"mqtt://127.0.0.1:{self.service_port}"

    def start(self) -> None:
        with open(self.dir / "broker.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.config)], stdout=log, stderr=log
            )
        wait_until(
            lambda: (
                port_open("127.0.0.1", self.port, 0.2)
                and port_open("127.0.0.1", self.service_port, 0.2)
            ),
            10,
            "the private broker to listen",
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)
        self.proc = None

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    return Path(found[-1]).parent


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own on a free port, that can restart."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="anxin-pg-"))
        self.data = self.dir / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            # The server refuses to run as root: run it as the 'postgres' system user.
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ]
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        subprocess.run([*self._as_user, *cmd], check=True, capture_output=True)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.dir / "log"),
                "-w",
                "start",
            ]
        )

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            )

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class IngestProcess:
    """``anxin ingest`` as a child process, as an operator runs it."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        before = self._subscriptions()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "ingest", *self.args],
                env=self.env,
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        wait_until(lambda: self._subscriptions() > before, 30, "the ingester to subscribe")

    def _subscriptions(self) -> int:
        if not self.log_path.exists():
            return 0
        return self.log_path.read_bytes().count(b"subscribed to")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serve_api(app: object, *, access_log: bool = True) -> Iterator[str]:
    """Run an ASGI app under uvicorn on a free port, as ``anxin api`` does; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=port,
            log_level="info",
            access_log=access_log,
            lifespan="on",
            log_config=None,  # the test's logging (caplog) sees the records
        )
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 20, "the API to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def load_apprise_plugins() -> None:
    """Load apprise's plugins once with its own DeprecationWarning silenced.

    apprise (2.x, on Python 3.11) imports the stdlib ``imghdr`` while loading its email plugin,
    which warns that ``imghdr`` goes away in 3.13; with ``filterwarnings = error`` that would
    fail the first test that touches apprise. Only this one warning is silenced, only here.
    """
    import warnings

    import apprise

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="'imghdr' is deprecated", category=DeprecationWarning
        )
        apprise.Apprise().add("json://localhost/")
        manager = apprise.manager_plugins.NotificationManager()  # type: ignore[no-untyped-call]
        "anxin-probe" in manager  # noqa: B015 - the look-up loads the modules


#: The 120 push secret the tests share with the delivery worker and the receiver.
SECRET = "test-120-shared-secret"


def serve_receiver(**behaviour: Any) -> Generator[DemoReceiver, None, None]:
    """The demo's 120 centre and phones (demo/receiver.py) on a free port of 127.0.0.1, with
    the tests' secret, until the generator is closed; ``behaviour``: its script of answers
    and pauses (:class:`demo.receiver.DemoReceiver`)."""
    with DemoReceiver(SECRET, keep=100_000, **behaviour) as receiver:
        yield receiver
