"""``anxin demo``: the whole pipeline on one machine, with a live console, until Ctrl-C.

Finds the configured PostgreSQL and MQTT broker (``ANXIN_DB__URL``, ``ANXIN_MQTT__URL``) and,
when one is unreachable, starts an embedded one (:mod:`core.embedded`) unless told not to.
Then: migrate, register simulated wristbands, run the ingester, the HTTP API with the console
and a paced simulator (one message per device per second), each in a thread. Every
``BAD_EVERY_S`` seconds one malformed message and one with an absurd heart rate go out, so
the dead-letter path shows. A line of figures every ``REPORT_EVERY_S`` seconds; totals on exit.

``ANXIN_DEMO_SECONDS`` (or ``seconds=``) stops the demo after that long, for tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal, TextIO, cast
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from api.app import create_app
from core import db
from core.embedded import (
    EmbeddedBroker,
    EmbeddedError,
    EmbeddedPostgres,
    PostgresProbe,
    free_port,
    probe_postgres,
    reachable_broker,
)
from core.errors import AnxinError, ConfigError, DatabaseError
from core.mqtt import MqttClient, MqttError, client_for
from core.settings import Settings, load_settings
from devices import access
from devices import protocol as proto
from devices.registry import ensure_devices
from ingest.runner import run_ingest
from ingest.service import IngestService
from simulators.wearable import WearableFleet, publish_fleet

log = logging.getLogger(__name__)

Embedded = Literal["auto", "always", "never"]
DEVICE_PREFIX = "demo-wb"
REPORT_EVERY_S = 5.0
BAD_EVERY_S = 15.0
FIRST_BAD_AFTER_S = 3.0
SECONDS_ENV = "ANXIN_DEMO_SECONDS"
# Libraries whose INFO lines would drown the demo's own report.
_QUIET_LOGGERS = (
    "amqtt",
    "transitions",
    "uvicorn",
    "uvicorn.error",
    "ingest",
    "psycopg.pool",
    "core",
    "api.app",
)


class DemoError(AnxinError):
    """The demo cannot start: a service is unreachable and no embedded one may be used."""


def _say(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


def _seconds_from_env() -> float | None:
    raw = os.environ.get(SECONDS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(
            f"Config {SECONDS_ENV!r} has value {raw!r}. Not a number of seconds."
        ) from exc
    if value <= 0:
        raise ConfigError(
            f"Config {SECONDS_ENV!r} has value {raw!r}. Expected more than 0 seconds."
        )
    return value


def _port_free(host: str, port: int) -> bool:
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


def _replace(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """A copy of the (frozen) settings with some fields of some sections changed."""
    update = {
        name: getattr(settings, name).model_copy(update=fields) for name, fields in sections.items()
    }
    return settings.model_copy(update=update)


# -- finding or starting the services -------------------------------------------------------


def _database(
    settings: Settings, embedded: Embedded, stack: contextlib.ExitStack, out: TextIO
) -> str:
    url = settings.db.url
    shown = db.redact_url(url)
    if embedded != "always":
        state, message = probe_postgres(url, timeout=min(3.0, settings.db.connect_timeout_s))
        if state is PostgresProbe.READY:
            _say(out, f"database:  {shown}")
            return url
        if state is PostgresProbe.NO_DATABASE:
            admin, name = _admin_url(url)
            db.create_database(admin, name)
            _say(out, f"database:  {shown} (created database {name!r})")
            return url
        if state is PostgresProbe.REFUSED:
            raise DemoError(f"The PostgreSQL at {shown} refused the connection: {message}")
        if embedded == "never":
            raise DemoError(
                f"No PostgreSQL answers at {shown} ({message or 'unreachable'}). Start one, set "
                "ANXIN_DB__URL, or run with --embedded auto."
            )
        _say(out, f"database:  nothing answers at {shown}; starting an embedded PostgreSQL ...")
    else:
        _say(out, "database:  starting an embedded PostgreSQL (--embedded always) ...")
    server = stack.enter_context(EmbeddedPostgres())
    who = f", running as user {server.run_as!r} since we are root" if server.run_as else ""
    _say(out, f"database:  embedded PostgreSQL at {server.url} (thrown away on exit{who})")
    return server.url


def _broker(
    settings: Settings, embedded: Embedded, stack: contextlib.ExitStack, out: TextIO
) -> str:
    mqtt = settings.mqtt
    if embedded != "always":
        if reachable_broker(mqtt.host, mqtt.port, timeout=3.0, tls=mqtt.tls):
            _say(out, f"broker:    {mqtt.url}")
            return mqtt.url
        if embedded == "never":
            raise DemoError(
                f"No MQTT broker answers at {mqtt.url}. Start one (Mosquitto), set "
                "ANXIN_MQTT__URL, or run with --embedded auto."
            )
        _say(out, f"broker:    nothing answers at {mqtt.url}; starting an embedded broker ...")
    else:
        _say(out, "broker:    starting an embedded broker (--embedded always) ...")
    broker = stack.enter_context(EmbeddedBroker())
    _say(out, f"broker:    embedded amqtt broker at {broker.url} (in this process)")
    return broker.url


# -- the worker threads ---------------------------------------------------------------------


@dataclass
class _Worker:
    name: str
    thread: threading.Thread
    error: BaseException | None = None


@dataclass
class _Demo:
    settings: Settings
    device_ids: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    sim_stop: threading.Event = field(default_factory=threading.Event)
    ingest_stop: threading.Event = field(default_factory=threading.Event)
    workers: list[_Worker] = field(default_factory=list)
    service: IngestService | None = None
    published: int = 0
    bad_published: int = 0

    def spawn(self, name: str, target: Callable[[], None]) -> _Worker:
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the main thread, which stops the demo
                worker.error = exc
                self.stop.set()

        worker = _Worker(name, threading.Thread(target=body, name=f"demo-{name}", daemon=True))
        self.workers.append(worker)
        worker.thread.start()
        return worker

    # The simulator: paced, one message per device per second, plus bad ones now and then.
    def simulate(self, client: MqttClient) -> None:
        prefix = self.settings.mqtt.topic_prefix
        fleet = WearableFleet(self.device_ids).with_prefix(prefix)
        started = time.monotonic()
        next_bad = started + FIRST_BAD_AFTER_S
        second = 0
        try:
            while not self.sim_stop.is_set():
                report = publish_fleet(client, fleet, seconds=1, start_seq=second)
                self.published += report.sent
                now = time.monotonic()
                if now >= next_bad:
                    self.bad_published += self._publish_bad(client, prefix, second)
                    next_bad += BAD_EVERY_S
                second += 1
                wake = started + second
                while not self.sim_stop.is_set() and time.monotonic() < wake:
                    client.pump(min(0.05, max(0.0, wake - time.monotonic())))
            deadline = time.monotonic() + 5.0
            while client.pending_out() and time.monotonic() < deadline:
                client.pump(0.02)
        finally:
            client.stop()

    def _publish_bad(self, client: MqttClient, prefix: str, seq: int) -> int:
        device = self.device_ids[0]
        topic = proto.topic(prefix, device, proto.Channel.TELEMETRY)
        # Cut short in the middle of an object: not JSON at all.
        client.publish(
            topic, b'{"v":1,"ts":' + str(time.time_ns() // 1_000_000).encode() + b',"seq":', qos=1
        )
        absurd = proto.ReadingWire(
            ts=time.time_ns() // 1_000_000,
            seq=1_000_000_000 + seq,
            vitals=proto.Vitals(heart_rate=900.0, spo2=97.0),
        )
        client.publish(topic, proto.encode_telemetry([absurd]), qos=1)
        return 2


def _counts(url: str) -> tuple[int, int, dict[str, int]]:
    with db.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM vitals), (SELECT count(*) FROM accel_bursts)"
        ).fetchone()
        reasons = dict(
            conn.execute(
                "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"
            ).fetchall()
        )
    vitals, bursts = (int(row[0]), int(row[1])) if row else (0, 0)
    return vitals, bursts, {str(k): int(v) for k, v in reasons.items()}


def _reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none"


@contextlib.contextmanager
def _signals_stop(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (main thread only; elsewhere Python cannot install them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    levels = {name: logging.getLogger(name).level for name in (*_QUIET_LOGGERS, "ingest.service")}
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():  # restored for whoever runs next in this process
            logging.getLogger(name).setLevel(level)


# -- the command ----------------------------------------------------------------------------


def run_demo(
    devices: int,
    embedded: str,
    *,
    seconds: float | None = None,
    settings: Settings | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the demo until Ctrl-C (SIGINT/SIGTERM) or ``seconds`` (``ANXIN_DEMO_SECONDS``).

    Args:
        devices: simulated wristbands, ``demo-wb-00000`` on.
        embedded: ``auto`` starts an embedded PostgreSQL or broker when the configured one is
            unreachable, ``always`` uses embedded ones only, ``never`` fails instead.
        seconds: stop after this long; the environment's ``ANXIN_DEMO_SECONDS`` when None.
        settings: the settings; :func:`core.settings.load_settings` when None.
        out: where the report goes; standard output when None.

    Returns:
        0 after a clean stop, 1 when a part of the pipeline failed, 2 when it could not start.
    """
    stream = out or sys.stdout
    if embedded not in ("auto", "always", "never"):
        raise ConfigError(
            f"Option 'embedded' has value {embedded!r}. Expected auto, always or never."
        )
    if not 1 <= devices <= 100_000:
        raise ConfigError(f"Option 'devices' has value {devices!r}. Expected 1 to 100000.")
    limit = seconds if seconds is not None else _seconds_from_env()
    base = settings or load_settings()
    stop = threading.Event()
    with _signals_stop(stop), _quiet_libraries(), contextlib.ExitStack() as stack:
        try:
            demo = _start(
                base,
                devices=devices,
                embedded=cast(Embedded, embedded),
                stack=stack,
                out=stream,
                stop=stop,
            )
        except (DemoError, EmbeddedError, MqttError, DatabaseError) as exc:
            _say(stream, f"anxin demo: {exc}")
            return 2
        return _run(demo, stream, limit)


def _start(
    base: Settings,
    *,
    devices: int,
    embedded: Embedded,
    stack: contextlib.ExitStack,
    out: TextIO,
    stop: threading.Event,
) -> _Demo:
    _say(out, "Anxin demo: finding the database and the broker")
    db_url = _database(base, embedded, stack, out)
    mqtt_url = _broker(base, embedded, stack, out)
    api_host = base.api.host
    api_port = base.api.port
    if api_port == 0 or not _port_free(api_host, api_port):
        api_port = free_port(api_host)
    metrics_port = base.ingest.metrics_port
    if metrics_port and not _port_free(base.ingest.metrics_host, metrics_port):
        metrics_port = 0
    settings = _replace(
        base,
        db={"url": db_url},
        mqtt={"url": mqtt_url},
        api={"port": api_port},
        ingest={"metrics_port": metrics_port},
    )
    result = db.upgrade(db_url)
    ids = [f"{DEVICE_PREFIX}-{i:05d}" for i in range(devices)]
    with db.connect(db_url) as conn:
        added = ensure_devices(conn, ids)
        # The console reads the stream through the API, as an operator: a token for today.
        console_principal = access.create_principal(conn, "demo console", access.Role.OPERATOR)
        console_token = access.issue_token(conn, console_principal, days=1).token
        conn.commit()
    _say(
        out,
        f"schema:    version {result.current} ({result.mode} mode); {devices} demo wristbands "
        f"({added} newly registered)",
    )

    demo = _Demo(settings, ids, stop=stop)
    # Stop order, last in first out: simulator, ingester (drains), API, then the services.
    ingest_client = client_for(
        settings.mqtt,
        persistent=True,
        manual_ack=True,
        receive_maximum=settings.mqtt.receive_maximum,
    )
    service = IngestService(settings, client=ingest_client)
    demo.service = service

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=api_host,
            port=api_port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )
    api_worker = demo.spawn("api", server.run)

    def stop_api() -> None:
        server.should_exit = True
        api_worker.thread.join(timeout=10)

    stack.callback(stop_api)
    ingest_worker = demo.spawn("ingest", lambda: run_ingest(settings, demo.ingest_stop, service))

    def stop_ingest() -> None:
        demo.ingest_stop.set()
        ingest_worker.thread.join(timeout=30)

    stack.callback(stop_ingest)
    if not ingest_client.connected.wait(15):
        raise DemoError(f"The ingester did not connect to the broker at {mqtt_url}.")
    deadline = time.monotonic() + 10
    while not server.started and api_worker.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise DemoError(f"The API did not start on {api_host}:{api_port}.")
    time.sleep(0.3)  # let the ingester's SUBSCRIBE reach the broker before the first publish

    sim_client = client_for(settings.mqtt, client_id=f"{settings.mqtt.client_id}-demo-sim"[:64])
    sim_client.connect_inline()
    sim_worker = demo.spawn("simulator", lambda: demo.simulate(sim_client))

    def stop_sim() -> None:
        demo.sim_stop.set()
        sim_worker.thread.join(timeout=15)

    stack.callback(stop_sim)

    shown_host = "127.0.0.1" if api_host in ("0.0.0.0", "::", "") else api_host  # noqa: S104 - a display rule
    url = f"http://{shown_host}:{api_port}/#token={console_token}"
    bar = "=" * (len(url) + 22)
    _say(out)
    _say(out, bar)
    _say(out, f"  Anxin live console: {url}")
    _say(out, bar)
    if metrics_port:
        _say(out, f"ingest metrics: http://{settings.ingest.metrics_host}:{metrics_port}/metrics")
    _say(
        out,
        f"{devices} wristbands publish once a second; a malformed message and a heart rate of 900 "
        f"go out every {BAD_EVERY_S:.0f} s. Ctrl-C stops.",
    )
    _say(out)
    return demo


def _run(demo: _Demo, out: TextIO, limit: float | None) -> int:
    service = demo.service
    assert service is not None  # noqa: S101 - set by _start()
    started = time.monotonic()
    last_t = started
    last_received = 0
    url = demo.settings.db.url
    try:
        while True:
            wait = REPORT_EVERY_S
            if limit is not None:
                wait = min(wait, limit - (time.monotonic() - started))
            if wait <= 0 or demo.stop.wait(wait) or wait < REPORT_EVERY_S:
                break  # asked to stop, or the time limit is reached
            now = time.monotonic()
            # The ingester's running totals: a plain dict updated by its writer thread.
            received = service.totals()["received"]
            rate = (received - last_received) / (now - last_t)
            last_received, last_t = received, now
            try:
                vitals, bursts, reasons = _counts(url)
            except DatabaseError as exc:
                _say(out, f"[{now - started:5.0f} s] database unavailable: {exc}")
                continue
            _say(
                out,
                f"[{now - started:5.0f} s] stored {vitals} vitals, {bursts} accel bursts | "
                f"{rate:.0f} msg/s | dead letters: {_reasons_text(reasons)}",
            )
    finally:
        _say(out, "stopping ...")
    return _finish(demo, out, service, time.monotonic() - started)


def _finish(demo: _Demo, out: TextIO, service: IngestService, elapsed: float) -> int:
    # Stop the producers first and let the ingester drain what it received.
    demo.sim_stop.set()
    for worker in demo.workers:
        if worker.name == "simulator":
            worker.thread.join(timeout=15)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and service.totals()["received"] < demo.published + demo.bad_published:
        time.sleep(0.1)
    # Its "disconnected from the broker" warning is expected now.
    logging.getLogger("ingest.service").setLevel(logging.ERROR)
    demo.ingest_stop.set()
    for worker in demo.workers:
        if worker.name == "ingest":
            worker.thread.join(timeout=30)
    failed = [w for w in demo.workers if w.error is not None]
    totals = service.totals()
    try:
        vitals, bursts, reasons = _counts(demo.settings.db.url)
    except DatabaseError:
        vitals, bursts, reasons = -1, -1, {}
    _say(
        out,
        f"totals after {elapsed:.0f} s: published {demo.published} messages "
        f"(+{demo.bad_published} bad ones); ingester received {totals['received']}, stored "
        f"{totals['stored']} rows, dead-lettered {totals['dead']}, {totals['dup']} duplicates",
    )
    _say(
        out,
        f"in the database: {vitals} vitals, {bursts} accel bursts; "
        f"dead letters: {_reasons_text(reasons)}",
    )
    for worker in failed:
        _say(out, f"anxin demo: the {worker.name} stopped with an error: {worker.error!r}")
    return 1 if failed else 0
