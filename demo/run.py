"""``anxin demo``: the whole pipeline on one machine, with a live console, until Ctrl-C.

Finds the configured PostgreSQL and MQTT broker (``ANXIN_DB__URL``, ``ANXIN_MQTT__URL``) and,
when one is unreachable, starts an embedded one (:mod:`demo.embedded`) unless told not to.
Then: migrate, register simulated wristbands and one demo elder with a full (sample) emergency
profile and care circle, start a local stand-in for the 120 dispatch centre and the family's
phones (:mod:`demo.receiver`), and run the ingester (which raises alerts), the alert
delivery worker and escalation clock, the HTTP API with the console and a paced simulator (one
message per device per second), each in a thread. Every ``BAD_EVERY_S`` seconds one malformed
message and one with an absurd heart rate go out, so the dead-letter path shows; every
``SOS_EVERY_S`` seconds the demo elder's wristband sends an SOS, so an alert opens and the 120
push and the family's and the doctor's messages arrive at the receiver; the child taps the
acknowledge link in the message, and the demo operator resolves the alert ``RESOLVE_AFTER_S``
later, so the next SOS opens a new one. A few lines of figures every ``REPORT_EVERY_S``
seconds; totals on exit.

``ANXIN_DEMO_SECONDS`` (or ``seconds=``) stops the demo after that long, for tests.

The command and its loop are here; the parts are in :mod:`demo.services` (finding or starting
the database and the broker), :mod:`demo.seed` (the demo elder, the care circle and the
sample tokens), :mod:`demo.workers` (the worker threads, the simulator, the family and the
operator) and :mod:`demo.report` (the counts and the lines printed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, TextIO, cast

import uvicorn

from alerts.delivery import run_worker
from alerts.escalation import run_escalation
from alerts.service import AlertService, PostgresDirectory
from api.app import create_app
from core import db
from core.clock import SystemClock
from core.errors import ConfigError, DatabaseError
from core.mqtt import MqttError, client_for
from core.settings import Settings, load_settings
from demo.embedded import EmbeddedError, free_port
from demo.receiver import DemoReceiver
from demo.report import (
    INDENT,
    Counts,
    alerts_text,
    count_rows,
    outbox_busy,
    reasons_text,
    say,
    show_samples,
)
from demo.seed import (
    DEMO_ELDER,
    DEVICE_PREFIX,
    SCREEN_LINKS,
    close_leftover_alerts,
    ensure_demo_elder,
    sample_tokens,
)
from demo.services import DemoError, Embedded, find_broker, find_database, port_free
from demo.workers import (
    BAD_EVERY_S,
    FIRST_SOS_AFTER_S,
    SOS_EVERY_S,
    Demo,
    family_and_operator_act,
)
from devices import access
from devices import repository as registry
from devices.crypto import Keyring
from devices.registry import ensure_devices
from ingest.runner import run_ingest
from ingest.service import IngestService

log = logging.getLogger(__name__)

REPORT_EVERY_S = 5.0
SECONDS_ENV = "ANXIN_DEMO_SECONDS"
#: Deliveries still due when the demo stops get this long to go out.
DRAIN_S = 10.0
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
    "alerts",
    "apprise",
    "httpx",
)


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


def _replace(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """A copy of the (frozen) settings with some fields of some sections changed."""
    update = {
        name: getattr(settings, name).model_copy(update=fields) for name, fields in sections.items()
    }
    return settings.model_copy(update=update)


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
            say(stream, f"anxin demo: {exc}")
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
) -> Demo:
    say(out, "Anxin demo: finding the database and the broker")
    db_url = find_database(base, embedded, stack, out)
    mqtt_url = find_broker(base, embedded, stack, out)
    api_host = base.api.host
    api_port = base.api.port
    if api_port == 0 or not port_free(api_host, api_port):
        api_port = free_port(api_host)
    metrics_port = base.ingest.metrics_port
    if metrics_port and not port_free(base.ingest.metrics_host, metrics_port):
        metrics_port = 0
    shown_host = "127.0.0.1" if api_host in ("0.0.0.0", "::", "") else api_host  # noqa: S104 - a display rule
    # The 120 centre and the phones: a local receiver, with a secret of this run for the push.
    secret = secrets.token_urlsafe(24)
    receiver = stack.enter_context(DemoReceiver(secret))
    alerts = load_settings(
        alerts={
            **base.alerts.model_dump(),
            "dispatch120_url": receiver.dispatch120_url,
            "dispatch120_secret": secret,
            "operator_url": receiver.phone_url("operator"),
            "sms_url": receiver.phone_url("sms-{phone}"),
            "ack_base_url": f"http://{shown_host}:{api_port}/api/v1/ack/",
        }
    ).alerts
    settings = _replace(
        base,
        db={"url": db_url},
        # amqtt speaks MQTT 3.1.1 only; a real broker gets the service's default (MQTT 5).
        mqtt={"url": mqtt_url, **({} if mqtt_url == base.mqtt.url else {"protocol": "3.1.1"})},
        api={"port": api_port},
        ingest={"metrics_port": metrics_port},
    ).model_copy(update={"alerts": alerts})
    result = db.upgrade(db_url)
    ids = [f"{DEVICE_PREFIX}-{i:05d}" for i in range(devices)]
    keyring = Keyring.from_settings(settings.registry)
    directory = PostgresDirectory(alerts.sms_url, opener=registry.channel_opener(keyring))
    alert_service = AlertService(alerts, directory)
    with db.connect(db_url) as conn:
        added = ensure_devices(conn, ids)
        # The console reads the stream through the API, as an operator: a token for today.
        console_principal = access.create_principal(conn, "demo console", access.Role.OPERATOR)
        console_token = access.issue_token(conn, console_principal, days=1).token
        conn.commit()
        elder = ensure_demo_elder(conn, keyring, receiver, ids[0])
        conn.commit()
        tokens = sample_tokens(conn, elder, console_token)
        conn.commit()
        closed = close_leftover_alerts(conn, alert_service, DEVICE_PREFIX)
        conn.commit()
    say(
        out,
        f"schema:    version {result.current} ({result.mode} mode); {devices} demo wristbands "
        f"({added} newly registered)",
    )
    say(
        out,
        f"receiver:  stand-ins for the 120 dispatch centre and the family's phones at "
        f"http://{receiver.host}:{receiver.port}",
    )
    say(
        out,
        f"elder:     {DEMO_ELDER} wears {ids[0]}: emergency profile, a child, a work unit, a "
        f"family doctor, a partner hospital, a community (all sample data)"
        + (f"; closed {closed} live alert(s) an earlier run left" if closed else ""),
    )

    demo = Demo(settings, ids, stop=stop, receiver=receiver, alert_service=alert_service)
    # Stop order, last in first out: simulator, ingester (drains), alert workers, API, then
    # the receiver and the services.
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
            # An open screen's live stream would hold the stop for minutes otherwise.
            timeout_graceful_shutdown=3,
        )
    )
    api_worker = demo.spawn("api", server.run)

    def stop_api() -> None:
        server.should_exit = True
        api_worker.thread.join(timeout=10)

    stack.callback(stop_api)
    alert_workers = [
        demo.spawn("deliveries", lambda: run_worker(settings, demo.alerts_stop)),
        demo.spawn(
            "escalation",
            lambda: run_escalation(
                lambda: db.connect(db_url, autocommit=True),
                alert_service,
                SystemClock(),
                demo.alerts_stop,
                alerts.escalation_every_s,
            ),
        ),
    ]

    def stop_alert_workers() -> None:
        demo.alerts_stop.set()
        for worker in alert_workers:
            worker.thread.join(timeout=30)

    stack.callback(stop_alert_workers)
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

    url = f"http://{shown_host}:{api_port}/#token={console_token}"
    bar = "=" * (len(url) + 22)
    say(out)
    say(out, bar)
    say(out, f"  Anxin live console: {url}")
    say(
        out,
        "  The screens of the people who act (each link signs in with a sample token for today):",
    )
    for label, path in SCREEN_LINKS:
        say(out, f"    {label:<24} http://{shown_host}:{api_port}{path}#token={tokens[path]}")
    say(out, bar)
    if metrics_port:
        say(out, f"ingest metrics: http://{settings.ingest.metrics_host}:{metrics_port}/metrics")
    say(
        out,
        f"{devices} wristbands publish once a second; a malformed message and a heart rate of 900 "
        f"go out every {BAD_EVERY_S:.0f} s; the demo elder presses SOS every {SOS_EVERY_S:.0f} s "
        f"(first after {FIRST_SOS_AFTER_S:.0f} s). Ctrl-C stops.",
    )
    say(out)
    return demo


def _run(demo: Demo, out: TextIO, limit: float | None) -> int:
    service = demo.service
    receiver = demo.receiver
    assert service is not None and receiver is not None  # noqa: S101 - set by _start()
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
                counts = count_rows(url)
            except DatabaseError as exc:
                say(out, f"[{now - started:5.0f} s] database unavailable: {exc}")
                continue
            say(
                out,
                f"[{now - started:5.0f} s] stored {counts.vitals} vitals, {counts.bursts} accel "
                f"bursts | {rate:.0f} msg/s | dead letters: {reasons_text(counts.reasons)}",
            )
            say(out, f"{INDENT}{alerts_text(counts, receiver.totals())}")
            show_samples(receiver, out, demo.shown)
            try:
                family_and_operator_act(demo, out)
            except DatabaseError as exc:
                say(out, f"{INDENT}database unavailable: {exc}")
    finally:
        say(out, "stopping ...")
    return _finish(demo, out, service, time.monotonic() - started)


def _finish(demo: Demo, out: TextIO, service: IngestService, elapsed: float) -> int:
    receiver = demo.receiver
    assert receiver is not None  # noqa: S101 - set by _start()
    # Stop the producers first and let the ingester drain what it received.
    demo.sim_stop.set()
    for worker in demo.workers:
        if worker.name == "simulator":
            worker.thread.join(timeout=15)
    sent = demo.published + demo.bad_published + demo.sos_published
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and service.totals()["received"] < sent:
        time.sleep(0.1)
    # Its "disconnected from the broker" warning is expected now.
    logging.getLogger("ingest.service").setLevel(logging.ERROR)
    demo.ingest_stop.set()
    for worker in demo.workers:
        if worker.name == "ingest":
            worker.thread.join(timeout=30)
    # Then the alert workers, once what is due in the outbox went out (retries wait).
    deadline = time.monotonic() + DRAIN_S
    with contextlib.suppress(DatabaseError):
        while time.monotonic() < deadline and outbox_busy(demo.settings.db.url):
            time.sleep(0.2)
    demo.alerts_stop.set()
    for worker in demo.workers:
        if worker.name in ("deliveries", "escalation"):
            worker.thread.join(timeout=30)
    failed = [w for w in demo.workers if w.error is not None]
    totals = service.totals()
    try:
        counts: Counts | None = count_rows(demo.settings.db.url)
    except DatabaseError:
        counts = None
    say(
        out,
        f"totals after {elapsed:.0f} s: published {demo.published} messages "
        f"(+{demo.bad_published} bad ones, {demo.sos_published} SOS); ingester received "
        f"{totals['received']}, stored {totals['stored']} rows, dead-lettered {totals['dead']}, "
        f"{totals['dup']} duplicates",
    )
    if counts is None:
        say(out, "in the database: unavailable")
    else:
        say(
            out,
            f"in the database: {counts.vitals} vitals, {counts.bursts} accel bursts; "
            f"dead letters: {reasons_text(counts.reasons)}",
        )
        say(out, f"and then: {alerts_text(counts, receiver.totals())}")
    show_samples(receiver, out, demo.shown)
    for worker in failed:
        say(out, f"anxin demo: the {worker.name} stopped with an error: {worker.error!r}")
    return 1 if failed else 0
