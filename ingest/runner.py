"""Run the ingest service with its metrics endpoint until asked to stop."""

from __future__ import annotations

import logging
import threading

from prometheus_client import start_http_server

from alerts.service import AlertListener, AlertService, PostgresDirectory
from core import db
from core.settings import Settings
from devices.crypto import Keyring
from devices.repository import channel_opener
from ingest.detection import DetectionSink
from ingest.service import IngestService

log = logging.getLogger(__name__)


def run_ingest(
    settings: Settings, stop: threading.Event, service: IngestService | None = None
) -> None:
    """Migrate, serve /metrics, and ingest until ``stop`` is set."""
    db.upgrade(settings.db.url)
    service = service or IngestService(settings)
    sink: DetectionSink | None = None
    alert_listener: AlertListener | None = None
    if settings.ingest.detection:
        # A lambda, not service.devices.get: the snapshot is replaced on every refresh.
        sink = DetectionSink(
            settings.db.url,
            lambda device_id: service.devices.get(device_id),  # noqa: PLW0108
            registry=service.metrics.registry,
        )
        service.add_sink(sink)
        # Findings raise alerts (and write their deliveries to the outbox) on the writer thread,
        # right after they are stored.
        directory = PostgresDirectory(
            settings.alerts.sms_url, opener=channel_opener(Keyring.from_settings(settings.registry))
        )
        alert_listener = AlertListener(
            lambda: db.connect(settings.db.url, autocommit=True),
            AlertService(settings.alerts, directory),
        )
        sink.add_listener(alert_listener)
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
    try:
        service.run()
    finally:
        if sink is not None:
            sink.close()  # saves the detectors' per-device state
        if alert_listener is not None:
            alert_listener.close()
        if server is not None:
            server.shutdown()
