"""The sweep's counter: work a running sweep finds is counted, an idle sweep counts nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from core.clock import ManualClock
from ingest.pipeline import Batch
from ingest.recovery import Recovery


@dataclass
class _Store:
    events: list[object] = field(default_factory=list)
    findings: list[int] = field(default_factory=list)

    def unhandled_events(self, *, older_than: object, kinds: object) -> list[object]:
        out, self.events = self.events, []
        return out

    def unalerted(self, *, older_than: object) -> list[int]:
        out, self.findings = self.findings, []
        return out


@dataclass
class _Sink:
    store: _Store
    batches: list[Batch] = field(default_factory=list)
    stateful: bool = True
    event_kinds: frozenset[str] = frozenset({"sos", "fall", "cancel"})

    def __call__(self, batch: Batch, now_ms: int) -> None:
        self.batches.append(batch)


class _Alerts:
    def sweep(self, finding_ids: list[int]) -> int:
        return len(finding_ids)


def _swept(registry: CollectorRegistry, what: str) -> float | None:
    return registry.get_sample_value("anxin_ingest_swept_total", {"what": what})


def test_a_sweep_that_finds_work_counts_it_under_the_exported_name() -> None:
    registry = CollectorRegistry()
    store = _Store(events=["sos-1", "sos-2"], findings=[7, 8, 9])
    recovery = Recovery(_Sink(store), _Alerts(), clock=ManualClock(), registry=registry)  # type: ignore[arg-type]

    report = recovery.sweep()
    recovery.sweep()  # nothing left: the counter stays

    assert (report.events, report.findings) == (2, 3)
    assert _swept(registry, "events") == 2
    assert _swept(registry, "findings") == 3
