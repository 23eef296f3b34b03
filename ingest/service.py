"""The ingest service: the I/O shell around :func:`ingest.pipeline.process_batch` (writes go
through :class:`ingest.writer.BatchWriter`: retried while the database is away, bisected when
it refuses a message).

paho's network thread receives messages and sorts them into two lanes:

* telemetry goes to the inbox; the processing thread (the caller of
  :meth:`IngestService.run`) takes everything waiting, up to ``batch_size``, decodes and
  validates it, and hands it to one of ``writers`` commit threads, which writes it in one
  transaction on its own connection; only then, and in batch order, each message is
  acknowledged to the broker and the sinks (detection) run;
* events (an SOS press, a fall detected on the device) and statuses go to the urgent lane: a
  thread of its own with its own database connection processes, commits, acknowledges and runs
  the sinks for them, so an SOS never waits behind a telemetry batch or its detection.

With ``ANXIN_INGEST__LANE`` the process takes one lane's messages only (ingest/lanes.py): the
urgent lane's SOS presses in a process and broker session of their own, or the telemetry lane's
rest.

So:

* nothing is acknowledged before it is committed (or dead-lettered), and the broker
  redelivers what was not, after an ingester crash or a broker restart;
* the inbox is bounded by MQTT flow control: the broker never has more than
  ``receive_maximum`` unacknowledged messages in flight to us;
* batches grow with the load (everything that arrived during the last commit goes into the
  next), so latency stays low when idle and throughput high when busy;
* a database outage makes the writer retry the same batch with back-off while the broker
  holds the rest; nothing is lost and nothing is acknowledged early.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from core.clock import Clock, SystemClock
from core.mqtt import MqttClient, client_for
from core.settings import Settings
from ingest import lanes
from ingest.decoder import BatchDecoder
from ingest.metrics import IngestMetrics, bucket_quantile, create_metrics, histogram_buckets
from ingest.pipeline import Batch, DeviceInfo
from ingest.store import PostgresStore, TelemetryStore, WriteResult
from ingest.writer import BatchWriter, Pending, Stopping

log = logging.getLogger(__name__)
T = TypeVar("T")


class BatchSink(Protocol):
    """Gets every committed batch (detectors, alerting).

    Called on the commit thread for telemetry batches and on the urgent thread for events and
    statuses, possibly at the same time: a sink must be thread-safe.
    """

    def __call__(self, batch: Batch, now_ms: int) -> None: ...


class IngestService:
    """Subscribe, decode, validate, batch, write with COPY, acknowledge after commit."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: TelemetryStore | None = None,
        client: MqttClient | None = None,
        clock: Clock | None = None,
        metrics: IngestMetrics | None = None,
        sinks: Sequence[BatchSink] = (),
    ) -> None:
        self.settings = settings
        # A connection per writer thread, one for the registry and one for the urgent lane. An
        # injected store serves them all and must allow that.
        self._stores: list[TelemetryStore] = [
            store or PostgresStore(settings.db.url, connect_timeout_s=settings.db.connect_timeout_s)
            for _ in range(settings.ingest.writers)
        ]
        registry = store or PostgresStore(
            settings.db.url, connect_timeout_s=settings.db.connect_timeout_s
        )
        # The urgent lane writes on a connection of its own: an SOS is committed while a
        # telemetry batch is being written.
        self._urgent_store = store or PostgresStore(
            settings.db.url, connect_timeout_s=settings.db.connect_timeout_s
        )
        # Processed telemetry batches waiting for a writer, one per writer at most (None: the
        # processing thread is done). Writers commit side by side; what follows a commit
        # (acknowledgements, sinks) runs in batch order, each batch's turn after its
        # predecessor's.
        self._batches: queue.Queue[tuple[int, list[Pending], Batch] | None] = queue.Queue(
            maxsize=settings.ingest.writers
        )
        self._batch_seq = 0
        self._closing = False
        self._backlog = settings.ingest.batch_size
        self._turn = threading.Condition()
        self._next_turn = 0
        # MQTT wants PUBACKs in the order the messages arrived; the two lanes commit
        # independently, so acknowledgements are released in receive order once everything
        # received before is done.
        self._received = 0
        self._ack_next = 0
        self._ack_ready: dict[int, tuple[int, int, int]] = {}
        self._ack_lock = threading.Lock()
        self._account_lock = threading.Lock()
        self._commit_error: BaseException | None = None
        self.lane = settings.ingest.lane
        self._client = client or client_for(
            settings.mqtt,
            client_id=lanes.client_id(settings.mqtt.client_id, self.lane),
            persistent=True,
            manual_ack=True,
            receive_maximum=settings.mqtt.receive_maximum,
        )
        self._clock = clock or SystemClock()
        self.metrics = metrics or create_metrics()
        self._sinks = list(sinks)
        self._inbox: deque[Pending] = deque()
        # Events (an SOS press, a fall detected on the device) and statuses are few and urgent:
        # they have a lane of their own.
        self._urgent: deque[Pending] = deque()
        self._wake = threading.Event()
        self._urgent_wake = threading.Event()
        self._stop = threading.Event()
        self._totals = {"received": 0, "stored": 0, "dead": 0, "dup": 0, "batches": 0}
        # Test-only crash point (tests/ingest/test_fault_injection.py): exit the process right
        # after the Nth batch holding events is acknowledged, before detection and alerting,
        # so that the window between them is certain to be hit. Unset, it costs one check.
        crash = os.environ.get("ANXIN_TEST_EXIT_AFTER_EVENT_ACKS")
        self._exit_after_event_acks = int(crash) if crash else None
        self._writer = BatchWriter(
            self._process, self.metrics, self._stop, settings.ingest.retry_max_s
        )
        self._decoder = BatchDecoder(settings, registry, self._clock, self._writer.with_retry)
        self._client.on_raw_messages(self._on_messages)
        self._now_ms = self._clock.now_ms
        self._client.on_connect(self._on_connect)
        self._client.on_disconnect(self._on_disconnect)
        self._received_by_channel = {
            ch: self.metrics.received.labels(ch) for ch in ("telemetry", "event", "status", "other")
        }

    # -- network thread ----------------------------------------------------------------
    def _on_messages(self, msgs: list[Any]) -> None:
        """Everything one read from the socket held: one clock read, one wake-up."""
        received = self._now_ms()
        generation = self._client.generation
        order = self._received
        inbox = self._inbox.append
        urgent = False
        for msg in msgs:
            if msg.topic.endswith("/telemetry"):
                inbox((msg, received, generation, order))
            else:
                self._urgent.append((msg, received, generation, order))
                urgent = True
            order += 1
        self._received = order
        if urgent:
            self._urgent_wake.set()
        if not self._wake.is_set():
            self._wake.set()

    def _on_connect(self, session_present: bool) -> None:
        topics = lanes.topics(self.settings.mqtt.topic_prefix, self.lane)
        group = self.settings.mqtt.shared_group
        if group:
            topics = [f"$share/{lanes.client_id(group, self.lane)}/{t}" for t in topics]
        self._client.subscribe(topics, qos=1)
        self.metrics.connected.set(1)
        log.info(
            "connected to the broker (session present: %s); subscribed to %s",
            session_present,
            topics,
        )

    def _on_disconnect(self, reason: str) -> None:
        self.metrics.connected.set(0)
        log.warning("disconnected from the broker: %s; paho reconnects with back-off", reason)

    # -- writer thread -----------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._urgent_wake.set()

    def load_registry(self) -> None:
        """Load the device registry now (retrying while the database is away)."""
        self._decoder.load()

    def _process(self, pending: list[Pending]) -> Batch:
        return lanes.keep(self._decoder.process(pending), self.lane)

    def _take(self) -> list[Pending]:
        """The next telemetry batch: what is waiting, up to ``batch_size``."""
        inbox = self._inbox
        n = min(len(inbox), self.settings.ingest.batch_size)
        return [inbox.popleft() for _ in range(n)]

    def _waiting(self) -> int:
        return len(self._inbox) + len(self._urgent)

    def _ack(self, pending: list[Pending]) -> None:
        with self._ack_lock:
            ready = self._ack_ready
            for msg, _r, gen, order in pending:
                ready[order] = (msg.mid, msg.qos, gen)
            generation = self._client.generation
            mids: list[int] = []
            while self._ack_next in ready:
                mid, qos, gen = ready.pop(self._ack_next)
                self._ack_next += 1
                # Packet ids of an earlier connection mean nothing now: the broker redelivers
                # those messages and the unique index drops the copies. QoS 0 needs no PUBACK.
                if gen == generation and qos == 1:
                    mids.append(mid)
            # Under the lock: the two lanes must not reorder what was released in order.
            self._client.ack_many(mids)

    def _account(
        self,
        batch: Batch,
        result: WriteResult,
        commit_s: float,
        now_ms: int,
        pending: list[Pending],
    ) -> None:
        m = self.metrics
        channels: dict[str, int] = {}
        for msg, _r, _g, _o in pending:
            channel = msg.topic.rsplit("/", 1)[-1]
            channels[channel] = channels.get(channel, 0) + 1
        for channel, n in channels.items():
            self._received_by_channel.get(channel, self._received_by_channel["other"]).inc(n)
        m.stored.inc(result.stored)
        duplicates = result.duplicates + batch.duplicates_in_batch
        if duplicates:
            m.duplicates.inc(duplicates)
        for letter in batch.dead_letters:
            m.dead_lettered.labels(letter.reason.value).inc()
        m.batch_size.observe(len(pending))
        m.commit_seconds.observe(commit_s)
        if batch.readings:
            ts = np.fromiter(
                (r.ts_ms for r in batch.readings), dtype=np.float64, count=len(batch.readings)
            )
            m.device_to_commit_seconds.observe_many((now_ms - ts) / 1000.0)
        m.queue_depth.set(self._waiting())
        with self._account_lock:
            t = self._totals
            t["received"] += len(pending)
            t["stored"] += result.stored
            t["dead"] += len(batch.dead_letters)
            t["dup"] += duplicates
            t["batches"] += 1

    def _log_summary(self, last: dict[str, int], elapsed: float) -> dict[str, int]:
        t = self.totals()
        rate = (t["received"] - last.get("received", 0)) / elapsed
        rows = (t["stored"] - last.get("stored", 0)) / elapsed
        log.info(
            "ingest: %.0f msg/s, %.0f rows/s, %d dead-lettered, %d duplicates, queue %d, commit p50 %.0f ms "
            "(totals: %d received, %d rows)",
            rate,
            rows,
            t["dead"] - last.get("dead", 0),
            t["dup"] - last.get("dup", 0),
            self._waiting(),
            1000 * bucket_quantile(histogram_buckets(self.metrics.commit_seconds), 0.5),
            t["received"],
            t["stored"],
        )
        return t

    def run(self) -> None:
        """Run until :meth:`stop`; on stop, write and acknowledge what was received.

        Three stages overlap: this thread takes and processes a telemetry batch (decode,
        validate, rows) while the commit thread writes, acknowledges and hands on the previous
        one, and the urgent thread handles events and statuses on its own connection. The
        database works on one batch while Python prepares the next, instead of each waiting
        for the other, and an SOS waits for neither.
        """
        self._decoder.load()
        self._client.start()
        writers = [
            threading.Thread(
                target=self._commit_loop, args=(store, i == 0), name=f"ingest-commit-{i}"
            )
            for i, store in enumerate(self._stores)
        ]
        for writer in writers:
            writer.start()
        urgent = threading.Thread(target=self._urgent_loop, name="ingest-urgent")
        urgent.start()
        linger = self.settings.ingest.flush_interval_s
        last_log = time.monotonic()
        last_totals: dict[str, int] = {}
        inbox = self._inbox
        try:
            while True:
                now = time.monotonic()
                if now - last_log >= self.settings.ingest.log_every_s:
                    last_totals = self._log_summary(last_totals, now - last_log)
                    last_log = now
                if not inbox:
                    if self._stop.is_set():
                        break
                    self._wake.wait(0.5)
                    self._wake.clear()
                    if not inbox:
                        continue
                    # Let a batch form when traffic resumes after idleness.
                    if len(inbox) < self.settings.ingest.batch_size and not self._stop.is_set():
                        time.sleep(linger)
                self._writer.with_retry(self._decoder.refresh)
                pending = self._take()
                self._hand_over((self._batch_seq, pending, self._process(pending)))
                self._batch_seq += 1
        except Stopping:
            log.warning(
                "stopped during a database outage; unacknowledged messages stay at the broker"
            )
        finally:
            self._close_commit_stage(writers)
            self.stop()
            urgent.join()
            self._client.stop()
            for store in self._stores:
                store.close()
            self._urgent_store.close()
            self._decoder.close()
        if self._commit_error is not None and not isinstance(self._commit_error, Stopping):
            raise self._commit_error

    def _hand_over(self, item: tuple[int, list[Pending], Batch]) -> None:
        while True:
            if self._commit_error is not None:
                raise Stopping from self._commit_error
            try:
                self._batches.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _close_commit_stage(self, writers: list[threading.Thread]) -> None:
        self._closing = True
        for _ in writers:
            while any(w.is_alive() for w in writers):
                try:
                    self._batches.put(None, timeout=0.5)
                    break
                except queue.Full:
                    continue
        for writer in writers:
            writer.join()

    def _failed(self, exc: BaseException, stage: str) -> None:
        if not isinstance(exc, Stopping):
            log.error("the %s stage failed; the ingester stops", stage, exc_info=exc)
        if self._commit_error is None:
            self._commit_error = exc
        self.stop()

    def _commit_loop(self, store: TelemetryStore, primary: bool) -> None:
        """A writer: commit telemetry batches; acknowledge and run the sinks in batch order.

        The first writer takes every batch it can. The others help only while the ingester
        is behind (a full batch waiting in the inbox, as after an outage): two telemetry
        transactions at once catch up faster, but in live operation they only compete with
        the urgent lane for the cores (SOS publish to 120 push p99 190 ms with one writer,
        210-260 ms with two, bench/alerts.py).
        """
        try:
            while True:
                if not primary and not self._closing and len(self._inbox) < self._backlog:
                    time.sleep(0.02)
                    continue
                try:
                    item = self._batches.get(timeout=0.5)
                except queue.Empty:
                    continue
                if item is None:
                    return
                seq, pending, batch = item
                started = time.perf_counter()
                result, batch = self._writer.write(store, pending, batch)
                commit_s = time.perf_counter() - started
                self._wait_turn(seq)
                try:
                    self._after_commit(pending, batch, result, commit_s)
                finally:
                    with self._turn:
                        self._next_turn = seq + 1
                        self._turn.notify_all()
        except BaseException as exc:
            self._failed(exc, "commit")

    def _wait_turn(self, seq: int) -> None:
        """Until every batch taken before this one has been acknowledged and handed on: the
        fall detector must see each device's bursts in order."""
        with self._turn:
            while self._next_turn != seq:
                if self._commit_error is not None:
                    raise Stopping from self._commit_error
                self._turn.wait(0.5)

    def _urgent_loop(self) -> None:
        """Events and statuses: process, commit, acknowledge, run the sinks; until stopped and
        drained."""
        urgent = self._urgent
        try:
            while True:
                if not urgent:
                    if self._stop.is_set():
                        return
                    self._urgent_wake.wait(0.5)
                    self._urgent_wake.clear()
                    continue
                pending = [urgent.popleft() for _ in range(len(urgent))]
                self._commit(self._urgent_store, pending, self._process(pending))
        except BaseException as exc:
            self._failed(exc, "urgent")

    def _commit(self, store: TelemetryStore, pending: list[Pending], batch: Batch) -> None:
        started = time.perf_counter()
        result, batch = self._writer.write(store, pending, batch)
        self._after_commit(pending, batch, result, time.perf_counter() - started)

    def _after_commit(
        self, pending: list[Pending], batch: Batch, result: WriteResult, commit_s: float
    ) -> None:
        self._ack(pending)
        if self._exit_after_event_acks is not None and batch.device_events:
            self._test_crash_point(pending)
        now_ms = self._clock.now_ms()
        self._account(batch, result, commit_s, now_ms, pending)
        for sink in self._sinks:
            try:
                sink(batch, now_ms)
            except Exception:
                log.exception("batch sink %r failed; the batch is stored and acknowledged", sink)

    def _test_crash_point(self, pending: list[Pending]) -> None:
        assert self._exit_after_event_acks is not None  # noqa: S101 - the caller checked
        self._exit_after_event_acks -= 1
        if self._exit_after_event_acks > 0:
            return
        # The events' PUBACKs may wait behind earlier telemetry; the other lane releases them.
        # Hold this lane (detection has not run) until they are out, then exit.
        last = max(order for _m, _r, _g, order in pending)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            with self._ack_lock:
                if self._ack_next > last:
                    break
            time.sleep(0.005)
        self._client.flush_out(2.0)  # the PUBACK reaches the broker: it will not resend
        log.warning("test crash point: exiting after acknowledging events, before detection")
        os._exit(70)

    def add_sink(self, sink: BatchSink) -> None:
        self._sinks.append(sink)

    def totals(self) -> dict[str, int]:
        """Counts since start: received, stored (rows), dead (letters), dup, batches."""
        with self._account_lock:
            return dict(self._totals)

    @property
    def devices(self) -> dict[str, DeviceInfo]:
        """The current registry snapshot (replaced, never mutated, on refresh)."""
        return self._decoder.devices

    @property
    def inbox_depth(self) -> int:
        return self._waiting()
