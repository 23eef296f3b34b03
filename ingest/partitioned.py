"""The partitioned ingest: read the partitions of the engine this ingester owns.

Devices publish over MQTT to the engine (NATS JetStream), which maps each device's topics to one
partition by its id and keeps the partitions replicated (:mod:`core.engine`). Ingesters share
the partitions through advisory locks in the database (:mod:`ingest.partitions`). For each
partition it owns an ingester runs a reader thread with a database connection of its own:
fetch what is waiting (up to ``batch_size``), decode and validate it
(:class:`ingest.decoder.BatchDecoder`), write it in one transaction
(:class:`ingest.writer.BatchWriter`), acknowledge it to the engine, hand it to the sinks
(detection, alerts). So each device's messages are stored and detected in order, by one
ingester at a time, and nothing is acknowledged before it is committed.

When a partition changes hands (an ingester died, joined or left), the new owner loads the
detector state its devices last saved, replays their stored accelerometer bursts since, and
reads the partition from right after the last acknowledged message (:meth:`take_over`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from core.clock import Clock, SystemClock
from core.engine import (
    MQTT_STREAM,
    DeliveryGap,
    EngineError,
    EngineLink,
    EngineMessage,
    EngineMisconfigured,
    PartitionConsumer,
    partition_of,
    partition_subject,
)
from core.settings import Settings
from ingest.decoder import BatchDecoder
from ingest.metrics import IngestMetrics, create_engine_metrics, create_metrics
from ingest.pipeline import Batch, DeviceInfo
from ingest.service import BatchSink
from ingest.store import PostgresStore, TelemetryStore
from ingest.writer import BatchWriter, Pending, Stopping

log = logging.getLogger(__name__)

TakeOver = Callable[[Callable[[str], bool]], object]
"""Called with "is this device in the partitions just taken?" before their readers start."""


class _Message:
    """An engine message seen as the MQTT message it was published as."""

    __slots__ = ("payload", "topic")

    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic = topic
        self.payload = payload


def mqtt_topic(subject: str, subject_root: str, topic_prefix: str) -> str:
    """``<root>.<p>.<device>.<channel>`` back to ``<prefix>/dev/<device>/<channel>``; a subject
    of another shape is returned as it is (and dead-lettered as a bad topic)."""
    head = subject_root + "."
    if not subject.startswith(head):
        return subject
    parts = subject[len(head) :].split(".")
    if len(parts) != 3:
        return subject
    _p, device, channel = parts
    return f"{topic_prefix}/dev/{device}/{channel}"


class PartitionedIngest:
    """The ingester over the engine's partitions (``ANXIN_INGEST__SOURCE=engine``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        link: EngineLink | None = None,
        clock: Clock | None = None,
        metrics: IngestMetrics | None = None,
        sinks: Sequence[BatchSink] = (),
    ) -> None:
        from ingest.partitions import PartitionOwnership  # noqa: PLC0415 - one user

        self.settings = settings
        self.engine = settings.engine
        self._clock = clock or SystemClock()
        self.metrics = metrics or create_metrics()
        self._sinks = list(sinks)
        self._stop = threading.Event()
        self._link = link or EngineLink(
            [u.strip() for u in self.engine.urls.split(",") if u.strip()],
            name=f"anxin-ingest-{settings.mqtt.client_id}",
        )
        self._linked = link is not None
        self._writer = BatchWriter(
            self._process, self.metrics, self._stop, settings.ingest.retry_max_s
        )
        self._decoder = BatchDecoder(
            settings,
            PostgresStore(settings.db.url, connect_timeout_s=settings.db.connect_timeout_s),
            self._clock,
            self._writer.with_retry,
        )
        self._ownership = PartitionOwnership(
            settings.db.url, self.engine.partitions, self.engine.lock_namespace
        )
        self._readers: dict[int, _Reader] = {}
        self.engine_metrics = create_engine_metrics(self.metrics.registry, self.engine.partitions)
        self._take_over: TakeOver | None = None
        self._release: Callable[[], object] | None = None
        self._totals_lock = threading.Lock()
        self._totals = {"received": 0, "stored": 0, "dead": 0, "dup": 0, "batches": 0}

    # -- what the runner uses (as with ingest.service.IngestService) ---------------------------
    @property
    def devices(self) -> dict[str, DeviceInfo]:
        return self._decoder.devices

    def add_sink(self, sink: BatchSink) -> None:
        self._sinks.append(sink)

    def on_take_over(self, take_over: TakeOver, release: Callable[[], object]) -> None:
        """``take_over`` prepares the detectors for partitions taken (state, replay);
        ``release`` saves their state when partitions are let go."""
        self._take_over = take_over
        self._release = release

    def load_registry(self) -> None:
        self._decoder.load()

    def totals(self) -> dict[str, int]:
        with self._totals_lock:
            return dict(self._totals)

    @property
    def owned(self) -> set[int]:
        """The partitions this ingester reads now."""
        return set(self._readers)

    def stop(self) -> None:
        self._stop.set()

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        """Connect, keep the fair share of partitions, until :meth:`stop`; then let them go."""
        engine = self.engine
        if not self._linked:
            self._link.connect()
        self._prepare_engine()
        self._decoder.load()
        self.metrics.connected.set(1)
        log.info(
            "connected to the engine; subscribed to %d partitions of %s (shared through "
            "advisory locks)",
            engine.partitions,
            MQTT_STREAM,
        )
        try:
            while not self._stop.is_set():
                try:
                    self._rebalance()
                except psycopg.OperationalError as exc:
                    # The session is gone and its locks with it: stop reading everything.
                    log.warning("partition ownership lost (%s); stopping every reader", exc)
                    self._stop_readers(list(self._readers))
                except EngineError as exc:
                    log.warning("the engine did not answer a rebalance (%s); retrying", exc)
                self._stop.wait(engine.rebalance_every_s)
        finally:
            self._stop_readers(list(self._readers))
            self._ownership.close()
            self._decoder.close()
            if not self._linked:
                self._link.close()
            self.metrics.connected.set(0)

    def _durable(self, partition: int) -> tuple[str, str]:
        engine = self.engine
        return (
            f"{engine.consumer_prefix}-p{partition}",
            partition_subject(engine.subject_root, partition),
        )

    def _limits(self) -> dict[str, Any]:
        return {
            "max_ack_pending": max(1000, 4 * self.settings.ingest.batch_size),
            "ack_wait_s": self.engine.ack_wait_s,
        }

    def _prepare_engine(self) -> None:
        """The engine's MQTT stream, and a consumer for every partition; while a node of the
        engine is being replaced this can take a while: keep trying until it is done."""
        while True:
            try:
                self._link.ensure_mqtt_stream(self.engine.replicas, **self.engine.stream_limits)
                self._link.ensure_partitions(
                    [self._durable(p) for p in range(self.engine.partitions)], **self._limits()
                )
                return
            except EngineMisconfigured:
                raise
            except EngineError as exc:
                log.warning("the engine is not ready (%s); trying again", exc)
                if self._stop.wait(1.0):
                    raise

    def _rebalance(self) -> None:
        plan = self._ownership.rebalance()
        owned = self._ownership.owned | set(plan.take)
        # Readers of partitions this session no longer holds (a new session after an outage).
        self._stop_readers([p for p in self._readers if p not in owned])
        # Held without a reader (a start that failed): let go first, so others may take them.
        idle = sorted(p for p in self._ownership.owned if p not in self._readers)
        more = max(0, len(plan.release) - len(idle))  # above the fair share: readers stop
        surplus = sorted(self._readers)[-more:] if more else []
        self._stop_readers(surplus)
        for p in [*idle, *surplus]:
            self._ownership.let_go(p)
        if not plan.take:
            return
        partitions = self.engine.partitions
        taken = set(plan.take)
        if self._take_over is not None:
            self._take_over(lambda device: partition_of(device, partitions) in taken)
        started: list[int] = []
        try:
            for p in plan.take:
                self._start_reader(p)
                started.append(p)
        finally:
            for p in plan.take:
                if p not in started:
                    self._ownership.let_go(p)
        log.info(
            "took partitions %s (%d members; now reading %s)",
            started,
            plan.members,
            sorted(self._readers),
        )

    def _take(self, partition: int) -> PartitionConsumer:
        return self._link.take_partition(*self._durable(partition), **self._limits())

    def _start_reader(self, partition: int) -> None:
        consumer = self._take(partition)
        store = PostgresStore(
            self.settings.db.url, connect_timeout_s=self.settings.db.connect_timeout_s
        )
        reader = _Reader(self, partition, consumer, store)
        self._readers[partition] = reader
        self.engine_metrics.owned.set(len(self._readers))
        reader.start()

    def _stop_readers(self, partitions: list[int]) -> None:
        """Stop these partitions' readers (each finishes its batch: commit, acknowledgement)."""
        readers = [self._readers.pop(p) for p in partitions if p in self._readers]
        if not readers:
            return
        for r in readers:
            r.halt.set()
        for r in readers:
            r.join(60)
            with contextlib.suppress(KeyError):
                self.engine_metrics.backlog.remove(str(r.partition))
        self.engine_metrics.owned.set(len(self._readers))
        if self._release is not None:
            self._release()  # the detectors' state, for the next owner to load
        log.info("stopped reading partitions %s; now reading %s", partitions, sorted(self._readers))

    # -- one batch ------------------------------------------------------------------------------
    def _process(self, pending: list[Pending]) -> Batch:
        return self._decoder.process(pending)

    def _handle(self, store: TelemetryStore, messages: list[EngineMessage]) -> Batch:
        received = self._clock.now_ms()
        root, prefix = self.engine.subject_root, self.settings.mqtt.topic_prefix
        pending: list[Pending] = [
            (_Message(mqtt_topic(m.subject, root, prefix), m.data), received, 0, m.stream_seq)
            for m in messages
        ]
        started = time.perf_counter()
        self._writer.with_retry(self._decoder.refresh)
        result, batch = self._writer.write(store, pending, self._process(pending))
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.metrics.stored.inc(result.stored)
        with self._totals_lock:
            t = self._totals
            t["received"] += len(pending)
            t["stored"] += result.stored
            t["dead"] += len(batch.dead_letters)
            t["dup"] += result.duplicates + batch.duplicates_in_batch
            t["batches"] += 1
        return batch

    def _after_ack(self, batch: Batch) -> None:
        now_ms = self._clock.now_ms()
        for sink in self._sinks:
            try:
                sink(batch, now_ms)
            except Exception:
                log.exception("batch sink %r failed; the batch is stored and acknowledged", sink)


class _Reader(threading.Thread):
    """One owned partition: fetch, commit, acknowledge, detect; in order, until halted."""

    def __init__(
        self, owner: PartitionedIngest, partition: int, consumer: Any, store: TelemetryStore
    ):
        super().__init__(name=f"ingest-p{partition}", daemon=True)
        self.owner = owner
        self.partition = partition
        self.consumer = consumer
        self.store = store
        self.halt = threading.Event()

    def run(self) -> None:
        owner = self.owner
        size = owner.settings.ingest.batch_size
        backlog = owner.engine_metrics.backlog.labels(str(self.partition))
        try:
            while not self.halt.is_set() and not owner._stop.is_set():
                try:
                    messages = self.consumer.fetch(size, timeout_s=0.5)
                except DeliveryGap as exc:
                    log.warning(
                        "partition %d: %s; reading again after the last acknowledged",
                        self.partition,
                        exc,
                    )
                    self._read_again()
                    continue
                except EngineError as exc:
                    log.warning("partition %d: fetch failed (%s); retrying", self.partition, exc)
                    self.halt.wait(1.0)
                    continue
                backlog.set(self.consumer.pending)
                if not messages:
                    continue
                batch = owner._handle(self.store, messages)
                self._ack()
                owner._after_ack(batch)
        except Stopping:
            log.info(
                "partition %d: stopped during a database outage; not acknowledged", self.partition
            )
        except Exception:
            log.exception("partition %d: reader failed; the partition is let go", self.partition)
        finally:
            self.consumer.close()
            self.store.close()

    def _read_again(self) -> None:
        """A new consumer for the partition, from right after what was acknowledged (what was
        committed and not acknowledged comes again and is stored once)."""
        self.consumer.close()
        while not self.halt.is_set() and not self.owner._stop.is_set():
            try:
                self.consumer = self.owner._take(self.partition)
                return
            except EngineError as exc:
                log.warning("partition %d: cannot read it again yet (%s)", self.partition, exc)
                self.halt.wait(1.0)

    def _ack(self) -> None:
        while True:
            try:
                self.consumer.ack_fetched()
                return
            except EngineError as exc:
                # Committed but not acknowledged: the engine would send it again to the next
                # owner (stored once all the same). Keep trying while we own the partition.
                log.warning("partition %d: acknowledgement failed (%s)", self.partition, exc)
                if self.halt.wait(0.5) or self.owner._stop.is_set():
                    return
