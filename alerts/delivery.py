"""The outbox worker: drains ``deliveries`` through the channels, at least once.

A delivery row is one message to one recipient (written by the alert service in the same
transaction as its alert). The worker:

1. **claims** due rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` (several workers never take
   the same row), marks them ``sending``, counts the attempt, and sets ``next_attempt_at`` to
   the end of a *lease*: a worker that dies mid-delivery leaves its rows ``sending``, and they
   are due again once the lease runs out;
2. **renders** the message at send time (a template for people; the emergency record for 120,
   as JSON or CAP) and **sends** it through the :class:`alerts.channels.Channel` its ``channel``
   column names, with the row's idempotency key (``Idempotency-Key``), the same on every retry;
3. **logs** the attempt in ``delivery_attempts`` and moves the row: delivered on success;
   on a retryable failure back to ``pending`` with exponential back-off and jitter; after
   ``max_attempts`` or ``max_age``, or on a final refusal (4xx), ``gave_up``, which queues a
   ``give_up`` message to the operator and notes it on the alert's timeline.

At-least-once: a worker killed after the receiver got the message but before the row was
marked delivered sends it again after the lease, with the same key, so the receiver drops the
duplicate. New rows wake the worker at once through ``LISTEN anxin_deliveries`` (a trigger of
migration 0007 notifies on insert); a poll catches retries that fall due.

The pure parts (:func:`backoff_s`, :func:`decide`) take values and return values; the rest is
the I/O shell.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import random
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Final, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from alerts import templates
from alerts.channels import (
    AppriseChannel,
    Channel,
    Dispatch120Channel,
    OutboundMessage,
    SendResult,
)
from alerts.outbox import Delivery, DeliveryConfig, Status, backoff_s, decide
from alerts.outbox_db import claim_due, leased, record_result, renew_leases
from alerts.rendering import AckLink, build_message, no_ack_link, settings_ack_link
from core.clock import Clock, SystemClock
from core.settings import Settings
from devices.crypto import Keyring

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
T = TypeVar("T")
Rendered = tuple[Delivery, OutboundMessage | SendResult]
"""A leased delivery and its rendered message, or why it could not be rendered."""

NOTIFY_CHANNEL: Final = "anxin_deliveries"

__all__ = [
    "Delivery",
    "DeliveryConfig",
    "DeliveryWorker",
    "Status",
    "backoff_s",
    "decide",
    "main_worker",
    "run_worker",
]


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000.0, tz=dt.UTC)


class DeliveryWorker:
    """Claims, renders, sends and records deliveries until stopped.

    Database calls are blocking psycopg calls on a small thread pool of their own (as many
    threads as pool connections), so they never stall the event loop that the HTTP sends run on.
    """

    def __init__(
        self,
        db_url: str,
        config: DeliveryConfig,
        *,
        keyring: Keyring,
        channels: Mapping[str, Channel] | None = None,
        clock: Clock | None = None,
        ack_link: AckLink = no_ack_link,
        rng: random.Random | None = None,
    ) -> None:
        self._url = db_url
        self._config = config
        self._keyring = keyring
        self._channels: Mapping[str, Channel] = channels or {
            "apprise": AppriseChannel(max_workers=config.apprise_workers),
            "dispatch120": Dispatch120Channel(
                config.dispatch120_secret, timeout_s=config.http_timeout_s
            ),
        }
        self._clock = clock or SystemClock()
        self._ack_link = ack_link
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        db_threads = 4
        self._pool = ConnectionPool(db_url, min_size=1, max_size=db_threads, open=False)
        self._db_executor = ThreadPoolExecutor(
            max_workers=db_threads, thread_name_prefix="delivery-db"
        )
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        # Rows being sent now, by id: their leases are renewed while the send is in flight.
        self._held: dict[int, Delivery] = {}
        self.delivered = 0
        self.failed_attempts = 0

    def _now(self) -> dt.datetime:
        return _utc(self._clock.now_ms())

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            with self._pool.connection() as conn:
                return fn(conn, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._db_executor, call)

    async def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; finish the deliveries in flight, then return."""
        self._pool.open(wait=True, timeout=30)
        try:
            async with asyncio.TaskGroup() as group:
                listener = group.create_task(self._listen(stop), name="delivery-listen")
                renewer = group.create_task(self._renew(stop), name="delivery-renew")
                try:
                    await self._loop(stop, group)
                finally:
                    listener.cancel()
                    renewer.cancel()
        finally:
            for channel in {id(c): c for c in self._channels.values()}.values():
                await channel.aclose()
            self._pool.close()
            self._db_executor.shutdown(wait=True)

    async def run_once(self) -> int:
        """Claim what is due now and deliver it; the number of deliveries handled."""
        self._pool.open(wait=True, timeout=30)
        rows = await self._claim(self._config.batch)
        async with asyncio.TaskGroup() as group:
            for row in rows:
                group.create_task(self._deliver(row), name=f"delivery-{row.id}")
        return len(rows)

    async def _claim(self, limit: int) -> list[Delivery]:
        return await self._db(claim_due, now=self._now(), lease_s=self._config.lease_s, limit=limit)

    async def _loop(self, stop: threading.Event, group: asyncio.TaskGroup) -> None:
        while not stop.is_set():
            self._wake.clear()
            free = self._config.batch - len(self._inflight)
            rows: list[Delivery] = []
            if free > 0:
                try:
                    rows = await self._claim(free)
                except psycopg.Error as exc:
                    log.warning("cannot claim deliveries (%s); retrying", exc)
                    await asyncio.sleep(min(5.0, self._config.poll_s * 4))
                    continue
            for row in rows:
                task = group.create_task(self._deliver(row), name=f"delivery-{row.id}")
                self._inflight.add(task)
                task.add_done_callback(self._done)
            if rows and len(rows) == free:
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._config.poll_s)
        if self._inflight:
            await asyncio.wait(self._inflight)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _listen(self, stop: threading.Event) -> None:
        """Wake the loop when a delivery is inserted (NOTIFY from migration 0007's trigger)."""
        while not stop.is_set():
            try:
                aconn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            except psycopg.Error as exc:
                log.warning("LISTEN connection failed (%s); polling meanwhile", exc)
                await asyncio.sleep(2.0)
                continue
            try:
                await aconn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                while not stop.is_set():
                    async for _ in aconn.notifies(timeout=1.0, stop_after=1):
                        self._wake.set()
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            finally:
                await aconn.close()

    async def _renew(self, stop: threading.Event) -> None:
        """Every third of the lease, extend the leases of the rows being sent: a slow receiver
        keeps its row, and a dead process's rows are free again one lease after it died."""
        every = self._config.lease_s / 3
        while not stop.is_set():
            await asyncio.sleep(every)
            held = list(self._held.values())
            if not held:
                continue
            try:
                await self._db(renew_leases, held, now=self._now(), lease_s=self._config.lease_s)
            except psycopg.Error as exc:
                log.warning("cannot renew %d delivery leases (%s)", len(held), exc)

    async def serve_leased(self, stop: threading.Event) -> None:
        """Keep the leases of :meth:`send_rendered` sends alive until ``stop``; then finish them."""
        self._pool.open(wait=True, timeout=30)
        try:
            async with asyncio.TaskGroup() as group:
                renewer = group.create_task(self._renew(stop), name="delivery-renew")
                await asyncio.get_running_loop().run_in_executor(None, stop.wait)
                renewer.cancel()
            while self._held:
                await asyncio.sleep(0.05)
        finally:
            for channel in {id(c): c for c in self._channels.values()}.values():
                await channel.aclose()
            self._pool.close()
            self._db_executor.shutdown(wait=True)

    def render_leased(self, conn: Conn, ids: Sequence[int]) -> list[Rendered]:
        """Read and render the deliveries of ``ids`` leased to this process, on the caller's
        connection and thread (the ingester's alert listener, right after the alert's commit:
        no hop to another thread and no second read of the rows before the push). A delivery
        that cannot be rendered comes back with its failure, to be recorded like any attempt.
        """
        return [(delivery, self._render_on(conn, delivery)) for delivery in leased(conn, ids)]

    async def send_rendered(self, items: Sequence[Rendered]) -> None:
        """Send what :meth:`render_leased` rendered and record each result."""
        async with asyncio.TaskGroup() as group:
            for delivery, message in items:
                group.create_task(
                    self._send_held(delivery, message), name=f"delivery-{delivery.id}"
                )

    async def _send_held(self, delivery: Delivery, message: OutboundMessage | SendResult) -> None:
        self._held[delivery.id] = delivery  # its lease is renewed while the push is in flight
        try:
            await self._send_and_record(delivery, message)
        finally:
            self._held.pop(delivery.id, None)

    async def _deliver(self, delivery: Delivery) -> None:
        self._held[delivery.id] = delivery
        try:
            await self._deliver_held(delivery)
        finally:
            self._held.pop(delivery.id, None)

    def _render_on(self, conn: Conn, delivery: Delivery) -> OutboundMessage | SendResult:
        """The message to send, or why there is none (recorded as the attempt's result)."""
        config = self._config
        if delivery.channel not in self._channels:
            return SendResult(ok=False, retryable=False, error=f"no channel {delivery.channel!r}")
        if delivery.attempts > config.max_attempts:
            # A row that keeps killing its workers: stop before sending once more.
            return SendResult(ok=False, retryable=False, error="attempts exhausted")
        try:
            return build_message(
                conn,
                delivery,
                config=config,
                keyring=self._keyring,
                now=self._now(),
                ack_link=self._ack_link,
            )
        except (templates.TemplateError, LookupError) as exc:
            return SendResult(ok=False, retryable=False, error=f"cannot render: {exc}")
        except Exception as exc:  # one bad row must not stop the worker
            if isinstance(exc, psycopg.Error) and (conn.broken or conn.closed):
                raise
            log.warning("delivery %d: %s: %s", delivery.id, type(exc).__name__, exc)
            return SendResult(ok=False, error=f"{type(exc).__name__}: {exc}")

    async def _deliver_held(self, delivery: Delivery) -> None:
        def render() -> OutboundMessage | SendResult:
            with self._pool.connection() as conn:
                return self._render_on(conn, delivery)

        try:
            message = await asyncio.get_running_loop().run_in_executor(self._db_executor, render)
        except Exception as exc:  # the database went away: recorded, retried
            log.warning("delivery %d: %s: %s", delivery.id, type(exc).__name__, exc)
            message = SendResult(ok=False, error=f"{type(exc).__name__}: {exc}")
        await self._send_and_record(delivery, message)

    async def _send_and_record(
        self, delivery: Delivery, message: OutboundMessage | SendResult
    ) -> None:
        config = self._config
        if isinstance(message, SendResult):
            result = message
        else:
            try:
                result = await self._channels[delivery.channel].send(message)
            except Exception as exc:  # one bad row must not stop the worker
                log.warning("delivery %d: %s: %s", delivery.id, type(exc).__name__, exc)
                result = SendResult(ok=False, error=f"{type(exc).__name__}: {exc}")
        if result.ok:
            self.delivered += 1
        else:
            self.failed_attempts += 1
        try:
            decision = await self._db(
                record_result,
                delivery,
                result,
                now=self._now(),
                config=config,
                rand=self._rng.random(),
            )
        except psycopg.Error as exc:
            # The lease brings the row back; the receiver drops the repeat by its key.
            log.warning(
                "delivery %d: result not recorded (%s); it will be retried", delivery.id, exc
            )
            return
        log.debug("delivery %d -> %s", delivery.id, decision.status)


# --- entry points --------------------------------------------------------------------------


class FirstPush:
    """The ingester's own first 120 push (:class:`alerts.listener.ClaimedPusher`).

    An alert's transaction writes its 120 delivery leased to the ingester; right after the
    commit the listener hands the id here and the push goes out from this process, without a
    NOTIFY, a claim and a render in the worker first. If the push fails, the row is recorded
    like any attempt and the worker retries it; if the ingester dies, the lease runs out and the
    worker sends it with the same idempotency key.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        channels: Mapping[str, Channel] | None = None,
        config: DeliveryConfig | None = None,
    ) -> None:
        self._worker = DeliveryWorker(
            settings.db.url,
            config or DeliveryConfig.from_settings(settings),
            keyring=Keyring.from_settings(settings.registry),
            channels=channels,
            ack_link=settings_ack_link(settings),
        )
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="alerts-first-push", daemon=True)
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._lock = threading.Lock()

    def start(self) -> FirstPush:
        self._thread.start()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._worker.serve_leased(self._stop))

    def submit(self, conn: Conn, delivery_ids: Sequence[int]) -> None:
        """Render the leased deliveries now, on the caller's connection (right after the
        alert's commit), and send them from this pusher's event loop."""
        try:
            items = self._worker.render_leased(conn, delivery_ids)
        except psycopg.Error as exc:
            log.warning(
                "first 120 push of deliveries %s not rendered (%s); the worker sends them once "
                "their lease runs out",
                list(delivery_ids),
                exc,
            )
            return
        if not items:
            return
        future = asyncio.run_coroutine_threadsafe(self._worker.send_rendered(items), self._loop)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("first 120 push failed; the worker retries it", exc_info=future.exception())

    def close(self, timeout_s: float = 15.0) -> None:
        """Finish the pushes in flight (at most ``timeout_s``), then stop."""
        with self._lock:
            pending = list(self._pending)
        concurrent.futures.wait(pending, timeout=timeout_s)
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        self._loop.close()


def run_worker(
    settings: Settings,
    stop: threading.Event,
    *,
    channels: Mapping[str, Channel] | None = None,
    config: DeliveryConfig | None = None,
    ack_link: AckLink | None = None,
) -> None:
    """Run the delivery worker until ``stop`` is set (blocks; owns its event loop).

    ``ack_link`` defaults to :func:`settings_ack_link` (the alert core's single-use links).
    """
    config = config or DeliveryConfig.from_settings(settings)
    worker = DeliveryWorker(
        settings.db.url,
        config,
        keyring=Keyring.from_settings(settings.registry),
        channels=channels,
        ack_link=ack_link or settings_ack_link(settings),
    )
    log.info("delivery worker started (120 format %s)", config.dispatch120_format)
    asyncio.run(worker.run(stop))
    log.info("delivery worker stopped: %d delivered", worker.delivered)


def main_worker(argv: Sequence[str] | None = None) -> int:
    """``anxin alerts worker``: drain the outbox until SIGINT or SIGTERM."""
    from core.settings import load_settings  # noqa: PLC0415 - keeps --help fast

    parser = argparse.ArgumentParser(prog="anxin alerts worker", description=main_worker.__doc__)
    parser.add_argument("--batch", type=int, default=None, help="deliveries in flight at once")
    parser.add_argument("--lease", type=float, default=None, help="lease of a claimed row, s")
    args = parser.parse_args(argv)
    settings = load_settings()
    logging.basicConfig(
        level=getattr(logging, settings.log_level, logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    config = DeliveryConfig.from_settings(settings)
    if args.batch is not None:
        config = replace(config, batch=args.batch)
    if args.lease is not None:
        config = replace(config, lease_s=args.lease)
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    run_worker(settings, stop, config=config)
    return 0
