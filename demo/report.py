"""What ``anxin demo`` prints: the counts it reads from the database (and whether the outbox
is still busy, which the stop waits on), the text of its status lines, and, once each, what
the first 120 push and the first family message said.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from core import db
from demo.receiver import DemoReceiver, ReceiverTotals
from demo.seed import FAMILY_PATHS


def say(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


INDENT = " " * 9  # under the "[   5 s] " of a status line


@dataclass(frozen=True, slots=True)
class Counts:
    vitals: int
    bursts: int
    reasons: dict[str, int]
    alerts_live: int
    alerts_total: int
    delivered: int
    deliveries: int


def count_rows(url: str) -> Counts:
    with db.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM vitals), (SELECT count(*) FROM accel_bursts),
                      (SELECT count(*) FILTER (WHERE state IN ('pending', 'open', 'acknowledged',
                                                               'dispatched')) FROM alerts),
                      (SELECT count(*) FROM alerts),
                      (SELECT count(*) FILTER (WHERE status = 'delivered') FROM deliveries),
                      (SELECT count(*) FROM deliveries)"""
        ).fetchone()
        reasons = dict(
            conn.execute(
                "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"
            ).fetchall()
        )
    n = [int(v) for v in row] if row else [0] * 6
    return Counts(n[0], n[1], {str(k): int(v) for k, v in reasons.items()}, *n[2:])


def outbox_busy(url: str) -> bool:
    """Whether deliveries are being sent or are due now (not those waiting for a retry)."""
    with db.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """SELECT count(*) FROM deliveries WHERE status = 'sending'
                   OR (status = 'pending' AND next_attempt_at <= now())"""
        ).fetchone()
    return bool(row and row[0])


def alerts_text(counts: Counts, got: ReceiverTotals) -> str:
    family = sum(n for who, n in got.messages.items() if who in FAMILY_PATHS)
    others = sum(got.messages.values()) - family
    bad = f", {got.bad_signatures} refused (bad signature)" if got.bad_signatures else ""
    return (
        f"alerts {counts.alerts_live} live of {counts.alerts_total} | deliveries "
        f"{counts.delivered} of {counts.deliveries} delivered | received: 120 pushes "
        f"{got.pushes} (signature ok){bad}, family/doctor messages {family}, hospital/community/"
        f"operator {others}"
    )


def reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in reasons.items()) or "none"


def show_samples(receiver: DemoReceiver, out: TextIO, shown: set[str]) -> None:
    """Once each: what the first 120 push and the first family message said."""
    if "push" not in shown and (pushes := receiver.pushes()):
        push = pushes[0]
        shown.add("push")
        say(out, f"{INDENT}the 120 centre got alert {push.alert_id} ({push.kind}), signed, with:")
        say(out, f"{INDENT}  elder:   {push.elder_name}")
        say(out, f"{INDENT}  address: {push.address}")
        if push.has_profile:
            say(
                out,
                f"{INDENT}  profile: {'; '.join(push.conditions) or '-'} | allergies: "
                f"{'; '.join(push.allergies) or '-'} | blood type {push.blood_type}",
            )
    # The child's message first: the one a family member would read.
    family = sorted(
        (m for m in receiver.messages() if m.recipient in FAMILY_PATHS),
        key=lambda m: m.recipient != "child",
    )
    if "message" not in shown and family:
        message = family[0]
        shown.add("message")
        say(out, f"{INDENT}the {message.recipient}'s phone got:")
        for line in [message.title, *message.body.splitlines()]:
            if line.strip():
                say(out, f"{INDENT}  | {line.strip()}")
