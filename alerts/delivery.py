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
import contextlib
import datetime as dt
import logging
import random
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from alerts import ack, templates
from alerts.cap import render_cap
from alerts.channels import (
    AppriseChannel,
    Channel,
    Dispatch120Channel,
    OutboundMessage,
    SendResult,
)
from alerts.dispatch120 import build_record, record_json
from core.clock import Clock, SystemClock
from core.settings import Settings
from devices.crypto import Keyring

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
T = TypeVar("T")

NOTIFY_CHANNEL: Final = "anxin_deliveries"
ACTOR: Final = "system:delivery-worker"


class Status(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    GAVE_UP = "gave_up"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How the worker retries and renders.

    Attributes:
        dispatch120_secret: HMAC key shared with the 120 centre.
        dispatch120_format: ``json`` (Anxin's record) or ``cap`` (CAP 1.2 XML).
        cap_sender: CAP ``sender`` (no spaces or commas).
        operator_url: Apprise URL that receives ``give_up`` notices; None: only logged.
        max_attempts: Attempts before giving up.
        max_age_s: Age of a delivery after which a failure gives up, whatever the count.
        backoff_base_s: Delay after the first failure (doubles with each attempt).
        backoff_max_s: Longest delay between two attempts.
        lease_s: How long a claimed row stays with its worker; longer than any send.
        http_timeout_s: Timeout of one 120 push.
        batch: Deliveries in flight at once per worker.
        poll_s: Longest sleep between two looks for due rows.
        apprise_workers: Threads of the apprise executor.
        timezone: Zone of times in messages and CAP.
    """

    dispatch120_secret: str
    dispatch120_format: str = "json"
    cap_sender: str = "anxin@localhost"
    operator_url: str | None = None
    max_attempts: int = 8
    max_age_s: float = 6 * 3600.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    lease_s: float = 60.0
    http_timeout_s: float = 10.0
    batch: int = 32
    poll_s: float = 0.5
    apprise_workers: int = 8
    timezone: str = "Asia/Shanghai"

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        a = settings.alerts
        return cls(
            dispatch120_secret=a.dispatch120_secret.get_secret_value(),
            dispatch120_format=a.dispatch120_format,
            cap_sender=a.cap_sender,
            operator_url=a.operator_url,
            max_attempts=a.delivery_max_attempts,
            max_age_s=a.delivery_max_age_s,
            backoff_base_s=a.delivery_backoff_base_s,
            backoff_max_s=a.delivery_backoff_max_s,
            lease_s=a.delivery_lease_s,
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed row of ``deliveries`` (``attempts`` already counts this attempt)."""

    id: int
    alert_id: int
    tier: int
    recipient_kind: str
    recipient_ref: str | None
    recipient_name: str | None
    channel: str
    address: str
    language: str
    template: str
    idempotency_key: str
    attempts: int
    created_at: dt.datetime
    lease_expired: bool = False


_COLUMNS: Final = (
    "id, alert_id, tier, recipient_kind, recipient_ref, recipient_name, channel, address, "
    "language, template, idempotency_key, attempts, created_at"
)


# --- pure core -----------------------------------------------------------------------------


def backoff_s(attempt: int, base: float, cap: float, rand: float) -> float:
    """Delay before the next try after failed attempt number ``attempt`` (1-based).

    Exponential with "equal jitter": half of ``min(cap, base * 2**(attempt-1))`` is fixed, the
    other half scaled by ``rand`` (0 to 1), so many failed deliveries do not retry in lockstep.
    """
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling / 2.0 + ceiling / 2.0 * min(max(rand, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    next_attempt_at: dt.datetime | None = None
    reason: str | None = None


def decide(
    delivery: Delivery,
    result: SendResult,
    *,
    now: dt.datetime,
    config: DeliveryConfig,
    rand: float,
) -> Decision:
    """What becomes of a delivery after one attempt. Pure."""
    if result.ok:
        return Decision(Status.DELIVERED)
    reason = result.error or "failed"
    if not result.retryable:
        return Decision(Status.GAVE_UP, reason=f"refused: {reason}")
    if delivery.attempts >= config.max_attempts:
        return Decision(Status.GAVE_UP, reason=f"{delivery.attempts} attempts: {reason}")
    delay = backoff_s(delivery.attempts, config.backoff_base_s, config.backoff_max_s, rand)
    if result.retry_after_s is not None:
        delay = min(config.backoff_max_s, max(delay, result.retry_after_s))
    age = (now - delivery.created_at).total_seconds()
    if age + delay > config.max_age_s:
        return Decision(Status.GAVE_UP, reason=f"older than {config.max_age_s:.0f} s: {reason}")
    return Decision(Status.PENDING, now + dt.timedelta(seconds=delay), reason)


# --- database ------------------------------------------------------------------------------


def claim_due(conn: Conn, *, now: dt.datetime, lease_s: float, limit: int) -> list[Delivery]:
    """Claim up to ``limit`` due deliveries for this worker, in one transaction.

    Due: ``pending`` with ``next_attempt_at`` reached, or ``sending`` whose lease ran out (its
    worker died); the latter get an attempt row saying so.
    """
    if limit <= 0:
        return []
    lease_until = now + dt.timedelta(seconds=lease_s)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""WITH due AS (
                    SELECT id, status AS was FROM deliveries
                    WHERE status IN ('pending', 'sending') AND next_attempt_at <= %(now)s
                    ORDER BY next_attempt_at, id
                    LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED)
                UPDATE deliveries d
                   SET status = 'sending', attempts = d.attempts + 1,
                       next_attempt_at = %(lease_until)s
                  FROM due WHERE d.id = due.id
                RETURNING {", ".join("d." + c.strip() for c in _COLUMNS.split(","))},
                          due.was = 'sending' AS lease_expired""",
            {"now": now, "limit": limit, "lease_until": lease_until},
        ).fetchall()
        expired = [r["id"] for r in rows if r["lease_expired"]]
        if expired:
            cur.executemany(
                """INSERT INTO delivery_attempts (delivery_id, at, ok, error)
                   VALUES (%s, %s, false, 'lease expired: the worker was lost mid-delivery')""",
                [(i, now) for i in expired],
            )
    deliveries = [Delivery(**r) for r in rows]
    deliveries.sort(key=lambda d: d.id)
    return deliveries


def record_result(
    conn: Conn,
    delivery: Delivery,
    result: SendResult,
    *,
    now: dt.datetime,
    config: DeliveryConfig,
    rand: float,
) -> Decision:
    """Log the attempt and move the row; on give-up, tell the operator. One transaction."""
    decision = decide(delivery, result, now=now, config=config, rand=rand)
    with conn.transaction():
        conn.execute(
            """INSERT INTO delivery_attempts (delivery_id, at, ok, status_code, error, duration_ms)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            (delivery.id, now, result.ok, result.status_code, result.error, result.duration_ms),
        )
        if decision.status is Status.DELIVERED:
            # Also when the lease ran out meanwhile: the receiver has it; a second worker's
            # copy (same key) is dropped by the receiver and its result is not written over this.
            conn.execute(
                """UPDATE deliveries SET status = 'delivered', delivered_at = %s, last_error = NULL
                   WHERE id = %s AND status IN ('sending', 'pending', 'failed')""",
                (now, delivery.id),
            )
            return decision
        # A failure only moves the row while this worker still holds it (same claim).
        moved = conn.execute(
            """UPDATE deliveries SET status = %s, next_attempt_at = coalesce(%s, next_attempt_at),
                      last_error = %s
               WHERE id = %s AND status = 'sending' AND attempts = %s""",
            (
                decision.status.value,
                decision.next_attempt_at,
                (decision.reason or "")[:2000],
                delivery.id,
                delivery.attempts,
            ),
        ).rowcount
        if moved and decision.status is Status.GAVE_UP:
            _give_up(conn, delivery, decision.reason or "", now=now, config=config)
    return decision


def _give_up(
    conn: Conn, delivery: Delivery, reason: str, *, now: dt.datetime, config: DeliveryConfig
) -> None:
    who = delivery.recipient_name or delivery.recipient_kind
    note = f"delivery {delivery.id} to {who} ({delivery.channel}) gave up: {reason}"[:2000]
    conn.execute(
        """INSERT INTO alert_events (alert_id, at, event, actor, channel, note)
           VALUES (%s, %s, 'delivery', %s, %s, %s)""",
        (delivery.alert_id, now, ACTOR, delivery.channel, note),
    )
    if delivery.template == templates.Template.GIVE_UP or delivery.recipient_kind == "operator":
        log.error("the operator could not be told either: %s", note)
        return
    if not config.operator_url:
        log.error("no operator channel configured (ANXIN_ALERTS__OPERATOR_URL): %s", note)
        return
    log.warning("%s; telling the operator", note)
    conn.execute(
        """INSERT INTO deliveries (alert_id, tier, recipient_kind, recipient_ref, recipient_name,
                                   channel, address, language, template, idempotency_key,
                                   next_attempt_at)
           VALUES (%s, %s, 'operator', %s, 'operator', 'apprise', %s, %s, 'give_up', %s, %s)
           ON CONFLICT (idempotency_key) DO NOTHING""",
        (
            delivery.alert_id,
            delivery.tier,
            str(delivery.id),
            config.operator_url,
            delivery.language,
            f"give_up:{delivery.id}",
            now,
        ),
    )


# --- rendering -----------------------------------------------------------------------------

AckLink = Callable[[Conn, Delivery], str | None]
"""Gives the acknowledge link of a delivery (the alert core mints single-use tokens)."""


def no_ack_link(_conn: Conn, _delivery: Delivery) -> None:
    return None


def settings_ack_link(settings: Settings) -> AckLink:
    """The alert core's acknowledge links (:func:`alerts.ack.link_for`), for people only: the
    alert service issues tokens to people, not to the 120 centre or the operator."""

    def link(_conn: Conn, delivery: Delivery) -> str | None:
        if delivery.recipient_kind in {"dispatch120", "operator"}:
            return None
        return ack.link_for(settings.alerts, delivery.idempotency_key)

    return link


def _one_line_address(row: Mapping[str, Any]) -> str | None:
    parts = [row.get(k) for k in ("province", "city", "district", "street", "community_name")]
    text = "".join(p for p in parts if p)
    extra = row.get("address_text")
    return (f"{text} {extra}".strip() if extra else text) or None


def _detail(evidence: Mapping[str, Any] | None) -> str | None:
    if not evidence:
        return None
    simple = [f"{k}={v}" for k, v in evidence.items() if isinstance(v, int | float | str | bool)][
        :6
    ]
    return ", ".join(simple) or None


def message_context(
    conn: Conn, delivery: Delivery, *, ack_url: str | None, timezone: str
) -> templates.MessageContext:
    """What the template of ``delivery`` needs, read from the alert and the registry."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """SELECT a.id, a.kind, a.severity, a.device_id, a.occurrences, a.first_at, a.evidence,
                      r.name, r.province, r.city, r.district, r.street, r.community_name,
                      r.address_text, r.lat, r.lon, h.name AS hospital_name
                 FROM alerts a
                 LEFT JOIN residents r ON r.id = a.resident_id
                 LEFT JOIN hospitals h ON h.id = r.hospital_id
                WHERE a.id = %s""",
            (delivery.alert_id,),
        ).fetchone()
        if row is None:
            raise LookupError(
                f"Alert {delivery.alert_id} of delivery {delivery.id} does not exist."
            )
        pos = cur.execute(
            """SELECT lat, lon FROM positions WHERE device_id = %s
               ORDER BY ts DESC LIMIT 1""",
            (row["device_id"],),
        ).fetchone()
        failed_recipient = failed_reason = None
        if delivery.template == templates.Template.GIVE_UP and delivery.recipient_ref:
            failed = cur.execute(
                """SELECT recipient_name, recipient_kind, channel, last_error FROM deliveries
                   WHERE id::text = %s""",
                (delivery.recipient_ref,),
            ).fetchone()
            if failed is not None:
                name = failed["recipient_name"] or failed["recipient_kind"]
                failed_recipient = f"{name} ({failed['recipient_kind']}, {failed['channel']})"
                failed_reason = failed["last_error"]
    position = None
    if pos is not None:
        position = f"{pos['lat']:.5f},{pos['lon']:.5f}"
    elif row["lat"] is not None:
        position = f"{row['lat']:.5f},{row['lon']:.5f}"
    return templates.MessageContext(
        alert_id=row["id"],
        kind=row["kind"],
        severity=row["severity"],
        resident_name=row["name"],
        device_id=row["device_id"],
        occurred_at=row["first_at"],
        address=_one_line_address(row),
        position=position,
        ack_url=ack_url,
        recipient_name=delivery.recipient_name,
        occurrences=row["occurrences"],
        detail=_detail(row["evidence"]),
        hospital_name=row["hospital_name"],
        failed_recipient=failed_recipient,
        failed_reason=failed_reason,
        timezone=timezone,
    )


def build_message(
    conn: Conn,
    delivery: Delivery,
    *,
    config: DeliveryConfig,
    keyring: Keyring,
    now: dt.datetime,
    ack_link: AckLink = no_ack_link,
) -> OutboundMessage:
    """Render ``delivery`` for its channel (at send time: the freshest data)."""
    with conn.transaction():
        ack_url = ack_link(conn, delivery)
        if delivery.channel == "dispatch120":
            record = build_record(
                conn, delivery.alert_id, keyring=keyring, now=now, delivery_id=delivery.id
            )
            if config.dispatch120_format == "cap":
                body = render_cap(
                    record,
                    identifier=delivery.idempotency_key,
                    sender=config.cap_sender,
                    timezone=config.timezone,
                    ack_url=ack_url,
                ).decode()
                content_type = "application/cap+xml; charset=utf-8"
            else:
                body = record_json(record).decode()
                content_type = "application/json"
            return OutboundMessage(
                delivery.id, delivery.idempotency_key, delivery.address,
                f"anxin alert {delivery.alert_id}", body, content_type,
            )  # fmt: skip
        ctx = message_context(conn, delivery, ack_url=ack_url, timezone=config.timezone)
    rendered = templates.render(delivery.template, delivery.language, ctx)
    return OutboundMessage(
        delivery.id, delivery.idempotency_key, delivery.address, rendered.title, rendered.body
    )


# --- the worker ----------------------------------------------------------------------------


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
                try:
                    await self._loop(stop, group)
                finally:
                    listener.cancel()
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

    async def _deliver(self, delivery: Delivery) -> None:
        config = self._config
        channel = self._channels.get(delivery.channel)
        try:
            if channel is None:
                result = SendResult(
                    ok=False, retryable=False, error=f"no channel {delivery.channel!r}"
                )
            elif delivery.attempts > config.max_attempts:
                # A row that keeps killing its workers: stop before sending once more.
                result = SendResult(ok=False, retryable=False, error="attempts exhausted")
            else:
                message = await self._db(
                    build_message,
                    delivery,
                    config=config,
                    keyring=self._keyring,
                    now=self._now(),
                    ack_link=self._ack_link,
                )
                result = await channel.send(message)
        except (templates.TemplateError, LookupError) as exc:
            result = SendResult(ok=False, retryable=False, error=f"cannot render: {exc}")
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
