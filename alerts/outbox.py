"""The outbox's pure core: delivery states, the worker's settings, and what an attempt leads to.

A delivery row is one message to one recipient, written by the alert service in the same
transaction as its alert; :mod:`alerts.outbox_db` claims and records them, :mod:`alerts.delivery`
is the worker that sends them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from alerts.channels import SendResult
from core.settings import Settings


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
        sms_url: SMS gateway URL with ``{phone}``, for ``anxin:sms/...`` addresses.
        max_attempts: Attempts before giving up.
        max_age_s: Age of a delivery after which a failure gives up, whatever the count.
        backoff_base_s: Delay after the first failure (doubles with each attempt).
        backoff_max_s: Longest delay between two attempts.
        lease_s: How long a claimed row stays with its process; renewed every third of it
            while the send is in flight.
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
    sms_url: str | None = None
    max_attempts: int = 8
    max_age_s: float = 6 * 3600.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    lease_s: float = 5.0
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
            sms_url=a.sms_url,
            max_attempts=a.delivery_max_attempts,
            max_age_s=a.delivery_max_age_s,
            backoff_base_s=a.delivery_backoff_base_s,
            backoff_max_s=a.delivery_backoff_max_s,
            lease_s=a.delivery_lease_s,
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed row of ``deliveries`` (``attempts`` already counts this attempt): about an
    alert (``alert_id``) or a due home visit (``visit_reminder_id``)."""

    id: int
    alert_id: int | None
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
    visit_reminder_id: int | None = None


COLUMNS: Final = (
    "id, alert_id, tier, recipient_kind, recipient_ref, recipient_name, channel, address, "
    "language, template, idempotency_key, attempts, created_at, visit_reminder_id"
)


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
