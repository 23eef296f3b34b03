"""Prometheus metrics the API reads from the database at each scrape (``GET /metrics``).

The ingester's own ``/metrics`` counts what passes through it; what waits for people and
channels lives in the database: alerts nobody has acknowledged, deliveries that fail. The API
already holds a pool, so it answers for those. Every API replica reports the same numbers:
alerting rules take ``max`` over instances.

:func:`families` is pure (counts in, metric families out); :func:`read_counts` is the I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from alerts.model import AlertKind, AlertState

LIVE_STATES = (AlertState.PENDING, AlertState.OPEN, AlertState.ACKNOWLEDGED, AlertState.DISPATCHED)
#: Every value of ``deliveries.status`` (migration 0007), reported even when zero.
DELIVERY_STATUSES = ("pending", "sending", "delivered", "failed", "gave_up", "cancelled")


@dataclass(frozen=True, slots=True)
class LiveAlerts:
    """Live alerts of one kind and state, and how long the oldest has been in it."""

    kind: str
    state: str
    count: int
    oldest_s: float


@dataclass(frozen=True, slots=True)
class DatabaseCounts:
    """One scrape's reading of the database."""

    alerts: Sequence[LiveAlerts]
    deliveries: Mapping[str, int]
    attempts_ok: int
    attempts_failed: int
    oldest_due_s: float


def families(counts: DatabaseCounts) -> list[Metric]:
    """The metric families of one reading; every kind and state present, zero if none."""
    live = GaugeMetricFamily(
        "anxin_alerts_live",
        "Alerts in a live state (pending, open, acknowledged, dispatched), by kind and state.",
        labels=["kind", "state"],
    )
    found = {(a.kind, a.state): a for a in counts.alerts}
    kinds = sorted({k.value for k in AlertKind} | {a.kind for a in counts.alerts})
    for kind in kinds:
        for state in LIVE_STATES:
            row = found.get((kind, state.value))
            live.add_metric([kind, state.value], row.count if row else 0)
    unacked = GaugeMetricFamily(
        "anxin_alerts_open_oldest_seconds",
        "Age of the oldest open (not yet acknowledged) alert of each kind; absent when none.",
        labels=["kind"],
    )
    for a in counts.alerts:
        if a.state == AlertState.OPEN.value and a.count:
            unacked.add_metric([a.kind], a.oldest_s)
    deliveries = GaugeMetricFamily(
        "anxin_deliveries",
        "Outbox rows (one message to one recipient), by status.",
        labels=["status"],
    )
    for status in sorted(set(DELIVERY_STATUSES) | set(counts.deliveries)):
        deliveries.add_metric([status], counts.deliveries.get(status, 0))
    attempts = CounterMetricFamily(
        "anxin_delivery_attempts",
        "Delivery attempts logged in delivery_attempts, by outcome (ok, failed).",
        labels=["outcome"],
    )
    attempts.add_metric(["ok"], counts.attempts_ok)
    attempts.add_metric(["failed"], counts.attempts_failed)
    due = GaugeMetricFamily(
        "anxin_deliveries_oldest_due_seconds",
        "How long the most overdue pending delivery has been due (0 when none): the worker's lag.",
        value=counts.oldest_due_s,
    )
    return [live, unacked, deliveries, attempts, due]


class _Snapshot(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def render(counts: DatabaseCounts) -> bytes:
    """The Prometheus text exposition of one reading."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families(counts)))
    return generate_latest(registry)


async def read_counts(conn: AsyncConnection[TupleRow]) -> DatabaseCounts:
    """Read the counts: a few small queries (live alerts and due deliveries use their partial
    and status indexes; the attempts count scans delivery_attempts, one row per message try)."""
    cur = await conn.execute(
        """SELECT kind, state, count(*),
                  coalesce(extract(epoch FROM now() - min(coalesce(opened_at, first_at))), 0)
             FROM alerts WHERE state = ANY(%s) GROUP BY kind, state""",
        ([s.value for s in LIVE_STATES],),
    )
    alerts = [
        LiveAlerts(str(k), str(s), int(n), float(age)) for k, s, n, age in await cur.fetchall()
    ]
    cur = await conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status")
    deliveries = {str(s): int(n) for s, n in await cur.fetchall()}
    cur = await conn.execute(
        """SELECT count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok),
                  (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)
                     FROM deliveries
                    WHERE status IN ('pending', 'sending') AND next_attempt_at <= now())
             FROM delivery_attempts"""
    )
    row = await cur.fetchone()
    assert row is not None  # noqa: S101 - an aggregate without GROUP BY returns one row
    return DatabaseCounts(alerts, deliveries, int(row[0]), int(row[1]), float(row[2]))
