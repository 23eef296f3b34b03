"""``anxin load``: a district's worth of devices of a mix of kinds, with a scenario inside.

N devices (``--mix wristband=70,bed_sensor=20,pendant=10``: shares in percent) publish at
their real rates (``--speed`` times faster if asked) over several processes, each with the
bare QoS 1 publisher (:mod:`simulators.rawmqtt`), so the load generator leaves the CPU to the
system under test. Per device and second:

=============  ================================================  ==================
kind           message                                           every (real rate)
=============  ================================================  ==================
wristband      vitals, a 1 s 25 Hz accelerometer burst, battery  1 s
watch          the same and a position                           1 s
pendant        a 1 s burst (chest), battery, position            1 s
belt_clip      a 1 s burst (waist), battery                      1 s
bed_sensor     presence, heart and respiration rate, movement    30 s
sos_button     battery                                           600 s
=============  ================================================  ==================

Devices are spread evenly over each second (they are not synchronised). The report counts
what was sent and what the broker acknowledged (PUBACK), and how far publishing ever fell
behind its schedule. With ``--scenario FILE`` the scenario runs (registered, played, judged as
``anxin scenario run`` does) while the load streams, and its report and latencies are printed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from core.errors import AnxinError
from devices import protocol as proto
from devices.model import DeviceKind
from simulators.devices import SCALE_G
from simulators.physiology import Activity, Body, Segment
from simulators.rawmqtt import RawPublisher

PERIOD_S: dict[DeviceKind, int] = {
    DeviceKind.WRISTBAND: 1,
    DeviceKind.WATCH: 1,
    DeviceKind.PENDANT: 1,
    DeviceKind.BELT_CLIP: 1,
    DeviceKind.BED_SENSOR: 30,
    DeviceKind.SOS_BUTTON: 600,
}
DEFAULT_MIX = "wristband=60,watch=5,pendant=10,bed_sensor=20,sos_button=5"


class LoadError(AnxinError, ValueError):
    """A load profile that cannot run (a bad mix, a bad count)."""


def parse_mix(text: str) -> dict[DeviceKind, float]:
    """``kind=share,...`` into shares summing to 1.

    Raises:
        LoadError: an unknown kind, a share that is not a positive number, nothing given.
    """
    out: dict[DeviceKind, float] = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        try:
            kind = DeviceKind(name.strip())
        except ValueError:
            known = ", ".join(k.value for k in PERIOD_S)
            raise LoadError(f"--mix names kind {name.strip()!r}: expected one of {known}") from None
        if kind not in PERIOD_S:
            raise LoadError(f"--mix names kind {kind.value!r}, which publishes through a hub only")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if value <= 0:
            raise LoadError(
                f"--mix gives {kind.value} the share {share!r}: expected a positive number"
            )
        out[kind] = out.get(kind, 0.0) + value
    total = sum(out.values())
    return {k: v / total for k, v in out.items()}


def assign(n: int, mix: dict[DeviceKind, float], prefix: str) -> list[tuple[str, DeviceKind]]:
    """``n`` device ids and kinds in the mix's proportions (largest remainder)."""
    raw = {k: n * share for k, share in mix.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[
        : n - sum(counts.values())
    ]:
        counts[k] += 1
    out = []
    for kind, count in counts.items():
        short = kind.value.replace("_", "")[:6]
        out += [(f"{prefix}-{short}-{i:05d}", kind) for i in range(count)]
    return out


class Payloads:
    """Builds each kind's message from small pools of pre-encoded parts (cheap per message)."""

    def __init__(self, seed: int = 0, pool: int = 16) -> None:
        walk = Body(segments=[Segment(0, Activity.WALK)], seed=seed)
        sit = Body(segments=[Segment(0, Activity.SIT)], seed=seed + 1)
        self.bursts = [
            proto.accel_i16((walk if k % 2 else sit).accel(float(k), 1.0, 25), 25, SCALE_G)
            for k in range(pool)
        ]
        self.hr = np.random.default_rng(seed).normal(72, 3, 101).round()

    def payload(self, kind: DeviceKind, index: int, seq: int, ts_ms: int) -> bytes:
        burst = self.bursts[(index + seq) % len(self.bursts)]
        hr = float(self.hr[(index * 7 + seq) % len(self.hr)])
        battery = proto.Battery(level_pct=90.0)
        reading: proto.ReadingWire
        if kind in (DeviceKind.WRISTBAND, DeviceKind.WATCH):
            reading = proto.ReadingWire(
                ts=ts_ms, seq=seq, vitals=proto.Vitals(heart_rate=hr, spo2=97.0),
                accel=burst, battery=battery,
                pos=proto.Position(lat=34.78, lon=113.66, accuracy_m=10.0) if kind is DeviceKind.WATCH else None,
            )  # fmt: skip
        elif kind in (DeviceKind.PENDANT, DeviceKind.BELT_CLIP):
            reading = proto.ReadingWire(ts=ts_ms, seq=seq, accel=burst, battery=battery)
        elif kind is DeviceKind.BED_SENSOR:
            reading = proto.ReadingWire(
                ts=ts_ms, seq=seq,
                bed=proto.BedState(presence=True, heart_rate=hr - 10, resp_rate=14.0, movement=0.0),
            )  # fmt: skip
        else:
            reading = proto.ReadingWire(ts=ts_ms, seq=seq, battery=battery)
        return proto.encode_telemetry([reading])


@dataclass(frozen=True)
class WorkerReport:
    sent: int
    acknowledged: int
    max_behind_s: float


def _worker(  # noqa: PLR0917 - a process target, called with its arguments in order
    conn: Connection,
    host: str,
    port: int,
    prefix: str,
    devices: list[tuple[str, DeviceKind]],
    seconds: int,
    speed: float,
    start_at: float,
    name: str,
) -> None:
    """One process: its devices, paced over each second, on one bare connection."""
    payloads = Payloads(seed=hash(name) % 1000)
    client = RawPublisher(host, port, client_id=name)
    client.connect_inline()
    topics = [proto.topic(prefix, d, proto.Channel.TELEMETRY) for d, _k in devices]
    n = len(devices)
    phases = [i % PERIOD_S[k] for i, (_d, k) in enumerate(devices)]
    sent = 0
    behind = 0.0
    while time.time() < start_at:
        time.sleep(0.01)
    t0 = time.monotonic()
    ticks = round(seconds * speed)
    for tick in range(ticks):
        for i, (_device, kind) in enumerate(devices):
            period = PERIOD_S[kind]
            if (tick + phases[i]) % period:
                continue
            due = t0 + (tick + i / n) / speed
            if i % 32 == 0:
                while (wait := due - time.monotonic()) > 0:
                    client.pump(min(0.02, wait))
                behind = max(behind, time.monotonic() - due)
            ts = time.time_ns() // 1_000_000
            client.publish(topics[i], payloads.payload(kind, i, tick, ts))
            sent += 1
            if sent % 256 == 0:
                client.pump(0)
    client.stop(60)
    conn.send(WorkerReport(sent, client.acknowledged, behind))
    conn.close()


@dataclass(frozen=True)
class LoadReport:
    devices: int
    seconds: int
    processes: int
    sent: int
    acknowledged: int
    max_behind_s: float
    wall_s: float

    def render(self) -> str:
        return (
            f"load: {self.devices} devices, {self.seconds} s, {self.processes} processes: sent "
            f"{self.sent} messages ({self.sent / max(self.wall_s, 1e-9):.0f}/s over {self.wall_s:.1f} s), "
            f"broker acknowledged {self.acknowledged} (unacknowledged {self.sent - self.acknowledged}); "
            f"publishing fell behind its schedule by at most {self.max_behind_s:.2f} s"
        )


def run_load(
    *,
    host: str,
    port: int,
    prefix: str,
    devices: list[tuple[str, DeviceKind]],
    seconds: int,
    processes: int,
    speed: float = 1.0,
    during: object = None,
) -> LoadReport:
    """Publish ``devices`` for ``seconds`` over ``processes`` processes; ``during`` (a callable)
    runs in this process while they stream, a few seconds after they start."""
    ctx = mp.get_context("spawn")
    start_at = time.time() + 3.0  # the processes start (imports) before the first second
    pipes = []
    procs = []
    for p in range(processes):
        mine = devices[p::processes]
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker,
            args=(
                child,
                host,
                port,
                prefix,
                mine,
                seconds,
                speed,
                start_at,
                f"load-{p}-{int(start_at)}",
            ),
            name=f"anxin-load-{p}",
        )
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    began = time.monotonic()
    try:
        if callable(during):
            while time.time() < start_at + 5.0:
                time.sleep(0.05)
            during()
        reports: list[WorkerReport] = [pipe.recv() for pipe in pipes]
    finally:
        for proc in procs:
            proc.join(120)
            if proc.is_alive():
                proc.terminate()
    wall = time.monotonic() - began - 3.0
    return LoadReport(
        len(devices),
        seconds,
        processes,
        sum(r.sent for r in reports),
        sum(r.acknowledged for r in reports),
        max(r.max_behind_s for r in reports),
        wall,
    )


def main_load(argv: list[str]) -> int:
    """``anxin load``."""
    from core import db  # noqa: PLC0415
    from core.settings import load_settings  # noqa: PLC0415
    from devices.registry import ensure_devices  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="anxin load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument(
        "--mix", default=DEFAULT_MIX, help=f"kind=share,... (default {DEFAULT_MIX})"
    )
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--speed", type=float, default=1.0, help="times the real rates")
    parser.add_argument("--register", action="store_true", help="register the devices first")
    parser.add_argument("--id-prefix", default="load")
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        help="a scenario file (or library name) to run inside the load; repeat for several, "
        "run side by side",
    )
    parser.add_argument("--data", type=Path, help="datasets folder for the scenario's recordings")
    parser.add_argument("--phones", default="json://127.0.0.1:8099/phone")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= 200_000 or not 1 <= args.processes <= 64 or args.seconds < 1:
        parser.error("--devices 1-200000, --processes 1-64 and --seconds >= 1 expected")
    try:
        mix = parse_mix(args.mix)
    except LoadError as exc:
        parser.error(str(exc))
    settings = load_settings()
    fleet = assign(args.devices, mix, args.id_prefix)
    if args.register:
        db.upgrade(settings.db.url, require_timescale=settings.db.require_timescale)
        with db.connect(settings.db.url) as conn:
            for kind in mix:
                ensure_devices(conn, [d for d, k in fleet if k is kind], kind.value)
        # The ingester reads its registry every registry_refresh_s.
        time.sleep(settings.ingest.registry_refresh_s + 1)
    outcome: list[object] = []

    def scenario() -> None:
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        from simulators.runner import RunOptions, run_scenario  # noqa: PLC0415
        from simulators.scenario import load_scenario  # noqa: PLC0415

        options = RunOptions(data_dir=args.data, phones=args.phones)
        with ThreadPoolExecutor(max_workers=len(args.scenario)) as pool:
            futures = [
                pool.submit(
                    run_scenario, settings, load_scenario(name), options,
                    title=f"{name}, inside the load",
                )
                for name in args.scenario
            ]  # fmt: skip
            outcome.extend(f.result() for f in futures)

    report = run_load(
        host=settings.mqtt.host,
        port=settings.mqtt.port,
        prefix=settings.mqtt.topic_prefix,
        devices=fleet,
        seconds=args.seconds,
        processes=args.processes,
        speed=args.speed,
        during=scenario if args.scenario else None,
    )
    counts: dict[str, int] = {}
    for _d, k in fleet:
        counts[k.value] = counts.get(k.value, 0) + 1
    print("mix: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    print(report.render())
    ok = report.acknowledged == report.sent
    latencies: dict[str, list[float]] = {}
    for result in outcome:
        print(result.report)  # type: ignore[attr-defined]
        ok = ok and bool(result.passed)  # type: ignore[attr-defined]
        for name, values in result.latencies_ms.items():  # type: ignore[attr-defined]
            latencies.setdefault(name, []).extend(values)
    for name, values in latencies.items():
        if values:
            ordered = sorted(values)
            print(
                f"scenarios inside the load: {name} n={len(values)} min {ordered[0]:.0f} "
                f"median {ordered[len(ordered) // 2]:.0f} max {ordered[-1]:.0f} ms"
            )
    return 0 if ok else 1
