"""What a scenario run observed, compared with what it expected, and the report (pure).

The runner (:mod:`simulators.runner`) reads :class:`Observed` from the deployment's database
and the links; :func:`compare` checks it against the scenario's ``expect``; :func:`render`
prints the report a test engineer reads. Names in both are the scenario's own keys (elders,
devices without the run's suffix).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from simulators.scenario import AlertExpect, Expect


@dataclass(frozen=True, slots=True)
class DeliverySeen:
    recipient: str
    tier: int
    status: str
    channel: str
    """``dispatch120``, or the scheme of the apprise address (``json``, ``mailto``, ...)."""
    delivered_ms: int | None


@dataclass(frozen=True, slots=True)
class AlertSeen:
    alert_id: int
    kind: str
    elder: str | None
    device: str | None
    state: str
    severity: str
    first_ms: int
    opened_ms: int | None
    deliveries: tuple[DeliverySeen, ...]

    def told(self) -> set[str]:
        return {d.recipient for d in self.deliveries if d.tier == 0}

    def delivered(self) -> set[str]:
        return {d.recipient for d in self.deliveries if d.status == "delivered"}

    def channels(self) -> dict[str, str]:
        return {d.recipient: d.channel for d in self.deliveries}

    def describe(self) -> str:
        who = self.elder or self.device or "?"
        return f"{self.kind} for {who} ({self.state}, {self.severity})"


@dataclass
class Observed:
    alerts: list[AlertSeen] = field(default_factory=list)
    dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)
    stored: dict[tuple[str, str], int] = field(default_factory=dict)
    commands: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class Verdict:
    ok: list[str] = field(default_factory=list)
    differs: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.differs


def _matches(exp: AlertExpect, a: AlertSeen) -> bool:
    if a.kind != exp.kind.value:
        return False
    if exp.elder is not None and a.elder != exp.elder:
        return False
    return exp.device is None or a.device == exp.device


def _check_alert(exp: AlertExpect, a: AlertSeen) -> list[str]:
    """Differences of one alert from what was expected of it (empty: it matches)."""
    out = []
    if exp.state is not None and a.state != exp.state.value:
        out.append(f"state is {a.state}, expected {exp.state.value}")
    if exp.told is not None and a.told() != set(exp.told):
        out.append(f"told {sorted(a.told()) or 'nobody'}, expected {sorted(exp.told)}")
    if exp.delivered is not None and not set(exp.delivered) <= a.delivered():
        missing = sorted(set(exp.delivered) - a.delivered())
        out.append(f"not delivered to {missing} (delivered: {sorted(a.delivered()) or 'none'})")
    if exp.channels is not None:
        got = a.channels()
        for who, channel in exp.channels.items():
            if got.get(who) != channel:
                out.append(f"{who} told through {got.get(who) or 'nothing'}, expected {channel}")
    return out


def _label(exp: AlertExpect) -> str:
    who = exp.elder or exp.device
    state = f" ({exp.state.value})" if exp.state else ""
    return f"a {exp.kind.value} alert for {who}{state}"


def compare(expect: Expect, seen: Observed, *, final: bool) -> Verdict:
    """Check ``seen`` against ``expect``. ``final``: also what must not happen (checked after
    the positive expectations were met and the settle time passed)."""
    v = Verdict()
    claimed: set[int] = set()
    for exp in expect.alerts:
        candidates = [a for a in seen.alerts if _matches(exp, a) and a.alert_id not in claimed]
        if not candidates:
            v.differs.append(f"expected {_label(exp)}: none opened")
            continue
        problems = {a.alert_id: _check_alert(exp, a) for a in candidates}
        best = min(candidates, key=lambda a: len(problems[a.alert_id]))
        claimed.add(best.alert_id)
        if problems[best.alert_id]:
            v.differs.append(f"{_label(exp)}: " + "; ".join(problems[best.alert_id]))
        else:
            told = ", ".join(
                f"{d.recipient} ({d.channel}, {d.status})"
                for d in sorted(best.deliveries, key=lambda d: (d.tier, d.recipient))
                if d.tier == 0
            )
            v.ok.append(f"{best.describe()}; told {told or 'nobody'}")
    for dl in expect.dead_letters:
        n = seen.dead_letters.get((dl.device, dl.reason.value), 0)
        if (dl.count is None and n == 0) or (dl.count is not None and n != dl.count):
            want = "at least 1" if dl.count is None else str(dl.count)
            v.differs.append(
                f"dead letters of {dl.device} with reason {dl.reason.value}: {n}, expected {want}"
            )
        else:
            v.ok.append(f"{n} dead letter(s) of {dl.device}: {dl.reason.value}")
    for st in expect.stored:
        n = seen.stored.get((st.device, st.what), 0)
        bad = (st.count is not None and n != st.count) or (
            st.at_least is not None and n < st.at_least
        )
        if bad:
            want = f"exactly {st.count}" if st.count is not None else f"at least {st.at_least}"
            v.differs.append(f"{st.what} stored of {st.device}: {n}, expected {want}")
        else:
            v.ok.append(f"{n} {st.what} stored of {st.device}")
    for cmd in expect.commands:
        if (cmd.device, cmd.type.value) in seen.commands:
            v.ok.append(f"{cmd.device} received the command {cmd.type.value}")
        else:
            got = sorted(t for d, t in seen.commands if d == cmd.device)
            v.differs.append(
                f"{cmd.device} did not receive {cmd.type.value} (received: {got or 'none'})"
            )
    if final:
        for nv in expect.never:
            hits = [
                a for a in seen.alerts
                if a.kind == nv.kind.value and (nv.elder is None or a.elder == nv.elder)
            ]  # fmt: skip
            for a in hits:
                v.differs.append(f"must not happen: {a.describe()}")
            if not hits:
                v.ok.append(f"no {nv.kind.value} alert" + (f" for {nv.elder}" if nv.elder else ""))
        if expect.others == "forbid":
            never_kinds = {(n.kind.value, n.elder) for n in expect.never}
            for a in seen.alerts:
                if a.alert_id in claimed:
                    continue
                if (a.kind, None) in never_kinds or (a.kind, a.elder) in never_kinds:
                    continue  # already reported above
                v.differs.append(f"not expected: {a.describe()}")
    return v


def render(
    title: str,
    header: list[str],
    verdict: Verdict,
    figures: list[str],
) -> str:
    """The report: what ran, each check (ok or what differed), the figures, the result."""
    lines = [f"scenario: {title}", *(f"  {h}" for h in header)]
    lines += [f"  ok       {line}" for line in verdict.ok]
    lines += [f"  DIFFERS  {line}" for line in verdict.differs]
    lines += [f"  figure   {f}" for f in figures]
    checks = len(verdict.ok) + len(verdict.differs)
    if verdict.passed:
        lines.append(f"result: PASS ({checks} checks)")
    else:
        lines.append(f"result: FAIL ({len(verdict.differs)} of {checks} checks differ)")
    return "\n".join(lines)
