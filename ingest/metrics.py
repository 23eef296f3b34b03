"""Prometheus metrics of the ingester, on a registry of its own (nothing global at import)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000)


class BulkHistogram(Collector):
    """A histogram fed a whole array per call: one numpy pass per batch instead of one
    locked ``observe`` per reading (tens of thousands a second)."""

    def __init__(
        self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._doc = documentation
        self._edges = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        if values.size == 0:
            return
        idx = np.searchsorted(self._edges, values, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def quantile(self, q: float) -> float:
        """Bucket-interpolated quantile, as PromQL's histogram_quantile computes it."""
        with self._lock:
            counts = self._counts.copy()
        total = int(counts.sum())
        if total == 0:
            return float("nan")
        rank = q * total
        cumulative = np.cumsum(counts)
        i = int(np.searchsorted(cumulative, rank, side="left"))
        if i >= len(self._edges):
            return float(self._edges[-1])
        lower = 0.0 if i == 0 else float(self._edges[i - 1])
        upper = float(self._edges[i])
        below = 0 if i == 0 else int(cumulative[i - 1])
        inside = int(counts[i])
        return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total_sum = self._sum
        buckets = [
            (repr(float(e)), int(c)) for e, c in zip(self._edges, cumulative[:-1], strict=True)
        ]
        buckets.append(("+Inf", int(cumulative[-1])))
        family = HistogramMetricFamily(self._name, self._doc)
        family.add_metric([], buckets, total_sum)
        yield family


@dataclass(frozen=True)
class IngestMetrics:
    registry: CollectorRegistry
    received: Counter
    stored: Counter
    duplicates: Counter
    dead_lettered: Counter
    batch_size: Histogram
    commit_seconds: Histogram
    device_to_commit_seconds: BulkHistogram
    queue_depth: Gauge
    db_retries: Counter
    connected: Gauge


def create_metrics(registry: CollectorRegistry | None = None) -> IngestMetrics:
    reg = registry or CollectorRegistry()
    return IngestMetrics(
        registry=reg,
        received=Counter(
            "anxin_ingest_messages_received",
            "MQTT messages received, by channel.",
            ["channel"],
            registry=reg,
        ),
        stored=Counter("anxin_ingest_rows_stored", "Rows committed to the database.", registry=reg),
        duplicates=Counter(
            "anxin_ingest_duplicates",
            "Readings dropped because they were already stored (redelivery).",
            registry=reg,
        ),
        dead_lettered=Counter(
            "anxin_ingest_dead_letters",
            "Messages or readings dead-lettered, by reason.",
            ["reason"],
            registry=reg,
        ),
        batch_size=Histogram(
            "anxin_ingest_batch_messages",
            "Messages per committed batch.",
            buckets=BATCH_BUCKETS,
            registry=reg,
        ),
        commit_seconds=Histogram(
            "anxin_ingest_commit_seconds",
            "Time to write and commit one batch.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        ),
        device_to_commit_seconds=BulkHistogram(
            "anxin_ingest_device_to_commit_seconds",
            "From the device timestamp of a reading to the commit of its row (device clock vs server clock).",
            LATENCY_BUCKETS,
            reg,
        ),
        queue_depth=Gauge(
            "anxin_ingest_queue_depth", "Messages received and not yet committed.", registry=reg
        ),
        db_retries=Counter(
            "anxin_ingest_db_retries", "Batch writes retried after a database error.", registry=reg
        ),
        connected=Gauge(
            "anxin_ingest_broker_connected", "1 while connected to the broker.", registry=reg
        ),
    )
