"""Prometheus metrics of the ingester, on a registry of its own (nothing global at import)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
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


def bucket_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Quantile ``q`` of a histogram given as cumulative ``(le, count)`` buckets (the last
    one ``+Inf``), interpolated within the bucket as PromQL's histogram_quantile does.
    0 when the histogram is empty."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return 0.0
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 1.0)
        prev_le, prev_count = le, count
    return prev_le


def histogram_buckets(collector: Collector) -> list[tuple[float, float]]:
    """The cumulative ``(le, count)`` buckets a histogram collector exposes."""
    return [
        (float(sample.labels["le"]), sample.value)
        for family in collector.collect()
        for sample in family.samples
        if sample.name.endswith("_bucket")
    ]


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
    db_refusals: Counter
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
        db_refusals=Counter(
            "anxin_ingest_db_refusals",
            "Batches the database refused for their content (then split to find the message).",
            registry=reg,
        ),
        connected=Gauge(
            "anxin_ingest_broker_connected", "1 while connected to the broker.", registry=reg
        ),
    )


@dataclass
class EngineMetrics:
    """The partitioned ingest's own metrics (``ANXIN_INGEST__SOURCE=engine``)."""

    partitions: Gauge
    owned: Gauge
    backlog: Gauge


def create_engine_metrics(registry: CollectorRegistry, partitions: int) -> EngineMetrics:
    metrics = EngineMetrics(
        partitions=Gauge(
            "anxin_engine_partitions",
            "Partitions of the engine (ANXIN_ENGINE__PARTITIONS); every one needs a reader.",
            registry=registry,
        ),
        owned=Gauge(
            "anxin_engine_partitions_owned", "Partitions this ingester reads.", registry=registry
        ),
        backlog=Gauge(
            "anxin_engine_backlog_messages",
            "Messages of a partition the engine holds that its reader has not fetched yet.",
            ["partition"],
            registry=registry,
        ),
    )
    metrics.partitions.set(partitions)
    return metrics
