"""Pure: what one finding does to the live alert of its elder and kind."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from alerts.model import Actor, ActorKind, Alert, AlertState
from alerts.routing import Rule
from detectors.findings import FallOutcome, Finding, FindingKind, Severity, evidence_json


class Step(enum.StrEnum):
    """What one finding does to the live alert of its elder and kind."""

    CREATE_PENDING = "create_pending"
    CREATE_OPEN = "create_open"
    REPEAT = "repeat"
    REPEAT_AND_OPEN = "repeat_and_open"
    CANCEL = "cancel"
    NOTE = "note"
    DIGEST = "digest"
    IGNORE = "ignore"


_PENDING_KINDS = frozenset({FindingKind.FALL_SUSPECTED, FindingKind.DEVICE_FALL})


def decide(finding_kind: FindingKind, rule: Rule | None, live: AlertState | None) -> Step:
    """Pure: the step for a finding, given the matching rule and the live alert's state."""
    if finding_kind is FindingKind.VITAL_TREND:
        return Step.DIGEST
    if finding_kind is FindingKind.FALL_CANCELLED:
        if live is AlertState.PENDING:
            return Step.CANCEL
        return Step.NOTE if live is not None else Step.IGNORE
    if rule is None or rule.action == "ignore":
        return Step.IGNORE
    if rule.action == "digest":
        return Step.DIGEST
    if live is None:
        return Step.CREATE_PENDING if finding_kind in _PENDING_KINDS else Step.CREATE_OPEN
    if live is AlertState.PENDING and finding_kind not in _PENDING_KINDS:
        return Step.REPEAT_AND_OPEN
    return Step.REPEAT


@dataclass(frozen=True, slots=True)
class AlertChange:
    """What a finding did: the step and the alert (None for digest and ignore).

    ``claimed_120``: ids of the 120 deliveries written leased to the caller (see
    :attr:`alerts.service.AlertService.claim_120_s`), for it to push right after the commit.
    """

    step: Step
    alert: Alert | None
    deliveries: int = 0
    claimed_120: tuple[int, ...] = ()


#: Finding kinds whose evidence is a :class:`FallOutcomeEvidence` (outcome, window_s).
_OUTCOME_KINDS = frozenset({FindingKind.FALL_CONFIRMED, FindingKind.FALL_CANCELLED})
_DEVICE_KINDS = frozenset({FindingKind.SOS, FindingKind.DEVICE_FALL})


@dataclass(frozen=True, slots=True)
class AlertInput:
    """What the alert service takes of a finding, whether just detected or read back stored.

    Attributes:
        finding_id: The ``findings`` row (None for a finding that was never stored).
        kind, severity, ts_ms, device_id, resident_id: As on the finding.
        evidence: :func:`detectors.findings.evidence_json` of the finding, plus ``finding``
            (its kind), as stored with the alert.
    """

    finding_id: int | None
    kind: FindingKind
    severity: Severity
    ts_ms: int
    device_id: str
    resident_id: str | None
    evidence: dict[str, object]

    @classmethod
    def of(cls, finding: Finding, finding_id: int | None = None) -> AlertInput:
        return cls(
            finding_id,
            finding.kind,
            finding.severity,
            finding.ts_ms,
            finding.device_id,
            finding.resident_id,
            {**evidence_json(finding), "finding": finding.kind.value},
        )

    @property
    def outcome(self) -> str | None:
        """The fall outcome of a confirmation window's end, None for other kinds."""
        out = self.evidence.get("outcome") if self.kind in _OUTCOME_KINDS else None
        return str(out) if out is not None else None

    @property
    def window_s(self) -> float | None:
        """The cancel window a fall outcome names, None for other kinds."""
        w = self.evidence.get("window_s") if self.kind in _OUTCOME_KINDS else None
        return float(w) if isinstance(w, int | float) else None

    @property
    def actor(self) -> Actor:
        """Who the timeline names for this finding: the device, or a detector."""
        if self.outcome == FallOutcome.RECOVERED.value:
            return Actor(ActorKind.SYSTEM, "fall detector")
        if self.kind in _OUTCOME_KINDS or self.kind in _DEVICE_KINDS:
            return Actor(ActorKind.DEVICE, self.device_id)
        if self.kind is FindingKind.FALL_SUSPECTED:
            return Actor(ActorKind.SYSTEM, "fall detector")
        return Actor(ActorKind.SYSTEM, "detector")

    @property
    def outcome_note(self) -> str:
        return f"fall {self.outcome}" if self.outcome is not None else self.kind.value
