"""Run the ingest service with its metrics endpoint until asked to stop."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

import psycopg
from prometheus_client import start_http_server

from alerts.commands import MqttCommandSender
from alerts.delivery import FirstPush
from alerts.listener import AlertListener
from alerts.service import AlertService, PostgresDirectory
from core import db
from core.clock import SystemClock
from core.settings import Settings
from devices.crypto import Keyring
from devices.repository import channel_opener
from ingest import lanes
from ingest.detection import STAGES, URGENT_STAGES, DetectionSink
from ingest.partitioned import PartitionedIngest
from ingest.recovery import Recovery
from ingest.service import IngestService

log = logging.getLogger(__name__)


def run_ingest(
    settings: Settings,
    stop: threading.Event,
    service: IngestService | PartitionedIngest | None = None,
) -> None:
    """Migrate, serve /metrics, and ingest until ``stop`` is set."""
    db.upgrade(settings.db.url, require_timescale=settings.db.require_timescale)
    nice = settings.ingest.nice
    if nice is None and settings.ingest.lane == "telemetry":
        nice = 10
    if nice:
        os.nice(nice)  # relative to the inherited priority, as the nice command does
    log.info(
        "ingester lane: %s (nice %d)", settings.ingest.lane, os.getpriority(os.PRIO_PROCESS, 0)
    )
    sys.setswitchinterval(settings.ingest.switch_interval_ms / 1000.0)
    if service is None:
        engine = settings.ingest.source == "engine"
        service = PartitionedIngest(settings) if engine else IngestService(settings)
    sink: DetectionSink | None = None
    alert_listener: AlertListener | None = None
    pusher: FirstPush | None = None
    commands: MqttCommandSender | None = None
    recovery: Recovery | None = None
    lane = settings.ingest.lane
    if settings.ingest.detection:
        # A lambda, not service.devices.get: the snapshot is replaced on every refresh.
        sink = DetectionSink(
            settings.db.url,
            lambda device_id: service.devices.get(device_id),  # noqa: PLW0108
            registry=service.metrics.registry,
            stages=URGENT_STAGES if lane == "urgent" else STAGES,
        )
        service.add_sink(sink)
        # Findings raise alerts (and write their deliveries to the outbox) on the writer thread,
        # right after they are stored.
        directory = PostgresDirectory(
            settings.alerts.sms_url, opener=channel_opener(Keyring.from_settings(settings.registry))
        )
        first_push = settings.alerts.first_push_120
        if first_push is None:
            first_push = lane == "urgent"
        if first_push:
            pusher = FirstPush(settings).start()
        # "Are you all right? Press to cancel" to the device of a suspected fall, on the
        # device's cmd topic (connects at the first command, then stays connected).
        commands = MqttCommandSender(
            settings.mqtt, client_id=f"{lanes.client_id(settings.mqtt.client_id, lane)}-commands"
        )
        alert_listener = AlertListener(
            lambda: db.connect(settings.db.url, autocommit=True),
            AlertService(
                settings.alerts,
                directory,
                commands=commands,
                claim_120_s=settings.alerts.delivery_lease_s if pusher else None,
            ),
            pusher=pusher,
        )
        sink.add_listener(alert_listener)
        recovery = Recovery(
            sink,
            alert_listener,
            grace_s=settings.ingest.sweep_grace_s,
            replay_window_s=settings.ingest.replay_window_s,
            registry=service.metrics.registry,
        )
        if isinstance(service, PartitionedIngest):
            # Partitions change hands: the taker loads their devices' state and replays their
            # bursts; whoever lets go saves state first.
            service.on_take_over(
                recovery.take_over,
                lambda s=sink: s.persist(SystemClock().now_ms(), wait=True),  # type: ignore[misc]
            )
    if settings.ingest.metrics_port:
        server, _thread = start_http_server(
            settings.ingest.metrics_port,
            addr=settings.ingest.metrics_host,
            registry=service.metrics.registry,
        )
        log.info(
            "metrics on http://%s:%d/metrics",
            settings.ingest.metrics_host,
            settings.ingest.metrics_port,
        )
    else:
        server = None

    def stop_when_asked() -> None:
        stop.wait()
        service.stop()

    watcher = threading.Thread(target=stop_when_asked, name="ingest-stop", daemon=True)
    watcher.start()
    sweeper: threading.Thread | None = None
    try:
        if recovery is not None:
            # What a crash left undone, before the first new message: the registry first, so
            # replayed findings name their elders.
            service.load_registry()
            if isinstance(service, PartitionedIngest):
                # No replay yet: each partition's is done when this ingester takes it.
                _until_done(lambda r=recovery: r.on_start(replay=False), stop)  # type: ignore[misc]
            else:
                _until_done(recovery.on_start, stop)
            sweeper = threading.Thread(
                target=recovery.run,
                args=(stop, settings.ingest.sweep_every_s),
                name="ingest-sweep",
                daemon=True,
            )
            sweeper.start()
        if not stop.is_set():
            service.run()
    finally:
        if sink is not None:
            sink.close()  # saves the detectors' per-device state
        if alert_listener is not None:
            alert_listener.close()
        if pusher is not None:
            pusher.close()
        if commands is not None:
            commands.close()
        if server is not None:
            server.shutdown()


def _until_done(action: Callable[[], object], stop: threading.Event) -> None:
    """Run ``action`` until it succeeds (the database may be starting) or ``stop`` is set."""
    delay = 0.5
    while not stop.is_set():
        try:
            action()
            return
        except psycopg.OperationalError as exc:
            log.warning("recovery at start waits for the database (%s)", str(exc).strip()[:200])
            stop.wait(delay)
            delay = min(10.0, delay * 2)
